//! apt's view of repositories: sources (one-line `sources.list` and deb822 `.sources`),
//! `Release` files, `Packages` indices, the names of apt's list files, and the candidate
//! version `apt list --upgradable` reports.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::deb822::{self, Deb822Error};
use crate::debversion::{DebVersion, VersionError};
use crate::dpkg::InstalledPackage;

/// Bounds no real configuration or archive reaches.
pub const MAX_SOURCES: usize = 10_000;
pub const MAX_RELEASE_FILES: usize = 200_000;
pub const MAX_INDEX_ENTRIES: usize = 2_000_000;
const MAX_OPTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("{file}:{line}: {what}")]
    Sources { file: String, line: usize, what: String },
    #[error("{file}: {source}")]
    Syntax { file: String, source: Deb822Error },
    #[error("{file}, paragraph at line {line}: {what}")]
    Field { file: String, line: usize, what: String },
    #[error("{file}, paragraph at line {line}: {source}")]
    Version {
        file: String,
        line: usize,
        source: VersionError,
    },
    #[error("{file}: more than {limit} entries")]
    TooMany { file: String, limit: usize },
}

/// What a source's `signed-by` names: keyring files and/or key fingerprints, or a key
/// embedded in a deb822 `.sources` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SignedBy {
    Keys(Vec<String>),
    Inline(String),
}

/// One `deb` line (or one URI × suite of a deb822 stanza). `deb-src` entries are dropped:
/// they never provide installed binaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceEntry {
    /// The repository's base URI, always ending in `/`.
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `arch=`: when set, the only architectures fetched for this source.
    pub archs: Option<Vec<String>>,
    pub signed_by: Option<SignedBy>,
    /// `trusted=yes`: apt skips signature checks.
    pub trusted: bool,
    /// Where it was configured (`file:line`).
    pub origin: String,
}

impl SourceEntry {
    /// A flat repository (`deb URI ./`): its files sit under the suite path, not `dists/`.
    pub fn is_flat(&self) -> bool {
        self.suite.ends_with('/')
    }

    /// The URI of `name` in this source's release directory (`InRelease`, `Release`, or a
    /// path listed in the Release file).
    pub fn release_uri(&self, name: &str) -> String {
        if self.is_flat() {
            let suite = self.suite.trim_start_matches("./").trim_start_matches('/');
            format!("{}{suite}{name}", self.uri)
        } else {
            format!("{}dists/{}/{name}", self.uri, self.suite)
        }
    }

    /// The `Packages` path of one component and architecture, relative to the release
    /// directory (as the Release file lists it).
    pub fn packages_path(&self, component: &str, arch: &str) -> String {
        if self.is_flat() {
            "Packages".into()
        } else {
            format!("{component}/binary-{arch}/Packages")
        }
    }
}

fn normalize_uri(uri: &str) -> String {
    if uri.ends_with('/') {
        uri.to_owned()
    } else {
        format!("{uri}/")
    }
}

/// Parses one-line style (`sources.list`, `*.list`).
pub fn parse_sources_list(text: &str, file: &str) -> Result<Vec<SourceEntry>, AptError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |what: String| AptError::Sources {
            file: file.to_owned(),
            line: n + 1,
            what,
        };
        let (kind, rest) = line
            .split_once([' ', '\t'])
            .ok_or_else(|| err("a type without a URI".into()))?;
        if !matches!(kind, "deb" | "deb-src") {
            return Err(err(format!("unknown type {kind:?} (expected deb or deb-src)")));
        }
        let mut rest = rest.trim_start();
        let mut options = Vec::new();
        if let Some(after) = rest.strip_prefix('[') {
            let (opts, tail) = after
                .split_once(']')
                .ok_or_else(|| err("unterminated [options]".into()))?;
            for opt in opts.split_ascii_whitespace() {
                if options.len() >= MAX_OPTIONS {
                    return Err(err("too many options".into()));
                }
                let (k, v) = opt
                    .split_once('=')
                    .ok_or_else(|| err(format!("option {opt:?} is not key=value")))?;
                options.push((k, v));
            }
            rest = tail;
        }
        let mut words = rest.split_ascii_whitespace();
        let uri = words.next().ok_or_else(|| err("no URI".into()))?;
        let suite = words.next().ok_or_else(|| err("no suite".into()))?;
        let components: Vec<String> = words.map(str::to_owned).collect();
        if !suite.ends_with('/') && components.is_empty() {
            return Err(err(
                "a suite without components (only flat `dir/` suites may omit them)".into(),
            ));
        }
        if kind != "deb" {
            continue;
        }
        let mut entry = SourceEntry {
            uri: normalize_uri(uri),
            suite: suite.to_owned(),
            components,
            archs: None,
            signed_by: None,
            trusted: false,
            origin: format!("{file}:{}", n + 1),
        };
        for (k, v) in options {
            let list = || {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            match k {
                "arch" => entry.archs = Some(list()),
                "signed-by" => entry.signed_by = Some(SignedBy::Keys(list())),
                "trusted" => entry.trusted = v == "yes",
                _ => {}
            }
        }
        if out.len() >= MAX_SOURCES {
            return Err(AptError::TooMany {
                file: file.to_owned(),
                limit: MAX_SOURCES,
            });
        }
        out.push(entry);
    }
    Ok(out)
}

