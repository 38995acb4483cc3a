//! After an apply, what still runs the old code: processes whose executable or mappings are
//! files the bundle replaced or removed (the old inode, now deleted), their systemd units
//! restarted as needrestart does, and a kernel update reported as "reboot needed". It runs
//! before dom0 releases the network, so nothing answers the network with the old code.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundle::manifest::{EntryType, Manifest};
use serde::Serialize;

/// What the bundle changed that a running process could still hold, and the kernel facts.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Guest paths of regular files the bundle installed (replacing the guest's) or removed.
    paths: HashSet<String>,
    /// The kernel the guest ran when it was saved.
    running_kernel: String,
    /// `/boot/vmlinuz-*` images the bundle installs.
    kernel_images: Vec<String>,
}

impl Targets {
    pub fn of(manifest: &Manifest) -> Targets {
        let mut paths: HashSet<String> = manifest
            .files
            .iter()
            .filter(|f| f.entry_type == EntryType::File)
            .map(|f| f.path.clone())
            .collect();
        paths.extend(manifest.removals.iter().cloned());
        let kernel_images = manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("/boot/vmlinuz-"))
            .map(|f| f.path.clone())
            .collect();
        Targets {
            paths,
            running_kernel: manifest.guest.kernel_release.clone(),
            kernel_images,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestartReport {
    pub scanned_processes: u64,
    /// Processes that still map (or run) a replaced or removed file.
    pub stale: Vec<StaleProcess>,
    /// Units restarted (`systemd (daemon-reexec)` for PID 1).
    pub restarted: Vec<String>,
    pub failed: Vec<UnitFailure>,
    /// Stale processes left running, and why.
    pub not_restarted: Vec<NotRestarted>,
    /// Why the guest must reboot to run the update, when it must.
    pub reboot_needed: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StaleProcess {
    pub pid: u32,
    pub comm: String,
    /// Its cgroup (v2), e.g. `/system.slice/nginx.service`.
    pub cgroup: Option<String>,
    /// The innermost systemd unit its cgroup names (`nginx.service`), if any.
    pub unit: Option<String>,
    /// The replaced files it holds, as guest paths (at most [`MAX_FILES_LISTED`]).
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitFailure {
    pub unit: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotRestarted {
    pub pid: u32,
    pub comm: String,
    pub reason: String,
}

/// /proc entries looked at: far above any guest's process count.
const MAX_PROCESSES: usize = 1 << 20;
/// Bytes of one process's maps read (a big JVM has some 10 000 mappings, ~1 MiB).
const MAX_MAPS_BYTES: u64 = 16 << 20;
const MAX_FILES_LISTED: usize = 16;
/// One unit's restart may take this long (systemd's default stop+start timeouts are 90 s each).
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// Finds the stale processes under `/proc` of the tree at `root` and, when `restart` (the agent
/// runs in the guest itself and systemd is PID 1), restarts their units.
pub fn after_apply(targets: &Targets, root: &Path, restart: bool) -> RestartReport {
    let start = Instant::now();
    let mut report = RestartReport {
        reboot_needed: reboot_needed(targets),
        ..RestartReport::default()
    };
    let own_pid = std::process::id();
    let own_unit = cgroup_of(own_pid).as_deref().and_then(unit_of_cgroup);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        report.seconds = start.elapsed().as_secs_f64();
        return report;
    };
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        report.scanned_processes += 1;
        let files = stale_files(pid, root, &targets.paths);
        if files.is_empty() {
            continue;
        }
        let cgroup = cgroup_of(pid);
        report.stale.push(StaleProcess {
            pid,
            comm: comm(pid),
            unit: cgroup.as_deref().and_then(unit_of_cgroup),
            cgroup,
            files,
        });
    }
    let mut units: BTreeMap<String, Vec<&StaleProcess>> = BTreeMap::new();
    let mut reexec = false;
    for p in &report.stale {
        let leave = |reason: String| NotRestarted {
            pid: p.pid,
            comm: p.comm.clone(),
            reason,
        };
        if !restart {
            report.not_restarted.push(leave(
                "--root: the tree's services are not this system's to restart".into(),
            ));
        } else if p.pid == 1 {
            reexec = true;
        } else {
            match &p.unit {
                Some(unit) if Some(unit) == own_unit.as_ref() => {
                    report.not_restarted.push(leave(format!("{unit} runs this agent")));
                }
                Some(unit)
                    if unit.ends_with(".service")
                        && p.cgroup.as_deref().is_some_and(|c| c.starts_with("/system.slice/")) =>
                {
                    units.entry(unit.clone()).or_default().push(p);
                }
                Some(unit) => report.not_restarted.push(leave(format!(
                    "{unit} is not a system service (a session or scope: log out and in again)"
                ))),
                None => report
                    .not_restarted
                    .push(leave("no systemd unit runs it: restart it by hand".into())),
            }
        }
    }
    if reexec {
        // PID 1 first: the units restarted next then start under the new systemd.
        match systemctl(&["daemon-reexec"]) {
            Ok(()) => report.restarted.push("systemd (daemon-reexec)".into()),
            Err(error) => report.failed.push(UnitFailure {
                unit: "systemd (daemon-reexec)".into(),
                error,
            }),
        }
    }
    for unit in units.keys() {
        match systemctl(&["restart", unit]) {
            Ok(()) => report.restarted.push(unit.clone()),
            Err(error) => report.failed.push(UnitFailure {
                unit: unit.clone(),
                error,
            }),
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

/// Whether the agent can restart services: it runs in the guest itself, under systemd.
pub fn can_restart(chroot: bool) -> bool {
    !chroot && Path::new("/run/systemd/system").is_dir()
}

fn reboot_needed(targets: &Targets) -> Option<String> {
    if targets.kernel_images.is_empty() {
        return None;
    }
    let running = format!("/boot/vmlinuz-{}", targets.running_kernel);
    Some(if targets.kernel_images.contains(&running) {
        format!("the running kernel's image {running} was replaced; reboot to run it")
    } else {
        format!(
            "new kernel {} installed; the guest runs {}: reboot to run it",
            targets.kernel_images.join(", "),
            targets.running_kernel
        )
    })
}

/// The replaced files `pid` holds: its executable or mappings whose file was deleted and is
/// a path the bundle replaced or removed (seen through `root`).
fn stale_files(pid: u32, root: &Path, replaced: &HashSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut consider = |shown: &str| {
        let Some(path) = shown.strip_suffix(" (deleted)") else {
            return;
        };
        let Some(guest) = guest_path(root, path) else {
            return;
        };
        if replaced.contains(&guest) && !found.contains(&guest) && found.len() < MAX_FILES_LISTED {
            found.push(guest);
        }
    };
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        consider(&exe.to_string_lossy());
    }
    let mut maps = Vec::new();
    if let Ok(file) = std::fs::File::open(format!("/proc/{pid}/maps")) {
        // A process gone meanwhile, or an unreadable one, holds nothing we can restart.
        let _ = file.take(MAX_MAPS_BYTES).read_to_end(&mut maps);
    }
    for line in String::from_utf8_lossy(&maps).lines() {
        if let Some(path) = map_path(line) {
            consider(path);
        }
    }
    found
}

/// The path column of a `/proc/PID/maps` line (address, perms, offset, dev, inode, path).
fn map_path(line: &str) -> Option<&str> {
    let mut rest = line;
    for _ in 0..5 {
        let (_, after) = rest.trim_start().split_once(' ')?;
        rest = after;
    }
    let path = rest.trim_start();
    path.starts_with('/').then_some(path)
}

/// `path` (as dom0 or the guest sees it) as a guest path under `root`.
fn guest_path(root: &Path, path: &str) -> Option<String> {
    if root == Path::new("/") {
        return Some(path.to_owned());
    }
    let rel = Path::new(path).strip_prefix(root).ok()?;
    Some(format!("/{}", rel.display()))
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_default()
}

/// The cgroup v2 path of `pid` (`/system.slice/nginx.service`).
fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

/// The innermost unit a cgroup path names: services may nest sub-cgroups
/// (`.../docker.service/payload`).
fn unit_of_cgroup(path: &str) -> Option<String> {
    path.split('/')
        .rfind(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let mut child = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running systemctl: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                return Err(format!("systemctl {}: {status}: {}", args.join(" "), err.trim()));
            }
            Ok(None) if start.elapsed() > RESTART_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "systemctl {} did not finish in {} s",
                    args.join(" "),
                    RESTART_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for systemctl: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines_give_their_path_or_none() {
        let line =
            "7f3c1a200000-7f3c1a222000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/liblzma.so.5.4.1 (deleted)";
        assert_eq!(
            map_path(line),
            Some("/usr/lib/x86_64-linux-gnu/liblzma.so.5.4.1 (deleted)")
        );
        assert_eq!(map_path("7ffd-7ffe rw-p 00000000 00:00 0 [stack]"), None);
        assert_eq!(map_path("7ffd-7ffe rw-p 00000000 00:00 0"), None);
        assert_eq!(map_path("garbage"), None);
        let spaced = "1-2 r--p 0 fe:01 9 /opt/a b/c.so (deleted)";
        assert_eq!(map_path(spaced), Some("/opt/a b/c.so (deleted)"));
    }

    #[test]
    fn units_come_from_the_innermost_service_or_scope() {
        let unit = |path: &str| unit_of_cgroup(path);
        assert_eq!(unit("/system.slice/nginx.service").as_deref(), Some("nginx.service"));
        assert_eq!(
            unit("/system.slice/docker.service/payload").as_deref(),
            Some("docker.service")
        );
        assert_eq!(
            unit("/user.slice/user-0.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit("/"), None);
    }

    #[test]
    fn paths_under_a_root_become_guest_paths() {
        assert_eq!(guest_path(Path::new("/"), "/usr/bin/x").as_deref(), Some("/usr/bin/x"));
        assert_eq!(
            guest_path(Path::new("/var/tmp/b"), "/var/tmp/b/usr/bin/x").as_deref(),
            Some("/usr/bin/x")
        );
        assert_eq!(guest_path(Path::new("/var/tmp/b"), "/usr/bin/x"), None);
    }

    #[test]
    fn a_new_kernel_image_means_a_reboot() {
        let targets = |images: &[&str]| Targets {
            paths: HashSet::new(),
            running_kernel: "9.9.0-1-amd64".into(),
            kernel_images: images.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(reboot_needed(&targets(&[])), None);
        let new = reboot_needed(&targets(&["/boot/vmlinuz-9.9.0-2-amd64"])).unwrap();
        assert!(
            new.contains("9.9.0-2-amd64") && new.contains("runs 9.9.0-1-amd64"),
            "{new}"
        );
        let same = reboot_needed(&targets(&["/boot/vmlinuz-9.9.0-1-amd64"])).unwrap();
        assert!(same.contains("was replaced"), "{same}");
    }
}
