//! Where the tests find their data.
//!
//! Two kinds of fixtures, with different rules:
//! - **Real Xen data** (`$DORMOUSE_FIXTURES`, default `../shared/fixtures` beside the
//!   workspace): recorded by software nobody here wrote. A clone without it skips those tests,
//!   loudly. CI always has it.
//! - **The test bed** (`$DORMOUSE_CACHE`, default `~/.cache/dormouse`): built by
//!   `scripts/make-fixtures`, which `scripts/test` runs first. A missing piece is a failure that
//!   names the script, never a skip — except in quick mode (`DORMOUSE_QUICK=1`), documented in
//!   README.md, where such tests skip loudly.

// Test support: a failed expectation is a failed test, with the message saying which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The workspace root (this package lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_owned()
}

/// The real Xen fixtures, or `None` after printing a loud skip message.
pub fn xen_fixtures(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DORMOUSE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    if dir.is_dir() {
        return Some(dir);
    }
    // The real stderr, not eprintln!: the test harness swallows a passing test's output, and a
    // skip must not pass for a run.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: real Xen fixtures not found at {} — set DORMOUSE_FIXTURES to the \
         shared fixtures directory (CI always has them)\n",
        dir.display()
    );
    None
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("DORMOUSE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/dormouse"),
    }
}

fn quick_mode() -> bool {
    std::env::var_os("DORMOUSE_QUICK").is_some_and(|v| v == "1")
}

/// `testbed.json`, written last by `scripts/make-fixtures`.
#[derive(Debug, Deserialize)]
pub struct Testbed {
    pub guest_hostname: String,
    pub disks: TestbedDisks,
    pub scenarios: serde_json::Value,
    pub repo: serde_json::Value,
    pub memdump: MemdumpInfo,
    /// The Debian kernel the memory dump booted: whatever `linux-image-amd64` pointed at on the
    /// day the test bed was built. Tests read it here, never from a literal.
    pub kernel: TestbedKernel,
    /// The rpm-managed root (`scripts/make-fixtures --only rpmguest`); absent from test beds
    /// built before it existed.
    #[serde(default)]
    pub rpm_guest: Option<RpmGuest>,
    /// Volatility 3 (`scripts/make-fixtures --only volatility`); absent from older test beds.
    #[serde(default)]
    pub volatility: Option<Volatility>,
}

/// Volatility 3 in a virtual environment of its own.
#[derive(Debug, Deserialize)]
pub struct Volatility {
    /// Its `vol` command.
    pub vol: PathBuf,
    pub version: String,
}

/// Debian's guest tree plus rpm 4.18 and dnf, rpmdb in /var/lib/rpm.
#[derive(Debug, Deserialize)]
pub struct RpmGuest {
    /// MBR disk image, one ext4 root.
    pub path: PathBuf,
    pub sha256: String,
    /// The same tree, for plain-chroot runs of a copy of it.
    pub root: PathBuf,
    pub uuid: String,
}

#[derive(Debug, Deserialize)]
pub struct TestbedDisks {
    pub guest: TestbedDisk,
    pub guest_split: TestbedDisk,
}

#[derive(Debug, Deserialize)]
pub struct TestbedDisk {
    pub path: PathBuf,
    pub sha256: String,
    pub table: String,
    pub filesystems: Vec<TestbedFilesystem>,
}

#[derive(Debug, Deserialize)]
pub struct TestbedFilesystem {
    pub partition: u32,
    pub mountpoint: String,
    pub uuid: String,
}

/// What `scripts/fixtures/memdump` booted, as its build recorded it.
#[derive(Debug, Deserialize)]
pub struct TestbedKernel {
    /// The image package, e.g. `linux-image-<release>`.
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// `uname -r` inside the guest.
    pub release: String,
    /// `/proc/version` inside the guest (the `linux_banner` text).
    pub banner: String,
    /// `/boot/config-<release>` from the package.
    pub config: PathBuf,
    /// `/boot/vmlinuz-<release>` from the package.
    pub vmlinuz: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct MemdumpInfo {
    pub dir: PathBuf,
}

/// The generated test bed. Panics with the command that builds it when it is missing, or
/// returns `None` after a loud message in quick mode.
pub fn testbed(test: &str) -> Option<Testbed> {
    let manifest = cache_dir().join("testbed.json");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(text) => text,
        Err(e) if quick_mode() => {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test} (DORMOUSE_QUICK=1): no test bed at {}: {e}\n",
                manifest.display()
            );
            return None;
        }
        Err(e) => panic!(
            "{test}: the test bed is missing ({}: {e}). Build it with `scripts/make-fixtures` as root \
             (scripts/test does this), or set DORMOUSE_CACHE to where it was built.",
            manifest.display()
        ),
    };
    let testbed: Testbed = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: not a test bed manifest ({e}); rerun scripts/make-fixtures",
            manifest.display()
        )
    });
    Some(testbed)
}

