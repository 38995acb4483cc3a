//! Non-raw images (qcow2, vmdk, ...) presented as a raw, read-only file by
//! `qemu-storage-daemon`'s FUSE export, so the rest of dormouse treats every disk alike.
//!
//! Every layer is read-only: the file protocol node opens the image `O_RDONLY`, the format node
//! is `read-only=on` (qemu opens backing files read-only regardless), and the export is
//! `writable=off` and `allow-other=off`. The daemon's life is tied to its [`QemuExport`]:
//! SIGTERM on drop (qemu then unmounts its export), and `PR_SET_PDEATHSIG` so it also ends when
//! dormouse dies without running destructors.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::format::ImageFormat;

const DAEMON: &str = "qemu-storage-daemon";
/// Opening a long backing chain on a slow disk takes well under this.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// Export files of one process are told apart by a counter.
static NEXT_EXPORT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("creating the export file {path}: {source}")]
    ExportFile { path: PathBuf, source: std::io::Error },
    #[error("starting {DAEMON} for {image}: {source} (install the qemu-system-common package)")]
    Spawn { image: PathBuf, source: std::io::Error },
    #[error("{DAEMON} could not export {image} as {format}: {log}")]
    Failed {
        image: PathBuf,
        format: ImageFormat,
        log: String,
    },
    #[error("{DAEMON} did not export {image} within {}s; its log: {log}", READY_TIMEOUT.as_secs())]
    Timeout { image: PathBuf, log: String },
}

/// A running `qemu-storage-daemon` exporting one image as a raw read-only file.
#[derive(Debug)]
pub struct QemuExport {
    child: Child,
    file: PathBuf,
    log: PathBuf,
    /// The copy-on-write layer of a writable view ([`QemuExport::start_overlay`]).
    overlay: Option<PathBuf>,
}

/// What the daemon serves.
enum Graph<'a> {
    /// The image as `format`, read-only.
    Image(ImageFormat),
    /// `size` bytes at `offset` of a raw image, read-only, under a writable qcow2 layer.
    Overlay { offset: u64, size: u64, overlay: &'a Path },
}

impl QemuExport {
    /// Exports `image`, read as `format`, on a new file in `dir`, and waits until the export
    /// serves reads.
    pub fn start(image: &Path, format: ImageFormat, dir: &Path) -> Result<Self, ExportError> {
        Self::start_graph(image, Graph::Image(format), dir)
    }

