//! The x86-64 page-table walker against real kernels' memory (Xen PV save and dump-core, QEMU
//! 4-level and 5-level dumps, the test bed's QEMU dump) and against synthetic tables built
//! here for the cases real images do not show (1 GiB pages, KPTI, hostile tables).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod real;
mod synthetic;
