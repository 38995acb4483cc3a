//! Walks the guest kernel's data structures into the parts of a [`GuestSnapshot`].
//!
//! Each part is read independently: a part that fails becomes a warning and an empty value,
//! so a damaged module list does not cost the task list.
//!
//! [`GuestSnapshot`]: super::snapshot::GuestSnapshot

use std::collections::BTreeMap;

use super::layout::{
    CtlTableLayout, DevinetConfLayout, FsOptionsLayout, FsTypeLayout, KthreadNameLayout, LayoutError, ModuleLayout,
    ModuleSize, ModuleUnloadLayout, MountLayout, NetConfLayout, NetDevLayout, TaskDetailLayout, TaskLayout, TypeInfo,
    UtsLayout,
};
use super::reader::{KernelReader, ReadError};
use super::snapshot::{FilesystemType, Interface, Module, Mount, Task, Uts};
use crate::arch::virt::VirtualMemory;
use crate::octal_escape::escape;

/// Resolved once per snapshot: the detail layout and, for root/cwd/exe paths, the mount
/// layout with the root they are shown relative to (init's, as the shadow /proc serves the
/// guest's tree).
pub(super) struct DetailContext {
    pub l: TaskDetailLayout,
    pub paths: Option<(MountLayout, (u64, u64))>,
}

/// Symbol addresses of the running kernel (already relocated for KASLR).
pub trait SymbolLookup {
    fn address(&self, name: &str) -> Option<u64>;
    /// The name of the symbol that starts exactly at `addr`.
    fn name_at(&self, addr: u64) -> Option<String>;
    /// Start of the first symbol above `addr`: an upper bound for the object at `addr`.
    fn next_after(&self, addr: u64) -> Option<u64>;
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the kernel's symbols have no `{0}`; the profile does not match this kernel or is incomplete")]
    NoSymbol(String),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ExtractError>;

/// Creates the address space of a user process from the physical address of its top-level
/// page table; `None` when that table is not in the image.
pub type UserSpaceFactory<'a> = dyn Fn(u64) -> Option<Box<dyn VirtualMemory + 'a>> + 'a;

/// Everything the walk reads through.
pub struct KernelView<'a> {
    pub kernel: &'a dyn VirtualMemory,
    pub symbols: &'a dyn SymbolLookup,
    pub types: &'a dyn TypeInfo,
    pub user_space: &'a UserSpaceFactory<'a>,
}

/// Arguments longer than this are cut (the kernel has no limit; `ps` output does not need it).
const MAX_CMDLINE: u64 = 1 << 20;
/// An environment area longer than this is cut: execve() accepts at most a quarter of the
/// stack limit (8 MiB by default) for arguments and environment together, so a larger one
/// was moved there by the process itself (prctl PR_SET_MM_ENV_*).
const MAX_ENVIRON: u64 = 2 << 20;
/// Threads of one group listed beyond this are left out with a warning: each is a full
/// record in the snapshot (`threads-max` allows millions).
const MAX_THREADS_PER_GROUP: usize = 16384;
pub(super) const PF_KTHREAD: u32 = 0x0020_0000;
/// `__state` of a task on a run queue (`task_is_running()`).
const TASK_RUNNING: u32 = 0;
const PF_WQ_WORKER: u32 = 0x0000_0020;
/// `proc_task_name()` formats into a 64-byte buffer.
const PROC_TASK_NAME_MAX: usize = 63;
const FS_REQUIRES_DEV: u32 = 1;
/// `module.mem[]` has `MOD_MEM_NUM_TYPES` (7) entries; more means a corrupt type source.
const MAX_MODULE_MEMS: u64 = 16;
/// `MODULE_REF_BASE`: a live module holds one reference on itself, which
/// `module_refcount()` does not count.
const MODULE_REF_BASE: i32 = 1;
/// `taint_flags[].c_true` by taint bit (kernel/panic.c, through TAINT_FWCTL of 6.15). Only
/// module taints (P F C O E K X T N J) are ever set in `module.taints`.
const TAINT_LETTERS: &[u8; 20] = b"PFSRMBUDAWCIOELKXTNJ";

