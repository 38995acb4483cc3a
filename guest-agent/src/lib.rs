//! `dormouse-agent`, the only dormouse code that runs inside a guest: verifies a bundle's
//! signature, checks identity and base fingerprints, and applies it journaled and reversibly
//! (see guest-agent/README.md).

pub mod apply;
pub mod cli;
pub mod fs;
pub mod journal;
pub mod restart;
pub mod rollback;
pub mod script;
pub mod serve;
