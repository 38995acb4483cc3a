//! One overlayfs per guest filesystem, stacked into the merged tree the sandbox pivots into.
//!
//! Each guest filesystem (root, and `/var`, `/boot`... from the guest's fstab) gets its own
//! overlay whose lower layer is that filesystem's read-only mount, so every change lands in
//! the upper layer of the filesystem it belongs to — exactly what the in-guest apply needs,
//! since a rename across guest filesystems is a copy there too.
//!
//! Options, and why:
//! - `metacopy=off`: a chmod/chown must copy the whole file up, so every changed file is whole
//!   in its upper layer and the bundle never depends on lower data.
//! - `redirect_dir=off`: renaming a lower directory fails with EXDEV and userland falls back to
//!   copy + delete, so the upper layer holds plain directories and whiteouts, never redirects.
//! - `index=off`, `xino=off`: no hardlink index or inode-number tricks to decode later.
//! - `nodev,nosuid` on the mount: device nodes the package manager creates cannot be opened,
//!   setuid files do not elevate.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use sys_mount::{FilesystemType, Mount, MountFlags};

use super::SandboxError;

/// A guest filesystem to overlay: where it is mounted in the guest, and its read-only mount.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Absolute path inside the guest, e.g. `/` or `/var`.
    pub guest_path: String,
    pub lower: PathBuf,
}

/// The mounted overlays, innermost last; unmounted in reverse order when dropped.
#[derive(Debug)]
pub struct OverlayStack {
    merged: PathBuf,
    mounted: Vec<PathBuf>,
    uppers: Vec<(String, PathBuf)>,
}

impl OverlayStack {
    /// Mounts the layers at `merged`, with upper and work directories under `scratch`
    /// (`scratch/upper/<n>`, `scratch/work/<n>`). Layers must include `/`; they are mounted
    /// shallowest first so `/var` lands on the root overlay's `/var`.
    pub fn mount(layers: &[Layer], scratch: &Path, merged: &Path) -> Result<OverlayStack, SandboxError> {
        let mut order: Vec<(usize, &Layer)> = layers.iter().enumerate().collect();
        order.sort_by_key(|(_, l)| (path_depth(&l.guest_path), l.guest_path.clone()));
        if order.first().map(|(_, l)| l.guest_path.as_str()) != Some("/") {
            return Err(SandboxError::Setup {
                what: "assembling the overlay stack".into(),
                path: merged.to_owned(),
                detail: "no layer for the guest's root filesystem `/`".into(),
            });
        }
        let mut stack = OverlayStack {
            merged: merged.to_owned(),
            mounted: Vec::new(),
            uppers: Vec::new(),
        };
        for (n, layer) in order {
            let upper = scratch.join("upper").join(n.to_string());
            let work = scratch.join("work").join(n.to_string());
            for dir in [&upper, &work] {
                fs::create_dir_all(dir).map_err(|e| SandboxError::io("creating an overlay directory", dir, e))?;
            }
            let target = merged.join(layer.guest_path.trim_start_matches('/'));
            if !target.is_dir() {
                return Err(SandboxError::Setup {
                    what: format!("mounting the overlay of the guest's {}", layer.guest_path),
                    path: target,
                    detail: "the mount point is not a directory in the guest tree below it".into(),
                });
            }
            let data = format!(
                "lowerdir={},upperdir={},workdir={},metacopy=off,redirect_dir=off,index=off,xino=off",
                escape_option(&layer.lower)?,
                escape_option(&upper)?,
                escape_option(&work)?
            );
            Mount::builder()
                .fstype(FilesystemType::Manual("overlay"))
                .flags(MountFlags::NODEV | MountFlags::NOSUID)
                .data(&data)
                .mount("dormouse-overlay", &target)
                .map_err(|e| SandboxError::io(&format!("mounting overlayfs ({data})"), &target, e))?;
            stack.mounted.push(target);
            stack.uppers.push((layer.guest_path.clone(), upper));
        }
        Ok(stack)
    }

    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// (guest path, upper directory) per guest filesystem, root first.
    pub fn uppers(&self) -> &[(String, PathBuf)] {
        &self.uppers
    }
}

impl Drop for OverlayStack {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            if nix::mount::umount2(target, MntFlags::empty()).is_err() {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            }
        }
    }
}

fn path_depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// overlayfs splits its options at `,` and lower dirs at `:`; our own paths never contain
/// them, but a state dir chosen by the operator might.
fn escape_option(path: &Path) -> Result<String, SandboxError> {
    let text = path.to_str().ok_or_else(|| SandboxError::Setup {
        what: "building overlayfs options".into(),
        path: path.to_owned(),
        detail: "path is not UTF-8".into(),
    })?;
    if text.contains([',', ':', '\\']) {
        return Err(SandboxError::Setup {
            what: "building overlayfs options".into(),
            path: path.to_owned(),
            detail: "overlayfs cannot take paths containing ',', ':' or '\\'; choose another --state-dir".into(),
        });
    }
    Ok(text.to_owned())
}
