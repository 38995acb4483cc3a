//! The dom0 side of restoring a patched domain: packing a bundle from an emulation (`pack`),
//! `xl restore -p`, nftables isolation of its vifs (`isolate`), the seam to Xen
//! (`toolstack`), delivery to the guest agent (`transport`, over the framing of the `bundle`
//! crate, which the agent shares) and the orchestration (`restore`). See DESIGN.md, "Restore
//! and isolation".

pub mod isolate;
pub mod pack;
pub mod restore;
pub mod toolstack;
pub mod transport;
