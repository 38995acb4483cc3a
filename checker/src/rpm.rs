//! rpm guests: installed packages from `rpmdb.sqlite`, the enabled repositories of
//! `/etc/yum.repos.d/*.repo` with dnf's variables substituted, and their rpm-md metadata —
//! dnf's cache in the guest (`/var/cache/dnf/<id>-<hash>/repodata/`), a `--repo-metadata`
//! directory (`DIR/<id>/repodata/`), or fetched from the first base URL with `--refresh` —
//! compared as `dnf check-update` does ([`rpmmd::upgradable`]).

use std::collections::HashMap;
use std::sync::Arc;

use packages::rpmmd::{self, Advisory, Available, RepoIndex, Repomd};
use packages::{rpmdb, yum};
use sha2::{Digest, Sha512};

use crate::indices::{MAX_INDEX_BYTES, sha256_hex};
use crate::report::{Finding, Priority, RepoStatus, Report};
use crate::tree::GuestTree;
use crate::{CheckError, Checker, IndexSource, MAX_CONFIG_BYTES, refresh};

const MAX_RPMDB_BYTES: u64 = 2 << 30;
/// Where rpm ≥ 4.16 keeps its SQLite database (Fedora ≥ 36 under /usr).
pub const RPMDB_PATHS: [&str; 2] = ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];
const MAX_VARS: usize = 256;
const MAX_KEY_BYTES: u64 = 1 << 20;

/// One repository's metadata.
struct Metadata {
    packages: Arc<Vec<Available>>,
    advisories: Option<Arc<Vec<Advisory>>>,
}

impl Checker {
    pub(crate) fn check_rpm(
        &mut self,
        tree: &GuestTree,
        report: &mut Report,
    ) -> Result<Vec<rpmdb::RpmPackage>, CheckError> {
        let installed = read_rpmdb(tree)?;
        report.package_manager = if report.package_manager.is_empty() {
            "rpm".into()
        } else {
            format!("{}+rpm", report.package_manager)
        };
        report.installed += installed.len();
        let vars = guest_vars(tree, &installed, &mut report.warnings);
        let dpkg_upgrades = std::mem::take(&mut report.upgrades);
        let basearch = vars.get("basearch").cloned().unwrap_or_default();
        let mut gathered = Vec::new();
        for file in tree
            .list("/etc/yum.repos.d")
            .into_iter()
            .filter(|n| n.ends_with(".repo"))
        {
            let path = format!("/etc/yum.repos.d/{file}");
            let text = String::from_utf8_lossy(&tree.read(&path, MAX_CONFIG_BYTES)?).into_owned();
            let repos = yum::parse_repo_file(&text, &path).map_err(|e| CheckError::guest(&path, e.to_string()))?;
            for mut repo in repos.into_iter().filter(|r| r.enabled) {
                for url in repo
                    .baseurls
                    .iter_mut()
                    .chain(&mut repo.mirrorlist)
                    .chain(&mut repo.metalink)
                {
                    *url = substitute(url, &vars);
                }
                repo.name = repo.name.map(|n| substitute(&n, &vars));
                let mut status = RepoStatus {
                    configured_at: repo.origin.clone(),
                    uri: repo
                        .baseurls
                        .first()
                        .or(repo.metalink.as_ref())
                        .or(repo.mirrorlist.as_ref())
                        .cloned()
                        .unwrap_or_default(),
                    suite: repo.id.clone(),
                    from: String::new(),
                    signature: String::new(),
                    indices: 0,
                    versions: 0,
                    error: None,
                };
                match self.rpm_metadata(tree, &repo, &mut status) {
                    Ok(md) => {
                        status.indices = 1 + usize::from(md.advisories.is_some());
                        status.versions = md.packages.len();
                        gathered.push((repo, md));
                    }
                    Err(e) => {
                        report.warnings.push(format!("repository {}: {e}", repo.id));
                        status.error = Some(e.to_string());
                    }
                }
                report.repositories.push(status);
            }
        }
        let indices: Vec<RepoIndex<'_>> = gathered
            .iter()
            .map(|(repo, md)| RepoIndex {
                id: &repo.id,
                name: repo.name.as_deref().unwrap_or(""),
                packages: &md.packages,
                advisories: md.advisories.as_deref().map(Vec::as_slice),
            })
            .collect();
        if gathered.iter().any(|(_, md)| md.advisories.is_none()) {
            report.warnings.push(
                "repositories without updateinfo: their updates are `security` only when the repository id or name says \"security\" (an approximation)"
                    .into(),
            );
        }
        report.upgrades = dpkg_upgrades;
        report.upgrades.extend(
            rpmmd::upgradable(&installed, &basearch, &indices)
                .into_iter()
                .map(|u| Finding {
                    priority: Priority::of(u.security),
                    name: u.name,
                    arch: u.arch,
                    installed: u.installed,
                    candidate: u.candidate,
                    suites: u.repos,
                    advisories: u.advisories,
                }),
        );
        Ok(installed)
    }

