//! Memory sources: an image file (or a live domain) as guest-physical pages plus the saved
//! vCPU state, behind [`memory::PhysMemory`]. Nothing here knows about Linux or profiles.

pub mod domain_config;
pub mod elf;
pub mod memory;
pub mod open;
pub mod raw;
pub mod vcpu_context;
#[cfg(feature = "xen")]
pub mod xen_live;
pub mod xl_save;
