//! Commands that need root say so before they start, and why, instead of failing half-way
//! with a raw `EPERM` from a mount, a namespace or netlink.

use anyhow::{Result, bail};

/// Fails unless this process runs as root (effective uid 0), naming the command (as typed:
/// `dormouse SUBCOMMAND`) and what it does that needs root.
pub fn require_root(why: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let command = std::env::args().nth(1).unwrap_or_default();
    bail!("{command} must run as root: {why} (run it as root, e.g. with sudo)")
}

/// Why reading the guest's disks needs root, for every command that does.
pub const DISKS: &str = "it attaches the guest's disks read-only through loop devices and mounts them";
/// Why vif isolation needs root.
pub const NFTABLES: &str = "it reads and changes the kernel's nftables rules over netlink (CAP_NET_ADMIN)";
