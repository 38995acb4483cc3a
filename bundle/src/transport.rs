//! The channel between dom0 and `dormouse-agent serve`: a versioned framed protocol over one
//! TCP connection per bundle. The framing and messages, which the agent and dom0 share; the
//! dom0 client (`connect_from`, `deliver`) is in the `applier` crate.
//!
//! Connection: dom0 connects to the agent *from* source port PORT of its address ADDR, the
//! one endpoint the isolation rules let through (`dormouse isolate --allow ADDR:PORT` passes
//! only TCP whose dom0-side port is PORT, and the bridge family keeps no connection state).
//! The agent listens on PORT too and accepts only ADDR:PORT as peer.
//!
//! Wire format: each side first sends [`MAGIC`] and its [`VERSION`] (u16, big endian); then
//! frames of a kind byte, a u32 big-endian length and the payload:
//! - `C`: a control message, [`Message`] as JSON (at most [`MAX_CONTROL`] bytes);
//! - `D`: a chunk of the bundle's bytes (at most [`MAX_CHUNK`]);
//! - `E`: end of the bundle's bytes (empty).
//!
//! Exchange: dom0 sends `offer` (size, SHA-256, signature text), the bundle as `D` frames and
//! `E`; the agent answers `progress` messages, then one final `report` (the agent's JSON apply
//! report) or `error`, and closes first (so TIME_WAIT stays on the guest's side and dom0 can
//! reuse its fixed source port at once).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"DMAGENT\0";
pub const VERSION: u16 = 1;
/// The agent channel's port, on both ends, unless configured otherwise.
pub const DEFAULT_PORT: u16 = 7878;
/// Largest control message; reports carry script output tails, so not tiny.
pub const MAX_CONTROL: u32 = 4 << 20;
/// Largest data chunk.
pub const MAX_CHUNK: u32 = 1 << 20;
/// Largest signature text accepted in an offer (a minisig file is about 300 bytes).
pub const MAX_SIGNATURE: usize = 4096;
/// The journaled steps of the agent's apply, in order, as `Progress` stages name them (dom0
/// shows an apply as step k of these).
pub const APPLY_STEPS: [&str; 6] = ["verify", "check", "backup", "pre-scripts", "install", "post-scripts"];

const KIND_CONTROL: u8 = b'C';
const KIND_DATA: u8 = b'D';
const KIND_END: u8 = b'E';

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the peer does not speak the dormouse agent protocol (got {got:02x?} instead of the magic)")]
    BadMagic { got: Vec<u8> },
    #[error(
        "protocol version {theirs} on the other side, this side speaks {VERSION}; update dormouse and dormouse-agent together"
    )]
    Version { theirs: u16 },
    #[error("frame of kind {kind:?} announces {len} bytes, more than the {max} allowed")]
    Oversize { kind: char, len: u32, max: u32 },
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("control message is not valid: {0}")]
    Json(String),
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("bundle stream: {0}")]
    Bundle(String),
}

/// An I/O error of the channel, saying what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io {
        what: what.into(),
        source,
    }
}

/// The control messages, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Message {
    /// dom0 → agent: a bundle follows as data frames.
    Offer {
        bundle_bytes: u64,
        bundle_sha256: String,
        /// The minisign signature file's text; it, not the connection, authorizes the bundle.
        signature: String,
    },
    /// agent → dom0: how far the apply got.
    Progress {
        /// `received`, `applying`, or a journaled apply step (`check` ... `post-scripts`).
        stage: String,
        detail: String,
        /// Since the offer arrived.
        seconds: f64,
    },
    /// agent → dom0, last: the agent's apply report (as `dormouse-agent apply --json`).
    Report { report: serde_json::Value },
    /// agent → dom0, last: the bundle was not applied and why (nothing was changed).
    Error { message: String },
}

