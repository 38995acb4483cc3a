//! The exit statuses of `dormouse`, in one place (README.md, "Exit status", lists them). They
//! are stable: scripts and the xendomains integration test them.

/// The command did what was asked (also: `--help`, `--version`, and standard output's reader
/// going away early, as with `| head`).
pub const SUCCESS: u8 = 0;
/// The command failed; standard error says why (for `restore`/`deliver`, a stranded domain's
/// JSON is on standard output too).
pub const FAILURE: u8 = 1;
/// The command line is wrong (clap's usage error).
pub const USAGE: u8 = 2;
/// `replay`: the replay did not do what the record says (the differences are on standard
/// output).
pub const REPLAY_DIFFERS: u8 = 3;
/// `emulate`: COMMAND exceeded `--timeout` and was killed (as timeout(1)).
pub const EMULATE_TIMED_OUT: u8 = 124;
/// `emulate`: dormouse itself failed (before, around or after COMMAND), or COMMAND never ran.
/// Otherwise `emulate` exits with COMMAND's own status (128 + N when a signal N killed it).
pub const EMULATE_FAILED: u8 = 125;
