//! Debian version strings (`[epoch:]upstream[-revision]`) and their ordering, exactly as
//! dpkg's `verrevcmp` defines it (lib/dpkg/version.c): `~` sorts before everything, even the
//! end of the string; letters before other characters; digit runs numerically.

use std::cmp::Ordering;
use std::fmt;

/// Longer version strings do not occur in any archive; a bound keeps hostile input cheap.
pub const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version:?}: {what}")]
pub struct VersionError {
    pub version: String,
    pub what: &'static str,
}

/// A parsed Debian version. Equality is dpkg's (`1.0` equals `0:1.0` and `1.0-0`).
#[derive(Debug, Clone)]
pub struct DebVersion {
    pub epoch: u32,
    pub upstream: String,
    /// Empty when the version has no `-revision`.
    pub revision: String,
    /// The version as written (trimmed), which is how dpkg and apt print it.
    pub text: String,
}

impl DebVersion {
    /// Parses like dpkg's `parseversion`: the errors dpkg refuses are errors here; the
    /// things dpkg only warns about (an upstream part not starting with a digit, unusual
    /// characters) are accepted, because they still compare.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |what| VersionError {
            version: text.chars().take(MAX_LEN).collect(),
            what,
        };
        if text.len() > MAX_LEN {
            return Err(err("longer than any real version"));
        }
        let s = text.trim_matches([' ', '\t', '\n', '\r']);
        if s.is_empty() {
            return Err(err("version string is empty"));
        }
        if s.contains([' ', '\t', '\n', '\r']) {
            return Err(err("version string has embedded spaces"));
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() {
                    return Err(err("epoch in version is empty"));
                }
                if !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch in version is not number"));
                }
                let epoch: u32 = e.parse().map_err(|_| err("epoch in version is too big"))?;
                if epoch > i32::MAX as u32 {
                    return Err(err("epoch in version is too big"));
                }
                if rest.is_empty() {
                    return Err(err("nothing after colon in version number"));
                }
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(err("revision number is empty")),
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("version number is empty"));
        }
        Ok(Self {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DebVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion {}

/// Compares two version strings; unparsable versions are an error, as with
/// `dpkg --compare-versions`.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(DebVersion::parse(a)?.cmp(&DebVersion::parse(b)?))
}

/// dpkg's character weight: `~` lowest, then the end of the string / digits, then letters,
/// then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Serializes a version as dpkg prints it.
pub fn serialize<S: serde::Serializer>(v: &DebVersion, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "0:1.0-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~", "1.0~~", Greater),
            ("1.0", "1.0+b1", Less),
            ("1.0a", "1.0+", Less),
            ("1:0.1", "2.0", Greater),
            ("1.001", "1.1", Equal),
            ("2.30-1", "2.4-1", Greater),
            ("5.4.1-1+deb12u1", "5.4.1-1+deb12u2", Less),
            ("1.0-1~bpo1", "1.0-1", Less),
        ] {
            assert_eq!(compare(a, b).unwrap(), want, "{a} vs {b}");
            assert_eq!(compare(b, a).unwrap(), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn refused_like_dpkg() {
        for bad in ["", ":1", "1:", "a:1", "1.0-", "1 0", "99999999999:1"] {
            assert!(DebVersion::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(DebVersion::parse("1:2.0-3").unwrap().to_string(), "1:2.0-3");
    }
}
