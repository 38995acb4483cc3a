//! `cargo fuzz run kernel_walk`: the Linux kernel walk (`KernelView`) over arbitrary kernel
//! memory, with fixed symbols and a fixed, compact struct layout.
//!
//! The input is the kernel's memory, mapped at `BASE` (and, for user-space reads, at
//! `USER_BASE`). Symbols sit at fixed offsets into it; struct members at small fixed offsets,
//! so that the fuzzer can build lists, trees and tables inside a few KiB. The first byte also
//! picks layout variants, to reach both sides of the walk's version switches.
#![no_main]

use introspect::linux::{KernelView, SymbolLookup, TypeInfo, UserSpaceFactory};
use introspect::{BufferMemory, VirtualMemory};
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0xffff_8880_0000_0000;
const USER_BASE: u64 = 0x1000;
/// Handlers live outside memory, like kernel text.
const TEXT: u64 = 0xffff_ffff_8100_0000;

/// Guest memory backed by the fuzz input at `base`.
type BufMem<'a> = BufferMemory<&'a [u8]>;

/// Symbols, sorted by address.
const SYMBOLS: &[(&str, u64)] = &[
    ("init_uts_ns", BASE),
    ("linux_banner", BASE + 0x100),
    ("saved_command_line", BASE + 0x180),
    ("sysctl_bootid", BASE + 0x188),
    ("tick_nsec", BASE + 0x198),
    ("file_systems", BASE + 0x1a0),
    ("modules", BASE + 0x1a8),
    ("init_net", BASE + 0x1c0),
    ("init_task", BASE + 0x200),
    ("kern_table", BASE + 0x300),
    ("vm_table", BASE + 0x380),
    ("fs_table", BASE + 0x3c0),
    ("addrconf_sysctl", BASE + 0x400),
    ("ipv6_devconf", BASE + 0x480),
    ("end_of_data", BASE + 0x500),
    ("proc_dostring", TEXT),
    ("proc_dointvec", TEXT + 0x10),
    ("proc_dointvec_minmax", TEXT + 0x20),
    ("proc_dou8vec_minmax", TEXT + 0x30),
    ("proc_douintvec", TEXT + 0x40),
    ("proc_doulongvec_minmax", TEXT + 0x50),
    ("proc_dointvec_jiffies", TEXT + 0x60),
    ("proc_dointvec_userhz_jiffies", TEXT + 0x70),
    ("proc_dointvec_ms_jiffies", TEXT + 0x80),
    ("addrconf_sysctl_stable_secret", TEXT + 0x90),
    ("addrconf_sysctl_mtu", TEXT + 0xa0),
];

struct Symbols;