impl<'a> KernelView<'a> {
    pub(super) fn reader(&self) -> KernelReader<'a> {
        KernelReader::new(self.kernel)
    }

    pub(super) fn symbol(&self, name: &str) -> Result<u64> {
        self.symbols
            .address(name)
            .ok_or_else(|| ExtractError::NoSymbol(name.to_owned()))
    }

    pub fn uts(&self) -> Result<Uts> {
        let l = UtsLayout::resolve(self.types)?;
        let base = self.symbol("init_uts_ns")?.wrapping_add(l.name);
        let r = self.reader();
        let field = |off: u64, what: &str| r.inline_string(base.wrapping_add(off), l.field_len as usize, what);
        Ok(Uts {
            sysname: field(l.sysname, "init_uts_ns.name.sysname")?,
            nodename: field(l.nodename, "init_uts_ns.name.nodename")?,
            release: field(l.release, "init_uts_ns.name.release")?,
            version: field(l.version, "init_uts_ns.name.version")?,
            machine: field(l.machine, "init_uts_ns.name.machine")?,
            domainname: field(l.domainname, "init_uts_ns.name.domainname")?,
        })
    }

    pub fn banner(&self) -> Result<String> {
        let text = self
            .reader()
            .c_string(self.symbol("linux_banner")?, 1024, "linux_banner")?;
        Ok(text.trim_end_matches('\n').to_owned())
    }

    pub fn cmdline(&self) -> Result<String> {
        let r = self.reader();
        let ptr = r.u64(self.symbol("saved_command_line")?, "saved_command_line")?;
        Ok(r.c_string(ptr, 4096, "the kernel command line")?)
    }

    /// `/proc/sys/kernel/random/boot_id`: generated lazily by the guest on first read, so a
    /// guest that never read it has none.
    pub fn boot_id(&self) -> Result<Option<String>> {
        let b = self
            .reader()
            .bytes(self.symbol("sysctl_bootid")?, 16, "sysctl_bootid")?;
        if b.iter().all(|x| *x == 0) {
            return Ok(None);
        }
        let bytes: [u8; 16] = b.as_slice().try_into().unwrap_or_default();
        Ok(Some(uuid::Uuid::from_bytes(bytes).hyphenated().to_string()))
    }

    /// Thread-group leaders in `init_task.tasks` order (what `ps -e` lists), kernel threads
    /// included, the idle task (pid 0) excluded.
    pub fn tasks(&self, release: &str) -> Result<(Vec<Task>, Vec<String>)> {
        let l = TaskLayout::resolve(self.types)?;
        let r = self.reader();
        let init_task = self.symbol("init_task")?;
        let frozen_bit = task_frozen_bit(release);
        let mut warnings = Vec::new();
        let detail = self
            .detail_context()
            .map_err(|e| warnings.push(format!("task details (/proc/PID/stat, status): {e}")))
            .ok();
        let mut tasks = Vec::new();
        for task in r.list(init_task.wrapping_add(l.tasks), l.tasks, "init_task.tasks")? {
            match self.task(&l, detail.as_ref(), task, frozen_bit, true, &mut warnings) {
                Ok(t) => tasks.push(t),
                Err(e) => warnings.push(format!("task_struct at {task:#x} skipped: {e}")),
            }
        }
        Ok((tasks, warnings))
    }

    /// The task at `task`: a thread-group leader with its group (`whole`, as `/proc/PID`
    /// shows it) or one thread on its own (as `/proc/PID/task/TID` shows it).
    fn task(
        &self,
        l: &TaskLayout,
        context: Option<&DetailContext>,
        task: u64,
        frozen_bit: Option<u32>,
        whole: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Task> {
        let r = self.reader();
        let pid = r.i32(task.wrapping_add(l.pid), "task_struct.pid")?;
        let tgid = r.i32(task.wrapping_add(l.tgid), "task_struct.tgid")?;
        let comm = r.inline_string(task.wrapping_add(l.comm), l.comm_len as usize, "task_struct.comm")?;
        let flags = r.u32(task.wrapping_add(l.flags), "task_struct.flags")?;
        let comm = match &l.kthread_names {
            Some(k) if flags & (PF_KTHREAD | PF_WQ_WORKER) != 0 => self.proc_task_name(k, task, flags, comm)?,
            _ => comm,
        };
        let parent = r.u64(task.wrapping_add(l.real_parent), "task_struct.real_parent")?;
        let ppid = if parent == 0 {
            0
        } else {
            r.i32(parent.wrapping_add(l.tgid), "real_parent->tgid")?
        };
        let cred = r.u64(task.wrapping_add(l.real_cred), "task_struct.real_cred")?;
        let uid = r.u32(cred.wrapping_add(l.cred_uid), "cred.uid")?;
        let gid = r.u32(cred.wrapping_add(l.cred_gid), "cred.gid")?;
        let mut state = r.u32(task.wrapping_add(l.state), "task_struct.__state")?;
        if frozen_bit.is_some_and(|bit| state & bit != 0) {
            state = self.state_before_freeze(l, task)?;
        }
        let exit_state = r.u32(task.wrapping_add(l.exit_state), "task_struct.exit_state")?;
        let kernel_thread = flags & PF_KTHREAD != 0;
        let mm = r.u64(task.wrapping_add(l.mm), "task_struct.mm")?;
        // The argument and environment areas belong to the group: read once, for the leader.
        let user_area = |start: u64, end: u64, max: u64, what: &str, warnings: &mut Vec<String>| match mm {
            _ if !whole => None,
            0 => Some(Vec::new()),
            mm => self
                .user_area(l, mm, (start, end), max, what)
                .map(|bytes| split_args(&bytes))
                .map_err(|e| warnings.push(format!("pid {pid} ({comm}): {what} unavailable: {e}")))
                .ok(),
        };
        let cmdline = user_area(l.mm_arg_start, l.mm_arg_end, MAX_CMDLINE, "command line", warnings);
        let environ = user_area(l.mm_env_start, l.mm_env_end, MAX_ENVIRON, "environment", warnings);
        let mut group = Vec::new();
        let detail = context.and_then(|c| {
            self.task_detail(c, l, task, flags, mm, whole, warnings)
                .map(|(mut d, threads)| {
                    // do_task_stat's `wchan = !task_is_running(task)`, shown for a thread and
                    // for a single-threaded group.
                    d.wchan = state != TASK_RUNNING && (!whole || d.threads.len() < 2);
                    group = threads;
                    d
                })
                .map_err(|e| warnings.push(format!("pid {pid} ({comm}): stat/status detail unavailable: {e}")))
                .ok()
        });
        if group.len() > MAX_THREADS_PER_GROUP {
            warnings.push(format!(
                "pid {pid} ({comm}): {} threads, only the first {MAX_THREADS_PER_GROUP} are listed in /proc/{pid}/task",
                group.len()
            ));
        }
        let mut threads = Vec::new();
        for t in group.into_iter().take(MAX_THREADS_PER_GROUP) {
            match self.task(l, context, t, frozen_bit, false, warnings) {
                Ok(t) => threads.push(t),
                Err(e) => warnings.push(format!("pid {pid} ({comm}): thread task_struct at {t:#x} skipped: {e}")),
            }
        }
        Ok(Task {
            pid,
            tgid,
            ppid,
            uid,
            gid,
            state: state_letter(state, exit_state),
            comm,
            kernel_thread,
            cmdline,
            detail,
            environ,
            threads,
        })
    }

    /// The name `/proc/PID/stat` and `status` show for a kernel thread: a workqueue worker's
    /// `comm` plus, while attached to a pool, `+desc` (running) or `-desc` (last ran); another
    /// kernel thread's full name (`comm` is cut at 15 characters).
    fn proc_task_name(&self, k: &KthreadNameLayout, task: u64, flags: u32, comm: String) -> Result<String> {
        let r = self.reader();
        let kthread = r.u64(task.wrapping_add(k.task_kthread), "task_struct.worker_private")?;
        if kthread == 0 {
            return Ok(comm);
        }
        let mut name = if flags & PF_WQ_WORKER != 0 {
            let worker = r.u64(kthread.wrapping_add(k.kthread_data), "kthread.data")?;
            // wq_worker_comm() adds the desc only for a worker attached to a pool: a rescuer
            // that once ran keeps its desc after detaching, yet shows its plain comm.
            if r.u64(worker.wrapping_add(k.worker_pool), "worker.pool")? == 0 {
                return Ok(comm);
            }
            let desc = r.inline_string(
                worker.wrapping_add(k.worker_desc),
                k.worker_desc_len as usize,
                "worker.desc",
            )?;
            if desc.is_empty() {
                comm
            } else {
                let running = r.u64(worker.wrapping_add(k.worker_current_work), "worker.current_work")? != 0;
                format!("{comm}{}{desc}", if running { '+' } else { '-' })
            }
        } else {
            match r.u64(kthread.wrapping_add(k.kthread_full_name), "kthread.full_name")? {
                0 => comm,
                full => r.c_string(full, PROC_TASK_NAME_MAX, "kthread.full_name")?,
            }
        };
        let mut end = name.len().min(PROC_TASK_NAME_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        Ok(name)
    }

    /// `xl save` freezes user tasks before suspending, so their `__state` is TASK_FROZEN; what
    /// `ps` would show is the state they return to when thawed. Since 6.6 the freezer keeps it
    /// in `saved_state`. In 6.1–6.5 it is not kept: thawing wakes the task, except that stopped
    /// and traced tasks are restored from `jobctl` — and a woken sleeper goes back to sleep, so
    /// it reads as S.
    fn state_before_freeze(&self, l: &TaskLayout, task: u64) -> Result<u32> {
        const JOBCTL_STOPPED: u64 = 1 << 26;
        const JOBCTL_TRACED: u64 = 1 << 27;
        const TASK_INTERRUPTIBLE: u32 = 1;
        let r = self.reader();
        if let Some(saved) = l.saved_state {
            return Ok(r.u32(task.wrapping_add(saved), "task_struct.saved_state")?);
        }
        let jobctl = match l.jobctl {
            Some(off) => r.u64(task.wrapping_add(off), "task_struct.jobctl")?,
            None => 0,
        };
        Ok(if jobctl & JOBCTL_TRACED != 0 {
            8
        } else if jobctl & JOBCTL_STOPPED != 0 {
            4
        } else {
            TASK_INTERRUPTIBLE
        })
    }

    /// Bytes `[start, end)` of the process's address space whose bounds are the `mm_struct`
    /// fields at `bounds` (`arg_start`/`arg_end`, `env_start`/`env_end`), cut at `max`; an
    /// error when any of its pages is not in the image.
    fn user_area(&self, l: &TaskLayout, mm: u64, bounds: (u64, u64), max: u64, what: &str) -> Result<Vec<u8>> {
        let r = self.reader();
        let start = r.u64(mm.wrapping_add(bounds.0), "mm_struct area start")?;
        let end = r.u64(mm.wrapping_add(bounds.1), "mm_struct area end")?;
        if end < start {
            return Err(ExtractError::Invalid(format!(
                "{what}: end {end:#x} below start {start:#x}"
            )));
        }
        let len = (end - start).min(max) as usize;
        let pgd = r.u64(mm.wrapping_add(l.mm_pgd), "mm_struct.pgd")?;
        let pgd_phys = self.kernel.translate(pgd).map_err(|source| ReadError::Virt {
            what: "mm_struct.pgd".into(),
            source,
        })?;
        let user = (self.user_space)(pgd_phys).ok_or_else(|| {
            ExtractError::Invalid(format!("page table at physical {pgd_phys:#x} is not in the image"))
        })?;
        Ok(KernelReader::new(user.as_ref()).bytes(start, len, what)?)
    }

    pub fn filesystems(&self) -> Result<Vec<FilesystemType>> {
        let l = FsTypeLayout::resolve(self.types)?;
        let r = self.reader();
        let first = r.u64(self.symbol("file_systems")?, "file_systems")?;
        r.chain(first, l.next, "the file_systems chain")?
            .into_iter()
            .map(|fs| {
                let name_ptr = r.u64(fs.wrapping_add(l.name), "file_system_type.name")?;
                Ok(FilesystemType {
                    name: r.c_string(name_ptr, 256, "file_system_type.name")?,
                    nodev: r.u32(fs.wrapping_add(l.fs_flags), "file_system_type.fs_flags")? & FS_REQUIRES_DEV == 0,
                })
            })
            .collect()
    }

    /// Loaded modules, newest first like `/proc/modules`.
    pub fn modules(&self) -> Result<Vec<Module>> {
        let l = ModuleLayout::resolve(self.types)?;
        let r = self.reader();
        r.list(self.symbol("modules")?, l.list, "the module list")?
            .into_iter()
            .map(|m| {
                let size = match &l.size {
                    ModuleSize::Layouts {
                        offsets,
                        size_in_layout,
                    } => offsets.iter().try_fold(0u64, |sum, off| {
                        Ok::<_, ReadError>(
                            sum + r.u32(m.wrapping_add(off + size_in_layout), "module layout size")? as u64,
                        )
                    })?,
                    ModuleSize::MemArray {
                        mem,
                        stride,
                        count,
                        size_in_mem,
                    } => (0..(*count).min(MAX_MODULE_MEMS)).try_fold(0u64, |sum, i| {
                        Ok::<_, ReadError>(
                            sum + r.u32(m.wrapping_add(mem + i * stride + size_in_mem), "module_memory.size")? as u64,
                        )
                    })?,
                };
                let state = match r.u32(m.wrapping_add(l.state), "module.state")? {
                    0 => "Live",
                    1 => "Loading",
                    2 => "Unloading",
                    _ => "Unformed",
                };
                let (refcount, used_by, permanent) = match &l.unload {
                    Some(u) => self.module_users(u, &l, m)?,
                    None => (None, Vec::new(), false),
                };
                let taints = r.u64(m.wrapping_add(l.taints), "module.taints")?;
                Ok(Module {
                    name: r.inline_string(m.wrapping_add(l.name), l.name_len as usize, "module.name")?,
                    size,
                    refcount,
                    used_by,
                    permanent,
                    state: state.to_owned(),
                    address: r.u64(m.wrapping_add(l.text_base), "module text base")?,
                    taints: TAINT_LETTERS
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| taints & (1 << bit) != 0)
                        .map(|(_, c)| char::from(*c))
                        .collect(),
                })
            })
            .collect()
    }

    /// `print_unload_info()`'s data: `module_refcount()`, the names of the modules on
    /// `source_list` (those using this one) and whether it is permanent.
    fn module_users(
        &self,
        u: &ModuleUnloadLayout,
        l: &ModuleLayout,
        m: u64,
    ) -> Result<(Option<i32>, Vec<String>, bool)> {
        let r = self.reader();
        let refcount = r
            .i32(m.wrapping_add(u.refcnt), "module.refcnt")?
            .wrapping_sub(MODULE_REF_BASE);
        let used_by = r
            .list(m.wrapping_add(u.source_list), u.use_source_list, "module.source_list")?
            .into_iter()
            .map(|using| {
                let source = r.u64(using.wrapping_add(u.use_source), "module_use.source")?;
                r.inline_string(
                    source.wrapping_add(l.name),
                    l.name_len as usize,
                    "module_use.source->name",
                )
            })
            .collect::<std::result::Result<_, _>>()?;
        let init = r.u64(m.wrapping_add(u.init), "module.init")?;
        let exit = r.u64(m.wrapping_add(u.exit), "module.exit")?;
        Ok((Some(refcount), used_by, init != 0 && exit == 0))
    }

    /// The sysctls a package manager and maintainer scripts read: the kernel's own tables
    /// (`kern_table`, `vm_table`, ...), `net.ipv4.ip_forward` and IPv4's and IPv6's
    /// `all`/`default`/per-interface device configuration, decoded by each entry's handler exactly as `/proc/sys` prints it.
    pub fn sysctls(&self) -> Result<(BTreeMap<String, String>, Vec<String>)> {
        let ctl = CtlTableLayout::resolve(self.types)?;
        let hz = self.hz();
        let mut out = BTreeMap::new();
        let mut warnings = Vec::new();
        for (table, prefix) in [("kern_table", "kernel"), ("vm_table", "vm"), ("fs_table", "fs")] {
            let Some(addr) = self.symbols.address(table) else {
                continue;
            };
            match self.ctl_table(&ctl, addr, None, hz) {
                Ok(entries) => out.extend(entries.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v))),
                Err(e) => warnings.push(format!("{table}: {e}")),
            }
        }
        match self.ipv6_conf(&ctl, hz) {
            Ok(entries) => out.extend(entries),
            Err(e) => warnings.push(format!("net.ipv6.conf: {e}")),
        }
        match self.ipv4_conf(&ctl, hz) {
            Ok(entries) => out.extend(entries),
            Err(e) => warnings.push(format!("net.ipv4.conf: {e}")),
        }
        if hz.is_none() {
            warnings.push("HZ unknown (no tick_nsec): time-valued sysctls left out".into());
        }
        Ok((out, warnings))
    }

    fn ipv6_conf(&self, ctl: &CtlTableLayout, hz: Option<u64>) -> Result<Vec<(String, String)>> {
        let net = NetConfLayout::resolve(self.types)?;
        let r = self.reader();
        let table = self.symbol("addrconf_sysctl")?;
        // The table's data pointers aim into the template `ipv6_devconf`; each namespace's
        // copies have the same layout, so rebase them.
        let template = self.symbol("ipv6_devconf")?;
        let init_net = self.symbol("init_net")?;
        let mut out = Vec::new();
        let mut instances = vec![
            (
                "all".to_owned(),
                r.u64(init_net.wrapping_add(net.ipv6_devconf_all), "init_net.ipv6.devconf_all")?,
            ),
            (
                "default".to_owned(),
                r.u64(
                    init_net.wrapping_add(net.ipv6_devconf_dflt),
                    "init_net.ipv6.devconf_dflt",
                )?,
            ),
        ];
        // Each interface with IPv6 carries its own copy inline in its inet6_dev.
        if let Ok(dev) = NetDevLayout::resolve(self.types) {
            let head = init_net.wrapping_add(dev.net_dev_base_head);
            for nd in r.list(head, dev.dev_list, "init_net.dev_base_head")? {
                let in6 = r.u64(nd.wrapping_add(dev.ip6_ptr), "net_device.ip6_ptr")?;
                if in6 != 0 {
                    let name = r.inline_string(nd.wrapping_add(dev.name), dev.name_len as usize, "net_device.name")?;
                    // sysctl(8) spells a dot inside an interface name as a slash.
                    instances.push((name.replace('.', "/"), in6.wrapping_add(dev.inet6_cnf)));
                }
            }
        }
        for (which, instance) in instances {
            for (k, v) in self.ctl_table(ctl, table, Some((template, instance)), hz)? {
                out.push((format!("net.ipv6.conf.{which}.{k}"), v));
            }
        }
        Ok(out)
    }

    /// `net.ipv4.ip_forward` and `net.ipv4.conf.{all,default,<if>}.*` of the initial namespace.
    /// `devinet_sysctl.devinet_vars` and `ctl_forward_entry` are the templates the kernel
    /// copies per instance: their data pointers aim into `ipv4_devconf` and are rebased onto
    /// each copy (`__devinet_sysctl_register()`, `devinet_init_net()`); ip_forward is the
    /// `all` copy's `forwarding`.
    fn ipv4_conf(&self, ctl: &CtlTableLayout, hz: Option<u64>) -> Result<Vec<(String, String)>> {
        let l = DevinetConfLayout::resolve(self.types)?;
        let r = self.reader();
        let table = self.symbol("devinet_sysctl")?.wrapping_add(l.vars);
        let template = self.symbol("ipv4_devconf")?;
        let init_net = self.symbol("init_net")?;
        let all = r.u64(init_net.wrapping_add(l.devconf_all), "init_net.ipv4.devconf_all")?;
        let dflt = r.u64(init_net.wrapping_add(l.devconf_dflt), "init_net.ipv4.devconf_dflt")?;
        let mut out = Vec::new();
        for (k, v) in self.ctl_table(ctl, self.symbol("ctl_forward_entry")?, Some((template, all)), hz)? {
            out.push((format!("net.ipv4.{k}"), v));
        }
        let mut instances = vec![("all".to_owned(), all), ("default".to_owned(), dflt)];
        // Each interface with IPv4 carries its own copy inline in its in_device.
        if let Ok(dev) = NetDevLayout::resolve(self.types) {
            let head = init_net.wrapping_add(dev.net_dev_base_head);
            for nd in r.list(head, dev.dev_list, "init_net.dev_base_head")? {
                let in_dev = r.u64(nd.wrapping_add(dev.ip_ptr), "net_device.ip_ptr")?;
                if in_dev != 0 {
                    let name = r.inline_string(nd.wrapping_add(dev.name), dev.name_len as usize, "net_device.name")?;
                    // sysctl(8) spells a dot inside an interface name as a slash.
                    instances.push((name.replace('.', "/"), in_dev.wrapping_add(l.in_dev_cnf)));
                }
            }
        }
        for (which, instance) in instances {
            for (k, v) in self.ctl_table(ctl, table, Some((template, instance)), hz)? {
                out.push((format!("net.ipv4.conf.{which}.{k}"), v));
            }
        }
        Ok(out)
    }

    /// Reads one `struct ctl_table` array. Arrays end with an empty entry (≤ 6.10) or at the
    /// end of the object (6.11+, no sentinel), whichever the symbol table bounds first.
    fn ctl_table(
        &self,
        l: &CtlTableLayout,
        table: u64,
        rebase: Option<(u64, u64)>,
        hz: Option<u64>,
    ) -> Result<Vec<(String, String)>> {
        const MAX_ENTRIES: u64 = 1024;
        let r = self.reader();
        if l.stride == 0 {
            return Err(ExtractError::Invalid("struct ctl_table has size 0".into()));
        }
        let end = self
            .symbols
            .next_after(table)
            .unwrap_or(table.saturating_add(MAX_ENTRIES.saturating_mul(l.stride)));
        let mut out = Vec::new();
        let mut entry = table;
        while entry.checked_add(l.stride).is_some_and(|next| next <= end) && (entry - table) / l.stride < MAX_ENTRIES {
            let procname = r.u64(entry.wrapping_add(l.procname), "ctl_table.procname")?;
            if procname == 0 {
                break;
            }
            let name = r.c_string(procname, 128, "ctl_table.procname")?;
            let mut data = r.u64(entry.wrapping_add(l.data), "ctl_table.data")?;
            let maxlen = r.i32(entry.wrapping_add(l.maxlen), "ctl_table.maxlen")?;
            let handler = r.u64(entry.wrapping_add(l.proc_handler), "ctl_table.proc_handler")?;
            entry += l.stride;
            if let Some((template, instance)) = rebase {
                match data.checked_sub(template) {
                    Some(off) if off < 4096 => data = instance.wrapping_add(off),
                    _ => continue,
                }
            }
            if data == 0 || maxlen <= 0 {
                continue;
            }
            let handler = self.symbols.name_at(handler).unwrap_or_default();
            if let Some(value) = sysctl_value(&r, &handler, data, maxlen as u64, hz) {
                out.push((name, value?));
            }
        }
        Ok(out)
    }

    /// The `task_struct` of `pid` (a thread-group leader).
    pub(super) fn find_task(&self, pid: i32) -> Result<u64> {
        let l = TaskLayout::resolve(self.types)?;
        let r = self.reader();
        let init_task = self.symbol("init_task")?;
        for task in r.list(init_task.wrapping_add(l.tasks), l.tasks, "init_task.tasks")? {
            if r.i32(task.wrapping_add(l.pid), "task_struct.pid")? == pid {
                return Ok(task);
            }
        }
        Err(ExtractError::Invalid(format!("no task with pid {pid}")))
    }

    /// Init's root directory as (vfsmount, dentry): the root guest paths are shown from.
    pub(super) fn init_root(&self, l: &MountLayout) -> Result<(u64, u64)> {
        let r = self.reader();
        let init = self.find_task(1)?;
        let fs = r.u64(init.wrapping_add(l.task_fs), "task_struct.fs")?;
        let root_mnt = r.u64(
            fs.wrapping_add(l.fs_root).wrapping_add(l.path_mnt),
            "fs_struct.root.mnt",
        )?;
        let root_dentry = r.u64(
            fs.wrapping_add(l.fs_root).wrapping_add(l.path_dentry),
            "fs_struct.root.dentry",
        )?;
        Ok((root_mnt, root_dentry))
    }

    /// `/proc/1/mounts`: the mounts of init's namespace that are visible from its root, in
    /// namespace order, with the generic options and the filesystem-specific ones
    /// [`fs_options`](Self::fs_options) can render; what it cannot is among the warnings.
    pub fn mounts(&self) -> Result<(Vec<Mount>, Vec<String>)> {
        let l = MountLayout::resolve(self.types)?;
        let r = self.reader();
        let mut warnings = Vec::new();
        let init = self.find_task(1)?;
        let (root_mnt, root_dentry) = self.init_root(&l)?;
        let nsproxy = r.u64(init.wrapping_add(l.task_nsproxy), "task_struct.nsproxy")?;
        let ns = r.u64(nsproxy.wrapping_add(l.nsproxy_mnt_ns), "nsproxy.mnt_ns")?;
        let mounts = match (l.ns_list, l.mount_list, l.ns_rbtree, l.mount_node) {
            (Some(list), Some(link), _, _) => r.list(ns.wrapping_add(list), link, "mnt_namespace.list")?,
            (_, _, Some(tree), Some(node)) => {
                self.rbtree(r.u64(ns.wrapping_add(tree), "mnt_namespace.mounts")?, node)?
            }
            _ => {
                return Err(ExtractError::Invalid(
                    "no way to enumerate mounts in this kernel".into(),
                ));
            }
        };
        let fs_opts = FsOptionsLayout::resolve(self.types)
            .map_err(|e| warnings.push(format!("/proc/mounts: filesystem-specific options left out: {e}")))
            .ok();
        // totalram_pages(), against which shmem compares its limits.
        let totalram = self
            .symbols
            .address("_totalram_pages")
            .and_then(|a| r.u64(a, "_totalram_pages").ok());
        let mut out = Vec::new();
        for m in mounts {
            let vfs = m.wrapping_add(l.mount_mnt);
            let mnt_root = r.u64(vfs.wrapping_add(l.vfsmount_root), "vfsmount.mnt_root")?;
            let Some(mountpoint) = self.prepend_path(&l, vfs, mnt_root, (root_mnt, root_dentry))? else {
                continue; // outside init's root, as /proc/mounts skips it
            };
            let sb = r.u64(vfs.wrapping_add(l.vfsmount_sb), "vfsmount.mnt_sb")?;
            let fs_type = r.u64(sb.wrapping_add(l.sb_type), "super_block.s_type")?;
            let fstype = r.c_string(
                r.u64(fs_type.wrapping_add(l.fs_type_name), "file_system_type.name")?,
                256,
                "fs name",
            )?;
            let devname = match r.u64(m.wrapping_add(l.mount_devname), "mount.mnt_devname")? {
                0 => "none".to_owned(),
                p => r.c_string(p, 4096, "mount.mnt_devname")?,
            };
            let mnt_flags = r.u32(vfs.wrapping_add(l.vfsmount_flags), "vfsmount.mnt_flags")?;
            let sb_flags = r.u64(sb.wrapping_add(l.sb_flags), "super_block.s_flags")?;
            let mut options = mount_options(mnt_flags, sb_flags);
            match fs_opts.as_ref().map(|fo| self.fs_options(fo, sb, totalram)) {
                Some(Ok(specific)) => {
                    options.push_str(&specific.text);
                    if let Some(missing) = specific.missing {
                        warnings.push(format!(
                            "/proc/mounts: {} ({fstype}): {missing} left out",
                            escape(&mountpoint)
                        ));
                    }
                }
                Some(Err(e)) => warnings.push(format!(
                    "/proc/mounts: {} ({fstype}): options: {e}",
                    escape(&mountpoint)
                )),
                None => {}
            }
            out.push(Mount {
                device: devname,
                mountpoint,
                fstype,
                options,
            });
        }
        Ok((out, warnings))
    }

    /// In-order walk of a kernel rbtree whose nodes sit `node_offset` into their containers.
    fn rbtree(&self, root: u64, node_offset: u64) -> Result<Vec<u64>> {
        const RB_RIGHT: u64 = 8;
        const RB_LEFT: u64 = 16;
        let r = self.reader();
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut node = root;
        let mut steps = 0usize;
        while node != 0 || !stack.is_empty() {
            steps += 1;
            if steps > 2 * super::reader::MAX_LIST_LEN {
                return Err(ExtractError::Invalid(format!(
                    "rbtree at {root:#x} does not end (corrupt or hostile)"
                )));
            }
            while node != 0 {
                if stack.len() > 64 {
                    return Err(ExtractError::Invalid(format!(
                        "rbtree at {root:#x} deeper than 64 levels"
                    )));
                }
                stack.push(node);
                node = r.u64(node.wrapping_add(RB_LEFT), "rb_node.rb_left")?;
            }
            let Some(top) = stack.pop() else { break };
            out.push(top.wrapping_sub(node_offset));
            node = r.u64(top.wrapping_add(RB_RIGHT), "rb_node.rb_right")?;
        }
        Ok(out)
    }

    /// The kernel's `prepend_path()`: the path of (vfsmount, dentry) as seen from `root`, or
    /// `None` when it is not below `root`.
    pub(super) fn prepend_path(
        &self,
        l: &MountLayout,
        mut vfs: u64,
        mut dentry: u64,
        root: (u64, u64),
    ) -> Result<Option<String>> {
        const MAX_DEPTH: usize = 4096;
        let r = self.reader();
        let mut names = Vec::new();
        for _ in 0..MAX_DEPTH {
            if (vfs, dentry) == root {
                names.reverse();
                return Ok(Some(format!("/{}", names.join("/"))));
            }
            let mnt_root = r.u64(vfs.wrapping_add(l.vfsmount_root), "vfsmount.mnt_root")?;
            let parent_dentry = r.u64(dentry.wrapping_add(l.dentry_parent), "dentry.d_parent")?;
            if dentry == mnt_root || parent_dentry == dentry {
                let mount = vfs.wrapping_sub(l.mount_mnt);
                let parent = r.u64(mount.wrapping_add(l.mount_parent), "mount.mnt_parent")?;
                if parent == mount {
                    return Ok(None);
                }
                dentry = r.u64(mount.wrapping_add(l.mount_mountpoint), "mount.mnt_mountpoint")?;
                vfs = parent.wrapping_add(l.mount_mnt);
                continue;
            }
            let name = r.c_string(
                r.u64(dentry.wrapping_add(l.dentry_name), "dentry.d_name.name")?,
                256,
                "dentry name",
            )?;
            names.push(name);
            dentry = parent_dentry;
        }
        Err(ExtractError::Invalid(format!(
            "path of dentry {dentry:#x} deeper than {MAX_DEPTH} components"
        )))
    }

    /// Interfaces of the initial network namespace with their addresses.
    pub fn interfaces(&self) -> Result<Vec<Interface>> {
        let l = NetDevLayout::resolve(self.types)?;
        let r = self.reader();
        let head = self.symbol("init_net")?.wrapping_add(l.net_dev_base_head);
        r.list(head, l.dev_list, "init_net.dev_base_head")?
            .into_iter()
            .map(|dev| {
                let name = r.inline_string(dev.wrapping_add(l.name), l.name_len as usize, "net_device.name")?;
                let addr_len = r.bytes(dev.wrapping_add(l.addr_len), 1, "net_device.addr_len")?[0] as usize;
                let dev_addr = r.u64(dev.wrapping_add(l.dev_addr), "net_device.dev_addr")?;
                let mac = if addr_len == 0 || dev_addr == 0 {
                    None
                } else {
                    let b = r.bytes(dev_addr, addr_len.min(32), "net_device.dev_addr")?;
                    Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
                };
                let mut ipv4 = Vec::new();
                let in_dev = r.u64(dev.wrapping_add(l.ip_ptr), "net_device.ip_ptr")?;
                if in_dev != 0 {
                    let first = r.u64(in_dev.wrapping_add(l.in_dev_ifa_list), "in_device.ifa_list")?;
                    for ifa in r.chain(first, l.ifa_next, "in_device.ifa_list")? {
                        let a = r.bytes(ifa.wrapping_add(l.ifa_local), 4, "in_ifaddr.ifa_local")?;
                        let len = r.bytes(ifa.wrapping_add(l.ifa_prefixlen), 1, "in_ifaddr.ifa_prefixlen")?[0];
                        ipv4.push(format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3]));
                    }
                }
                let mut ipv6 = Vec::new();
                let in6_dev = r.u64(dev.wrapping_add(l.ip6_ptr), "net_device.ip6_ptr")?;
                if in6_dev != 0 {
                    for ifa in r.list(
                        in6_dev.wrapping_add(l.inet6_addr_list),
                        l.ifa6_if_list,
                        "inet6_dev.addr_list",
                    )? {
                        let a = r.bytes(ifa.wrapping_add(l.ifa6_addr), 16, "inet6_ifaddr.addr")?;
                        let len = r.u32(ifa.wrapping_add(l.ifa6_prefix_len), "inet6_ifaddr.prefix_len")?;
                        let addr = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(a.as_slice()).unwrap_or([0; 16]));
                        ipv6.push(format!("{addr}/{len}"));
                    }
                }
                Ok(Interface { name, mac, ipv4, ipv6 })
            })
            .collect()
    }

    /// The guest's tick rate, from the length of a tick it keeps in `tick_nsec`.
    pub(super) fn hz(&self) -> Option<u64> {
        let tick = self
            .reader()
            .u64(self.symbols.address("tick_nsec")?, "tick_nsec")
            .ok()?;
        let hz = 1_000_000_000u64.checked_div(tick)?;
        // NTP nudges tick_nsec a little; snap to the rates Linux can be configured with.
        [100u64, 250, 300, 1000]
            .into_iter()
            .min_by_key(|c| c.abs_diff(hz))
            .filter(|c| c.abs_diff(hz) * 20 < *c)
    }
}

