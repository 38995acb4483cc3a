//! Pure rendering: the guest's `/proc` tree as the kernel would print it, from a snapshot.
//!
//! [`ProcTree::new`] lays out once which paths exist (directories, files, symlinks) from the
//! snapshot; [`ProcTree::render`] produces one node. Nothing here touches dom0 except
//! `sys/kernel/random/uuid`, which reads fresh randomness like the kernel does per read.

mod lists;
mod system;
mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use introspect::linux::{GuestSnapshot, Task};
use lists::{modules, mounts, tty_drivers};
use system::{cpuinfo, loadavg, meminfo, stat, swaps, swaps_known, uptime};
use task::{task_stat, task_status};

/// Hidden directory under which the caller's own dom0 `/proc/<pid>` is served (see the crate
/// documentation for the `self` rule).
pub const CALLER_DIR: &str = ".dormouse-caller";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("/proc/{0}: no such file in the guest's /proc (the snapshot does not have it)")]
    NotFound(String),
    #[error("/proc/{0}: is a directory; name a file in it")]
    IsDirectory(String),
    #[error("/proc/{0}: the caller's own entries come from dom0 at run time (FUSE), not from the snapshot")]
    CallerOnly(String),
}

/// What a path is in the shadow /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    File(Vec<u8>),
    Dir(Vec<DirEntry>),
    Symlink(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: Kind,
}

/// Static attributes of a node, like procfs gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
}

/// How a file's bytes are produced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Version,
    Cmdline,
    Filesystems,
    Modules,
    Mounts,
    Meminfo,
    Cpuinfo,
    Uptime,
    Loadavg,
    Stat,
    Swaps,
    /// A fixed value, printed with a trailing newline (sysctls).
    Line(String),
    Uuid,
    TtyDrivers,
    TaskStat(TaskRef),
    TaskStatus(TaskRef),
    TaskComm(TaskRef),
    /// The group's argument and environment areas: index of the leader.
    TaskCmdline(usize),
    TaskEnviron(usize),
}

/// A task of the snapshot: `tasks[.0]`, or its thread `tasks[.0].threads[t]` for `Some(t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskRef(usize, Option<usize>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        children: Vec<DirEntry>,
        attr: Attr,
    },
    File {
        source: Source,
        attr: Attr,
    },
    Symlink {
        target: String,
        attr: Attr,
    },
    /// `self` / `thread-self`: their target depends on the caller.
    CallerLink {
        thread: bool,
    },
}

/// The layout of the guest's /proc, built once from a snapshot.
pub struct ProcTree {
    snapshot: GuestSnapshot,
    nodes: BTreeMap<String, Node>,
}

/// Renders one path of the guest's `/proc` (`/proc/filesystems`, `sys/kernel/osrelease`, `1/stat`,
/// `/` for the root listing). Builds the tree each call; keep a [`ProcTree`] for many reads.
pub fn render(snapshot: &GuestSnapshot, path: &str) -> Result<Rendered, RenderError> {
    ProcTree::new(snapshot.clone()).render(path)
}

