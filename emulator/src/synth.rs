//! A `GuestSnapshot` for a VM that is shut down, synthesized from its disk alone: what its
//! kernel would report right after booting, as far as the files tell.
//!
//! - release: the kernel `/vmlinuz` or `/boot/vmlinuz` links to, else the newest release with
//!   a `/boot/vmlinuz-<release>`, else the newest `/lib/modules/<release>`;
//! - version: the version string in the bzImage setup header of `/boot/vmlinuz-<release>`;
//!   the banner is rebuilt from it without the compiler part, which only the running kernel has;
//! - nodename from `/etc/hostname`, domainname `(none)` (the kernel's default);
//! - machine from the ELF header of `/bin/sh`, else dpkg's own architecture;
//! - filesystems: an approximation of `/proc/filesystems` after boot, from
//!   `/boot/config-<release>`: the built-in (`=y`) ones in registration order, then the types of
//!   the guest's own filesystems (their modules load when it mounts them). A built-in one can
//!   still be missing at run time (hugetlbfs on a Xen PV guest, which has no huge pages);
//! - sysctls: the kernel defaults apt and maintainer scripts read (`kernel.ngroups_max`, IPv6
//!   `all`/`default` configuration), not the guest's sysctl.d overrides;
//! - no processes, modules, mounts or interfaces: nothing runs.
//!
//! Every file is read through `RESOLVE_IN_ROOT`, so guest symlinks stay inside the guest tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use introspect::linux::{FilesystemType, GuestSnapshot, KernelInfo, Profile, SNAPSHOT_SCHEMA, Source, Uts};

use crate::disk::{open_in_root, read_in_root};

/// Directory entries read from `/lib/modules` or `/boot`; real guests have a handful.
const MAX_DIR_ENTRIES: usize = 4096;
/// `__NEW_UTS_LEN`: the kernel's limit on every utsname field.
const UTS_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("opening the guest tree {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "no kernel installed in the guest tree {root} (neither /lib/modules/<release> nor \
         /boot/vmlinuz-<release>); give the release the guest runs explicitly"
    )]
    NoKernel { root: PathBuf },
}

/// Synthesizes the snapshot of the stopped guest whose tree is mounted at `root`.
/// `release` overrides the kernel release found on disk; `mounted_fstypes` are the types of the
/// guest's filesystems (see [`crate::guest_tree::GuestTree::filesystems`]).
pub fn synthesize(root: &Path, release: Option<&str>, mounted_fstypes: &[String]) -> Result<GuestSnapshot, SynthError> {
    let fd: OwnedFd = File::open(root)
        .map_err(|source| SynthError::Open {
            path: root.to_owned(),
            source,
        })?
        .into();
    let tree = Tree { fd: &fd, path: root };
    let mut warnings = vec![format!(
        "synthesized from the disk of a stopped guest ({}): no running kernel, no processes",
        root.display()
    )];
    let release = match release {
        Some(r) => r.to_owned(),
        None => tree
            .kernel_release()
            .ok_or_else(|| SynthError::NoKernel { root: root.to_owned() })?,
    };
    let kernel_version = tree
        .read(&format!("boot/vmlinuz-{release}"), 64 << 10)
        .and_then(|b| bzimage_version(&b));
    let version = match kernel_version
        .as_deref()
        .and_then(|v| v.find(" #").map(|at| v[at + 1..].to_owned()))
    {
        Some(v) => v,
        None => {
            warnings.push(format!(
                "kernel version unknown: /boot/vmlinuz-{release} is missing or has no version string"
            ));
            "unknown".to_owned()
        }
    };
    let nodename = match tree.read("etc/hostname", 4096).and_then(|b| hostname(&b)) {
        Some(h) => h,
        None => {
            warnings.push("no usable /etc/hostname: nodename is localhost, as systemd would set".into());
            "localhost".into()
        }
    };
    let machine = match tree.machine() {
        Some(m) => m.to_owned(),
        None => {
            warnings.push("architecture unknown: no ELF /bin/sh and no dpkg status".into());
            "unknown".into()
        }
    };
    let filesystems = match tree.read(&format!("boot/config-{release}"), 4 << 20) {
        Some(config) => filesystems(&String::from_utf8_lossy(&config), mounted_fstypes),
        None => {
            warnings.push(format!(
                "no /boot/config-{release}: /proc/filesystems lists only the guest's own filesystem types"
            ));
            filesystems("", mounted_fstypes)
        }
    };
    let uts = Uts {
        sysname: "Linux".into(),
        nodename,
        release: release.clone(),
        version: version.clone(),
        machine,
        domainname: "(none)".into(),
    };
    Ok(GuestSnapshot {
        schema: SNAPSHOT_SCHEMA.to_owned(),
        source: Source {
            path: root.display().to_string(),
            format: "disk".into(),
            guest_kind: "stopped".into(),
            pages: 0,
        },
        domain: None,
        kernel: KernelInfo {
            release,
            banner: kernel_version.map_or_else(String::new, |v| format!("Linux version {v}\n")),
            version,
            cmdline: None,
            kaslr_offset: 0,
            kaslr_phys_offset: None,
            page_table_root: 0,
            page_offset_base: None,
            profile: Profile {
                symbols: "none: synthesized from disk".into(),
                types: "none: synthesized from disk".into(),
            },
        },
        sysctl: default_sysctls(&uts),
        uts,
        boot_id: None,
        tasks: Vec::new(),
        filesystems,
        modules: Vec::new(),
        mounts: Vec::new(),
        interfaces: Vec::new(),
        tty: None,
        system: Default::default(),
        warnings,
    })
}

