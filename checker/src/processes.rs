//! Which processes of the memory image run executables of outdated packages. The snapshot
//! gives each task's executable (`mm->exe_file`); libraries a process maps are not in the
//! snapshot (no VMA walk), so a service only using an outdated library is not found.

use std::collections::HashMap;

use introspect::linux::GuestSnapshot;
use packages::dpkg;

use crate::report::{Finding, ProcessHit};
use crate::tree::GuestTree;

const MAX_LIST_BYTES: u64 = 64 << 20;
const MAX_LIST_PATHS: usize = 1_000_000;

/// Since Debian's /usr merge, `/bin/x` (as dpkg recorded it) and `/usr/bin/x` (as the
/// kernel resolved it) are the same file.
fn canonical(path: &str) -> String {
    for dir in ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"] {
        if path.starts_with(dir) {
            return format!("/usr{path}");
        }
    }
    path.to_owned()
}

pub fn using_outdated(tree: &GuestTree, snapshot: &GuestSnapshot, outdated: &[Finding]) -> Vec<ProcessHit> {
    let mut owner: HashMap<String, &Finding> = HashMap::new();
    for f in outdated {
        for list in dpkg::list_file_names(&f.name, &f.arch) {
            if let Ok(bytes) = tree.read(&format!("/var/lib/dpkg/info/{list}"), MAX_LIST_BYTES) {
                for path in dpkg::parse_file_list(&String::from_utf8_lossy(&bytes), MAX_LIST_PATHS) {
                    owner.insert(canonical(path), f);
                }
                break;
            }
        }
    }
    let mut hits = Vec::new();
    for task in snapshot.tasks.iter().filter(|t| !t.kernel_thread && t.pid == t.tgid) {
        let Some(exe) = task.detail.as_ref().and_then(|d| d.exe.as_deref()) else {
            continue;
        };
        // A file replaced while running shows as "path (deleted)".
        let path = exe.strip_suffix(" (deleted)").unwrap_or(exe);
        if let Some(f) = owner.get(&canonical(path)) {
            hits.push(ProcessHit {
                pid: task.pid,
                comm: task.comm.clone(),
                exe: exe.to_owned(),
                package: f.name.clone(),
                priority: f.priority,
            });
        }
    }
    hits
}