/// `path` relative to the /proc root, without leading or trailing slashes; `""` is the root.
pub fn normalize(path: &str) -> String {
    let p = path
        .strip_prefix("/proc")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .unwrap_or(path);
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

const fn attr(kind: Kind, mode: u16) -> Attr {
    Attr {
        kind,
        mode,
        uid: 0,
        gid: 0,
        nlink: if matches!(kind, Kind::Dir) { 2 } else { 1 },
    }
}

impl ProcTree {
    pub fn new(snapshot: GuestSnapshot) -> ProcTree {
        let mut files: BTreeMap<String, (Source, Attr)> = BTreeMap::new();
        let mut links: BTreeMap<String, (String, Attr)> = BTreeMap::new();
        let ro = attr(Kind::File, 0o444);
        let rw = attr(Kind::File, 0o644);
        let s = &snapshot;
        files.insert("version".into(), (Source::Version, ro));
        if s.kernel.cmdline.is_some() {
            files.insert("cmdline".into(), (Source::Cmdline, ro));
        }
        files.insert("filesystems".into(), (Source::Filesystems, ro));
        files.insert("modules".into(), (Source::Modules, ro));
        files.insert("mounts".into(), (Source::Mounts, ro));
        let sys = &s.system;
        if !sys.meminfo.is_empty() {
            files.insert("meminfo".into(), (Source::Meminfo, ro));
        }
        if !sys.cpus.is_empty() {
            files.insert("cpuinfo".into(), (Source::Cpuinfo, ro));
        }
        if sys.uptime_ns.is_some() && sys.idle_ns.is_some() {
            files.insert("uptime".into(), (Source::Uptime, ro));
        }
        if sys.avenrun.is_some() && sys.nr_running.is_some() && sys.nr_threads.is_some() && sys.last_pid.is_some() {
            files.insert("loadavg".into(), (Source::Loadavg, ro));
        }
        if !sys.cpu_times.is_empty() {
            files.insert("stat".into(), (Source::Stat, ro));
        }
        if swaps_known(s) {
            files.insert("swaps".into(), (Source::Swaps, ro));
        }
        // /proc/sys from the sysctls the snapshot read.
        for (key, value) in &s.sysctl {
            if let Some(path) = sysctl_path(key) {
                let read_only = matches!(
                    path.as_str(),
                    "sys/kernel/osrelease"
                        | "sys/kernel/ostype"
                        | "sys/kernel/version"
                        | "sys/kernel/random/boot_id"
                        | "sys/kernel/cap_last_cap"
                        | "sys/kernel/bootloader_type"
                        | "sys/kernel/bootloader_version"
                );
                files.insert(path, (Source::Line(value.clone()), if read_only { ro } else { rw }));
            }
        }
        // utsname and boot_id are also known outside the sysctl table.
        let uts = [
            ("ostype", &s.uts.sysname, ro),
            ("osrelease", &s.uts.release, ro),
            ("version", &s.uts.version, ro),
            ("hostname", &s.uts.nodename, rw),
            ("domainname", &s.uts.domainname, rw),
        ];
        for (name, value, a) in uts {
            if !value.is_empty() {
                files
                    .entry(format!("sys/kernel/{name}"))
                    .or_insert_with(|| (Source::Line(value.clone()), a));
            }
        }
        if let Some(id) = &s.boot_id {
            files
                .entry("sys/kernel/random/boot_id".into())
                .or_insert_with(|| (Source::Line(id.clone()), ro));
        }
        files.insert("sys/kernel/random/uuid".into(), (Source::Uuid, ro));
        if s.tty.is_some() {
            files.insert("tty/drivers".into(), (Source::TtyDrivers, ro));
        }
        // Per process: thread-group leaders only, like /proc's listing; each thread of a group
        // under its `task/`. Directories belong to their task's owner like the files in them.
        let mut dir_owner: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (i, t) in s.tasks.iter().enumerate() {
            if t.pid != t.tgid || t.pid <= 0 || !seen.insert(t.pid) {
                continue;
            }
            let p = t.pid;
            dir_owner.insert(p.to_string(), task_owner(t));
            task_entries(&mut files, &mut links, &p.to_string(), (t, i), None);
            if !t.threads.is_empty() {
                dir_owner.insert(format!("{p}/task"), task_owner(t));
            }
            let mut tids = BTreeSet::new();
            for (j, th) in t.threads.iter().enumerate() {
                if th.pid <= 0 || th.tgid != p || !tids.insert(th.pid) {
                    continue;
                }
                let dir = format!("{p}/task/{}", th.pid);
                dir_owner.insert(dir.clone(), task_owner(th));
                task_entries(&mut files, &mut links, &dir, (t, i), Some(j));
            }
        }

        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut children: BTreeMap<String, BTreeMap<String, Kind>> = BTreeMap::new();
        children.insert(String::new(), BTreeMap::new());
        let add_parents = |path: &str, kind: Kind, children: &mut BTreeMap<_, BTreeMap<_, _>>| {
            let mut kind = kind;
            let mut cur = path.to_owned();
            loop {
                let (parent, name) = match cur.rsplit_once('/') {
                    Some((p, n)) => (p.to_owned(), n.to_owned()),
                    None => (String::new(), cur.clone()),
                };
                let entry: &mut BTreeMap<String, Kind> = children.entry(parent.clone()).or_default();
                let existed = entry.contains_key(&name);
                entry.insert(name, kind);
                if existed || parent.is_empty() {
                    break;
                }
                kind = Kind::Dir;
                cur = parent;
            }
        };
        for (path, (source, a)) in files {
            add_parents(&path, Kind::File, &mut children);
            nodes.insert(path, Node::File { source, attr: a });
        }
        for (path, (target, a)) in links {
            add_parents(&path, Kind::Symlink, &mut children);
            nodes.insert(path, Node::Symlink { target, attr: a });
        }
        for (name, thread) in [("self", false), ("thread-self", true)] {
            children
                .entry(String::new())
                .or_default()
                .insert(name.into(), Kind::Symlink);
            nodes.insert(name.into(), Node::CallerLink { thread });
        }
        for (dir, entries) in children {
            let subdirs = entries.values().filter(|k| matches!(k, Kind::Dir)).count() as u32;
            let mut list: Vec<DirEntry> = entries
                .into_iter()
                .map(|(name, kind)| DirEntry { name, kind })
                .collect();
            // procfs order: the root's fixed entries by (length, name), then pids ascending;
            // elsewhere by name.
            list.sort_by(|a, b| match (a.name.parse::<u64>(), b.name.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
                (Err(_), Ok(_)) => std::cmp::Ordering::Less,
                _ if dir.is_empty() => (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)),
                _ => a.name.cmp(&b.name),
            });
            let (uid, gid) = dir_owner.get(&dir).copied().unwrap_or((0, 0));
            let a = Attr {
                kind: Kind::Dir,
                mode: 0o555,
                uid,
                gid,
                nlink: 2 + subdirs,
            };
            nodes.insert(
                dir,
                Node::Dir {
                    children: list,
                    attr: a,
                },
            );
        }
        ProcTree { snapshot, nodes }
    }

    pub fn snapshot(&self) -> &GuestSnapshot {
        &self.snapshot
    }

    /// Every path of the tree (the root is `""`), in sorted order; `self`/`thread-self` included.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Attributes of `path`, or `None` when it does not exist. `self`/`thread-self` are symlinks.
    pub fn attr(&self, path: &str) -> Option<Attr> {
        match self.nodes.get(&normalize(path))? {
            Node::Dir { attr, .. } | Node::File { attr, .. } | Node::Symlink { attr, .. } => Some(*attr),
            Node::CallerLink { .. } => Some(attr(Kind::Symlink, 0o777)),
        }
    }

    /// Whether `path` is `self` or `thread-self` (target depends on the caller).
    pub fn caller_link(&self, path: &str) -> Option<bool> {
        match self.nodes.get(&normalize(path))? {
            Node::CallerLink { thread } => Some(*thread),
            _ => None,
        }
    }

    /// The node at `path`: a file's bytes, a directory's entries or a symlink's target.
    pub fn render(&self, path: &str) -> Result<Rendered, RenderError> {
        let path = normalize(path);
        match self.nodes.get(&path) {
            None => Err(RenderError::NotFound(path)),
            Some(Node::Dir { children, .. }) => Ok(Rendered::Dir(children.clone())),
            Some(Node::Symlink { target, .. }) => Ok(Rendered::Symlink(target.clone())),
            Some(Node::CallerLink { .. }) => Err(RenderError::CallerOnly(path)),
            Some(Node::File { source, .. }) => Ok(Rendered::File(self.file(source))),
        }
    }

    /// A file's bytes; `IsDirectory`/`NotFound` otherwise.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, RenderError> {
        match self.render(path)? {
            Rendered::File(bytes) => Ok(bytes),
            Rendered::Dir(_) => Err(RenderError::IsDirectory(normalize(path))),
            Rendered::Symlink(_) => Err(RenderError::NotFound(normalize(path))),
        }
    }

    /// The task `r` names and its group's thread count (`get_nr_threads()`, which stat and
    /// status print for a thread as for its group).
    fn task(&self, r: TaskRef) -> (&Task, usize) {
        let leader = &self.snapshot.tasks[r.0];
        let threads = leader.detail.as_ref().map_or(0, |d| d.threads.len());
        match r.1 {
            Some(j) => (&leader.threads[j], threads),
            None => (leader, threads),
        }
    }

    fn file(&self, source: &Source) -> Vec<u8> {
        let s = &self.snapshot;
        let text = match source {
            Source::Version => format!("{}\n", s.kernel.banner),
            Source::Cmdline => format!("{}\n", s.kernel.cmdline.as_deref().unwrap_or("")),
            Source::Filesystems => s.filesystems.iter().fold(String::new(), |mut out, f| {
                let _ = writeln!(out, "{}\t{}", if f.nodev { "nodev" } else { "" }, f.name);
                out
            }),
            Source::Modules => modules(s),
            Source::Mounts => mounts(s),
            Source::Meminfo => meminfo(s),
            Source::Cpuinfo => cpuinfo(s),
            Source::Uptime => uptime(s),
            Source::Loadavg => loadavg(s),
            Source::Stat => stat(s),
            Source::Swaps => swaps(s),
            Source::Line(v) => format!("{v}\n"),
            Source::Uuid => format!("{}\n", uuid::Uuid::new_v4().hyphenated()),
            Source::TtyDrivers => tty_drivers(s.tty.as_ref()),
            Source::TaskStat(r) => {
                let (t, threads) = self.task(*r);
                task_stat(t, threads)
            }
            Source::TaskStatus(r) => {
                let (t, threads) = self.task(*r);
                task_status(t, threads)
            }
            Source::TaskComm(r) => format!("{}\n", self.task(*r).0.comm),
            Source::TaskCmdline(i) => return nul_terminated(s.tasks[*i].cmdline.iter().flatten()),
            Source::TaskEnviron(i) => return nul_terminated(s.tasks[*i].environ.iter().flatten()),
        };
        text.into_bytes()
    }
}