    /// A *writable* raw view of `size` bytes at `offset` of the raw `image`: writes go to a
    /// qcow2 layer in `dir` (removed with the export), and `image` is only ever read.
    pub fn start_overlay(image: &Path, offset: u64, size: u64, dir: &Path) -> Result<Self, ExportError> {
        let overlay = dir.join(format!(
            "dormouse-overlay-{}-{}.qcow2",
            std::process::id(),
            NEXT_EXPORT.fetch_add(1, Ordering::Relaxed)
        ));
        let created = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&overlay)
            .arg(size.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ExportError::Spawn {
                image: image.to_owned(),
                source,
            })?;
        if !created.status.success() {
            let _ = std::fs::remove_file(&overlay);
            return Err(ExportError::Failed {
                image: image.to_owned(),
                format: ImageFormat::Raw,
                log: format!(
                    "qemu-img create {}: {}",
                    overlay.display(),
                    String::from_utf8_lossy(&created.stderr).trim()
                ),
            });
        }
        let graph = Graph::Overlay {
            offset,
            size,
            overlay: &overlay,
        };
        match Self::start_graph(image, graph, dir) {
            Ok(mut export) => {
                export.overlay = Some(overlay);
                Ok(export)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&overlay);
                Err(e)
            }
        }
    }

    fn start_graph(image: &Path, graph: Graph<'_>, dir: &Path) -> Result<Self, ExportError> {
        let format = match graph {
            Graph::Image(format) => format,
            Graph::Overlay { .. } => ImageFormat::Raw,
        };
        let name = format!(
            "dormouse-export-{}-{}",
            std::process::id(),
            NEXT_EXPORT.fetch_add(1, Ordering::Relaxed)
        );
        let file = dir.join(format!("{name}.img"));
        let log = dir.join(format!("{name}.log"));
        let create = |path: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| ExportError::ExportFile {
                    path: path.to_owned(),
                    source,
                })
        };
        drop(create(&file)?);
        let log_file = match create(&log) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
        };
        let child = spawn(image, &graph, &file, log_file).map_err(|source| {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&log);
            ExportError::Spawn {
                image: image.to_owned(),
                source,
            }
        })?;
        // From here on, Drop cleans up whatever happens.
        let mut export = Self {
            child,
            file,
            log,
            overlay: None,
        };
        export.wait_ready(image, format)?;
        Ok(export)
    }

    /// The raw view of the image: a read-only regular file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The export is up once the file is a mount of its own: a different device than its
    /// directory's.
    fn wait_ready(&mut self, image: &Path, format: ImageFormat) -> Result<(), ExportError> {
        let dir_dev = self
            .file
            .parent()
            .and_then(|d| std::fs::metadata(d).ok())
            .map(|m| m.dev());
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(ExportError::Failed {
                    image: image.to_owned(),
                    format,
                    log: self.log_text(),
                });
            }
            let dev = std::fs::metadata(&self.file).ok().map(|m| m.dev());
            if dev.is_some() && dev != dir_dev {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(ExportError::Timeout {
                    image: image.to_owned(),
                    log: self.log_text(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            "(no output)".into()
        } else {
            text.to_owned()
        }
    }
}

fn spawn(image: &Path, graph: &Graph<'_>, export: &Path, log: File) -> std::io::Result<Child> {
    let image = std::fs::canonicalize(image)?;
    // Image files use the `file` protocol; qcow2 on an LVM volume needs `host_device`.
    let protocol = if std::fs::metadata(&image)?.file_type().is_block_device() {
        "host_device"
    } else {
        "file"
    };
    let stderr = log.try_clone()?;
    let mut command = Command::new(DAEMON);
    command
        .arg("--blockdev")
        .arg(format!(
            "driver={protocol},node-name=proto,filename={},read-only=on",
            qemu_escape(&image)
        ))
        .args(graph_args(graph))
        .arg("--export")
        .arg(format!(
            "type=fuse,id=export,node-name=image,mountpoint={},writable={},allow-other=off",
            qemu_escape(export),
            if matches!(graph, Graph::Overlay { .. }) {
                "on"
            } else {
                "off"
            }
        ))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a terminal's Ctrl-C reaches dormouse, which then tears the
        // mounts on top of the export down before stopping the daemon.
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe prctl
    // and getppid.
    unsafe {
        command.pre_exec(move || {
            // The signal follows the death of the *thread* that forked: callers keep the export
            // in a thread that outlives it (see `GuestDisk::open_as`).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("dormouse exited while starting the daemon"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The block nodes above `proto` (the image, opened read-only), ending in node `image`.
fn graph_args(graph: &Graph<'_>) -> Vec<String> {
    match graph {
        Graph::Image(format) => vec![
            "--blockdev".into(),
            format!(
                "driver={},node-name=image,file=proto,read-only=on",
                format.qemu_driver()
            ),
        ],
        Graph::Overlay { offset, size, overlay } => vec![
            "--blockdev".into(),
            format!("driver=raw,node-name=base,file=proto,offset={offset},size={size},read-only=on"),
            "--blockdev".into(),
            format!("driver=file,node-name=layer,filename={}", qemu_escape(overlay)),
            "--blockdev".into(),
            "driver=qcow2,node-name=image,file=layer,backing=base".into(),
        ],
    }
}

/// qemu's option syntax separates with commas; a literal comma is written twice.
fn qemu_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

impl Drop for QemuExport {
    fn drop(&mut self) {
        // SIGTERM lets qemu close its block nodes and unmount the export itself.
        // SAFETY: kill(2) with our own child's pid, which it cannot have reused: we have not
        // reaped it yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A daemon killed hard leaves its FUSE mount behind; EINVAL (not mounted) is the
        // normal case here.
        let _ = nix::mount::umount2(&self.file, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.log);
        if let Some(overlay) = &self.overlay {
            let _ = std::fs::remove_file(overlay);
        }
    }
}
