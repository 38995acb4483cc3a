//! Read-only loop devices over a byte range of an image file.
//!
//! The backing file is opened `O_RDONLY` and the device is configured `LO_FLAGS_READ_ONLY`, so
//! neither dormouse nor a filesystem driver can write the guest's disk through it. Each
//! partition gets its own device with an offset and size limit, which avoids partition
//! scanning (and its udev races) altogether.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
/// Another process can take the device LOOP_CTL_GET_FREE handed us before we configure it.
const ATTACH_ATTEMPTS: usize = 16;
/// How long a dropped device may take to detach once its last mount is gone (namespace
/// teardown and the final close of the filesystem happen after our unmount returns).
const DETACH_TIMEOUT: Duration = Duration::from_secs(10);

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>` (Linux ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{op} on {device}: {errno} (is the loop module loaded and are we root?)")]
    Ioctl {
        op: &'static str,
        device: PathBuf,
        errno: Errno,
    },
    #[error("no free loop device after {ATTACH_ATTEMPTS} attempts: other processes keep taking them")]
    Busy,
}

/// An attached read-only loop device; detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    /// `None` only inside `drop`, which must close it before waiting for the detach.
    device: Option<File>,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `size` bytes of `image` starting at `offset` to a free loop device, read-only.
    pub fn attach_read_only(image: &Path, offset: u64, size: u64) -> Result<Self, LoopError> {
        let backing = File::open(image).map_err(|source| LoopError::Open {
            path: image.to_owned(),
            source,
        })?;
        Self::attach(&backing, image, offset, size, LO_FLAGS_READ_ONLY)
    }

    /// Attaches the whole of `scratch` (a file dormouse made, never a guest's) read-write.
    pub fn attach_scratch(scratch: &File, name: &Path) -> Result<Self, LoopError> {
        Self::attach(scratch, name, 0, 0, 0)
    }

    fn attach(backing: &File, image: &Path, offset: u64, size: u64, flags: u32) -> Result<Self, LoopError> {
        let control_path = Path::new("/dev/loop-control");
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(control_path)
            .map_err(|source| LoopError::Open {
                path: control_path.to_owned(),
                source,
            })?;

        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags | LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        // The kernel shows this in /sys/block/loopN/loop/backing_file; truncation is harmless.
        let name = image.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&name[..n]);
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };

        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let number = Errno::result(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) }).map_err(
                |errno| LoopError::Ioctl {
                    op: "LOOP_CTL_GET_FREE",
                    device: control_path.to_owned(),
                    errno,
                },
            )?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            // The kernel makes the device read-only unless it was opened for writing.
            let writable = flags & LO_FLAGS_READ_ONLY == 0;
            let device = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&path)
                .map_err(|source| LoopError::Open {
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: `config` is a fully initialised `struct loop_config` that outlives the call;
            // the kernel only reads it.
            match Errno::result(unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config) }) {
                Ok(_) => {
                    return Ok(Self {
                        device: Some(device),
                        path,
                    });
                }
                Err(Errno::EBUSY) => continue,
                Err(errno) => {
                    return Err(LoopError::Ioctl {
                        op: "LOOP_CONFIGURE",
                        device: path,
                        errno,
                    });
                }
            }
        }
        Err(LoopError::Busy)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let Some(device) = self.device.take() else {
            return;
        };
        // What identifies this binding: the backing file's name, and the disk sequence number
        // the kernel (≥ 5.15) gives every new configuration of the device, so a rebinding to the
        // same image by another process is not mistaken for ours.
        let sysfs = self.path.file_name().map(|name| Path::new("/sys/block").join(name));
        let binding = |sysfs: &Path| {
            std::fs::read(sysfs.join("loop/backing_file"))
                .ok()
                .map(|backing| (backing, std::fs::read(sysfs.join("diskseq")).ok()))
        };
        let ours = sysfs.as_deref().and_then(binding);
        // With AUTOCLEAR the kernel detaches once the last user (a mount) is gone; clearing here
        // detaches at once when nothing is mounted. When a mount still holds it, the kernel only
        // marks it for auto-clear and finishes when that mount's superblock goes away.
        // SAFETY: LOOP_CLR_FD takes no argument.
        let _ = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD as _) };
        // Our descriptor is a user too: close it before waiting.
        drop(device);
        // Unmounts of copies in dead namespaces finish shortly after our unmount returns; wait
        // for them, so a finished run leaves no device attached to the guest's image.
        let (Some(sysfs), Some(ours)) = (sysfs, ours) else {
            return;
        };
        let deadline = Instant::now() + DETACH_TIMEOUT;
        // Gone, or already reused for another binding: either way no longer ours.
        while binding(&sysfs).is_some_and(|now| now == ours) {
            if Instant::now() > deadline {
                eprintln!(
                    "dormouse: {} still attached to {} after {} s: something still has it mounted; \
                     the kernel detaches it when that mount goes away",
                    self.path.display(),
                    String::from_utf8_lossy(&ours.0).trim(),
                    DETACH_TIMEOUT.as_secs()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
