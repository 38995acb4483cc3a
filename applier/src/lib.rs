//! The bundle format (manifest, payload, signature) and the dom0 side of restoring a patched
//! domain: `xl restore -p`, nftables isolation of its vifs, delivery to the guest agent.
//!
//! Empty until the bundle and restore issues land; see DESIGN.md, "Bundle" and "Restore and
//! isolation".