/// The files and links of `/proc/PID/` (for the group `leader`, with its index) or, for
/// `Some(thread)`, of `/proc/PID/task/TID/`: owned by that task, with the group's `cmdline`
/// and `environ`.
fn task_entries(
    files: &mut BTreeMap<String, (Source, Attr)>,
    links: &mut BTreeMap<String, (String, Attr)>,
    dir: &str,
    (leader, i): (&Task, usize),
    thread: Option<usize>,
) {
    let Some(t) = thread.map_or(Some(leader), |j| leader.threads.get(j)) else {
        return;
    };
    let r = TaskRef(i, thread);
    let (uid, gid) = task_owner(t);
    let own = |mode: u16, kind: Kind| Attr {
        uid,
        gid,
        ..attr(kind, mode)
    };
    files.insert(format!("{dir}/stat"), (Source::TaskStat(r), own(0o444, Kind::File)));
    files.insert(format!("{dir}/status"), (Source::TaskStatus(r), own(0o444, Kind::File)));
    files.insert(format!("{dir}/comm"), (Source::TaskComm(r), own(0o644, Kind::File)));
    if leader.cmdline.is_some() {
        files.insert(
            format!("{dir}/cmdline"),
            (Source::TaskCmdline(i), own(0o444, Kind::File)),
        );
    }
    if leader.environ.is_some() {
        files.insert(
            format!("{dir}/environ"),
            (Source::TaskEnviron(i), own(0o400, Kind::File)),
        );
    }
    if let Some(d) = &t.detail {
        for (name, target) in [("root", &d.root), ("cwd", &d.cwd), ("exe", &d.exe)] {
            if let Some(target) = target {
                links.insert(format!("{dir}/{name}"), (target.clone(), own(0o777, Kind::Symlink)));
            }
        }
    }
}

