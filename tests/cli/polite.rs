//! Polite failure: a reader that goes away early (`| head`) is a quiet success, and a command
//! that needs root says so, and why, before it touches anything.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use dormouse_tests::{Testbed, testbed};

use crate::dormouse_bin;

/// Runs `dormouse ARGS` with standard output a pipe whose reader reads `keep` bytes (none:
/// closes it at once, before dormouse writes anything) and then closes it.
fn with_early_closing_reader(args: &[&str], image: &Path, keep: usize) -> Output {
    let mut child = Command::new(dormouse_bin())
        .args(args.iter().take(1))
        .arg(image)
        .args(args.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = vec![0; keep];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    child.wait_with_output().unwrap()
}

fn assert_quiet_success(what: &str, out: &Output) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what} with its reader gone: {}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dump(tb: &Testbed) -> std::path::PathBuf {
    tb.memdump.dir.join("dump.elf")
}

#[test]
fn a_reader_that_goes_away_early_is_a_quiet_success() {
    let Some(tb) = testbed("a_reader_that_goes_away_early_is_a_quiet_success") else {
        return;
    };
    let image = dump(&tb);
    // Closed before the first write: every write fails with EPIPE.
    for args in [
        &["ps"][..],
        &["ps", "--json"],
        &["proc", "/proc/1/status"],
        &["proc", "/proc", "--json"],
        &["uname", "-a"],
    ] {
        assert_quiet_success(
            &format!("dormouse {args:?}"),
            &with_early_closing_reader(args, &image, 0),
        );
    }
    // `| head -c 10`: the snapshot is far larger than a pipe's buffer.
    assert_quiet_success(
        "dormouse inspect --json | head -c 10",
        &with_early_closing_reader(&["inspect", "--json"], &image, 10),
    );
    assert_quiet_success(
        "dormouse ps | head -c 10",
        &with_early_closing_reader(&["ps"], &image, 10),
    );
}

/// `dormouse ARGS` as nobody (setpriv from util-linux).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", dormouse_bin()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv (util-linux)")
}

#[test]
fn commands_that_need_root_say_so_and_why() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n!!! SKIPPED commands_that_need_root_say_so_and_why: needs root to become nobody\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0; 4096]).unwrap();
    let disk = disk.to_str().unwrap();
    let cases: &[(&[&str], &str, i32)] = &[
        (&["disk", disk], "loop devices", 1),
        (&["emulate", "--disk", disk, "--", "true"], "namespaces", 125),
        (&["check", "--disk", disk], "loop devices", 1),
        (&["isolate", "--list"], "nftables", 1),
        (&["release", "--all"], "nftables", 1),
        (&["shadowfs", disk, "/nonexistent"], "FUSE", 1),
        (&["inspect", disk, "--disk", disk], "loop devices", 1),
        (
            &[
                "deliver", "--domain", "7", "--bundle", disk, "--key", disk, "--agent", "10.0.0.7",
            ],
            "nftables",
            1,
        ),
    ];
    for (args, why, status) in cases {
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let command = args[0];
        assert_eq!(
            out.status.code(),
            Some(*status),
            "dormouse {args:?} as nobody: {stderr}"
        );
        assert!(
            stderr.starts_with(&format!("dormouse: {command} must run as root: ")) && stderr.contains(why),
            "dormouse {args:?} as nobody: {stderr}"
        );
        assert!(
            !stderr.contains("EPERM") && !stderr.contains("Operation not permitted"),
            "{stderr}"
        );
    }
    // What needs no root works as nobody (the key pair is written where nobody may write).
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let prefix = dir.path().join("k");
    let out = as_nobody(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "keygen as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exit_statuses_of_the_command_line_itself() {
    let run = |args: &[&str]| Command::new(dormouse_bin()).args(args).output().unwrap();
    assert_eq!(run(&["--version"]).status.code(), Some(0));
    assert_eq!(run(&["help"]).status.code(), Some(0));
    assert_eq!(run(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(
        run(&["ps"]).status.code(),
        Some(2),
        "a missing argument is a usage error"
    );
    let missing = run(&["ps", "/nonexistent/image"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("dormouse: "));
}
