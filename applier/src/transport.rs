//! The dom0 end of the agent channel: connecting to the guest agent and delivering a bundle,
//! over the framing of [`bundle::transport`].

pub use bundle::transport::*;
pub use client::{Delivery, connect_from, deliver};

mod client {
    use std::fs::File;
    use std::io::{self, BufReader, BufWriter};
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;
    use std::time::{Duration, Instant};

    use sha2::{Digest, Sha256};

    use bundle::sign::{read_signature, signature_path};
    use bundle::transport::*;

    /// How long one connection attempt may wait for the guest's SYN-ACK.
    const ATTEMPT: Duration = Duration::from_secs(2);
    /// Pauses between attempts: short at first (the agent is usually up within moments of
    /// the unpause), doubling up to the longest.
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const LONGEST_PAUSE: Duration = Duration::from_millis(500);

    fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero is a valid sockaddr_storage; the casts below stay within it.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }

    fn last_os_error(what: String) -> TransportError {
        TransportError::Io {
            what,
            source: io::Error::last_os_error(),
        }
    }

    /// A SOL_SOCKET option; false on failure (errno set).
    fn setsockopt<T>(fd: &OwnedFd, option: libc::c_int, value: &T) -> bool {
        // SAFETY: `value` is a valid T of the size given, for an option that takes a T.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            ) == 0
        }
    }

    /// One connection attempt from `local` to `remote`, bounded by [`ATTEMPT`].
    fn attempt(local: &SocketAddr, remote: &SocketAddr) -> Result<TcpStream, TransportError> {
        let family = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last_os_error("creating a TCP socket".into()));
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: ATTEMPT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SO_REUSEADDR lets the fixed source port be bound again while an earlier connection
        // of it lingers; SO_SNDTIMEO bounds a blocking connect(2) on Linux.
        let ok = setsockopt(&owned, libc::SO_REUSEADDR, &(1 as libc::c_int))
            && setsockopt(&owned, libc::SO_SNDTIMEO, &timeout);
        if !ok {
            return Err(last_os_error("setting socket options".into()));
        }
        let (addr, len) = sockaddr(local);
        // SAFETY: addr is a valid sockaddr of length len.
        if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(last_os_error(format!(
                "binding the agent channel's dom0 end {local} (is ADDR one of dom0's addresses, and PORT free?)"
            )));
        }
        let (addr, len) = sockaddr(remote);
        // SAFETY: addr is a valid sockaddr of length len.
        if unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(last_os_error(format!(
                "connecting from {local} to the agent at {remote}"
            )));
        }
        let stream = TcpStream::from(owned);
        stream
            .set_write_timeout(None)
            .map_err(io_err("clearing the connect timeout"))?;
        Ok(stream)
    }

    /// Connects to the agent at `remote` from `local` (dom0's ADDR:PORT), retrying until
    /// `deadline`: the guest needs a moment after unpausing before its agent listens again.
    /// Returns the stream and the number of attempts.
    pub fn connect_from(
        local: SocketAddr,
        remote: SocketAddr,
        deadline: Instant,
    ) -> Result<(TcpStream, u32), TransportError> {
        let mut attempts = 0;
        let mut pause = FIRST_PAUSE;
        loop {
            attempts += 1;
            match attempt(&local, &remote) {
                Ok(stream) => return Ok((stream, attempts)),
                Err(e) if Instant::now() + pause >= deadline => {
                    return Err(TransportError::Io {
                        what: format!(
                            "the agent at {remote} did not answer within the timeout ({attempts} attempts; last error)"
                        ),
                        source: match e {
                            TransportError::Io { source, .. } => source,
                            other => io::Error::other(other.to_string()),
                        },
                    });
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }

    /// What a delivery brought back.
    #[derive(Debug)]
    pub struct Delivery {
        pub bundle_bytes: u64,
        /// Seconds to send the bundle (until the agent said it was received).
        pub send_seconds: f64,
        /// The agent's report, or its refusal.
        pub outcome: Result<serde_json::Value, String>,
    }

    /// Sends the bundle at `bundle` (and its `.minisig`) over `stream`, passing every progress
    /// message to `progress`, until the agent's final message. Reads are bounded by `deadline`.
    pub fn deliver(
        stream: TcpStream,
        bundle: &Path,
        deadline: Instant,
        progress: &mut dyn FnMut(&Message),
    ) -> Result<Delivery, TransportError> {
        let sig_path = signature_path(bundle);
        let signature = read_signature(&sig_path).map_err(|e| TransportError::Bundle(e.to_string()))?;
        let open = || File::open(bundle).map_err(io_err(format!("opening {}", bundle.display())));
        let mut hasher = Sha256::new();
        let bundle_bytes =
            io::copy(&mut open()?, &mut hasher).map_err(io_err(format!("reading {}", bundle.display())))?;
        let bundle_sha256 = bundle::hex(&hasher.finalize());

        let set_timeout = |s: &TcpStream| -> Result<(), TransportError> {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            s.set_read_timeout(Some(left))
                .and_then(|()| s.set_write_timeout(Some(left)))
                .map_err(io_err("setting the channel's timeouts"))
        };
        set_timeout(&stream)?;
        let reader_stream = stream.try_clone().map_err(io_err("cloning the channel"))?;
        let mut reader = BufReader::new(reader_stream);
        let mut writer = BufWriter::new(&stream);
        write_preamble(&mut writer)?;
        read_preamble(&mut reader)?;
        let started = Instant::now();
        let offer = Message::Offer {
            bundle_bytes,
            bundle_sha256,
            signature,
        };
        let sent = write_message(&mut writer, &offer)
            .and_then(|()| send_bundle(&mut writer, &mut BufReader::new(open()?), bundle_bytes));
        if let Err(e) = sent {
            // An agent refusing the offer closes while the bundle is still coming: its reason
            // is waiting to be read.
            return match read_message(&mut reader) {
                Ok(Message::Error { message }) => Ok(Delivery {
                    bundle_bytes,
                    send_seconds: 0.0,
                    outcome: Err(message),
                }),
                _ => Err(e),
            };
        }
        let mut send_seconds = None;
        loop {
            set_timeout(reader.get_ref())?;
            let message = read_message(&mut reader).map_err(|e| match e {
                TransportError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock => TransportError::Io {
                    what: "no final report from the agent before the timeout".into(),
                    source,
                },
                other => other,
            })?;
            match message {
                Message::Progress { ref stage, .. } => {
                    if stage == "received" {
                        send_seconds.get_or_insert(started.elapsed().as_secs_f64());
                    }
                    progress(&message);
                }
                Message::Report { report } => {
                    return Ok(Delivery {
                        bundle_bytes,
                        send_seconds: send_seconds.unwrap_or_default(),
                        outcome: Ok(report),
                    });
                }
                Message::Error { message } => {
                    return Ok(Delivery {
                        bundle_bytes,
                        send_seconds: send_seconds.unwrap_or_default(),
                        outcome: Err(message),
                    });
                }
                other @ Message::Offer { .. } => {
                    return Err(TransportError::Unexpected {
                        expected: "progress, report or error",
                        got: format!("a {} message", other.kind()),
                    });
                }
            }
        }
    }
}
