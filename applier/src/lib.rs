//! The bundle format (manifest, payload, signature) and the dom0 side of restoring a patched
//! domain: `xl restore -p`, nftables isolation of its vifs, delivery to the guest agent.
//!
//! Isolation (`isolate`), the seam to Xen (`toolstack`), the channel to the agent (`transport`,
//! whose framing the agent shares) and the orchestration (`restore`). See DESIGN.md, "Restore
//! and isolation".

pub mod bundle;
#[cfg(feature = "dom0")]
pub mod isolate;
#[cfg(feature = "dom0")]
pub mod restore;
#[cfg(feature = "dom0")]
pub mod toolstack;
pub mod transport;