/// Strings each followed by a NUL, as `cmdline` and `environ` are read.
fn nul_terminated<'a>(strings: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}

/// `/proc/PID/*` belongs to the task's effective ids, like procfs (`task_dump_owner`).
fn task_owner(t: &Task) -> (u32, u32) {
    match &t.detail {
        Some(d) => (d.euid, d.egid),
        None => (t.uid, t.gid),
    }
}

/// `net.ipv6.conf.eth0.100.accept_ra` → `sys/net/ipv6/conf/eth0.100/accept_ra` (interface names
/// may hold dots; the setting never does). `None` for names that would escape the tree.
pub fn sysctl_path(key: &str) -> Option<String> {
    let path = ["net.ipv6.conf.", "net.ipv4.conf.", "net.ipv6.neigh.", "net.ipv4.neigh."]
        .iter()
        .find_map(|prefix| {
            let rest = key.strip_prefix(prefix)?;
            let (dev, setting) = rest.rsplit_once('.')?;
            Some(format!("sys/{}{dev}/{setting}", prefix.replace('.', "/")))
        })
        .unwrap_or_else(|| format!("sys/{}", key.replace('.', "/")));
    let bad = path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    (!bad).then_some(path)
}

#[cfg(test)]
mod tests {
    use introspect::linux::{Module, Mount, TtyDrivers};

