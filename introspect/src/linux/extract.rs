//! Walks the guest kernel's data structures into the parts of a [`GuestSnapshot`].
//!
//! Each part is read independently: a part that fails becomes a warning and an empty value,
//! so a damaged module list does not cost the task list.
//!
//! This file holds the view and the task walk; the other parts are `impl KernelView` blocks
//! in the sibling modules (`kernel_info`, `modules`, `mounts`, `sysctl`, `net`, `proc_task`,
//! `system`, `tty`).
//!
//! [`GuestSnapshot`]: super::snapshot::GuestSnapshot

use super::layout::{KthreadNameLayout, LayoutError, MountLayout, TaskDetailLayout, TaskLayout, TypeInfo};
use super::reader::{KernelReader, ReadError};
use super::snapshot::Task;
use crate::arch::virt::VirtualMemory;

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

impl<'a> KernelView<'a> {
    pub(super) fn reader(&self) -> KernelReader<'a> {
        KernelReader::new(self.kernel)
    }

    pub(super) fn symbol(&self, name: &str) -> Result<u64> {
        self.symbols
            .address(name)
            .ok_or_else(|| ExtractError::NoSymbol(name.to_owned()))
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

// Visible to the sibling walks' tests, which share the fixture.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::linux::reader::tests::FlatMemory;

    /// A compact fixed layout and symbol table for walks over crafted memory (the layout of
    /// the `kernel_walk` fuzz target, cut to what the tests need).
    struct Fixed;

    pub(in crate::linux) const BASE: u64 = 0xffff_8880_0000_0000;

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

    pub(in crate::linux) fn view<'a>(mem: &'a FlatMemory, no_user: &'a UserSpaceFactory<'a>) -> KernelView<'a> {
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
