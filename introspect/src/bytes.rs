//! Bounds-checked little/big-endian field access on untrusted byte slices. Every accessor
//! returns `None` instead of panicking when the field does not fit.

/// `len` bytes at `off`, if they lie inside `data`.
pub(crate) fn slice_at(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    data.get(start..start.checked_add(len)?)
}

fn array_at<const N: usize>(data: &[u8], off: u64) -> Option<[u8; N]> {
    slice_at(data, off, N as u64)?.try_into().ok()
}

pub(crate) fn le_u16(data: &[u8], off: u64) -> Option<u16> {
    array_at(data, off).map(u16::from_le_bytes)
}

pub(crate) fn le_u32(data: &[u8], off: u64) -> Option<u32> {
    array_at(data, off).map(u32::from_le_bytes)
}

pub(crate) fn le_u64(data: &[u8], off: u64) -> Option<u64> {
    array_at(data, off).map(u64::from_le_bytes)
}

pub(crate) fn be_u16(data: &[u8], off: u64) -> Option<u16> {
    array_at(data, off).map(u16::from_be_bytes)
}

pub(crate) fn be_u32(data: &[u8], off: u64) -> Option<u32> {
    array_at(data, off).map(u32::from_be_bytes)
}

pub(crate) fn be_u64(data: &[u8], off: u64) -> Option<u64> {
    array_at(data, off).map(u64::from_be_bytes)
}

/// Rounds `n` up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn align_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

/// Hex rendering of at most the first 16 bytes, for error messages.
pub(crate) fn hex_prefix(data: &[u8]) -> String {
    let n = data.len().min(16);
    let mut s: String = data[..n]
        .iter()
        .map(|b| hex::encode([*b]))
        .collect::<Vec<_>>()
        .join(" ");
    if n == 0 {
        s.push_str("(empty file)");
    }
    s
}
