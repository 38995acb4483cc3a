//! The static build: `scripts/build-agent --check` builds the agent with crt-static, checks
//! with `file` and `ldd` that it is static, and runs it in a chroot of the test bed's guest,
//! where nothing of dom0's libraries is.

use std::process::Command;

use crate::text;

#[test]
fn static_agent_runs_in_a_chroot_of_the_guest() {
    if dormouse_tests::testbed("static_agent_runs_in_a_chroot_of_the_guest").is_none() {
        return;
    }
    let out = Command::new(dormouse_tests::workspace_root().join("scripts/build-agent"))
        .arg("--check")
        .output()
        .expect("running scripts/build-agent");
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("static-pie linked") || log.contains("statically linked"),
        "{log}"
    );
    assert!(
        log.contains(&format!("dormouse-agent {}", env!("CARGO_PKG_VERSION"))),
        "the agent did not run in the chroot: {log}"
    );
}