/// The Debian kernel of the checked-in fixtures (`kernel-<release>/`): the release is the one
/// the Xen PV guest reported from inside (`xen-pv-a/ground-truth.json`), so no test names it.
/// Fixtures never move; the test bed's kernel is [`Testbed::kernel`], and may differ.
#[derive(Debug, Clone)]
pub struct FixtureKernel {
    pub release: String,
    /// `uname -v` of the fixtures' guests.
    pub version: String,
    pub dir: PathBuf,
}

impl FixtureKernel {
    pub fn read(fixtures: &Path) -> FixtureKernel {
        let truth = fixtures.join("xen-pv-a/ground-truth.json");
        let text = std::fs::read_to_string(&truth).unwrap_or_else(|e| panic!("{}: {e}", truth.display()));
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", truth.display()));
        let field = |name: &str| {
            json["uname"][name]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no uname.{name}", truth.display()))
                .to_owned()
        };
        let release = field("release");
        let dir = fixtures.join(format!("kernel-{release}"));
        assert!(
            dir.is_dir(),
            "{}: the fixtures' guests ran {release}, but there is no {}",
            truth.display(),
            dir.display()
        );
        FixtureKernel {
            version: field("version"),
            release,
            dir,
        }
    }

    /// `Linux version <release> `: how the kernel's banner starts.
    pub fn banner_prefix(&self) -> String {
        format!("Linux version {} ", self.release)
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join(format!("vmlinuz-{}", self.release))
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(format!("config-{}", self.release))
    }

    /// The real System.map (from the -dbg package), relative to the fixtures and compressed:
    /// give it to [`decompressed`].
    pub fn system_map_rel(&self) -> String {
        format!("kernel-{0}/System.map-{0}", self.release)
    }
}

/// Fixture `rel` of the real Xen fixtures (e.g. `xen-pv-a/domU-A.save`), decompressed from
/// `rel.zst` into `$DORMOUSE_CACHE/fixtures-decompressed` on first use; never modified in place.
pub fn decompressed(fixtures: &Path, rel: &str) -> PathBuf {
    let out = cache_dir().join("fixtures-decompressed").join(rel);
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out.parent().expect("fixture path has a parent")).expect("create the fixture cache");
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let src = fixtures.join(format!("{rel}.zst"));
    let status = std::process::Command::new("zstd")
        .args(["-q", "-f", "-d", "--long=27"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .expect("run zstd (install the zstd package)");
    assert!(status.success(), "zstd failed on {}", src.display());
    std::fs::rename(&tmp, &out).expect("move the decompressed fixture into place");
    out
}

/// The SHA-256 of a file, hex: proves a guest image was not written.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the test bed's local mirror (idempotent): `scripts/repo-serve start`.
pub fn start_repo() {
    let status = std::process::Command::new(workspace_root().join("scripts/repo-serve"))
        .arg("start")
        .status()
        .expect("running scripts/repo-serve");
    assert!(status.success(), "scripts/repo-serve start failed");
}

/// A copy of the test bed's guest root filesystem (partition 1 of guest.img at 1 MiB, mounted
/// read-only without journal replay, in a private mount namespace) at `dest`.
pub fn copy_guest_root(image: &Path, dest: &Path) {
    let script = r#"
        mnt=$(mktemp -d)
        loop=$(losetup --read-only --find --show --offset 1048576 --sizelimit 1073741824 "$1")
        mount -o ro,noload "$loop" "$mnt"
        losetup -d "$loop"
        cp -a "$mnt" "$2"
        umount "$mnt"
        rmdir "$mnt"
    "#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
        .arg(image)
        .arg(dest)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running unshare");
    assert!(
        out.status.success(),
        "copying the guest image's tree to {}: {}",
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hard link to `image` in a fresh directory beside it, for tests that look for loop devices
/// left on *their* image: the kernel reports a loop device's backing file by the name it was
/// opened with, so concurrent tests attaching the same image do not count.
pub fn private_link(image: &Path) -> (tempfile::TempDir, PathBuf) {
    let parent = image.parent().expect("an image path has a parent");
    let dir = tempfile::tempdir_in(parent).unwrap_or_else(|e| panic!("tempdir in {}: {e}", parent.display()));
    let link = dir
        .path()
        .join(image.file_name().expect("an image path has a file name"));
    std::fs::hard_link(image, &link).unwrap_or_else(|e| panic!("hard link {}: {e}", image.display()));
    (dir, link)
}

/// A tiny deterministic generator (xorshift64*) for corrupting inputs and sampling: the same
/// sequence on every run, so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
