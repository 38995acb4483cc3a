//! Memory and process-count limits for the sandbox, through cgroups: v2 when the unified
//! hierarchy is mounted at /sys/fs/cgroup, else the v1 `memory` and `pids` controllers.
//! RLIMIT_NPROC cannot do this job: the kernel exempts uid 0 from it, and the guest's package
//! manager runs as root.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SandboxError;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directories created for one run; every member process is written to each
/// directory's `cgroup.procs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupSet {
    pub dirs: Vec<PathBuf>,
}

impl CgroupSet {
    /// Creates `dormouse/<run_id>` in each hierarchy that carries a requested limit.
    pub fn create(run_id: &str, memory_bytes: Option<u64>, pids: Option<u64>) -> Result<CgroupSet, SandboxError> {
        let mut set = CgroupSet::default();
        if memory_bytes.is_none() && pids.is_none() {
            return Ok(set);
        }
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            let parent = root.join("dormouse");
            make_dir(&parent)?;
            // Controllers must be enabled in the parent for the child to have the files.
            enable_controllers(root)?;
            enable_controllers(&parent)?;
            let dir = parent.join(run_id);
            make_dir(&dir)?;
            set.dirs.push(dir.clone());
            if let Some(bytes) = memory_bytes {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                write(&dir.join("memory.swap.max"), "0").ok();
            }
            if let Some(n) = pids {
                write(&dir.join("pids.max"), &n.to_string())?;
            }
            return Ok(set);
        }
        for (controller, limit) in [("memory", memory_bytes), ("pids", pids)] {
            let Some(limit) = limit else { continue };
            let hierarchy = root.join(controller);
            if !hierarchy.join("cgroup.procs").exists() {
                set.remove();
                return Err(SandboxError::Setup {
                    what: format!("limiting {controller}"),
                    path: hierarchy,
                    detail: "neither cgroup v2 nor the v1 controller is mounted; mount it or drop the limit flag"
                        .into(),
                });
            }
            let dir = hierarchy.join("dormouse").join(run_id);
            if let Err(e) = make_dir(&dir) {
                set.remove();
                return Err(e);
            }
            set.dirs.push(dir.clone());
            let file = match controller {
                "memory" => "memory.limit_in_bytes",
                _ => "pids.max",
            };
            if let Err(e) = write(&dir.join(file), &limit.to_string()) {
                set.remove();
                return Err(e);
            }
        }
        Ok(set)
    }

    /// Moves the calling process into every cgroup of the set.
    pub fn join_self(&self) -> Result<(), SandboxError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), "0")?;
        }
        Ok(())
    }

    /// Whether any cgroup of the set recorded the kernel refusing a fork or killing for memory.
    pub fn limit_events(&self) -> Vec<String> {
        let mut events = Vec::new();
        for dir in &self.dirs {
            for (file, key) in [
                ("pids.events", "max"),
                ("memory.events", "oom_kill"),
                ("memory.failcnt", ""),
            ] {
                let Ok(text) = fs::read_to_string(dir.join(file)) else {
                    continue;
                };
                let count = if key.is_empty() {
                    text.trim().parse::<u64>().ok()
                } else {
                    text.lines()
                        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()))
                };
                if let Some(n) = count.filter(|&n| n > 0) {
                    events.push(format!("{}: {file} {key} {n}", dir.display()));
                }
            }
        }
        events
    }

    /// Removes the directories (the processes must be gone; a busy cgroup is left for
    /// `dormouse cleanup`).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn enable_controllers(dir: &Path) -> Result<(), SandboxError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .map(|c| if c == "memory" { "+memory" } else { "+pids" })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
}

fn make_dir(dir: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(dir).map_err(|e| SandboxError::io("creating a cgroup", dir, e))
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|e| SandboxError::io(&format!("writing {value:?}"), path, e))
}
