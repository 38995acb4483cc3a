//! `dormouse-agent` end to end, as root, on real trees: the equivalence of offline emulation +
//! apply with an online update on the test bed, and the fault tests (kill -9 at every step,
//! rollback, tampering, conflicts, a full filesystem).
//!
//! The agent is this package's binary (`CARGO_BIN_EXE_dormouse-agent`). The `dormouse`
//! binary, which writes the test-bed bundles, is built by [`dormouse_bin`] with
//! `cargo build -p dormouse` into the same target directory (a no-op when it is fresh), or
//! taken from `$DORMOUSE_BIN`.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod equivalence;
mod faults;
mod restarts;
mod serve;
mod static_build;
mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dormouse-agent")
}

/// The `dormouse` CLI of this workspace.
pub fn dormouse_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DORMOUSE_BIN") {
            return PathBuf::from(bin);
        }
        // CARGO_BIN_EXE is <target>/<profile>/dormouse-agent; dormouse goes to <target>/debug.
        let target = Path::new(agent_bin())
            .parent()
            .and_then(Path::parent)
            .expect("the agent binary is in <target>/<profile>/");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "dormouse",
                "--bin",
                "dormouse",
                "--target-dir",
            ])
            .arg(target)
            .current_dir(dormouse_tests::workspace_root())
            .status()
            .expect("running cargo build -p dormouse");
        assert!(status.success(), "cargo build -p dormouse failed");
        target.join("debug/dormouse")
    })
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `script` with `sh -c` in a private mount namespace (every mount it makes vanishes
/// with it), with positional arguments `args`.
pub fn in_private_ns(script: &str, args: &[&Path], envs: &[(&str, &str)]) -> Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running unshare")
}

/// Mounts a chroot's /proc, /dev, and fresh /run and /tmp (as the emulation's sandbox and a
/// running guest have them), then runs the rest of the script. `$1` is the root.
pub const CHROOT_MOUNTS: &str = r#"
mount -t proc proc "$1/proc"
mount --rbind /dev "$1/dev"
mount -t tmpfs tmpfs "$1/run"
mount -t tmpfs tmpfs "$1/tmp"
"#;

/// `dormouse-agent ARGS` with the target's /proc and /dev mounted when `root` is given.
pub fn agent(args: &[&str], root: Option<&Path>, envs: &[(&str, &str)]) -> Output {
    match root {
        Some(root) => {
            let script = format!("{CHROOT_MOUNTS}\nagent=$2; shift 2; exec \"$agent\" \"$@\"");
            let mut all: Vec<&Path> = vec![root, Path::new(agent_bin())];
            all.extend(args.iter().map(Path::new));
            all.push(Path::new("--root"));
            all.push(root);
            in_private_ns(&script, &all, envs)
        }
        None => Command::new(agent_bin())
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("running dormouse-agent"),
    }
}

pub use dormouse_tests::copy_guest_root as copy_guest;

/// The policy layer every chroot run of the tests has (and removes afterwards): services are
/// not started in a chroot on dom0.
pub fn with_policy_rc_d<T>(root: &Path, run: impl FnOnce() -> T) -> T {
    use std::os::unix::fs::PermissionsExt;
    let policy = root.join("usr/sbin/policy-rc.d");
    assert!(!policy.exists(), "{} exists already", policy.display());
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = run();
    std::fs::remove_file(&policy).unwrap();
    result
}
