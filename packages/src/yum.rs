//! yum/dnf repository definitions (`/etc/yum.repos.d/*.repo`): INI sections, one repository
//! each. Variables (`$releasever`, `$basearch`) are kept as written.

use serde::Serialize;

const MAX_REPOS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {what}")]
pub struct RepoError {
    pub file: String,
    pub line: usize,
    pub what: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct YumRepo {
    pub id: String,
    pub name: Option<String>,
    pub baseurls: Vec<String>,
    pub mirrorlist: Option<String>,
    pub metalink: Option<String>,
    pub enabled: bool,
    pub gpgcheck: bool,
    /// Whether dnf checks the signature of the repository metadata (`repomd.xml.asc`).
    pub repo_gpgcheck: bool,
    pub gpgkeys: Vec<String>,
    /// Where it was configured (`file:line`).
    pub origin: String,
}

/// dnf's boolean spellings.
fn boolean(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "yes" | "true" | "on")
}

pub fn parse_repo_file(text: &str, file: &str) -> Result<Vec<YumRepo>, RepoError> {
    let mut out: Vec<YumRepo> = Vec::new();
    // The key whose value continues on indented lines (baseurl and gpgkey lists).
    let mut last_key: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let err = |what| RepoError {
            file: file.to_owned(),
            line: n + 1,
            what,
        };
        let line = raw.trim_end();
        if line.trim_start().starts_with(['#', ';']) || line.trim().is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let id = section
                .strip_suffix(']')
                .ok_or_else(|| err("unterminated [section]"))?
                .trim();
            if id.is_empty() {
                return Err(err("empty repository id"));
            }
            if out.len() >= MAX_REPOS {
                return Err(err("more repositories than any real system has"));
            }
            out.push(YumRepo {
                id: id.to_owned(),
                enabled: true,
                origin: format!("{file}:{}", n + 1),
                ..YumRepo::default()
            });
            last_key = None;
            continue;
        }
        let Some(repo) = out.last_mut() else {
            return Err(err("setting outside any [repository] section"));
        };
        let list = |v: &str| {
            v.split([' ', ',', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        if line.starts_with([' ', '\t']) {
            match last_key.as_deref() {
                Some("baseurl") => repo.baseurls.extend(list(line)),
                Some("gpgkey") => repo.gpgkeys.extend(list(line)),
                _ => return Err(err("continuation line after a single-valued setting")),
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("line is neither [id] nor key=value"))?;
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        match key.as_str() {
            "name" => repo.name = Some(value.to_owned()),
            "baseurl" => repo.baseurls.extend(list(value)),
            "mirrorlist" => repo.mirrorlist = Some(value.to_owned()),
            "metalink" => repo.metalink = Some(value.to_owned()),
            "enabled" => repo.enabled = boolean(value),
            "gpgcheck" => repo.gpgcheck = boolean(value),
            "repo_gpgcheck" => repo.repo_gpgcheck = boolean(value),
            "gpgkey" => repo.gpgkeys.extend(list(value)),
            _ => {}
        }
        last_key = Some(key);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_file() {
        let text = "[baseos]\nname=Rocky $releasever - BaseOS\nmirrorlist=https://m/?arch=$basearch\n\
                    gpgcheck=1\nrepo_gpgcheck=1\nenabled=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9\n\n\
                    # off\n[extras]\nbaseurl=http://a/\n  http://b/\nenabled=0\n";
        let repos = parse_repo_file(text, "rocky.repo").unwrap();
        assert_eq!(repos.len(), 2);
        assert!(repos[0].gpgcheck && repos[0].repo_gpgcheck && repos[0].enabled);
        assert!(!repos[1].repo_gpgcheck);
        assert_eq!(repos[0].gpgkeys, ["file:///etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9"]);
        assert_eq!(repos[1].baseurls, ["http://a/", "http://b/"]);
        assert!(!repos[1].enabled);
        assert_eq!(repos[1].origin, "rocky.repo:10");
        assert!(parse_repo_file("name=x\n", "f").is_err());
    }
}
