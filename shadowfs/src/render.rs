//! Pure rendering: the guest's `/proc` tree as the kernel would print it, from a snapshot.
//!
//! [`ProcTree::new`] lays out once which paths exist (directories, files, symlinks) from the
//! snapshot; [`ProcTree::render`] produces one node. Nothing here touches dom0 except
//! `sys/kernel/random/uuid`, which reads fresh randomness like the kernel does per read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use introspect::linux::{GuestSnapshot, Module, Mount, Task, TtyDrivers};
use introspect::octal_escape::escape;

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

/// Whether the snapshot knows the swap table: meminfo says how much swap there is, and the
/// list accounts for it.
fn swaps_known(s: &GuestSnapshot) -> bool {
    let total = s.system.meminfo.iter().find(|(k, _)| k == "SwapTotal").map(|(_, v)| *v);
    match total {
        Some(0) => s.system.swaps.is_empty(),
        Some(_) => !s.system.swaps.is_empty(),
        None => false,
    }
}

/// `proc_task_name()`'s escaping of a command name (`seq_escape_str` with `ESCAPE_SPACE |
/// ESCAPE_SPECIAL`, only `"\n\\"`): C-style, `\n` and `\\`, not octal.
fn escape_comm(comm: &str) -> String {
    comm.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `/proc/modules` (kernel/module/procfs.c `m_show`) as root reads it (`kptr_restrict` hides
/// the address only from readers without CAP_SYSLOG). Unformed modules are skipped.
fn modules(s: &GuestSnapshot) -> String {
    s.modules
        .iter()
        .filter(|m| m.state != "Unformed")
        .map(module_line)
        .collect()
}

/// One module's line: name, size, `print_unload_info()`, state, text base, `module_flags()`.
fn module_line(m: &Module) -> String {
    let mut out = format!("{} {}", m.name, m.size);
    match m.refcount {
        // Users each followed by ',' (so userspace can tell the format from the old one),
        // "-" for none.
        Some(r) => {
            let _ = write!(out, " {r} ");
            for user in &m.used_by {
                let _ = write!(out, "{user},");
            }
            if m.permanent {
                out.push_str("[permanent],");
            }
            if m.used_by.is_empty() && !m.permanent {
                out.push('-');
            }
        }
        // Without CONFIG_MODULE_UNLOAD the kernel prints " - -".
        None => out.push_str(" - -"),
    }
    let _ = write!(out, " {} 0x{:016x}", m.state, m.address);
    // The taint letters, then '-' while unloading or '+' while loading; nothing untainted.
    if !m.taints.is_empty() {
        let transition = match m.state.as_str() {
            "Unloading" => "-",
            "Loading" => "+",
            _ => "",
        };
        let _ = write!(out, " ({}{transition})", m.taints);
    }
    out.push('\n');
    out
}

/// `/proc/mounts` (fs/proc_namespace.c `show_vfsmnt`).
fn mounts(s: &GuestSnapshot) -> String {
    s.mounts.iter().map(mount_line).collect()
}

/// One mount's line; every name escaped once, as `mangle()` and `seq_path()` do.
fn mount_line(m: &Mount) -> String {
    format!(
        "{} {} {} {} 0 0\n",
        escape(&m.device),
        escape(&m.mountpoint),
        escape(&m.fstype),
        escape(&m.options)
    )
}

/// `/proc/meminfo` (fs/proc/meminfo.c): 16-column labels, 8-column values.
fn meminfo(s: &GuestSnapshot) -> String {
    let mut out = String::new();
    for (name, value) in &s.system.meminfo {
        let label = format!("{name}:");
        let unit = if name.starts_with("HugePages_") { "" } else { " kB" };
        if label.len() >= 16 {
            // "HardwareCorrupted: %5lu kB"
            let _ = writeln!(out, "{label} {value:>5}{unit}");
        } else {
            let _ = writeln!(out, "{label:<16}{value:>8}{unit}");
        }
    }
    out
}

/// `/proc/cpuinfo` (arch/x86/kernel/cpu/proc.c `show_cpuinfo`): the lines the snapshot has.
fn cpuinfo(s: &GuestSnapshot) -> String {
    let mut out = String::new();
    for c in &s.system.cpus {
        let _ = writeln!(out, "processor\t: {}", c.processor);
        let _ = writeln!(
            out,
            "vendor_id\t: {}",
            if c.vendor_id.is_empty() {
                "unknown"
            } else {
                &c.vendor_id
            }
        );
        let _ = writeln!(out, "cpu family\t: {}", c.family);
        let _ = writeln!(out, "model\t\t: {}", c.model);
        let _ = writeln!(
            out,
            "model name\t: {}",
            if c.model_name.is_empty() {
                "unknown"
            } else {
                &c.model_name
            }
        );
        let _ = writeln!(out, "stepping\t: {}", c.stepping);
        if let Some(m) = c.microcode {
            let _ = writeln!(out, "microcode\t: 0x{m:x}");
        }
        if let Some(mhz) = c.mhz {
            let _ = writeln!(out, "cpu MHz\t\t: {mhz:.3}");
        }
        if let Some(kb) = c.cache_size_kb {
            let _ = writeln!(out, "cache size\t: {kb} KB");
        }
        if let (Some(p), Some(sib), Some(core), Some(cores)) = (c.physical_id, c.siblings, c.core_id, c.cpu_cores) {
            let _ = writeln!(
                out,
                "physical id\t: {p}\nsiblings\t: {sib}\ncore id\t\t: {core}\ncpu cores\t: {cores}"
            );
        }
        if let Some(a) = c.apicid {
            let _ = writeln!(out, "apicid\t\t: {a}");
        }
        if let Some(a) = c.initial_apicid {
            let _ = writeln!(out, "initial apicid\t: {a}");
        }
        // show_cpuinfo_misc() of x86-64: fpu, exceptions and write protection always exist.
        if let Some(level) = c.cpuid_level {
            let _ = writeln!(
                out,
                "fpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: {level}\nwp\t\t: yes"
            );
        }
        let _ = writeln!(out, "flags\t\t: {}", c.flags.join(" "));
        let _ = writeln!(out, "bugs\t\t: {}", c.bugs.join(" "));
        if let Some(b) = c.bogomips {
            let _ = writeln!(out, "bogomips\t: {b:.2}");
        }
        if let Some(pages) = c.tlb_size {
            let _ = writeln!(out, "TLB size\t: {pages} 4K pages");
        }
        if let Some(v) = c.clflush_size {
            let _ = writeln!(out, "clflush size\t: {v}");
        }
        if let Some(v) = c.cache_alignment {
            let _ = writeln!(out, "cache_alignment\t: {v}");
        }
        if let Some((p, v)) = c.address_sizes {
            let _ = writeln!(out, "address sizes\t: {p} bits physical, {v} bits virtual");
        }
        out.push_str("power management:\n\n");
    }
    out
}

/// `/proc/tty/drivers` (fs/proc/proc_tty.c `show_tty_driver`): the fixed pseudo-drivers
/// before the first driver, then each driver's device range, one line per major it spans.
fn tty_drivers(tty: Option<&TtyDrivers>) -> String {
    const MINORBITS: u32 = 20;
    let mut out = String::new();
    let Some(tty) = tty else { return out };
    // "%-20s /dev/%-8s %3d " then the minors: "%7d" for a single device, "%d-%d" for more.
    let mut line = |driver: &str, name: &str, major: u32, minors: &str, kind: &str| {
        let _ = writeln!(out, "{driver:<20} /dev/{name:<8} {major:>3} {minors} {kind}");
    };
    let single = |minor: u32| format!("{minor:>7}");
    if !tty.drivers.is_empty() {
        line("/dev/tty", "tty", 5, &single(0), "system:/dev/tty");
        line("/dev/console", "console", 5, &single(1), "system:console");
        if tty.unix98_ptys {
            line("/dev/ptmx", "ptmx", 5, &single(2), "system");
        }
        if tty.vt {
            line("/dev/vc/0", "vc/0", 4, &single(0), "system:vtmaster");
        }
    }
    for d in &tty.drivers {
        let driver = d.driver_name.as_deref().unwrap_or("unknown");
        // dev_t arithmetic as the kernel does it, in 32 bits.
        let mut from = (d.major << MINORBITS).wrapping_add(d.minor_start);
        let to = from.wrapping_add(d.num);
        let minor = |dev: u32| dev & ((1 << MINORBITS) - 1);
        let mut range = |from: u32, num: u32| {
            let minors = if d.num > 1 {
                format!("{}-{}", minor(from), minor(from).wrapping_add(num).wrapping_sub(1))
            } else {
                single(minor(from))
            };
            line(driver, &d.name, from >> MINORBITS, &minors, &d.kind);
        };
        // At most 4096 majors exist (12 bits): a corrupt range cannot loop longer.
        while from >> MINORBITS < to >> MINORBITS {
            let next = ((from >> MINORBITS) + 1) << MINORBITS;
            range(from, next.wrapping_sub(from));
            from = next;
        }
        if from != to {
            range(from, to.wrapping_sub(from));
        }
    }
    out
}

/// `/proc/uptime`: seconds and hundredths, truncated.
fn uptime(s: &GuestSnapshot) -> String {
    let f = |ns: u64| format!("{}.{:02}", ns / 1_000_000_000, ns % 1_000_000_000 / 10_000_000);
    format!(
        "{} {}\n",
        f(s.system.uptime_ns.unwrap_or(0)),
        f(s.system.idle_ns.unwrap_or(0))
    )
}

/// `/proc/loadavg` (fs/proc/loadavg.c): LOAD_INT/LOAD_FRAC of avenrun + FIXED_1/200.
fn loadavg(s: &GuestSnapshot) -> String {
    const FSHIFT: u32 = 11;
    const FIXED_1: u64 = 1 << FSHIFT;
    let avg = s.system.avenrun.unwrap_or([0; 3]).map(|a| {
        let a = a.saturating_add(FIXED_1 / 200);
        format!("{}.{:02}", a >> FSHIFT, ((a & (FIXED_1 - 1)) * 100) >> FSHIFT)
    });
    format!(
        "{} {} {} {}/{} {}\n",
        avg[0],
        avg[1],
        avg[2],
        s.system.nr_running.unwrap_or(0),
        s.system.nr_threads.unwrap_or(0),
        s.system.last_pid.unwrap_or(0)
    )
}

/// `/proc/stat` (fs/proc/stat.c): the cpu lines and the counters the snapshot has. The `intr`
/// and `softirq` lines need per-IRQ counters the snapshot does not carry; they are left out.
fn stat(s: &GuestSnapshot) -> String {
    let sys = &s.system;
    let mut out = String::new();
    let mut total = [0u64; 10];
    for cpu in &sys.cpu_times {
        for (t, v) in total.iter_mut().zip(cpu) {
            *t = t.saturating_add(*v);
        }
    }
    let line = |out: &mut String, name: &str, v: &[u64; 10]| {
        out.push_str(name);
        for x in v {
            let _ = write!(out, " {x}");
        }
        out.push('\n');
    };
    line(&mut out, "cpu ", &total);
    for (i, cpu) in sys.cpu_times.iter().enumerate() {
        line(&mut out, &format!("cpu{i}"), cpu);
    }
    if let Some(v) = sys.context_switches {
        let _ = writeln!(out, "ctxt {v}");
    }
    if let Some(v) = sys.boot_time {
        let _ = writeln!(out, "btime {v}");
    }
    if let Some(v) = sys.forks {
        let _ = writeln!(out, "processes {v}");
    }
    if let Some(v) = sys.nr_running {
        let _ = writeln!(out, "procs_running {v}");
    }
    if let Some(v) = sys.procs_blocked {
        let _ = writeln!(out, "procs_blocked {v}");
    }
    out
}

/// `/proc/swaps` (mm/swapfile.c `swap_show`).
fn swaps(s: &GuestSnapshot) -> String {
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    for sw in &s.system.swaps {
        let name = escape(&sw.filename);
        let pad = if name.len() < 40 { 40 - name.len() } else { 1 };
        let kind = if sw.kind == "partition" { "partition" } else { "file\t" };
        let _ = writeln!(
            out,
            "{name}{:pad$}{kind}\t{}\t{}{}\t{}{}",
            "",
            sw.size_kb,
            if sw.size_kb < 10_000_000 { "\t" } else { "" },
            sw.used_kb,
            if sw.used_kb < 10_000_000 { "\t" } else { "" },
            sw.priority
        );
    }
    out
}

/// `/proc/PID/stat` and `/proc/PID/task/TID/stat` (fs/proc/array.c `do_task_stat`, of the
/// whole group or of one thread, as the snapshot computed the task's detail) as a reader with
/// ptrace access to the task (root) sees it; `threads` is the group's count. Fields 1-4
/// always; the other 48 only with the task's detail: positional fields cannot be skipped,
/// and none is made up.
fn task_stat(t: &Task, threads: usize) -> String {
    let mut out = format!("{} ({}) {} {}", t.pid, t.comm, t.state, t.ppid);
    if let Some(d) = &t.detail {
        // Signal fields are "obsolete ... decimal for Linux 2.0 compatibility": the first 31.
        let old_sigs = |set: u64| set & 0x7fff_ffff;
        let fields: [&dyn std::fmt::Display; 48] = [
            &d.pgrp,
            &d.session,
            &d.tty_nr,
            &d.tpgid,
            &d.flags,
            &d.minflt,
            &d.cminflt,
            &d.majflt,
            &d.cmajflt,
            &d.utime,
            &d.stime,
            &d.cutime,
            &d.cstime,
            &d.priority,
            &d.nice,
            &threads,
            // itrealvalue: always 0 since 2.6.17.
            &0,
            &d.start_time,
            &d.vsize,
            &d.rss_pages,
            &d.rsslim,
            &d.code.0,
            &d.code.1,
            &d.start_stack,
            &d.kstkesp,
            &d.kstkeip,
            &old_sigs(d.sig_pending),
            &old_sigs(d.sig_blocked),
            &old_sigs(d.sig_ignored),
            &old_sigs(d.sig_caught),
            &u8::from(d.wchan),
            // nswap, cnswap: never maintained, always 0.
            &0,
            &0,
            &d.exit_signal,
            &d.processor,
            &d.rt_priority,
            &d.policy,
            &d.delayacct_blkio_ticks,
            &d.guest_time,
            &d.cguest_time,
            &d.data.0,
            &d.data.1,
            &d.start_brk,
            &d.arg.0,
            &d.arg.1,
            &d.env.0,
            &d.env.1,
            &d.exit_code,
        ];
        for f in fields {
            let _ = write!(out, " {f}");
        }
    }
    out.push('\n');
    out
}

fn state_name(state: char) -> &'static str {
    match state {
        'R' => "R (running)",
        'S' => "S (sleeping)",
        'D' => "D (disk sleep)",
        'T' => "T (stopped)",
        't' => "t (tracing stop)",
        'X' => "X (dead)",
        'Z' => "Z (zombie)",
        'P' => "P (parked)",
        'I' => "I (idle)",
        _ => "? (unknown)",
    }
}

/// `/proc/PID/status` (fs/proc/array.c `proc_pid_status`): the lines the snapshot has, in the
/// kernel's order; `threads` is the group's count.
fn task_status(t: &Task, threads: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", escape_comm(&t.comm));
    if let Some(u) = t.detail.as_ref().and_then(|d| d.umask) {
        let _ = writeln!(out, "Umask:\t{u:04o}");
    }
    let _ = writeln!(out, "State:\t{}", state_name(t.state));
    let _ = writeln!(out, "Tgid:\t{}", t.tgid);
    let _ = writeln!(out, "Pid:\t{}", t.pid);
    let _ = writeln!(out, "PPid:\t{}", t.ppid);
    let Some(d) = &t.detail else {
        return out;
    };
    let _ = writeln!(out, "Uid:\t{}\t{}\t{}\t{}", t.uid, d.euid, d.suid, d.fsuid);
    let _ = writeln!(out, "Gid:\t{}\t{}\t{}\t{}", t.gid, d.egid, d.sgid, d.fsgid);
    out.push_str("Groups:\t");
    for g in &d.groups {
        let _ = write!(out, "{g} ");
    }
    out.push('\n');
    for (name, kb) in &d.vm {
        let _ = writeln!(out, "{name}:\t{kb:>8} kB");
    }
    if threads > 0 {
        let _ = writeln!(out, "Threads:\t{threads}");
    }
    let _ = writeln!(out, "SigBlk:\t{:016x}", d.sig_blocked);
    let _ = writeln!(out, "SigIgn:\t{:016x}", d.sig_ignored);
    let _ = writeln!(out, "SigCgt:\t{:016x}", d.sig_caught);
    for (name, v) in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].iter().zip(d.caps) {
        let _ = writeln!(out, "{name}:\t{v:016x}");
    }
    out
}

#[cfg(test)]
mod tests {
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
