//! `dormouse check`: which packages of a dormant VM are outdated, and how urgently, read
//! from its disk without booting it (and, given its memory image, which running processes
//! use them).
//!
//! The guest's own package state decides: dpkg's status database, apt's sources and the
//! lists apt last downloaded (or fresh ones with `--refresh`), compared the way
//! `apt list --upgradable` compares them. rpm guests: `rpmdb.sqlite`, the `.repo` files and
//! the repositories' rpm-md metadata (dnf's cache, or fresh), compared as `dnf check-update`
//! does (see [`rpm`]).

pub mod batch;
pub mod db;
pub mod indices;
pub mod processes;
pub mod refresh;
pub mod report;
pub mod rpm;
pub mod sbom;
pub mod tree;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use packages::apt::{self, Release, Repository, SourceEntry};
use packages::{deb822, dpkg, rpmdb};

use crate::indices::{Compression, IndexCache, sha256_hex};
use crate::report::{Counts, Finding, Priority, RepoStatus, Report};
use crate::tree::{GuestTree, TreeSource};

const MAX_STATUS_BYTES: u64 = 512 << 20;
const MAX_CONFIG_BYTES: u64 = 16 << 20;
const MAX_RELEASE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Disk(#[from] emulator::disk::DiskError),
    #[error(transparent)]
    Tree(#[from] emulator::guest_tree::GuestTreeError),
    #[error("{path}: {what}")]
    Guest { path: String, what: String },
    #[error(transparent)]
    Apt(#[from] apt::AptError),
    #[error("{0}")]
    Status(#[from] dpkg::StatusError),
    #[error("{0}")]
    RpmDb(#[from] rpmdb::RpmDbError),
    #[error("index {name}: {what}")]
    Index { name: String, what: String },
    #[error("fetching {url}: {what}")]
    Fetch { url: String, what: String },
    #[error("release signature of {url}: {what}")]
    Signature { url: String, what: String },
    #[error("results database {path}: {what}")]
    Db { path: String, what: String },
    #[error("{file}:{line}: {what}")]
    Batch { file: String, line: usize, what: String },
    #[error("memory image {path}: {what}")]
    Snapshot { path: String, what: String },
}

impl CheckError {
    pub fn guest(path: impl std::fmt::Display, what: impl Into<String>) -> Self {
        Self::Guest {
            path: path.to_string(),
            what: what.into(),
        }
    }

    pub fn index(name: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Index {
            name: name.into(),
            what: what.into(),
        }
    }
}

/// One VM to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: Option<String>,
    /// Its memory image (xl save, core), for the processes that need a restart.
    pub image: Option<PathBuf>,
    pub tree: TreeSource,
}

impl Target {
    pub fn vm_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.image.as_ref().map(|p| p.display().to_string()))
            .unwrap_or_else(|| self.tree.describe())
    }
}

/// Where repository indices come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexSource {
    /// The lists apt last downloaded in the guest (`/var/lib/apt/lists`).
    GuestLists,
    /// A dom0 directory laid out like `/var/lib/apt/lists`.
    Dir(PathBuf),
    /// Fetched now from the repositories' URIs, signatures checked with the guest's keys.
    Refresh,
}

/// Checks VMs one after the other, sharing parsed indices (and, with `--refresh`,
/// downloads) between them.
pub struct Checker {
    source: IndexSource,
    pub cache: IndexCache,
    releases: HashMap<String, Arc<(refresh::SignedRelease, Release)>>,
    downloads: HashMap<String, Arc<Vec<u8>>>,
}

/// A release and its indices, as found for one source.
struct Gathered {
    release: Arc<Release>,
    entries: Vec<Arc<Vec<apt::IndexEntry>>>,
}

impl Checker {
    pub fn new(source: IndexSource) -> Self {
        Self {
            source,
            cache: IndexCache::default(),
            releases: HashMap::new(),
            downloads: HashMap::new(),
        }
    }

    pub fn check(&mut self, target: &Target) -> Result<Report, CheckError> {
        self.check_inventory(target).map(|(report, _)| report)
    }

