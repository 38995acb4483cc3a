//! The emulation environment: the guest's disks attached read-only, its file tree assembled,
//! and (later) the sandbox in which its package manager runs.

pub mod boot_files;
pub mod capture;
pub mod disk;
pub mod emulate;
pub mod guest_tree;
pub mod limit;
pub mod netproxy;
pub mod run;
pub mod sandbox;
pub mod synth;
pub mod trace;
