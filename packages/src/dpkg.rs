//! dpkg's database: `/var/lib/dpkg/status` (installed packages) and `info/<pkg>.list` (the
//! files each package owns).

use serde::Serialize;

use crate::deb822::{self, Deb822Error};
use crate::debversion::{DebVersion, VersionError};

/// More packages than any real system has installed (a full desktop has ~5,000).
pub const MAX_PACKAGES: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("dpkg status: {0}")]
    Syntax(#[from] Deb822Error),
    #[error("dpkg status, paragraph at line {line} (package {package}): {source}")]
    Version {
        line: usize,
        package: String,
        source: VersionError,
    },
    #[error("dpkg status, paragraph at line {line}: {what}")]
    Field { line: usize, what: &'static str },
    #[error("dpkg status lists more than {MAX_PACKAGES} packages")]
    TooMany,
}

/// A package dpkg has (at least partly) installed: one with a current version.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledPackage {
    pub name: String,
    pub arch: String,
    #[serde(serialize_with = "crate::debversion::serialize")]
    pub version: DebVersion,
    /// The third word of `Status:` (`installed`, `half-configured`, ...).
    pub state: String,
    /// `hold` when the administrator holds it.
    pub want: String,
    /// The source package when it differs from the binary's name or version: dpkg's
    /// `Source:` field, `name` or `name (version)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Parses a dpkg `status` file and returns the packages that have a current version, i.e.
/// whose state is neither `not-installed` nor `config-files` (apt's `CurrentVer`).
pub fn parse_status(text: &str) -> Result<Vec<InstalledPackage>, StatusError> {
    let mut out = Vec::new();
    for para in deb822::paragraphs(text) {
        let para = para?;
        let field = |what| StatusError::Field { line: para.line, what };
        let status = para.get("Status").ok_or_else(|| field("no Status field"))?;
        let mut words = status.split_ascii_whitespace();
        let (Some(want), Some(_flag), Some(state), None) = (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(field("Status is not `want flag state`"));
        };
        if matches!(state, "not-installed" | "config-files") {
            continue;
        }
        let name = para.get("Package").ok_or_else(|| field("no Package field"))?;
        let version = para
            .get("Version")
            .ok_or_else(|| field("installed package without Version"))?;
        let version = DebVersion::parse(version).map_err(|source| StatusError::Version {
            line: para.line,
            package: name.to_owned(),
            source,
        })?;
        if out.len() >= MAX_PACKAGES {
            return Err(StatusError::TooMany);
        }
        out.push(InstalledPackage {
            name: name.to_owned(),
            arch: para.get("Architecture").unwrap_or("all").to_owned(),
            version,
            state: state.to_owned(),
            want: want.to_owned(),
            source: para.get("Source").map(str::to_owned),
        });
    }
    Ok(out)
}

/// The native architecture: dpkg's own (the package `dpkg` is always native).
pub fn native_arch(installed: &[InstalledPackage]) -> Option<&str> {
    installed.iter().find(|p| p.name == "dpkg").map(|p| p.arch.as_str())
}

/// The `info/*.list` names dpkg uses for a package: `<name>:<arch>.list` for Multi-Arch:
/// same packages, `<name>.list` otherwise; callers try both.
pub fn list_file_names(name: &str, arch: &str) -> [String; 2] {
    [format!("{name}:{arch}.list"), format!("{name}.list")]
}

/// The paths of a `.list` file, at most `limit` of them; blank lines skipped.
pub fn parse_file_list(text: &str, limit: usize) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with('/')).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status() {
        let text = "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2-3\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                    Package: b\nStatus: hold ok half-configured\nArchitecture: all\nVersion: 0.1\nSource: bsrc (0.0.1)\n";
        let pkgs = parse_status(text).unwrap();
        assert_eq!(pkgs.len(), 2);
        assert_eq!(
            (pkgs[0].name.as_str(), pkgs[0].version.to_string().as_str()),
            ("a", "1:2-3")
        );
        assert_eq!(
            (pkgs[1].want.as_str(), pkgs[1].state.as_str()),
            ("hold", "half-configured")
        );
        assert_eq!(
            (pkgs[0].source.as_deref(), pkgs[1].source.as_deref()),
            (None, Some("bsrc (0.0.1)"))
        );
        let e = parse_status("Package: c\nStatus: install ok installed\nVersion: :1\n").unwrap_err();
        assert!(e.to_string().contains("package c"), "{e}");
    }
}