/// Parses deb822 style (`*.sources`): one stanza may name several types, URIs and suites.
pub fn parse_deb822_sources(text: &str, file: &str) -> Result<Vec<SourceEntry>, AptError> {
    let mut out = Vec::new();
    for para in deb822::paragraphs(text) {
        let para = para.map_err(|source| AptError::Syntax {
            file: file.to_owned(),
            source,
        })?;
        let err = |what: &str| AptError::Field {
            file: file.to_owned(),
            line: para.line,
            what: what.to_owned(),
        };
        if para.get("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        let words = |name| para.get(name).map(|v| v.split_ascii_whitespace().collect::<Vec<_>>());
        let types = words("Types").ok_or_else(|| err("no Types field"))?;
        let uris = words("URIs").ok_or_else(|| err("no URIs field"))?;
        let suites = words("Suites").ok_or_else(|| err("no Suites field"))?;
        let components: Vec<String> = words("Components")
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let archs = words("Architectures").map(|a| a.into_iter().map(str::to_owned).collect());
        let signed_by = para.get("Signed-By").map(|v| {
            if v.contains("BEGIN PGP PUBLIC KEY BLOCK") {
                // Continuation lines carry the key; a lone `.` stands for an empty line.
                let key: Vec<&str> = v
                    .lines()
                    .map(|l| l.trim())
                    .map(|l| if l == "." { "" } else { l })
                    .collect();
                SignedBy::Inline(key.join("\n"))
            } else {
                SignedBy::Keys(
                    v.split([' ', ',', '\n', '\t'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
        });
        let trusted = para.get("Trusted").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        if !types.contains(&"deb") {
            continue;
        }
        for uri in &uris {
            for suite in &suites {
                if !suite.ends_with('/') && components.is_empty() {
                    return Err(err(
                        "a suite without Components (only flat `dir/` suites may omit them)",
                    ));
                }
                if out.len() >= MAX_SOURCES {
                    return Err(AptError::TooMany {
                        file: file.to_owned(),
                        limit: MAX_SOURCES,
                    });
                }
                out.push(SourceEntry {
                    uri: normalize_uri(uri),
                    suite: (*suite).to_owned(),
                    components: components.clone(),
                    archs: archs.clone(),
                    signed_by: signed_by.clone(),
                    trusted,
                    origin: format!("{file}:{}", para.line),
                });
            }
        }
    }
    Ok(out)
}

/// Whether apt reads a file of `sources.list.d/` (it ignores other names, with a notice),
/// and in which syntax: `Some(false)` one-line, `Some(true)` deb822.
pub fn sources_file_kind(name: &str) -> Option<bool> {
    let valid = |stem: &str| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if let Some(stem) = name.strip_suffix(".list") {
        return valid(stem).then_some(false);
    }
    name.strip_suffix(".sources")
        .and_then(|stem| valid(stem).then_some(true))
}

/// The file name apt gives a downloaded URI under `/var/lib/apt/lists/` (apt's
/// `URItoFileName`): scheme and credentials dropped, special characters %-quoted, `/` → `_`.
pub fn list_file_name(uri: &str) -> String {
    let without_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let without_user = match without_scheme.split_once('/') {
        Some((host, path)) => match host.rsplit_once('@') {
            Some((_, h)) => format!("{h}/{path}"),
            None => without_scheme.to_owned(),
        },
        None => without_scheme.to_owned(),
    };
    let mut out = String::with_capacity(without_user.len());
    for b in without_user.bytes() {
        if b <= 0x20 || b >= 0x7f || b"\\|{}[]<>\"^~_=!@#$%&*".contains(&b) {
            out.push_str(&format!("%{b:02x}"));
        } else if b == b'/' {
            out.push('_');
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The fields of a `Release` file that decide pinning, classification and integrity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub not_automatic: bool,
    pub but_automatic_upgrades: bool,
    pub architectures: Vec<String>,
    /// `SHA256:` entries: (hex digest, size, path relative to the release directory).
    pub sha256: Vec<(String, u64, String)>,
}

impl Release {
    pub fn parse(text: &str, file: &str) -> Result<Self, AptError> {
        let para = deb822::paragraphs(text)
            .next()
            .ok_or_else(|| AptError::Field {
                file: file.to_owned(),
                line: 1,
                what: "empty Release file".into(),
            })?
            .map_err(|source| AptError::Syntax {
                file: file.to_owned(),
                source,
            })?;
        let owned = |name| para.get(name).map(str::to_owned);
        let yes = |name| para.get(name).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let mut sha256 = Vec::new();
        for line in para.get("SHA256").unwrap_or("").lines() {
            let mut w = line.split_ascii_whitespace();
            let (Some(hash), Some(size), Some(path), None) = (w.next(), w.next(), w.next(), w.next()) else {
                continue;
            };
            let Ok(size) = size.parse::<u64>() else { continue };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if sha256.len() >= MAX_RELEASE_FILES {
                return Err(AptError::TooMany {
                    file: file.to_owned(),
                    limit: MAX_RELEASE_FILES,
                });
            }
            sha256.push((hash.to_ascii_lowercase(), size, path.to_owned()));
        }
        Ok(Self {
            origin: owned("Origin"),
            label: owned("Label"),
            suite: owned("Suite"),
            codename: owned("Codename"),
            not_automatic: yes("NotAutomatic"),
            but_automatic_upgrades: yes("ButAutomaticUpgrades"),
            architectures: para
                .get("Architectures")
                .map(|v| v.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            sha256,
        })
    }

    /// apt's default pin priority for this release: 1 for NotAutomatic, 100 with
    /// ButAutomaticUpgrades, 500 otherwise.
    pub fn default_priority(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            _ => 500,
        }
    }

    /// A security archive, as unattended-upgrades' defaults tell one: a `*-security` suite
    /// or codename, or Debian's `Debian-Security` label.
    pub fn is_security(&self) -> bool {
        let ends = |v: &Option<String>| v.as_deref().is_some_and(|s| s.ends_with("-security"));
        ends(&self.suite) || ends(&self.codename) || self.label.as_deref() == Some("Debian-Security")
    }

    /// The expected digest and size of `path` (relative to the release directory).
    pub fn sha256_of(&self, path: &str) -> Option<(&str, u64)> {
        self.sha256
            .iter()
            .find(|(_, _, p)| p == path)
            .map(|(h, s, _)| (h.as_str(), *s))
    }
}

/// One binary package version of a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub arch: String,
    pub version: DebVersion,
}

/// Parses a `Packages` index, keeping what candidate selection needs.
pub fn parse_packages(text: &str, file: &str) -> Result<Vec<IndexEntry>, AptError> {
    let mut out = Vec::new();
    for para in deb822::paragraphs(text) {
        let para = para.map_err(|source| AptError::Syntax {
            file: file.to_owned(),
            source,
        })?;
        let field = |name| {
            para.get(name).ok_or_else(|| AptError::Field {
                file: file.to_owned(),
                line: para.line,
                what: format!("no {name} field"),
            })
        };
        let name = field("Package")?;
        let version = DebVersion::parse(field("Version")?).map_err(|source| AptError::Version {
            file: file.to_owned(),
            line: para.line,
            source,
        })?;
        if out.len() >= MAX_INDEX_ENTRIES {
            return Err(AptError::TooMany {
                file: file.to_owned(),
                limit: MAX_INDEX_ENTRIES,
            });
        }
        out.push(IndexEntry {
            name: name.to_owned(),
            arch: field("Architecture")?.to_owned(),
            version,
        });
    }
    Ok(out)
}

/// A repository release the guest uses, and its indices.
#[derive(Debug, Clone)]
pub struct Repository<'a> {
    pub release: &'a Release,
    /// The suite as the sources name it, when the Release file has no Suite.
    pub configured_suite: &'a str,
    pub entries: &'a [IndexEntry],
}

impl Repository<'_> {
    fn archive(&self) -> &str {
        self.release.suite.as_deref().unwrap_or(self.configured_suite)
    }
}

/// An installed package with a newer candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    pub name: String,
    /// The candidate's architecture, as `apt list` prints it.
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    /// The archives (Release `Suite`) offering the candidate.
    pub suites: Vec<String>,
    pub security: bool,
}

/// What `apt list --upgradable` lists: each installed package whose candidate (apt's
/// policy: the highest pin priority, then the highest version, never below the installed
/// version) is newer than the installed version. `/etc/apt/preferences` pins are not
/// applied; callers report when the guest has any.
pub fn upgradable(installed: &[InstalledPackage], native: &str, repos: &[Repository<'_>]) -> Vec<Upgrade> {
    let mut by_name: HashMap<&str, Vec<(&IndexEntry, usize)>> = HashMap::new();
    for (r, repo) in repos.iter().enumerate() {
        for e in repo.entries {
            by_name.entry(e.name.as_str()).or_default().push((e, r));
        }
    }
    // apt files `all` packages under the native architecture.
    let effective = |arch: &str| {
        if arch == "all" {
            native.to_owned()
        } else {
            arch.to_owned()
        }
    };
    let mut out = Vec::new();
    for pkg in installed {
        let Some(offers) = by_name.get(pkg.name.as_str()) else {
            continue;
        };
        let arch = effective(&pkg.arch);
        // Distinct versions with their repositories; the installed one also comes from the
        // status file at priority 100.
        // Keyed by version (dpkg's equality), so an index listing one name in many versions
        // costs n log n, not n².
        let mut distinct: BTreeMap<&DebVersion, (&str, Vec<usize>)> = BTreeMap::new();
        distinct.insert(&pkg.version, (pkg.arch.as_str(), Vec::new()));
        for (e, r) in offers.iter().filter(|(e, _)| effective(&e.arch) == arch) {
            distinct
                .entry(&e.version)
                .or_insert_with(|| (e.arch.as_str(), Vec::new()))
                .1
                .push(*r);
        }
        let versions: Vec<(&DebVersion, &str, Vec<usize>)> =
            distinct.into_iter().rev().map(|(v, (a, rs))| (v, a, rs)).collect();
        let mut best: Option<(i32, usize)> = None;
        for (i, (v, _, rs)) in versions.iter().enumerate() {
            let mut prio = rs
                .iter()
                .map(|&r| repos[r].release.default_priority())
                .max()
                .unwrap_or(0);
            let is_installed = **v == pkg.version;
            if is_installed {
                prio = prio.max(100);
            }
            if best.is_none_or(|(p, _)| prio > p) {
                best = Some((prio, i));
            }
            if is_installed && best.is_some_and(|(p, _)| p < 1000) {
                break;
            }
        }
        let Some((_, i)) = best else { continue };
        let (candidate, cand_arch, rs) = &versions[i];
        if **candidate <= pkg.version {
            continue;
        }
        let mut suites: Vec<String> = rs.iter().map(|&r| repos[r].archive().to_owned()).collect();
        suites.dedup();
        out.push(Upgrade {
            name: pkg.name.clone(),
            arch: (*cand_arch).to_owned(),
            installed: pkg.version.to_string(),
            candidate: candidate.to_string(),
            suites,
            security: rs.iter().any(|&r| repos[r].release.is_security()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpkg::parse_status;

    #[test]
    fn one_line_sources() {
        let text = "# comment\ndeb [ arch=amd64,i386 signed-by=/k.gpg ] http://h/debian bookworm main contrib # x\n\
                    deb-src http://h/debian bookworm main\ndeb http://h/flat ./\n";
        let s = parse_sources_list(text, "sources.list").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uri, "http://h/debian/");
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(
            s[0].archs.as_deref(),
            Some(&["amd64".to_owned(), "i386".to_owned()][..])
        );
        assert_eq!(s[0].signed_by, Some(SignedBy::Keys(vec!["/k.gpg".into()])));
        assert_eq!(s[0].origin, "sources.list:2");
        assert_eq!(
            s[0].release_uri("InRelease"),
            "http://h/debian/dists/bookworm/InRelease"
        );
        assert_eq!(s[1].release_uri("InRelease"), "http://h/flat/InRelease");
        assert!(parse_sources_list("deb http://h bookworm\n", "f").is_err());
        assert!(parse_sources_list("deb [arch=amd64 http://h b main\n", "f").is_err());
    }

    #[test]
    fn deb822_sources() {
        let text = "Types: deb deb-src\nURIs: http://a/debian http://b/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://c/\nSuites: x\nComponents: main\nEnabled: no\n\n\
                    Types: deb\nURIs: http://d/\nSuites: y\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n";
        let s = parse_deb822_sources(text, "debian.sources").unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            (s[1].uri.as_str(), s[1].suite.as_str()),
            ("http://a/debian/", "bookworm-updates")
        );
        assert_eq!(s[4].uri, "http://d/");
        let SignedBy::Inline(key) = s[4].signed_by.as_ref().unwrap() else {
            panic!()
        };
        assert_eq!(
            key,
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----"
        );
    }

    #[test]
    fn list_file_names_like_apt() {
        assert_eq!(
            list_file_name("http://deb.debian.org/debian/dists/bookworm/InRelease"),
            "deb.debian.org_debian_dists_bookworm_InRelease"
        );
        assert_eq!(
            list_file_name("http://user:pw@127.0.0.1:8765/a_b~c/Packages"),
            "127.0.0.1:8765_a%5fb%7ec_Packages"
        );
        assert_eq!(sources_file_kind("debian.sources"), Some(true));
        assert_eq!(sources_file_kind("x.list"), Some(false));
        assert_eq!(sources_file_kind("x.list.disabled"), None);
    }

    fn release(suite: &str, extra: &str) -> Release {
        Release::parse(&format!("Suite: {suite}\n{extra}"), "Release").unwrap()
    }

    fn entries(text: &str) -> Vec<IndexEntry> {
        parse_packages(text, "Packages").unwrap()
    }

    #[test]
    fn candidates_follow_priority_then_version() {
        let installed = parse_status(
            "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21\n\n\
             Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n\
             Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n\n\
             Package: c\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.0\n",
        )
        .unwrap();
        let (main, sec, exp) = (
            release("bookworm", ""),
            release("bookworm-security", "Label: Debian-Security\n"),
            release("experimental", "NotAutomatic: yes\n"),
        );
        let main_e =
            entries("Package: a\nArchitecture: amd64\nVersion: 1.0\n\nPackage: c\nArchitecture: amd64\nVersion: 1.5\n");
        let sec_e = entries(
            "Package: a\nArchitecture: amd64\nVersion: 1.0+deb12u1\n\nPackage: a\nArchitecture: i386\nVersion: 9\n\n\
             Package: b\nArchitecture: all\nVersion: 1.1\n",
        );
        let exp_e = entries("Package: a\nArchitecture: amd64\nVersion: 3.0\n");
        let repos = [
            Repository {
                release: &main,
                configured_suite: "bookworm",
                entries: &main_e,
            },
            Repository {
                release: &sec,
                configured_suite: "bookworm-security",
                entries: &sec_e,
            },
            Repository {
                release: &exp,
                configured_suite: "experimental",
                entries: &exp_e,
            },
        ];
        let up = upgradable(&installed, "amd64", &repos);
        let names: Vec<_> = up
            .iter()
            .map(|u| (u.name.as_str(), u.candidate.as_str(), u.security))
            .collect();
        // a: experimental (priority 1) loses to security's 1.0+deb12u1; i386 is another package.
        // c: the archive's 1.5 is older than what is installed: no downgrade.
        assert_eq!(names, [("a", "1.0+deb12u1", true), ("b", "1.1", true)]);
        assert_eq!(up[0].suites, ["bookworm-security"]);
    }
}