    /// The primary (and updateinfo, when published) of one repository, checked against the
    /// checksums and sizes its repomd.xml gives.
    fn rpm_metadata(
        &mut self,
        tree: &GuestTree,
        repo: &yum::YumRepo,
        status: &mut RepoStatus,
    ) -> Result<Metadata, CheckError> {
        let (base, repomd_raw) = match &self.source {
            IndexSource::Refresh => {
                status.from = "refresh".into();
                self.refresh_repomd(tree, repo, status)?
            }
            IndexSource::Dir(dir) => {
                status.from = dir.display().to_string();
                status.signature = "not checked here".into();
                let base = Base::Dom0(format!("{}/{}/", dir.display(), repo.id));
                let raw = self.read(tree, &base, "repodata/repomd.xml", rpmmd::MAX_REPOMD_BYTES)?;
                (base, raw)
            }
            IndexSource::GuestLists => {
                status.signature = "not checked here (dnf checked what it cached)".into();
                let dir = format!("/var/cache/dnf/{}-{}/", repo.id, cache_hash(repo));
                status.from = format!("guest cache {dir}");
                let base = Base::Guest(dir);
                let raw = self.read(tree, &base, "repodata/repomd.xml", rpmmd::MAX_REPOMD_BYTES)?;
                (base, raw)
            }
        };
        let repomd_name = base.name("repodata/repomd.xml");
        let repomd_raw = repomd_raw.ok_or_else(|| {
            CheckError::index(
                &repomd_name,
                match &base {
                    Base::Guest(_) => "dnf has no metadata of this repository cached; check with --refresh",
                    _ => "no repomd.xml there",
                },
            )
        })?;
        let repomd =
            Repomd::parse(&repomd_raw, &repomd_name).map_err(|e| CheckError::index(&repomd_name, e.to_string()))?;
        let primary = repomd
            .get("primary")
            .ok_or_else(|| CheckError::index(&repomd_name, "lists no primary metadata"))?;
        let raw = self.verified(tree, &base, primary)?;
        let packages = self.cache.primary(&raw, &base.name(&primary.href))?;
        let advisories = match repomd.get("updateinfo") {
            Some(info) => {
                let raw = self.verified(tree, &base, info)?;
                Some(self.cache.updateinfo(&raw, &base.name(&info.href))?)
            }
            None => None,
        };
        Ok(Metadata { packages, advisories })
    }

    /// A file repomd.xml lists, checked against its size and checksum.
    fn verified(&mut self, tree: &GuestTree, base: &Base, data: &rpmmd::RepomdData) -> Result<Vec<u8>, CheckError> {
        let name = base.name(&data.href);
        let raw = self
            .read(tree, base, &data.href, MAX_INDEX_BYTES)?
            .ok_or_else(|| CheckError::index(&name, format!("listed in repomd.xml as {} but absent", data.kind)))?;
        if data.size.is_some_and(|s| s != raw.len() as u64) {
            return Err(CheckError::index(&name, "size differs from repomd.xml"));
        }
        let digest = match data.checksum.as_ref().map(|(a, h)| (a.as_str(), h)) {
            Some(("sha256", want)) => (sha256_hex(&raw), want),
            Some(("sha512", want)) => (hex::encode(Sha512::digest(&raw)), want),
            Some((other, _)) => {
                return Err(CheckError::index(
                    &name,
                    format!("checksum type {other} not supported (sha256, sha512 are)"),
                ));
            }
            None => return Err(CheckError::index(&name, "repomd.xml gives no checksum for it")),
        };
        if &digest.0 != digest.1 {
            return Err(CheckError::index(&name, "checksum differs from repomd.xml"));
        }
        Ok(raw)
    }