/// Decodes a sysctl's value the way its handler would print it; `None` for handlers whose
/// output is not a plain function of the data (those are left out rather than guessed).
fn sysctl_value(
    r: &KernelReader,
    handler: &str,
    data: u64,
    maxlen: u64,
    hz: Option<u64>,
) -> Option<std::result::Result<String, ReadError>> {
    let maxlen = maxlen.min(4096);
    let ints = |size: u64, signed: bool| -> std::result::Result<Vec<i128>, ReadError> {
        let bytes = r.bytes(data, maxlen as usize, "sysctl data")?;
        Ok(bytes
            .chunks_exact(size as usize)
            .map(|c| match (size, signed) {
                (1, _) => c[0] as i128,
                (4, true) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128,
                (4, false) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128,
                (_, true) => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128,
                (_, false) => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128,
            })
            .collect())
    };
    let join = |v: Vec<i128>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\t");
    let scaled = |num: i128, den: i128| -> Option<std::result::Result<String, ReadError>> {
        Some(ints(4, true).map(|v| join(v.into_iter().map(|j| j * num / den).collect())))
    };
    match handler {
        "proc_dostring" => Some(r.c_string(data, maxlen as usize, "sysctl string")),
        "proc_dou8vec_minmax" => Some(ints(1, false).map(join)),
        "proc_douintvec" | "proc_douintvec_minmax" => Some(ints(4, false).map(join)),
        "proc_doulongvec_minmax" => Some(ints(8, false).map(join)),
        "proc_dointvec_jiffies" => hz.and_then(|hz| scaled(1, hz as i128)),
        "proc_dointvec_userhz_jiffies" => hz.and_then(|hz| scaled(100, hz as i128)),
        "proc_dointvec_ms_jiffies" => hz.and_then(|hz| scaled(1000, hz as i128)),
        // Reads EIO until a secret is set; /proc/sys shows no value.
        "addrconf_sysctl_stable_secret" => None,
        // IPv4's device handlers act on writes; reading is proc_dointvec().
        "devinet_conf_proc" | "devinet_sysctl_forward" | "ipv4_doint_and_flush" => Some(ints(4, true).map(join)),
        h if h.starts_with("proc_dointvec") || h.starts_with("addrconf_sysctl_") => Some(ints(4, true).map(join)),
        _ => None,
    }
}

