//! The task list: `task_struct` fields every task in the snapshot is read with.

use super::{LayoutError, Resolver, TypeInfo};

#[derive(Debug, Clone)]
pub struct TaskLayout {
    pub tasks: u64,
    pub pid: u64,
    pub tgid: u64,
    pub comm: u64,
    pub comm_len: u64,
    pub real_parent: u64,
    pub real_cred: u64,
    pub mm: u64,
    pub flags: u64,
    /// `__state` since 5.14, `state` before.
    pub state: u64,
    /// Where a frozen task's real state is kept (6.1+), when the kernel has the field.
    pub saved_state: Option<u64>,
    /// Job-control bits; where a frozen 6.1–6.5 task's stopped/traced state survives.
    pub jobctl: Option<u64>,
    pub exit_state: u64,
    pub cred_uid: u64,
    pub cred_gid: u64,
    pub mm_arg_start: u64,
    pub mm_arg_end: u64,
    pub mm_env_start: u64,
    pub mm_env_end: u64,
    pub mm_pgd: u64,
    /// How `/proc` names kernel threads (full name, 5.17+) and workqueue workers
    /// (`comm-desc`); absent members leave the plain `comm`.
    pub kthread_names: Option<KthreadNameLayout>,
}

#[derive(Debug, Clone)]
pub struct KthreadNameLayout {
    /// `task_struct.worker_private`: the task's `struct kthread`.
    pub task_kthread: u64,
    pub kthread_full_name: u64,
    /// `kthread.data`: a workqueue worker's `struct worker`.
    pub kthread_data: u64,
    pub worker_desc: u64,
    pub worker_desc_len: u64,
    pub worker_current_work: u64,
    /// `worker.pool`: NULL while a rescuer is detached, and then `/proc` shows no desc.
    pub worker_pool: u64,
}

impl KthreadNameLayout {
    fn resolve(types: &dyn TypeInfo) -> Option<Self> {
        Some(Self {
            task_kthread: types.member_offset("task_struct", "worker_private")?,
            kthread_full_name: types.member_offset("kthread", "full_name")?,
            kthread_data: types.member_offset("kthread", "data")?,
            worker_desc: types.member_offset("worker", "desc")?,
            worker_desc_len: types.member_size("worker", "desc")?,
            worker_current_work: types.member_offset("worker", "current_work")?,
            worker_pool: types.member_offset("worker", "pool")?,
        })
    }
}

impl TaskLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the task list",
        };
        let state = types
            .member_offset("task_struct", "__state")
            .or_else(|| types.member_offset("task_struct", "state"))
            .ok_or_else(|| r.missing("task_struct", "__state"))?;
        Ok(Self {
            tasks: r.off("task_struct", "tasks")?,
            pid: r.off("task_struct", "pid")?,
            tgid: r.off("task_struct", "tgid")?,
            comm: r.off("task_struct", "comm")?,
            comm_len: r.size("task_struct", "comm")?,
            real_parent: r.off("task_struct", "real_parent")?,
            real_cred: r.off("task_struct", "real_cred")?,
            mm: r.off("task_struct", "mm")?,
            flags: r.off("task_struct", "flags")?,
            state,
            saved_state: types.member_offset("task_struct", "saved_state"),
            jobctl: types.member_offset("task_struct", "jobctl"),
            exit_state: r.off("task_struct", "exit_state")?,
            cred_uid: r.off("cred", "uid")?,
            cred_gid: r.off("cred", "gid")?,
            mm_arg_start: r.off("mm_struct", "arg_start")?,
            mm_arg_end: r.off("mm_struct", "arg_end")?,
            mm_env_start: r.off("mm_struct", "env_start")?,
            mm_env_end: r.off("mm_struct", "env_end")?,
            mm_pgd: r.off("mm_struct", "pgd")?,
            kthread_names: KthreadNameLayout::resolve(types),
        })
    }
}
