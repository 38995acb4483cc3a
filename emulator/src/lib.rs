//! The emulation environment: the guest's disks attached read-only, its file tree assembled,
//! and (later) the sandbox in which its package manager runs.

pub mod disk;