/// The generic part of a `/proc/mounts` option string (`show_sb_opts` + `show_mnt_opts`);
/// filesystem-specific options (`size=`, `mode=`, ...) come from driver code and are absent.
fn mount_options(mnt_flags: u32, sb_flags: u64) -> String {
    const SB_RDONLY: u64 = 1;
    const MNT_READONLY: u32 = 0x40;
    let mut opts = vec![if sb_flags & SB_RDONLY != 0 || mnt_flags & MNT_READONLY != 0 {
        "ro"
    } else {
        "rw"
    }];
    for (bit, name) in [
        (0x10u64, "sync"),
        (0x80, "dirsync"),
        (0x40, "mand"),
        (1 << 25, "lazytime"),
    ] {
        if sb_flags & bit != 0 {
            opts.push(name);
        }
    }
    for (bit, name) in [
        (1u32, "nosuid"),
        (2, "nodev"),
        (4, "noexec"),
        (8, "noatime"),
        (0x10, "nodiratime"),
        (0x20, "relatime"),
    ] {
        if mnt_flags & bit != 0 {
            opts.push(name);
        }
    }
    opts.join(",")
}

/// The `TASK_FROZEN` state bit, which exists since Linux 6.1 (the freezer rewrite).
fn task_frozen_bit(release: &str) -> Option<u32> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) >= (6, 1)).then_some(0x8000)
}