impl Message {
    /// The message's name on the wire, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Offer { .. } => "offer",
            Message::Progress { .. } => "progress",
            Message::Report { .. } => "report",
            Message::Error { .. } => "error",
        }
    }
}

/// One frame as read.
#[derive(Debug)]
pub enum Frame {
    Control(Message),
    Data(Vec<u8>),
    End,
}

impl Frame {
    fn describe(&self) -> String {
        match self {
            Frame::Control(m) => format!("a {} message", m.kind()),
            Frame::Data(d) => format!("{} bytes of bundle data", d.len()),
            Frame::End => "the end of the bundle data".into(),
        }
    }
}

pub fn write_preamble(w: &mut impl Write) -> Result<(), TransportError> {
    let mut buf = MAGIC.to_vec();
    buf.extend_from_slice(&VERSION.to_be_bytes());
    w.write_all(&buf)
        .and_then(|()| w.flush())
        .map_err(io_err("sending the protocol preamble"))
}

/// Reads the peer's preamble; a different version is an error (there is only one so far).
pub fn read_preamble(r: &mut impl Read) -> Result<(), TransportError> {
    let mut buf = [0u8; 10];
    r.read_exact(&mut buf)
        .map_err(io_err("reading the protocol preamble"))?;
    if &buf[..8] != MAGIC {
        return Err(TransportError::BadMagic { got: buf[..8].to_vec() });
    }
    let theirs = u16::from_be_bytes([buf[8], buf[9]]);
    if theirs != VERSION {
        return Err(TransportError::Version { theirs });
    }
    Ok(())
}

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> Result<(), TransportError> {
    let len = u32::try_from(payload.len()).map_err(|_| TransportError::Oversize {
        kind: char::from(kind),
        len: u32::MAX,
        max: MAX_CONTROL,
    })?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)
        .and_then(|()| w.write_all(payload))
        .map_err(io_err(format!("sending a '{}' frame", char::from(kind))))
}

pub fn write_message(w: &mut impl Write, message: &Message) -> Result<(), TransportError> {
    let json = serde_json::to_vec(message).map_err(|e| TransportError::Json(e.to_string()))?;
    if json.len() > MAX_CONTROL as usize {
        return Err(TransportError::Oversize {
            kind: 'C',
            len: u32::try_from(json.len()).unwrap_or(u32::MAX),
            max: MAX_CONTROL,
        });
    }
    write_frame(w, KIND_CONTROL, &json)?;
    w.flush().map_err(io_err("flushing a control message"))
}

/// Reads one frame, refusing lengths over the kind's bound before allocating.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, TransportError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).map_err(io_err("reading a frame header"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let max = match head[0] {
        KIND_CONTROL => MAX_CONTROL,
        KIND_DATA => MAX_CHUNK,
        KIND_END => 0,
        other => return Err(TransportError::UnknownKind(other)),
    };
    if len > max {
        return Err(TransportError::Oversize {
            kind: char::from(head[0]),
            len,
            max,
        });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(io_err(format!("reading a {len}-byte frame")))?;
    Ok(match head[0] {
        KIND_CONTROL => {
            Frame::Control(serde_json::from_slice(&payload).map_err(|e| TransportError::Json(e.to_string()))?)
        }
        KIND_DATA => Frame::Data(payload),
        _ => Frame::End,
    })
}

/// Reads the next frame, which must be a control message.
pub fn read_message(r: &mut impl Read) -> Result<Message, TransportError> {
    match read_frame(r)? {
        Frame::Control(m) => Ok(m),
        other => Err(TransportError::Unexpected {
            expected: "a control message",
            got: other.describe(),
        }),
    }
}

/// Sends `len` bytes from `source` as data frames, then the end frame.
pub fn send_bundle(w: &mut impl Write, source: &mut impl Read, len: u64) -> Result<(), TransportError> {
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(u64::from(MAX_CHUNK))).unwrap_or(buf.len());
        source
            .read_exact(&mut buf[..want])
            .map_err(io_err("reading the bundle to send"))?;
        write_frame(w, KIND_DATA, &buf[..want])?;
        left -= want as u64;
    }
    write_frame(w, KIND_END, &[])?;
    w.flush().map_err(io_err("flushing the bundle"))
}