    /// `rel` under `base`; `None` when it does not exist.
    fn read(&mut self, tree: &GuestTree, base: &Base, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, CheckError> {
        Ok(match base {
            Base::Url(url) => {
                let url = format!("{url}{rel}");
                if let Some(hit) = self.downloads.get(&url) {
                    return Ok(Some(hit.to_vec()));
                }
                let got = refresh::fetch(&url, limit)?;
                if let Some(bytes) = &got {
                    self.downloads.insert(url, Arc::new(bytes.clone()));
                }
                got
            }
            Base::Dom0(dir) => {
                use std::io::Read;
                let path = format!("{dir}{rel}");
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        let mut bytes = Vec::new();
                        f.take(limit + 1)
                            .read_to_end(&mut bytes)
                            .map_err(|e| CheckError::index(&path, e.to_string()))?;
                        if bytes.len() as u64 > limit {
                            return Err(CheckError::index(&path, format!("larger than {limit} bytes")));
                        }
                        Some(bytes)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(CheckError::index(&path, e.to_string())),
                }
            }
            Base::Guest(dir) => {
                let path = format!("{dir}{rel}");
                if tree.exists(&path) {
                    Some(tree.read(&path, limit)?)
                } else {
                    None
                }
            }
        })
    }

    /// repomd.xml from the first base URL that serves it (as dnf tries them in order), its
    /// signature checked when the repository sets repo_gpgcheck.
    fn refresh_repomd(
        &mut self,
        tree: &GuestTree,
        repo: &yum::YumRepo,
        status: &mut RepoStatus,
    ) -> Result<(Base, Option<Vec<u8>>), CheckError> {
        if repo.baseurls.is_empty() {
            return Err(CheckError::index(
                &repo.id,
                "only mirrorlist/metalink configured: --refresh fetches from baseurl only; give the repository a baseurl",
            ));
        }
        let mut last = None;
        for url in &repo.baseurls {
            let base = Base::Url(if url.ends_with('/') {
                url.clone()
            } else {
                format!("{url}/")
            });
            match self.read(tree, &base, "repodata/repomd.xml", rpmmd::MAX_REPOMD_BYTES) {
                Ok(Some(raw)) => {
                    status.uri = url.clone();
                    status.signature = self.repomd_signature(tree, repo, &base, &raw)?;
                    return Ok((base, Some(raw)));
                }
                Ok(None) => last = Some(CheckError::index(base.name("repodata/repomd.xml"), "not found (404)")),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CheckError::index(&repo.id, "no base URL")))
    }

    fn repomd_signature(
        &mut self,
        tree: &GuestTree,
        repo: &yum::YumRepo,
        base: &Base,
        repomd: &[u8],
    ) -> Result<String, CheckError> {
        if !repo.repo_gpgcheck {
            return Ok("not checked (repo_gpgcheck=0: dnf does not check it either)".into());
        }
        let name = base.name("repodata/repomd.xml.asc");
        let signature = self
            .read(tree, base, "repodata/repomd.xml.asc", MAX_KEY_BYTES)?
            .ok_or_else(|| CheckError::Signature {
                url: name.clone(),
                what: "repo_gpgcheck=1 but the repository has no repomd.xml.asc".into(),
            })?;
        // Keys the guest holds (file:// gpgkey URLs); keys named by http URL are not fetched.
        let keyrings: Vec<(String, Vec<u8>)> = repo
            .gpgkeys
            .iter()
            .filter_map(|k| k.strip_prefix("file://"))
            .filter_map(|p| Some((p.to_owned(), refresh::dearmor_or_raw(tree.read(p, MAX_KEY_BYTES).ok()?))))
            .collect();
        let release = refresh::SignedRelease {
            signed: repomd.to_vec(),
            detached_signature: Some(signature),
            url: name,
        };
        Ok(format!("gpgv: {}", refresh::verify(&release, &keyrings, &[])?))
    }
}

/// Where a repository's files are: `href`s of repomd.xml are relative to it.
enum Base {
    Url(String),
    Dom0(String),
    /// A directory in the guest tree (dnf's cache).
    Guest(String),
}

impl Base {
    fn name(&self, rel: &str) -> String {
        match self {
            Self::Url(b) | Self::Dom0(b) | Self::Guest(b) => format!("{b}{rel}"),
        }
    }
}

/// dnf's cache directory suffix (libdnf `Repo::Impl::getHash`): the first 16 hex digits of
/// the SHA-256 of the metalink, else the mirrorlist, else the first base URL, else the id.
fn cache_hash(repo: &yum::YumRepo) -> String {
    let key = repo
        .metalink
        .as_deref()
        .or(repo.mirrorlist.as_deref())
        .or(repo.baseurls.first().map(String::as_str))
        .unwrap_or(&repo.id);
    sha256_hex(key.as_bytes())[..16].to_owned()
}

