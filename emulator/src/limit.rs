//! Resource limits as an operator writes them: `none`, a count, or a size with a binary suffix
//! (`512M`, `4G`, `64k`, `1GiB`).

use std::str::FromStr;

/// A size in bytes, or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteLimit(pub Option<u64>);

/// A count (processes, seconds), or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountLimit(pub Option<u64>);

impl FromStr for ByteLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "none" {
            return Ok(ByteLimit(None));
        }
        let expected = || format!("{text}: expected a size like 512M or 4G, or `none`");
        let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => return Err(expected()),
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        n.checked_shl(shift)
            .filter(|v| v >> shift == n)
            .map(|v| ByteLimit(Some(v)))
            .ok_or_else(|| format!("{text}: too large"))
    }
}

impl FromStr for CountLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "none" {
            return Ok(CountLimit(None));
        }
        text.parse()
            .map(|n| CountLimit(Some(n)))
            .map_err(|_| format!("{text}: expected a number or `none`"))
    }
}

/// Written so that parsing gives the same limit back (records keep limits this way).
impl std::fmt::Display for ByteLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(bytes) => write!(f, "{bytes}"),
            None => f.write_str("none"),
        }
    }
}

impl std::fmt::Display for CountLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let size = |t: &str| t.parse::<ByteLimit>().map(|l| l.0);
        assert_eq!(size("none"), Ok(None));
        assert_eq!(size("4096"), Ok(Some(4096)));
        for text in ["none", "4G", "512M", "1"] {
            let limit: ByteLimit = text.parse().unwrap();
            assert_eq!(limit.to_string().parse::<ByteLimit>(), Ok(limit), "{text}");
        }
        assert_eq!(size("64k"), Ok(Some(64 << 10)));
        assert_eq!(size("512M"), Ok(Some(512 << 20)));
        assert_eq!(size("4G"), Ok(Some(4 << 30)));
        assert_eq!(size("1GiB"), Ok(Some(1 << 30)));
        assert_eq!(size("2T"), Ok(Some(2 << 40)));
        assert!(size("17179869184T").unwrap_err().contains("too large"));
        for bad in ["", "G", "4X", "-1", "4.5G", "4 G"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts() {
        let count = |t: &str| t.parse::<CountLimit>().map(|l| l.0);
        assert_eq!(count("none"), Ok(None));
        assert_eq!(count("4096"), Ok(Some(4096)));
        assert!(count("4k").is_err() && count("").is_err() && count("-3").is_err());
    }
}