    /// [`Checker::check`], and what it saw on the way: the installed packages and, with a
    /// memory image, the running kernel (what [`sbom`] lists).
    pub fn check_inventory(&mut self, target: &Target) -> Result<(Report, Inventory), CheckError> {
        tracing::info!("checking {} ({})", target.vm_name(), target.tree.describe());
        let tree = GuestTree::open(&target.tree)?;
        let mut inventory = Inventory {
            os: tree.os.clone(),
            ..Inventory::default()
        };
        let mut report = Report {
            vm: target.vm_name(),
            disk: target.tree.describe(),
            checked_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            os: tree.os.as_ref().and_then(|o| o.pretty_name.clone()),
            package_manager: String::new(),
            installed: 0,
            repositories: Vec::new(),
            counts: Counts::default(),
            upgrades: Vec::new(),
            processes: None,
            warnings: tree.warnings.clone(),
        };
        // A tree with both databases (rpm installed on a Debian system with its database
        // where RPM distributions keep it) is checked for both.
        let dpkg = tree.exists("/var/lib/dpkg/status");
        if dpkg {
            inventory.debs = self.check_dpkg(&tree, &mut report)?;
        }
        if !dpkg || rpm::RPMDB_PATHS.iter().any(|p| tree.exists(p)) {
            inventory.rpms = self.check_rpm(&tree, &mut report)?;
            // The file lists served the update selection; an inventory does not need them.
            for p in &mut inventory.rpms {
                p.files = Vec::new();
            }
        }
        report.counts = Counts {
            security: report
                .upgrades
                .iter()
                .filter(|u| u.priority == Priority::Security)
                .count(),
            normal: report
                .upgrades
                .iter()
                .filter(|u| u.priority == Priority::Normal)
                .count(),
        };
        if let Some(image) = &target.image {
            let snapshot = snapshot(image)?;
            report.processes = Some(processes::using_outdated(&tree, &snapshot, &report.upgrades));
            inventory.kernel = Some(RunningKernel {
                release: snapshot.kernel.release.clone(),
                version: snapshot.kernel.version.clone(),
                banner: snapshot.kernel.banner.clone(),
                hostname: snapshot.uts.nodename.clone(),
                machine: snapshot.uts.machine.clone(),
                domain_name: snapshot.domain.as_ref().and_then(|d| d.name.clone()),
                domain_uuid: snapshot.domain.as_ref().and_then(|d| d.uuid.clone()),
            });
        }
        Ok((report, inventory))
    }

    fn check_dpkg(&mut self, tree: &GuestTree, report: &mut Report) -> Result<Vec<dpkg::InstalledPackage>, CheckError> {
        report.package_manager = "dpkg".into();
        let status = tree.read("/var/lib/dpkg/status", MAX_STATUS_BYTES)?;
        let installed = dpkg::parse_status(&String::from_utf8_lossy(&status))?;
        report.installed = installed.len();
        let native = dpkg::native_arch(&installed)
            .ok_or_else(|| {
                CheckError::guest(
                    "/var/lib/dpkg/status",
                    "the dpkg package is not installed: no native architecture",
                )
            })?
            .to_owned();
        let mut archs: BTreeSet<String> = BTreeSet::from([native.clone()]);
        if let Ok(bytes) = tree.read("/var/lib/dpkg/arch", 1 << 16) {
            archs.extend(
                String::from_utf8_lossy(&bytes)
                    .split_ascii_whitespace()
                    .map(str::to_owned),
            );
        }
        if tree.exists("/etc/apt/preferences") || !tree.list("/etc/apt/preferences.d").is_empty() {
            report.warnings.push(
                "the guest has apt preferences (pins); they are not applied: candidates follow the default priorities"
                    .into(),
            );
        }

        let mut gathered = Vec::new();
        for source in guest_sources(tree)? {
            let mut status = RepoStatus {
                configured_at: source.origin.clone(),
                uri: source.uri.clone(),
                suite: source.suite.clone(),
                from: match &self.source {
                    IndexSource::GuestLists => "guest lists".into(),
                    IndexSource::Dir(d) => d.display().to_string(),
                    IndexSource::Refresh => "refresh".into(),
                },
                signature: String::new(),
                indices: 0,
                versions: 0,
                error: None,
            };
            match self.gather(tree, &source, &archs, &mut status) {
                Ok(g) => {
                    status.indices = g.entries.len();
                    status.versions = g.entries.iter().map(|e| e.len()).sum();
                    gathered.push((source, g));
                }
                Err(e) => {
                    report.warnings.push(format!("{} {}: {e}", source.uri, source.suite));
                    status.error = Some(e.to_string());
                }
            }
            report.repositories.push(status);
        }
        let repos: Vec<Repository<'_>> = gathered
            .iter()
            .flat_map(|(source, g)| {
                g.entries.iter().map(move |e| Repository {
                    release: &g.release,
                    configured_suite: &source.suite,
                    entries: e,
                })
            })
            .collect();
        report.upgrades = apt::upgradable(&installed, &native, &repos)
            .into_iter()
            .map(|u| Finding {
                priority: Priority::of(u.security),
                name: u.name,
                arch: u.arch,
                installed: u.installed,
                candidate: u.candidate,
                suites: u.suites,
                advisories: Vec::new(),
            })
            .collect();
        Ok(installed)
    }