/// The installed packages, from a private copy of the guest's `rpmdb.sqlite` (SQLite opens
/// files by path; the guest's is read through RESOLVE_IN_ROOT).
fn read_rpmdb(tree: &GuestTree) -> Result<Vec<rpmdb::RpmPackage>, CheckError> {
    let sqlite = RPMDB_PATHS.into_iter().find(|p| tree.exists(p));
    let Some(db) = sqlite else {
        let legacy = ["/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db"]
            .into_iter()
            .find(|p| tree.exists(p));
        return Err(match legacy {
            Some(p) => CheckError::guest(
                p,
                "rpm database in BerkeleyDB or NDB format: unsupported (no pure-Rust reader); rpm ≥ 4.16 guests use rpmdb.sqlite",
            ),
            None => CheckError::guest(
                "/",
                "neither /var/lib/dpkg/status nor an rpm database: not a dpkg or rpm system, or its /var is on another disk",
            ),
        });
    };
    let copy =
        tempfile::NamedTempFile::new().map_err(|e| CheckError::guest(db, format!("creating a scratch copy: {e}")))?;
    std::fs::write(copy.path(), tree.read(db, MAX_RPMDB_BYTES)?)
        .map_err(|e| CheckError::guest(db, format!("copying to {}: {e}", copy.path().display())))?;
    Ok(rpmdb::read_sqlite(copy.path(), db, rpmdb::parse_header)?)
}

/// rpm arch → dnf basearch.
fn basearch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "amd64" | "ia32e" => "x86_64",
        "i386" | "i486" | "i586" | "i686" | "athlon" => "i386",
        "aarch64" => "aarch64",
        "armv7hl" | "armv7hnl" => "armhfp",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// dnf's substitution variables for this guest: `releasever` (its `/etc/os-release`
/// VERSION_ID; only the major version on RHEL rebuilds, whose release package provides
/// that), `basearch` and `arch` (the most common arch among installed packages: dom0 cannot
/// ask the guest's CPU), and whatever `/etc/dnf/vars/` (or yum's `/etc/yum/vars/`) defines,
/// which wins.
fn guest_vars(
    tree: &GuestTree,
    installed: &[rpmdb::RpmPackage],
    warnings: &mut Vec<String>,
) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    if let Some(os) = &tree.os {
        if let Some(v) = &os.version_id {
            let rhel_like = matches!(
                os.id.as_deref(),
                Some("rhel" | "centos" | "rocky" | "almalinux" | "ol" | "eurolinux" | "circle" | "navy")
            );
            let v = if rhel_like { v.split('.').next().unwrap_or(v) } else { v };
            vars.insert("releasever".to_owned(), v.to_owned());
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in installed.iter().filter(|p| basearch(&p.arch).is_some()) {
        *counts.entry(p.arch.as_str()).or_default() += 1;
    }
    if let Some((arch, _)) = counts.into_iter().max_by_key(|&(a, n)| (n, a)) {
        vars.insert("arch".to_owned(), arch.to_owned());
        vars.insert("basearch".to_owned(), basearch(arch).unwrap_or(arch).to_owned());
    }
    for dir in ["/etc/yum/vars", "/etc/dnf/vars"] {
        for name in tree.list(dir).into_iter().take(MAX_VARS) {
            if let Ok(bytes) = tree.read(&format!("{dir}/{name}"), 4096) {
                let text = String::from_utf8_lossy(&bytes);
                vars.insert(name, text.lines().next().unwrap_or("").trim().to_owned());
            }
        }
    }
    for key in ["releasever", "basearch"] {
        if !vars.contains_key(key) {
            warnings.push(format!(
                "${key} unknown for this guest (no VERSION_ID in /etc/os-release, no arch-specific package installed): URLs using it do not resolve"
            ));
        }
    }
    vars
}

/// `$name` and `${name}` replaced by dnf's variables; unknown ones are kept as written.
fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match vars.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables() {
        let vars = HashMap::from([
            ("releasever".to_owned(), "9".to_owned()),
            ("basearch".to_owned(), "x86_64".to_owned()),
        ]);
        assert_eq!(
            substitute("http://m/$releasever/os/${basearch}/$unknown/$", &vars),
            "http://m/9/os/x86_64/$unknown/$"
        );
        assert_eq!(substitute("${releasever", &vars), "${releasever");
    }
}
