//! Tests that drive the `dormouse` binary. They belong to the binary's own package, so cargo
//! builds the binary for them and hands its path over as `CARGO_BIN_EXE_dormouse`.

mod inspect;
mod shadowfs;

fn dormouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dormouse")
}