    /// The release and `Packages` indices of one source.
    fn gather(
        &mut self,
        tree: &GuestTree,
        source: &SourceEntry,
        archs: &BTreeSet<String>,
        status: &mut RepoStatus,
    ) -> Result<Gathered, CheckError> {
        let release = match &self.source {
            IndexSource::Refresh => {
                let fetched = self.fetched_release(source)?;
                let (keyrings, fingerprints) = refresh::guest_keyrings(tree, source);
                status.signature = if source.trusted {
                    "not checked (trusted=yes)".into()
                } else {
                    format!("gpgv: {}", refresh::verify(&fetched.0, &keyrings, &fingerprints)?)
                };
                Arc::new(fetched.1.clone())
            }
            _ => {
                status.signature = "not checked here (apt checked it when it downloaded the lists)".into();
                let (name, text) = ["InRelease", "Release"]
                    .iter()
                    .find_map(|n| {
                        let name = apt::list_file_name(&source.release_uri(n));
                        self.read_list(tree, &name, MAX_RELEASE_BYTES).map(|b| (name, b))
                    })
                    .ok_or_else(|| {
                        CheckError::index(
                            apt::list_file_name(&source.release_uri("InRelease")),
                            "not in the lists (apt never downloaded it); check with --refresh",
                        )
                    })?;
                Arc::new(parse_release(&text, &name)?)
            }
        };
        let mut entries = Vec::new();
        for component in source
            .components
            .iter()
            .map(String::as_str)
            .chain(source.is_flat().then_some(""))
        {
            for arch in source
                .archs
                .as_ref()
                .map_or_else(|| archs.iter().cloned().collect(), Clone::clone)
            {
                if !release.architectures.is_empty() && !release.architectures.contains(&arch) {
                    continue;
                }
                let path = source.packages_path(component, &arch);
                if let Some(e) = self.index(tree, source, &release, &path)? {
                    entries.push(e);
                }
            }
            if source.is_flat() {
                break;
            }
        }
        Ok(Gathered { release, entries })
    }

    fn read_list(&self, tree: &GuestTree, name: &str, limit: u64) -> Option<Vec<u8>> {
        match &self.source {
            IndexSource::Dir(dir) => {
                use std::io::Read;
                let mut bytes = Vec::new();
                std::fs::File::open(dir.join(name))
                    .ok()?
                    .take(limit)
                    .read_to_end(&mut bytes)
                    .ok()?;
                Some(bytes)
            }
            _ => tree.read(&format!("/var/lib/apt/lists/{name}"), limit).ok(),
        }
    }

    /// One `Packages` index (`path` relative to the release directory), or `None` when the
    /// repository has none for it.
    fn index(
        &mut self,
        tree: &GuestTree,
        source: &SourceEntry,
        release: &Release,
        path: &str,
    ) -> Result<Option<Arc<Vec<apt::IndexEntry>>>, CheckError> {
        if self.source != IndexSource::Refresh {
            let base = apt::list_file_name(&source.release_uri(path));
            for (suffix, compression) in Compression::ALL {
                let name = format!("{base}{suffix}");
                if let Some(raw) = self.read_list(tree, &name, indices::MAX_INDEX_BYTES) {
                    return self.cache.packages(&raw, compression, &name).map(Some);
                }
            }
            return Ok(None);
        }
        // Fresh: the smallest form the Release file lists, checked against its digest.
        for (suffix, compression) in [
            (".xz", Compression::Xz),
            (".gz", Compression::Gzip),
            ("", Compression::None),
        ] {
            let rel = format!("{path}{suffix}");
            let Some((digest, size)) = release.sha256_of(&rel) else {
                continue;
            };
            let url = source.release_uri(&rel);
            let raw = match self.downloads.get(&url) {
                Some(raw) => Arc::clone(raw),
                None => {
                    let raw = refresh::fetch(&url, indices::MAX_INDEX_BYTES)?.ok_or_else(|| CheckError::Fetch {
                        url: url.clone(),
                        what: "listed in the Release file but not on the server (404)".into(),
                    })?;
                    if raw.len() as u64 != size || sha256_hex(&raw) != digest {
                        return Err(CheckError::Fetch {
                            url,
                            what: "size or SHA-256 differs from the signed Release file".into(),
                        });
                    }
                    let raw = Arc::new(raw);
                    self.downloads.insert(url.clone(), Arc::clone(&raw));
                    raw
                }
            };
            return self.cache.packages(&raw, compression, &url).map(Some);
        }
        Ok(None)
    }

    fn fetched_release(&mut self, source: &SourceEntry) -> Result<Arc<(refresh::SignedRelease, Release)>, CheckError> {
        let key = source.release_uri("");
        if let Some(hit) = self.releases.get(&key) {
            return Ok(Arc::clone(hit));
        }
        let fetched = refresh::fetch_release(source)?;
        let release = parse_release(&fetched.signed, &fetched.url)?;
        let entry = Arc::new((fetched, release));
        self.releases.insert(key, Arc::clone(&entry));
        Ok(entry)
    }
}

