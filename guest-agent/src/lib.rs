//! `dormouse-agent`, the only dormouse code that runs inside a guest: verifies a bundle's
//! signature, checks identity and base fingerprints, and applies it journaled and reversibly.
//!
//! Empty until the guest-agent issue lands (it adds the `dormouse-agent` binary); see
//! DESIGN.md, "Guest agent".
