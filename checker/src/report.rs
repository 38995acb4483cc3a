//! What a check found, as JSON (stable field names, stored in the results database) and as
//! text.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Security,
    Normal,
}

impl Priority {
    pub fn of(security: bool) -> Self {
        if security { Self::Security } else { Self::Normal }
    }
}

/// One outdated package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    /// The archives offering the candidate (Release `Suite`).
    pub suites: Vec<String>,
    pub priority: Priority,
    /// The security advisories the candidate fixes, when the repository names them (rpm-md
    /// `updateinfo.xml`; apt's indices name none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
}

/// One repository the guest is configured for, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// `file:line` of the guest's configuration.
    pub configured_at: String,
    pub uri: String,
    pub suite: String,
    /// Where the indices came from: `guest lists`, a `--repo-metadata` directory, or `refresh`.
    pub from: String,
    /// `gpgv: <fingerprint>` when checked here; a reason when not.
    pub signature: String,
    /// Packages indices read, and the package versions they hold.
    pub indices: usize,
    pub versions: usize,
    /// Why the repository contributed nothing, if it did not.
    pub error: Option<String>,
}

/// A running process (from the memory image) whose executable belongs to an outdated
/// package: it keeps running the old code until restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessHit {
    pub pid: i32,
    pub comm: String,
    pub exe: String,
    pub package: String,
    pub priority: Priority,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub security: usize,
    pub normal: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The VM's name in the results database (`--name`, else the image or disk path).
    pub vm: String,
    pub disk: String,
    /// Seconds since the epoch.
    pub checked_at: u64,
    pub os: Option<String>,
    /// `dpkg` or `rpm`.
    pub package_manager: String,
    pub installed: usize,
    pub repositories: Vec<RepoStatus>,
    pub counts: Counts,
    pub upgrades: Vec<Finding>,
    /// `None` without a memory image.
    pub processes: Option<Vec<ProcessHit>>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} ({}, {} packages installed)",
            self.vm,
            self.os.as_deref().unwrap_or("unknown OS"),
            self.package_manager,
            self.installed
        );
        for r in &self.repositories {
            let _ = writeln!(
                s,
                "  repository {} {} [{}; {}]: {} indices, {} versions{}",
                r.uri,
                r.suite,
                r.from,
                r.signature,
                r.indices,
                r.versions,
                r.error.as_ref().map_or(String::new(), |e| format!(" — {e}"))
            );
        }
        let _ = writeln!(
            s,
            "{} upgradable: {} security, {} normal",
            self.upgrades.len(),
            self.counts.security,
            self.counts.normal
        );
        for u in &self.upgrades {
            let _ = writeln!(
                s,
                "  {:<8} {}:{} {} -> {} ({})",
                match u.priority {
                    Priority::Security => "security",
                    Priority::Normal => "normal",
                },
                u.name,
                u.arch,
                u.installed,
                u.candidate,
                u.suites.join(",")
            );
        }
        if let Some(procs) = &self.processes {
            let _ = writeln!(s, "{} running processes use outdated executables:", procs.len());
            for p in procs {
                let _ = writeln!(s, "  pid {} {} ({}) from {}", p.pid, p.comm, p.exe, p.package);
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}
