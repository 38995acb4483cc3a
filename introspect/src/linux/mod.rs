//! The Linux kernel model: reading what the guest kernel knew out of its memory, given its
//! symbols and struct layouts.

pub mod extract;
pub mod inspect;
mod kernel_info;
pub mod layout;
mod modules;
mod mount_opts;
mod mounts;
mod net;
mod proc_task;
pub mod reader;
pub mod snapshot;
mod sysctl;
mod system;
mod tty;

pub use extract::{ExtractError, KernelView, SymbolLookup, UserSpaceFactory};
pub use inspect::{InspectError, ProfileFiles, VolatilityProfile, kernel_release, snapshot, volatility_profile};
pub use layout::{LayoutError, TypeInfo};
pub use snapshot::{
    Cpu, Domain, FilesystemType, GuestSnapshot, Interface, KernelInfo, Module, Mount, Profile, SNAPSHOT_SCHEMA, Source,
    Swap, SystemState, Task, TaskDetail, TtyDriver, TtyDrivers, Uts,
};
