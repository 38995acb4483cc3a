//! Sending one nftables batch. rustables builds the batch but sends it on a socket with the
//! default send buffer (`net.core.wmem_default`, ~208 KiB), so a batch for more than a handful
//! of vifs fails with EMSGSIZE; like `nft`, this sizes the buffer to the batch (SO_SNDBUFFORCE,
//! which the CAP_NET_ADMIN that nftables needs anyway allows) so that any operation stays one
//! atomic batch.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustables::Batch;

const NLMSG_HDRLEN: usize = 16;
/// nfnetlink's batch delimiters, which the kernel does not acknowledge like the messages
/// between them.
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// Why a batch was not applied: the socket failed, or the kernel refused a message (errno).
#[derive(Debug)]
pub(super) enum SendError {
    Io(io::Error),
    Refused(i32),
}

struct Header {
    len: usize,
    kind: u16,
    flags: u16,
    seq: u32,
}

/// The netlink message headers in `buf`; stops at the first malformed one.
fn headers(buf: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let head = rest.get(..NLMSG_HDRLEN)?;
        let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let header = Header {
            len: u32_at(0) as usize,
            kind: u16::from_ne_bytes([head[4], head[5]]),
            flags: u16::from_ne_bytes([head[6], head[7]]),
            seq: u32_at(8),
        };
        let body = rest.get(NLMSG_HDRLEN..header.len.max(NLMSG_HDRLEN))?;
        // Messages are 4-byte aligned.
        let next = header.len.checked_add(3)? & !3;
        rest = rest.get(next.max(NLMSG_HDRLEN)..).unwrap_or(&[]);
        Some((header, body))
    })
}

fn check(ret: libc::c_int) -> Result<libc::c_int, SendError> {
    if ret < 0 {
        Err(SendError::Io(io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

fn set_buffer(fd: &OwnedFd, force: libc::c_int, plain: libc::c_int, size: usize) -> Result<(), SendError> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    for option in [force, plain] {
        // SAFETY: fd is an open socket; the option value is a c_int that outlives the call.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            return Ok(());
        }
    }
    Err(SendError::Io(io::Error::last_os_error()))
}

/// Sends `batch` and waits for the kernel's verdict on it: Ok once the last message is
/// acknowledged, the errno of the first refused message otherwise (the kernel then applied
/// nothing of the batch).
pub(super) fn send(batch: Batch) -> Result<(), SendError> {
    let bytes = batch.finalize();
    let last_seq = headers(&bytes)
        .filter(|(h, _)| h.kind != NFNL_MSG_BATCH_BEGIN && h.kind != NFNL_MSG_BATCH_END)
        .filter(|(h, _)| h.flags & libc::NLM_F_ACK as u16 != 0)
        .map(|(h, _)| h.seq)
        .last();
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd right away.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        ))?)
    };
    set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes.len() + 4096)?;
    // Acknowledgements are small (36 bytes each) but come all at once.
    set_buffer(
        &fd,
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        bytes.len() / 8 + (256 << 10),
    )?;
    // SAFETY: an all-zero sockaddr_nl is valid (pid 0: the kernel assigns one).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: addr is a valid sockaddr_nl for the given length.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    // SAFETY: bytes is a live buffer of the given length.
    let sent = check(unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) as libc::c_int })?;
    if sent as usize != bytes.len() {
        return Err(SendError::Io(io::Error::other("short send of the nftables batch")));
    }
    let Some(last_seq) = last_seq else {
        return Ok(());
    };
    let mut buf = vec![0u8; 256 << 10];
    loop {
        // SAFETY: buf is a live, writable buffer of the given length.
        let n = check(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) as libc::c_int })?;
        if n == 0 {
            return Err(SendError::Io(io::Error::other(
                "netlink socket closed before the kernel's answer",
            )));
        }
        for (header, body) in headers(&buf[..n as usize]) {
            if header.kind != libc::NLMSG_ERROR as u16 {
                continue;
            }
            let errno = body
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| SendError::Io(io::Error::other("truncated netlink error message")))?;
            if errno != 0 {
                return Err(SendError::Refused(errno.saturating_abs()));
            }
            if header.seq == last_seq {
                return Ok(());
            }
        }
    }
}
