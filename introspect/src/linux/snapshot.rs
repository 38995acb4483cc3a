//! `GuestSnapshot`: what the guest kernel knew, as plain serde data. This is the contract
//! with shadowfs and everything to its right; its JSON form is versioned by `schema`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SNAPSHOT_SCHEMA: &str = "dormouse.snapshot/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSnapshot {
    pub schema: String,
    pub source: Source,
    /// The domain's identity when the image format records it (`xl save`).
    pub domain: Option<Domain>,
    pub kernel: KernelInfo,
    pub uts: Uts,
    /// `/proc/sys/kernel/random/boot_id`; `None` when the guest never generated it.
    pub boot_id: Option<String>,
    /// Thread-group leaders and kernel threads, like `ps -e`, in list order.
    pub tasks: Vec<Task>,
    /// `/proc/filesystems` in registration order.
    pub filesystems: Vec<FilesystemType>,
    /// sysctl name (dotted, e.g. `net.ipv6.conf.all.accept_ra`) → value as `/proc/sys` prints it.
    pub sysctl: BTreeMap<String, String>,
    pub modules: Vec<Module>,
    pub mounts: Vec<Mount>,
    pub interfaces: Vec<Interface>,
    /// What could not be read and why; the rest of the snapshot is still valid.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    pub format: String,
    pub guest_kind: String,
    pub pages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub domain_type: Option<String>,
    pub memory_kib: Option<u64>,
    pub vcpus: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub version: String,
    pub banner: String,
    pub cmdline: Option<String>,
    /// KASLR shift of the kernel image's virtual addresses (0 when KASLR is off).
    pub kaslr_offset: u64,
    /// Shift of the kernel image's physical load address from where it was linked to load
    /// (`CONFIG_PHYSICAL_START`, 16 MiB on x86-64); `None` when `_text` is not mapped.
    pub kaslr_phys_offset: Option<i64>,
    /// Guest-physical address of the kernel's top-level page table (from the saved CR3).
    pub page_table_root: u64,
    pub page_offset_base: Option<u64>,
    pub profile: Profile,
}

/// Where symbols and types came from, so a result can be traced to its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub symbols: String,
    pub types: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uts {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub domainname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub gid: u32,
    /// The letter `ps` shows: R S D T t X Z P I.
    pub state: char,
    pub comm: String,
    pub kernel_thread: bool,
    /// `None` when the argument pages are not in the image (swapped out, not saved).
    pub cmdline: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemType {
    pub name: String,
    pub nodev: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub name: String,
    pub size: u64,
    pub refcount: Option<i32>,
    /// `Live`, `Loading`, `Unloading` as `/proc/modules` prints it.
    pub state: String,
    pub address: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}