/// `task_state_index()` of fs/proc/array.c: the lowest reportable state bit wins.
fn state_letter(state: u32, exit_state: u32) -> char {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x0402; // TASK_UNINTERRUPTIBLE | TASK_NOLOAD
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const LETTERS: [char; 9] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];
    let reported = if state == TASK_IDLE {
        0x80
    } else if state == TASK_RTLOCK_WAIT {
        0x2
    } else {
        (state | exit_state) & TASK_REPORT
    };
    let index = 32 - reported.leading_zeros(); // fls()
    LETTERS.get(index as usize).copied().unwrap_or('?')
}

/// Splits an argument area into arguments the way `/proc/PID/cmdline` readers do.
fn split_args(bytes: &[u8]) -> Vec<String> {
    let trimmed = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::reader::tests::FlatMemory;

    /// A compact fixed layout and symbol table for walks over crafted memory (the layout of
    /// the `kernel_walk` fuzz target, cut to what the tests need).
    struct Fixed;

    const BASE: u64 = 0xffff_8880_0000_0000;

    impl TypeInfo for Fixed {
        fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
            Some(match (ty, member) {
                ("task_struct", "tasks") => 0,
                ("task_struct", "pid") => 0x10,
                ("task_struct", "tgid") => 0x14,
                ("task_struct", "comm") => 0x18,
                ("task_struct", "real_parent") => 0x28,
                ("task_struct", "real_cred") => 0x30,
                ("task_struct", "mm") => 0x38,
                ("task_struct", "flags") => 0x40,
                ("task_struct", "__state") => 0x44,
                ("task_struct", "exit_state") => 0x58,
                ("task_struct", "worker_private") => 0x60,
                ("cred", "uid") => 4,
                ("cred", "gid") => 8,
                ("mm_struct", "arg_start") => 0,
                ("mm_struct", "arg_end") => 8,
                ("mm_struct", "pgd") => 0x10,
                ("mm_struct", "env_start") => 0x18,
                ("mm_struct", "env_end") => 0x20,
                ("kthread", "full_name") => 0,
                ("kthread", "data") => 8,
                ("worker", "desc") => 0,
                ("worker", "current_work") => 0x18,
                ("worker", "pool") => 0x20,
                ("ctl_table", "procname") => 0,
                ("ctl_table", "data") => 8,
                ("ctl_table", "maxlen") => 0x10,
                ("ctl_table", "proc_handler") => 0x18,
                ("task_struct", "fs") => 0x68,
                ("task_struct", "nsproxy") => 0x70,
                ("nsproxy", "mnt_ns") => 0,
                ("fs_struct", "root") => 0,
                ("path", "mnt") => 0,
                ("path", "dentry") => 8,
                ("mnt_namespace", "list") => 0,
                ("mount", "mnt_list") => 0,
                ("mount", "mnt_parent") => 0x10,
                ("mount", "mnt_mountpoint") => 0x18,
                ("mount", "mnt") => 0x20,
                ("mount", "mnt_devname") => 0x40,
                ("vfsmount", "mnt_root") => 0,
                ("vfsmount", "mnt_sb") => 8,
                ("vfsmount", "mnt_flags") => 0x10,
                ("super_block", "s_type") => 0,
                ("super_block", "s_flags") => 8,
                ("file_system_type", "name") => 0,
                ("dentry", "d_name.name") => 0,
                ("dentry", "d_parent") => 8,
                _ => return None,
            })
        }

        fn struct_size(&self, ty: &str) -> Option<u64> {
            // A hostile type source (BTF carved from guest RAM) can say anything: size 0 here.
            (ty == "ctl_table").then_some(0)
        }

        fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
            match (ty, member) {
                ("task_struct", "comm") => Some(16),
                ("worker", "desc") => Some(24),
                _ => None,
            }
        }
        fn enum_value(&self, _: &str, _: &str) -> Option<i128> {
            None
        }
    }

    impl SymbolLookup for Fixed {
        fn address(&self, name: &str) -> Option<u64> {
            match name {
                "init_task" => Some(BASE),
                "kern_table" => Some(BASE + 0x100),
                _ => None,
            }
        }

        fn name_at(&self, _: u64) -> Option<String> {
            None
        }

        fn next_after(&self, _: u64) -> Option<u64> {
            None
        }
    }

    fn view<'a>(mem: &'a FlatMemory, no_user: &'a UserSpaceFactory<'a>) -> KernelView<'a> {
        KernelView {
            kernel: mem,
            symbols: &Fixed,
            types: &Fixed,
            user_space: no_user,
        }
    }

    /// The per-task warnings: this layout has no task details, which is one more warning.
    fn skipped((tasks, warnings): (Vec<Task>, Vec<String>)) -> (Vec<Task>, Vec<String>) {
        (
            tasks,
            warnings
                .into_iter()
                .filter(|w| !w.starts_with("task details"))
                .collect(),
        )
    }

    /// Found by the `kernel_walk` fuzz target: guest pointers near the top of the address
    /// space plus a member offset overflowed (a panic in debug builds, a silently wrong
    /// address in release). Every such pointer must just make that read fail.
    #[test]
    fn pointers_at_the_top_of_the_address_space_do_not_overflow() {
        let mut mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let task = BASE + 0x200;
        mem.put_u64(BASE, task); // init_task.tasks -> task -> init_task
        mem.put_u64(task, BASE);
        mem.put_u64(task + 0x40, u64::from(PF_KTHREAD | PF_WQ_WORKER));
        mem.put_u64(task + 0x28, u64::MAX - 8); // real_parent
        mem.put_u64(task + 0x30, u64::MAX - 2); // real_cred
        mem.put_u64(task + 0x60, u64::MAX - 4); // worker_private: the fuzzer's finding
        let (tasks, warnings) = skipped(view(&mem, &|_| None).tasks("6.1.0").unwrap());
        assert!(tasks.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // With a readable kthread and worker, the parent and cred pointers are next.
        mem.put_u64(task + 0x60, BASE + 0x400);
        mem.put_u64(BASE + 0x408, BASE + 0x800); // kthread.data -> worker
        mem.put_u64(BASE + 0x800, 0x41); // worker.desc = "A"
        mem.put_u64(BASE + 0x820, BASE + 0x900); // worker.pool: attached, so the desc is read
        let (tasks, warnings) = skipped(view(&mem, &|_| None).tasks("6.1.0").unwrap());
        assert!(tasks.is_empty() && warnings.len() == 1, "{tasks:?} {warnings:?}");
        mem.put_u64(task + 0x28, 0); // no parent: the cred pointer fails
        let (tasks, warnings) = skipped(view(&mem, &|_| None).tasks("6.1.0").unwrap());
        assert!(
            tasks.is_empty() && warnings[0].contains("cred"),
            "{tasks:?} {warnings:?}"
        );
    }

    /// Type information (BTF carved from guest RAM) claiming `task_struct.comm` is u32::MAX
    /// bytes used to size the read's buffer: 4 GiB allocated before reading one byte.
    #[test]
    fn a_huge_member_size_is_an_error_not_an_allocation() {
        struct HugeComm;
        impl TypeInfo for HugeComm {
            fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
                Fixed.member_offset(ty, member)
            }
            fn struct_size(&self, ty: &str) -> Option<u64> {
                Fixed.struct_size(ty)
            }
            fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
                match (ty, member) {
                    ("task_struct", "comm") => Some(u32::MAX.into()),
                    _ => Fixed.member_size(ty, member),
                }
            }
            fn enum_value(&self, _: &str, _: &str) -> Option<i128> {
                None
            }
        }
        let mut mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        mem.put_u64(BASE, BASE + 0x200); // init_task.tasks -> one task -> init_task
        mem.put_u64(BASE + 0x200, BASE);
        let view = KernelView {
            types: &HugeComm,
            ..view(&mem, &|_| None)
        };
        let (tasks, warnings) = skipped(view.tasks("6.1.0").unwrap());
        assert!(tasks.is_empty());
        assert!(
            warnings.len() == 1 && warnings[0].contains("task_struct.comm") && warnings[0].contains("4294967295 bytes"),
            "{warnings:?}"
        );
    }

    /// A type source claiming `struct ctl_table` has size 0 divided by zero.
    #[test]
    fn zero_sized_ctl_table_is_an_error() {
        let mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let (_, warnings) = view(&mem, &|_| None).sysctls().unwrap();
        assert!(warnings.iter().any(|w| w.contains("size 0")), "{warnings:?}");
    }

    /// Names are kept as the kernel holds them: escaping is the renderer's job, once (it
    /// was escaped here and again when /proc/mounts was rendered).
    #[test]
    fn mount_names_are_extracted_unescaped() {
        let mut mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let at = |offset: u64| BASE + offset;
        let put_str = |mem: &mut FlatMemory, offset: u64, text: &str| {
            let start = offset as usize;
            mem.bytes[start..start + text.len()].copy_from_slice(text.as_bytes());
            at(offset)
        };
        let (task, fs, nsproxy, ns) = (at(0x200), at(0x300), at(0x340), at(0x380));
        let (root_mount, mount) = (at(0x400), at(0x480));
        let (root_dentry, dir, mnt, mounted_root, sb, fs_type) =
            (at(0x500), at(0x520), at(0x540), at(0x560), at(0x580), at(0x5a0));
        mem.put_u64(BASE, task); // init_task.tasks -> pid 1 -> init_task
        mem.put_u64(task, BASE);
        mem.put_u64(task + 0x10, 1);
        mem.put_u64(task + 0x68, fs);
        mem.put_u64(task + 0x70, nsproxy);
        mem.put_u64(fs, root_mount + 0x20); // fs.root = (root vfsmount, root dentry)
        mem.put_u64(fs + 8, root_dentry);
        mem.put_u64(nsproxy, ns);
        mem.put_u64(ns, root_mount); // ns.list -> root mount -> mount -> ns
        mem.put_u64(root_mount, mount);
        mem.put_u64(mount, ns);
        for (m, parent, mountpoint, root, devname) in [
            (root_mount, root_mount, root_dentry, root_dentry, "/dev/root"),
            (mount, root_mount, dir, mounted_root, "/dev/a b"),
        ] {
            mem.put_u64(m + 0x10, parent);
            mem.put_u64(m + 0x18, mountpoint);
            mem.put_u64(m + 0x20, root);
            mem.put_u64(m + 0x28, sb);
            let name = put_str(&mut mem, if m == mount { 0x700 } else { 0x680 }, devname);
            mem.put_u64(m + 0x40, name);
        }
        // dentries: / (its own parent), /mnt, /mnt/<name>, and the mounted root.
        let name = put_str(&mut mem, 0x800, "a b\tc\nd\\e");
        for (dentry, name, parent) in [
            (root_dentry, at(0x900), root_dentry),
            (mnt, put_str(&mut mem, 0x880, "mnt"), root_dentry),
            (dir, name, mnt),
            (mounted_root, at(0x900), mounted_root),
        ] {
            mem.put_u64(dentry, name);
            mem.put_u64(dentry + 8, parent);
        }
        mem.put_u64(sb, fs_type);
        let ext4 = put_str(&mut mem, 0x980, "ext4");
        mem.put_u64(fs_type, ext4);
        let (mounts, _) = view(&mem, &|_| None).mounts().unwrap();
        let names: Vec<(&str, &str)> = mounts
            .iter()
            .map(|m| (m.device.as_str(), m.mountpoint.as_str()))
            .collect();
        assert_eq!(names, [("/dev/root", "/"), ("/dev/a b", "/mnt/a b\tc\nd\\e")]);
    }

    #[test]
    fn state_letters_follow_task_state_index() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0x80, 0x20), 'Z'); // TASK_DEAD with EXIT_ZOMBIE
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(0x40, 0), 'P');
    }

    #[test]
    fn args_split_like_proc_cmdline() {
        assert_eq!(split_args(b"sleep\0-n\0"), vec!["sleep", "-n"]);
        assert_eq!(split_args(b""), Vec::<String>::new());
        assert_eq!(split_args(b"a\0\0b\0"), vec!["a", "", "b"]);
    }

    #[test]
    fn frozen_bit_only_from_6_1() {
        assert_eq!(task_frozen_bit("6.1.0-56-amd64"), Some(0x8000));
        assert_eq!(task_frozen_bit("5.10.0-30-amd64"), None);
        assert_eq!(task_frozen_bit("garbage"), None);
    }
}