impl SymbolLookup for Symbols {
    fn address(&self, name: &str) -> Option<u64> {
        SYMBOLS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    fn name_at(&self, addr: u64) -> Option<String> {
        SYMBOLS.iter().find(|(_, a)| *a == addr).map(|(n, _)| (*n).to_owned())
    }

    fn next_after(&self, addr: u64) -> Option<u64> {
        SYMBOLS.iter().map(|(_, a)| *a).filter(|a| *a > addr).min()
    }
}

/// (struct, member, offset, size)
const MEMBERS: &[(&str, &str, u64, u64)] = &[
    ("uts_namespace", "name", 0, 96),
    ("new_utsname", "sysname", 0, 16),
    ("new_utsname", "nodename", 16, 16),
    ("new_utsname", "release", 32, 16),
    ("new_utsname", "version", 48, 16),
    ("new_utsname", "machine", 64, 16),
    ("new_utsname", "domainname", 80, 16),
    ("task_struct", "tasks", 0, 16),
    ("task_struct", "pid", 0x10, 4),
    ("task_struct", "tgid", 0x14, 4),
    ("task_struct", "comm", 0x18, 16),
    ("task_struct", "real_parent", 0x28, 8),
    ("task_struct", "real_cred", 0x30, 8),
    ("task_struct", "mm", 0x38, 8),
    ("task_struct", "flags", 0x40, 4),
    ("task_struct", "__state", 0x44, 4),
    ("task_struct", "jobctl", 0x50, 8),
    ("task_struct", "exit_state", 0x58, 4),
    ("task_struct", "fs", 0x68, 8),
    ("task_struct", "nsproxy", 0x70, 8),
    ("cred", "uid", 4, 4),
    ("cred", "gid", 8, 4),
    ("mm_struct", "arg_start", 0, 8),
    ("mm_struct", "arg_end", 8, 8),
    ("mm_struct", "pgd", 0x10, 8),
    ("mm_struct", "env_start", 0x18, 8),
    ("mm_struct", "env_end", 0x20, 8),
    ("file_system_type", "name", 0, 8),
    ("file_system_type", "fs_flags", 8, 4),
    ("file_system_type", "next", 0x10, 8),
    ("module", "list", 0, 16),
    ("module", "name", 0x10, 16),
    ("module", "state", 0x20, 4),
    ("module", "refcnt", 0x24, 4),
    ("ctl_table", "procname", 0, 8),
    ("ctl_table", "data", 8, 8),
    ("ctl_table", "maxlen", 0x10, 4),
    ("ctl_table", "proc_handler", 0x18, 8),
    ("net", "dev_base_head", 0, 16),
    ("net", "ipv6.devconf_all", 0x10, 8),
    ("net", "ipv6.devconf_dflt", 0x18, 8),
    ("net_device", "dev_list", 0, 16),
    ("net_device", "name", 0x10, 16),
    ("net_device", "dev_addr", 0x20, 8),
    ("net_device", "addr_len", 0x28, 1),
    ("net_device", "ip_ptr", 0x30, 8),
    ("net_device", "ip6_ptr", 0x38, 8),
    ("in_device", "ifa_list", 0, 8),
    ("in_ifaddr", "ifa_next", 0, 8),
    ("in_ifaddr", "ifa_local", 8, 4),
    ("in_ifaddr", "ifa_prefixlen", 0xc, 1),
    ("inet6_dev", "addr_list", 0, 16),
    ("inet6_dev", "cnf", 0x10, 0x40),
    ("inet6_ifaddr", "if_list", 0, 16),
    ("inet6_ifaddr", "addr", 0x10, 16),
    ("inet6_ifaddr", "prefix_len", 0x20, 4),
    ("nsproxy", "mnt_ns", 0, 8),
    ("fs_struct", "root", 0, 16),
    ("path", "mnt", 0, 8),
    ("path", "dentry", 8, 8),
    ("mount", "mnt_parent", 0x10, 8),
    ("mount", "mnt_mountpoint", 0x18, 8),
    ("mount", "mnt", 0x20, 0x18),
    ("mount", "mnt_devname", 0x40, 8),
    ("vfsmount", "mnt_root", 0, 8),
    ("vfsmount", "mnt_sb", 8, 8),
    ("vfsmount", "mnt_flags", 0x10, 4),
    ("super_block", "s_type", 0, 8),
    ("super_block", "s_flags", 8, 8),
    ("dentry", "d_name.name", 0, 8),
    ("dentry", "d_parent", 8, 8),
];

/// Members that exist only in some kernel versions: (bit of the first input byte, present
/// when the bit is set (or when clear), struct, member, offset, size).
const VARIANT_MEMBERS: &[(u8, bool, &str, &str, u64, u64)] = &[
    // Module sizes in `mem[]` (6.4+) or in layouts (up to 6.3).
    (0x01, true, "module", "mem", 0x28, 0x18),
    (0x01, true, "module_memory", "size", 0, 4),
    (0x01, false, "module", "core_layout", 0x28, 8),
    (0x01, false, "module", "init_layout", 0x30, 8),
    (0x01, false, "module_layout", "size", 0, 4),
    // Mounts in an rbtree (6.8+) or a list.
    (0x02, true, "mnt_namespace", "mounts", 0, 8),
    (0x02, true, "mount", "mnt_node", 0, 24),
    (0x02, false, "mnt_namespace", "list", 0, 16),
    (0x02, false, "mount", "mnt_list", 0, 16),
    // A frozen task's saved_state (6.6+).
    (0x04, true, "task_struct", "saved_state", 0x48, 4),
    // Kernel threads' full names and workqueue worker descriptions.
    (0x08, true, "task_struct", "worker_private", 0x60, 8),
    (0x08, true, "kthread", "full_name", 0, 8),
    (0x08, true, "kthread", "data", 8, 8),
    (0x08, true, "worker", "desc", 0, 24),
    (0x08, true, "worker", "current_work", 0x18, 8),
];

const STRUCT_SIZES: &[(&str, u64)] = &[("module_memory", 8), ("ctl_table", 0x20), ("task_struct", 0x80)];

struct Types(u8);

impl Types {
    fn find(&self, ty: &str, member: &str) -> Option<(u64, u64)> {
        let fixed = MEMBERS.iter().map(|&(t, m, off, size)| (t, m, off, size));
        let variant = VARIANT_MEMBERS
            .iter()
            .filter(|&&(bit, when_set, ..)| (self.0 & bit != 0) == when_set)
            .map(|&(_, _, t, m, off, size)| (t, m, off, size));
        fixed
            .chain(variant)
            .find(|&(t, m, ..)| t == ty && m == member)
            .map(|(_, _, off, size)| (off, size))
    }
}

impl TypeInfo for Types {
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
        self.find(ty, member).map(|(off, _)| off)
    }

    fn struct_size(&self, ty: &str) -> Option<u64> {
        STRUCT_SIZES.iter().find(|(t, _)| *t == ty).map(|(_, s)| *s)
    }

    fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
        self.find(ty, member).map(|(_, size)| size)
    }
    fn enum_value(&self, _: &str, _: &str) -> Option<i128> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(&variant) = data.first() else {
        return;
    };
    let kernel = BufMem {
        base: BASE,
        bytes: data,
    };
    let user_space: &UserSpaceFactory = &|pgd_phys: u64| {
        // Any page-aligned page table "exists"; user memory is the same bytes at USER_BASE.
        pgd_phys.is_multiple_of(4096).then(|| {
            Box::new(BufMem {
                base: USER_BASE,
                bytes: data,
            }) as Box<dyn VirtualMemory>
        })
    };
    let types = Types(variant);
    let view = KernelView {
        kernel: &kernel,
        symbols: &Symbols,
        types: &types,
        user_space,
    };
    let release = if variant & 0x10 != 0 {
        "5.10.0"
    } else {
        "6.1.0-fuzz"
    };
    let results = (
        view.uts(),
        view.banner(),
        view.cmdline(),
        view.boot_id(),
        view.tasks(release),
        view.filesystems(),
        view.modules(),
        view.sysctls(),
        view.mounts(),
        view.interfaces(),
    );
    // `KERNEL_WALK_DEBUG=1 target/.../kernel_walk FILE` shows what an input walks to.
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *DEBUG.get_or_init(|| std::env::var_os("KERNEL_WALK_DEBUG").is_some()) {
        eprintln!("{results:#?}");
    }
});
