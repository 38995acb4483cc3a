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
mod restore;
mod rpm;
mod sbom;
mod schemas;
mod shadowfs;
mod truth;

fn dormouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dormouse")
}
