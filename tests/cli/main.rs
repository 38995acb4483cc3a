//! Tests that drive the `dormouse` binary. They belong to the binary's own package, so cargo
//! builds the binary for them and hands its path over as `CARGO_BIN_EXE_dormouse`.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bundle;
mod check;
mod check_rpm;
mod corrupt;
mod docs;
mod emulate;
mod inspect;
mod isf;
mod isolate;
mod polite;
mod replay;
mod restore;
mod rpm;
mod sbom;
mod schemas;
mod shadowfs;
mod truth;

fn dormouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dormouse")
}

/// `dormouse ARGS` run to completion, standard input closed.
fn run_dormouse(args: &[&str]) -> std::process::Output {
    std::process::Command::new(dormouse_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running dormouse")
}

/// A finished command's status and output, for assertion messages.
fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