/// What a check saw of a VM besides its findings: its installed packages and, given its
/// memory image, its running kernel.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub os: Option<emulator::disk::OsRelease>,
    /// dpkg's installed packages (with a current version), in status-file order.
    pub debs: Vec<dpkg::InstalledPackage>,
    /// rpm's installed packages (file lists dropped), in database order.
    pub rpms: Vec<rpmdb::RpmPackage>,
    pub kernel: Option<RunningKernel>,
}

/// The kernel running in the memory image, as its own structures say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningKernel {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `/proc/version`.
    pub banner: String,
    /// `uname -n`.
    pub hostname: String,
    /// `uname -m`.
    pub machine: String,
    /// The Xen domain's name and UUID when the image records them (`xl save`).
    pub domain_name: Option<String>,
    pub domain_uuid: Option<String>,
}

/// The result of checking one VM of a run.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub vm: String,
    pub report: Option<Report>,
    /// What the check saw, kept only when [`run_checks_with`] is asked to.
    #[serde(skip)]
    pub inventory: Option<Inventory>,
    /// Why the VM could not be checked.
    pub error: Option<String>,
    /// With `since`: what changed since the previous check of the same VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<db::Changes>,
}

/// Checks every target in order with one shared index cache, records each report in the
/// results database (when given), and with `since` compares it with the VM's previous one.
/// A VM that cannot be checked does not stop the others. Keeps each VM's [`Inventory`] when
/// `keep_inventory` (for an SBOM), and calls `checking` with each VM's name as its check starts.
pub fn run_checks_with(
    targets: &[Target],
    source: IndexSource,
    db: Option<&std::path::Path>,
    since: bool,
    keep_inventory: bool,
    checking: &mut dyn FnMut(&str),
) -> Result<Vec<Outcome>, CheckError> {
    let mut db = db.map(db::ResultsDb::open).transpose()?;
    let mut checker = Checker::new(source);
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let vm = target.vm_name();
        checking(&vm);
        let (report, inventory) = match checker.check_inventory(target) {
            Ok(r) => r,
            Err(e) => {
                out.push(Outcome {
                    vm,
                    report: None,
                    inventory: None,
                    error: Some(e.to_string()),
                    changes: None,
                });
                continue;
            }
        };
        let changes = match db.as_mut() {
            Some(db) => {
                let id = db.record(&report)?;
                since
                    .then(|| db.previous(&vm, Some(id)))
                    .transpose()?
                    .map(|previous| db::changes(previous.as_ref(), &report))
            }
            None => None,
        };
        out.push(Outcome {
            vm,
            report: Some(report),
            inventory: keep_inventory.then_some(inventory),
            error: None,
            changes,
        });
    }
    Ok(out)
}

/// Parses an `InRelease` (clearsigned) or plain `Release` file.
fn parse_release(bytes: &[u8], name: &str) -> Result<Release, CheckError> {
    let text = String::from_utf8_lossy(bytes);
    if text.trim_start().starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        let inner = deb822::clearsigned_text(&text).map_err(|e| CheckError::index(name, e.to_string()))?;
        Ok(Release::parse(&inner, name)?)
    } else {
        Ok(Release::parse(&text, name)?)
    }
}

/// The guest's apt sources, in apt's order: `sources.list`, then `sources.list.d/` by name.
fn guest_sources(tree: &GuestTree) -> Result<Vec<SourceEntry>, CheckError> {
    let mut out = Vec::new();
    if let Ok(bytes) = tree.read("/etc/apt/sources.list", MAX_CONFIG_BYTES) {
        out.extend(apt::parse_sources_list(
            &String::from_utf8_lossy(&bytes),
            "/etc/apt/sources.list",
        )?);
    }
    for name in tree.list("/etc/apt/sources.list.d") {
        let Some(deb822) = apt::sources_file_kind(&name) else {
            continue;
        };
        let path = format!("/etc/apt/sources.list.d/{name}");
        let text = String::from_utf8_lossy(&tree.read(&path, MAX_CONFIG_BYTES)?).into_owned();
        out.extend(if deb822 {
            apt::parse_deb822_sources(&text, &path)?
        } else {
            apt::parse_sources_list(&text, &path)?
        });
    }
    Ok(out)
}

fn snapshot(image: &std::path::Path) -> Result<introspect::linux::GuestSnapshot, CheckError> {
    let err = |what: String| CheckError::Snapshot {
        path: image.display().to_string(),
        what,
    };
    let mem = introspect::open_memory(image).map_err(|e| err(e.to_string()))?;
    introspect::linux::snapshot(mem.as_ref(), &introspect::linux::ProfileFiles::default())
        .map_err(|e| err(e.to_string()))
}