struct Tree<'a> {
    fd: &'a OwnedFd,
    path: &'a Path,
}

impl Tree<'_> {
    fn read(&self, path: &str, limit: u64) -> Option<Vec<u8>> {
        read_in_root(self.fd, self.path, path, limit).ok()
    }

    /// Names in a guest directory, bounded.
    fn list(&self, dir: &str) -> Vec<String> {
        let Ok(fd) = open_in_root(self.fd, dir, libc::O_RDONLY | libc::O_DIRECTORY) else {
            return Vec::new();
        };
        // The descriptor was opened safely; its /proc/self/fd link names exactly that directory.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return Vec::new();
        };
        entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    }

    /// The target of a guest symlink, read without following it.
    fn link(&self, path: &str) -> Option<String> {
        let fd = open_in_root(self.fd, path, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`; the empty path with an
        // O_PATH descriptor of the link reads that link.
        let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = usize::try_from(n).ok()?;
        Some(String::from_utf8_lossy(buf.get(..n)?).into_owned())
    }

    fn kernel_release(&self) -> Option<String> {
        let valid = |r: &str| !r.is_empty() && r.len() <= UTS_LEN && !r.contains('/');
        let modules: BTreeSet<String> = self.list("lib/modules").into_iter().filter(|r| valid(r)).collect();
        let images: BTreeSet<String> = self
            .list("boot")
            .into_iter()
            .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
            .filter(|r| valid(r))
            .collect();
        for link in ["vmlinuz", "boot/vmlinuz"] {
            if let Some(target) = self.link(link) {
                let name = target.rsplit('/').next().unwrap_or_default();
                if let Some(r) = name
                    .strip_prefix("vmlinuz-")
                    .filter(|r| images.contains(*r) || modules.contains(*r))
                {
                    return Some(r.to_owned());
                }
            }
        }
        let newest = |set: &BTreeSet<String>| set.iter().max_by(|a, b| version_cmp(a, b)).cloned();
        newest(&images).or_else(|| newest(&modules))
    }

    fn machine(&self) -> Option<&'static str> {
        if let Some(m) = self.read("bin/sh", 64).and_then(|h| elf_machine(&h)) {
            return Some(m);
        }
        let status = self.read("var/lib/dpkg/status", 64 << 20)?;
        let status = String::from_utf8_lossy(&status);
        let stanza = status.split("\n\n").find(|s| s.lines().any(|l| l == "Package: dpkg"))?;
        let arch = stanza.lines().find_map(|l| l.strip_prefix("Architecture: "))?;
        dpkg_machine(arch.trim())
    }
}

/// The version string a bzImage carries (`kernel_version` in the setup header): "<release>
/// (<builder>) #<version>".
fn bzimage_version(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let pointer = u16::from_le_bytes(image.get(0x20e..0x210)?.try_into().ok()?);
    let start = usize::from(pointer) + 0x200;
    let bytes = image.get(start..(start + 512).min(image.len()))?;
    let end = bytes.iter().position(|b| *b == 0)?;
    let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    (!text.is_empty()).then_some(text)
}

fn hostname(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let name = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    (name.len() <= UTS_LEN && name.bytes().all(|c| c.is_ascii_graphic())).then(|| name.to_owned())
}

/// `uname -m` for the ELF machine of a 64-bit or 32-bit executable.
fn elf_machine(header: &[u8]) -> Option<&'static str> {
    if header.get(..4)? != b"\x7fELF" {
        return None;
    }
    let little = *header.get(5)? == 1;
    let raw: [u8; 2] = header.get(18..20)?.try_into().ok()?;
    let machine = if little {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    };
    Some(match (machine, little) {
        (62, _) => "x86_64",
        (3, _) => "i686",
        (183, _) => "aarch64",
        (40, _) => "armv7l",
        (243, _) => "riscv64",
        (21, true) => "ppc64le",
        (21, false) => "ppc64",
        (22, _) => "s390x",
        _ => return None,
    })
}

fn dpkg_machine(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "i386" => "i686",
        "arm64" => "aarch64",
        "armhf" | "armel" => "armv7l",
        "riscv64" => "riscv64",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// Compares kernel releases the way `sort -V` would: digit runs numerically.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    };
    let (a, b) = (chunks(a), chunks(b));
    for (x, y) in a.iter().zip(&b) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Built-in filesystems by the config option that builds them, in the order Linux 6.1
/// registers them on x86-64 (initcall level, then link order). An empty option means always
/// built in.
const BUILTIN_FS: &[(&str, &str, bool)] = &[
    ("SYSFS", "sysfs", true),
    ("", "tmpfs", true),
    ("PROC_FS", "proc", true),
    ("CGROUPS", "cgroup", true),
    ("CGROUPS", "cgroup2", true),
    ("CPUSETS", "cpuset", true),
    ("DEVTMPFS", "devtmpfs", true),
    ("CONFIGFS_FS", "configfs", true),
    ("DEBUG_FS", "debugfs", true),
    ("TRACING", "tracefs", true),
    ("SECURITYFS", "securityfs", true),
    ("NET", "sockfs", true),
    ("BPF_SYSCALL", "bpf", true),
    ("", "pipefs", true),
    ("", "ramfs", true),
    ("HUGETLBFS", "hugetlbfs", true),
    ("UNIX98_PTYS", "devpts", true),
    ("EXT4_FS", "ext4", false),
    ("EXT2_FS", "ext2", false),
    ("XFS_FS", "xfs", false),
    ("BTRFS_FS", "btrfs", false),
    ("VFAT_FS", "vfat", false),
    ("ISO9660_FS", "iso9660", false),
    ("SQUASHFS", "squashfs", false),
    ("AUTOFS_FS", "autofs", true),
    ("FUSE_FS", "fuse", true),
    ("OVERLAY_FS", "overlay", true),
    ("EFIVAR_FS", "efivarfs", true),
    ("POSIX_MQUEUE", "mqueue", true),
    ("PSTORE", "pstore", true),
];

fn filesystems(config: &str, mounted: &[String]) -> Vec<FilesystemType> {
    let builtin: BTreeSet<&str> = config
        .lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.strip_suffix("=y"))
        .collect();
    let ext2_by_ext4 = builtin.contains("EXT4_USE_FOR_EXT2") && !builtin.contains("EXT2_FS");
    let mut out: Vec<FilesystemType> = Vec::new();
    let mut add = |name: &str, nodev: bool| {
        // ext4 registers itself as ext3 (and ext2 when configured to serve it) first.
        let names: Vec<&str> = match name {
            "ext4" if ext2_by_ext4 => vec!["ext3", "ext2", "ext4"],
            "ext4" => vec!["ext3", "ext4"],
            "fuse" => vec!["fuseblk", "fuse", "fusectl"],
            n => vec![n],
        };
        for n in names {
            if !out.iter().any(|f| f.name == n) {
                let nodev = nodev || n == "fusectl";
                let nodev = nodev && n != "fuseblk";
                out.push(FilesystemType { name: n.into(), nodev });
            }
        }
    };
    for (option, name, nodev) in BUILTIN_FS {
        if option.is_empty() || builtin.contains(option) {
            add(name, *nodev);
        }
    }
    for fstype in mounted {
        add(fstype, false);
    }
    out
}

/// Kernel defaults (Linux 6.1) of the sysctls a package manager reads, plus the utsname ones.
fn default_sysctls(uts: &Uts) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        m.insert(k.to_owned(), v.to_owned());
    };
    // NGROUPS_MAX.
    set("kernel.ngroups_max", "65536");
    set("kernel.ostype", &uts.sysname);
    set("kernel.hostname", &uts.nodename);
    set("kernel.osrelease", &uts.release);
    set("kernel.version", &uts.version);
    set("kernel.domainname", &uts.domainname);
    set("net.ipv4.ip_forward", "0");
    // `ipv6_devconf` and `ipv6_devconf_dflt` agree on these.
    for which in ["all", "default"] {
        for (key, value) in [
            ("disable_ipv6", "0"),
            ("forwarding", "0"),
            ("accept_ra", "1"),
            ("autoconf", "1"),
            ("hop_limit", "64"),
            ("mtu", "1280"),
            ("use_tempaddr", "0"),
        ] {
            set(&format!("net.ipv6.conf.{which}.{key}"), value);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.1.0-56-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("5.10.0-30-amd64", "6.1.0-1-amd64"), Less);
        assert_eq!(version_cmp("6.1.0-56-amd64", "6.1.0-56-amd64"), Equal);
    }

    #[test]
    fn hostile_headers() {
        assert_eq!(bzimage_version(&[0u8; 16]), None);
        let mut image = vec![0u8; 0x290];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(bzimage_version(&image), None);
        image[0x20e..0x210].copy_from_slice(&0x80u16.to_le_bytes());
        image[0x280..0x290].copy_from_slice(b"6.1.0-1 (b) #1 S");
        assert_eq!(bzimage_version(&image), None, "no NUL terminator within the image");
        assert_eq!(elf_machine(b"\x7fELF\x02\x01"), None);
        assert_eq!(hostname(b"# comment\n  web1  \n"), Some("web1".into()));
        assert_eq!(hostname(&[b'a'; 100]), None);
    }
}
