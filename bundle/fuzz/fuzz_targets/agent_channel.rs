//! The agent channel as dom0 reads it from a guest (and the agent from dom0): the preamble,
//! then frames, then a bundle transfer. Lengths come from the peer: must never panic, nor
//! allocate past a frame kind's bound.
#![no_main]

use bundle::transport::{read_frame, read_preamble, receive_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let _ = read_preamble(&mut r);
    // Each frame takes at least its 5-byte header, so this bounds the loop.
    for _ in 0..=data.len() / 5 {
        if read_frame(&mut r).is_err() {
            break;
        }
    }
    // A transfer whose offer (size, digest) is the input's first bytes.
    let (offer, mut rest) = data.split_at(data.len().min(8));
    let mut size = [0u8; 8];
    size[..offer.len()].copy_from_slice(offer);
    let offered = u64::from_le_bytes(size) % (4 << 20);
    let _ = receive_bundle(&mut rest, &mut std::io::sink(), offered, "00");
});
