//! The running kernel's profile files (`/boot/System.map-<release>`, `/boot/vmlinuz-<release>`)
//! read from the guest's disks as the guest sees them: its fstab is followed, so a /boot on its
//! own partition, or on another disk than the root, is found.

use std::path::{Path, PathBuf};

use introspect::linux::ProfileFiles;
use introspect::{KernelImage, Symbols};

use crate::disk::DiskSpec;
use crate::disk::read_in_root;
use crate::emulate::{EmulateError, attach};
use crate::guest_tree::{GuestTree, Unmountable};

/// A System.map is a few MiB, a vmlinuz ~10 MiB; a guest file claiming more is not one.
const MAX_BOOT_FILE: u64 = 512 << 20;

/// One file read from the guest's /boot.
#[derive(Debug)]
pub struct BootFile {
    /// `/boot/System.map-<release> on DISK:N`, for messages and the snapshot's profile label.
    pub label: String,
    pub bytes: Vec<u8>,
}

/// What the guest's /boot holds for one kernel release.
#[derive(Debug, Default)]
pub struct BootFiles {
    pub system_map: Option<BootFile>,
    pub vmlinuz: Option<BootFile>,
    /// Where /boot was looked for (`DISK:N`), for the message when neither file is there.
    pub boot_volume: String,
    /// fstab entries that could not be mounted and other remarks from assembling the tree.
    pub notes: Vec<String>,
}

/// Mounts `disks` read-only under `scratch` (an empty directory, removed by the caller),
/// assembles the guest's tree from its fstab, and reads the two /boot files of `release`.
/// Filesystems that cannot be mounted are noted, not fatal: /boot may still be readable.
pub fn read_boot_files(disks: &[DiskSpec], release: &str, scratch: &Path) -> Result<BootFiles, EmulateError> {
    if disks.is_empty() {
        return Err(EmulateError::NoDisks);
    }
    let export = scratch.join("export");
    std::fs::create_dir(&export).map_err(|source| io("creating", &export, source))?;
    let (attached, root) = attach(disks, &export)?;
    let tree = GuestTree::mount_with(&attached, root, &scratch.join("lower"), Unmountable::Note)?;
    let view = scratch.join("tree");
    std::fs::create_dir(&view).map_err(|source| io("creating", &view, source))?;
    let assembled = tree.assemble(&view)?;
    let root_fd = assembled
        .open_root()
        .map_err(|source| io("opening", assembled.path(), source))?;
    // The filesystem holding /boot: the deepest mount point at or above it.
    let boot_fs = tree
        .filesystems
        .iter()
        .filter(|f| {
            f.mount_point == "/" || f.mount_point == "/boot" || "/boot".starts_with(&format!("{}/", f.mount_point))
        })
        .max_by_key(|f| f.mount_point.len())
        .unwrap_or_else(|| tree.root());
    let boot_volume = format!("{}:{}", boot_fs.disk.display(), boot_fs.partition);
    let mut notes = tree.notes.clone();
    notes.extend(tree.skipped.iter().map(|s| {
        format!(
            "fstab line {}: {} on {} not mounted: {}",
            s.line, s.spec, s.mount_point, s.reason
        )
    }));
    // The release comes from guest memory: a path separator in it names no /boot file.
    let plausible = !release.is_empty() && !release.contains('/') && release != "..";
    let read = |name: String| {
        if !plausible {
            return None;
        }
        let guest_path = format!("/{name}");
        read_in_root(&root_fd, assembled.path(), &name, MAX_BOOT_FILE)
            .ok()
            .map(|bytes| BootFile {
                label: format!("{guest_path} on {boot_volume}"),
                bytes,
            })
    };
    let files = BootFiles {
        system_map: read(format!("boot/System.map-{release}")),
        vmlinuz: read(format!("boot/vmlinuz-{release}")),
        boot_volume: boot_volume.clone(),
        notes,
    };
    // An open descriptor inside the lazily unmounted tree would keep its mounts, and so the
    // disks' loop devices, busy: close it first.
    drop(root_fd);
    drop(assembled);
    drop(tree);
    Ok(files)
}

/// The kernel profile the guest's own /boot holds for `release` (see [`read_boot_files`]), and
/// remarks for the operator: what was skipped and why. Debian installs a placeholder
/// System.map (the real one is in the -dbg package): such a file is skipped, as is a vmlinuz
/// without usable BTF; the image's own memory then serves.
pub fn profile_files(
    disks: &[DiskSpec],
    release: &str,
    scratch: &Path,
) -> Result<(ProfileFiles, Vec<String>), EmulateError> {
    let boot = read_boot_files(disks, release, scratch)?;
    let mut files = ProfileFiles::default();
    let mut remarks: Vec<String> = boot.notes.iter().map(|n| format!("reading /boot: {n}")).collect();
    if let Some(map) = &boot.system_map {
        match Symbols::from_system_map(&String::from_utf8_lossy(&map.bytes)) {
            Ok(symbols) if symbols.len() > 1 => files.system_map = Some((map.label.clone(), symbols)),
            _ => remarks.push(format!("{} is a placeholder; using memory", map.label)),
        }
    }
    if let Some(vmlinuz) = boot.vmlinuz {
        let label = vmlinuz.label;
        let btf = KernelImage::from_bytes(PathBuf::from(&label), vmlinuz.bytes)
            .map_err(|e| e.to_string())
            .and_then(|image| image.btf().map_err(|e| e.to_string()));
        match btf {
            Ok(btf) => files.btf = Some((format!("BTF of {label}"), btf)),
            Err(e) => remarks.push(format!("{label} gives no BTF ({e}); using memory")),
        }
    } else if boot.system_map.is_none() {
        remarks.push(format!(
            "{} has neither /boot/System.map-{release} nor /boot/vmlinuz-{release}; using memory",
            boot.boot_volume
        ));
    }
    Ok((files, remarks))
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> EmulateError {
    EmulateError::Tree(crate::guest_tree::GuestTreeError::Io {
        what,
        path: PathBuf::from(path),
        source,
    })
}