/// Receives the data frames of an offer into `sink` until the end frame, checking the offered
/// size (never more is written) and SHA-256.
pub fn receive_bundle(
    r: &mut impl Read,
    sink: &mut impl Write,
    bundle_bytes: u64,
    bundle_sha256: &str,
) -> Result<(), TransportError> {
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    loop {
        match read_frame(r)? {
            Frame::Data(chunk) => {
                got += chunk.len() as u64;
                if got > bundle_bytes {
                    return Err(TransportError::Bundle(format!(
                        "more than the {bundle_bytes} bytes offered"
                    )));
                }
                hasher.update(&chunk);
                sink.write_all(&chunk).map_err(io_err("writing the received bundle"))?;
            }
            Frame::End => break,
            other => {
                return Err(TransportError::Unexpected {
                    expected: "bundle data",
                    got: other.describe(),
                });
            }
        }
    }
    if got != bundle_bytes {
        return Err(TransportError::Bundle(format!(
            "{got} bytes received, {bundle_bytes} offered"
        )));
    }
    let digest = hex::encode(hasher.finalize());
    if !digest.eq_ignore_ascii_case(bundle_sha256) {
        return Err(TransportError::Bundle(format!(
            "SHA-256 {digest} received, {bundle_sha256} offered (corrupted in transit)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bounds_hold() {
        let mut wire = Vec::new();
        write_preamble(&mut wire).unwrap();
        let offer = Message::Offer {
            bundle_bytes: 5,
            bundle_sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
            signature: "sig".into(),
        };
        write_message(&mut wire, &offer).unwrap();
        send_bundle(&mut wire, &mut &b"hello"[..], 5).unwrap();
        let mut r = &wire[..];
        read_preamble(&mut r).unwrap();
        let Message::Offer {
            bundle_bytes,
            bundle_sha256,
            ..
        } = read_message(&mut r).unwrap()
        else {
            panic!("not an offer");
        };
        assert_eq!(read_message(&mut &wire[10..]).unwrap(), offer);
        let mut sink = Vec::new();
        receive_bundle(&mut r, &mut sink, bundle_bytes, &bundle_sha256).unwrap();
        assert_eq!(sink, b"hello");
        assert!(r.is_empty());

        // A wrong digest, a longer stream than offered, an oversized or unknown frame.
        let mut r = &wire[10..];
        read_message(&mut r).unwrap();
        let err = receive_bundle(&mut r, &mut Vec::new(), 5, &"0".repeat(64)).unwrap_err();
        assert!(err.to_string().contains("corrupted in transit"), "{err}");
        let mut r = &wire[10..];
        read_message(&mut r).unwrap();
        let err = receive_bundle(&mut r, &mut Vec::new(), 4, &bundle_sha256).unwrap_err();
        assert!(err.to_string().contains("more than the 4 bytes"), "{err}");
        let huge = [b'D', 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(TransportError::Oversize { .. })
        ));
        assert!(matches!(
            read_frame(&mut &b"X\0\0\0\0"[..]),
            Err(TransportError::UnknownKind(b'X'))
        ));
        let mut other = b"DMAGENT\0\0\x02".to_vec();
        assert!(matches!(
            read_preamble(&mut &other[..]),
            Err(TransportError::Version { theirs: 2 })
        ));
        other[0] = b'X';
        assert!(matches!(
            read_preamble(&mut &other[..]),
            Err(TransportError::BadMagic { .. })
        ));
        // A short read is an error, not a hang.
        assert!(matches!(read_frame(&mut &b"C\0\0"[..]), Err(TransportError::Io { .. })));
    }
}