    use super::lists::{module_line, mount_line};
    use super::task::escape_comm;
    use super::*;

    fn module(refcount: Option<i32>, used_by: &[&str], permanent: bool, state: &str, taints: &str) -> Module {
        Module {
            name: "vboxdrv".into(),
            size: 16384,
            refcount,
            used_by: used_by.iter().map(|u| (*u).to_owned()).collect(),
            permanent,
            state: state.into(),
            address: 0xffff_ffff_c04e_a000,
            taints: taints.into(),
        }
    }

    #[test]
    fn tty_driver_ranges_split_at_majors_like_show_tty_driver() {
        let driver = |driver_name: Option<&str>, minor_start: u32, num: u32| introspect::linux::TtyDriver {
            driver_name: driver_name.map(str::to_owned),
            name: "ttyX".into(),
            major: 4,
            minor_start,
            num,
            kind: "serial".into(),
        };
        let tty = TtyDrivers {
            drivers: vec![driver(None, 1_048_570, 10), driver(Some("one"), 7, 1)],
            unix98_ptys: false,
            vt: false,
        };
        assert_eq!(
            tty_drivers(Some(&tty)),
            "/dev/tty             /dev/tty        5       0 system:/dev/tty\n\
             /dev/console         /dev/console    5       1 system:console\n\
             unknown              /dev/ttyX       4 1048570-1048575 serial\n\
             unknown              /dev/ttyX       5 0-3 serial\n\
             one                  /dev/ttyX       4       7 serial\n"
        );
        // No drivers: not even the pseudo-drivers (they are printed with the first one).
        assert_eq!(tty_drivers(Some(&TtyDrivers::default())), "");
    }

    #[test]
    fn names_are_escaped_once_as_the_kernel_prints_them() {
        let mount = Mount {
            device: "/dev/a b".into(),
            mountpoint: "/mnt/a b\tc\nd\\e".into(),
            fstype: "ext4".into(),
            options: "rw,relatime".into(),
        };
        assert_eq!(
            mount_line(&mount),
            "/dev/a\\040b /mnt/a\\040b\\011c\\012d\\134e ext4 rw,relatime 0 0\n"
        );
        // /proc/PID/status: C-style, only newline and backslash.
        assert_eq!(escape_comm("a b\tc\nd\\e"), "a b\tc\\nd\\\\e");
    }

    #[test]
    fn module_lines_follow_m_show() {
        assert_eq!(
            module_line(&module(Some(0), &[], false, "Live", "")),
            "vboxdrv 16384 0 - Live 0xffffffffc04ea000\n"
        );
        assert_eq!(
            module_line(&module(Some(2), &["a", "b"], false, "Live", "OE")),
            "vboxdrv 16384 2 a,b, Live 0xffffffffc04ea000 (OE)\n"
        );
        assert_eq!(
            module_line(&module(Some(0), &[], true, "Loading", "P")),
            "vboxdrv 16384 0 [permanent], Loading 0xffffffffc04ea000 (P+)\n"
        );
        assert_eq!(
            module_line(&module(None, &[], false, "Unloading", "O")),
            "vboxdrv 16384 - - Unloading 0xffffffffc04ea000 (O-)\n"
        );
    }
}
