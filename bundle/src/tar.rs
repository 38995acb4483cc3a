//! The subset of POSIX pax archives bundles use: ustar headers, each optionally preceded by
//! one `x` extended header (path, linkpath, mtime with nanoseconds, large ids and sizes,
//! `SCHILY.xattr.*` as GNU tar and bsdtar write them). Written and read here rather than with
//! a general tar library so the reader, which the guest agent runs on what arrives from dom0,
//! is small and bounded: a header is 512 bytes, an extended header at most [`MAX_PAX`], and
//! nothing is allocated from a declared size.

use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;
/// Largest extended header read (one entry's path, link target and xattrs).
pub const MAX_PAX: u64 = 1 << 20;
/// Largest value an 11-digit octal field holds (mtime, size).
const OCTAL11: u64 = 0o77_777_777_777;
/// Largest value a 7-digit octal field holds (uid, gid, mode, device numbers).
const OCTAL7: u64 = 0o7_777_777;
const PAX_NAME: &str = "././@PaxHeader";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Hardlink,
    Symlink,
    CharDevice,
    BlockDevice,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }

    fn from_flag(flag: u8) -> Option<Kind> {
        Some(match flag {
            b'0' | 0 => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            _ => return None,
        })
    }
}

/// One member's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of data following the header (regular files only).
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Symlink target, or the earlier member a hardlink names.
    pub link: Option<String>,
    pub device: Option<(u32, u32)>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Header {
    /// A member with root ownership, mode 0644 and the given time.
    pub fn plain(path: &str, kind: Kind, size: u64, mtime: i64) -> Header {
        Header {
            path: path.to_owned(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime,
            mtime_nsec: 0,
            link: None,
            device: None,
            xattrs: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("archive header at byte {offset}: {detail}")]
    Format { offset: u64, detail: String },
}

/// Writes `header` (and its extended header when needed); the caller writes exactly
/// `header.size` bytes of data next, then [`write_padding`].
pub fn write_header(out: &mut impl Write, header: &Header) -> io::Result<()> {
    let mut pax = Vec::new();
    let name_fits = header.path.len() <= 100 && header.path.is_ascii();
    if !name_fits {
        pax_record(&mut pax, "path", header.path.as_bytes());
    }
    let link = header.link.as_deref().unwrap_or("");
    if link.len() > 100 || !link.is_ascii() {
        pax_record(&mut pax, "linkpath", link.as_bytes());
    }
    if header.mtime_nsec != 0 || header.mtime < 0 || header.mtime as u64 > OCTAL11 {
        pax_record(
            &mut pax,
            "mtime",
            format_mtime(header.mtime, header.mtime_nsec).as_bytes(),
        );
    }
    if u64::from(header.uid) > OCTAL7 {
        pax_record(&mut pax, "uid", header.uid.to_string().as_bytes());
    }
    if u64::from(header.gid) > OCTAL7 {
        pax_record(&mut pax, "gid", header.gid.to_string().as_bytes());
    }
    if header.size > OCTAL11 {
        pax_record(&mut pax, "size", header.size.to_string().as_bytes());
    }
    for (name, value) in &header.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{name}"), value);
    }
    if !pax.is_empty() {
        let mut x = Header::plain(PAX_NAME, Kind::File, pax.len() as u64, 0);
        x.mtime = header.mtime.clamp(0, OCTAL11 as i64);
        out.write_all(&ustar_block(&x, b'x'))?;
        out.write_all(&pax)?;
        write_padding(out, pax.len() as u64)?;
    }
    out.write_all(&ustar_block(header, header.kind.flag()))
}

/// Zero bytes up to the next block boundary after `size` bytes of data.
pub fn write_padding(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    out.write_all(&[0u8; BLOCK][..rest as usize])
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

fn format_mtime(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        secs.to_string()
    } else if secs < 0 {
        // pax times are decimal: -1.5 is 1.5 s before the epoch, i.e. secs = -2, nsec = 5e8.
        let total = i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        let (whole, frac) = ((-total) / 1_000_000_000, (-total) % 1_000_000_000);
        format!("-{whole}.{frac:09}")
    } else {
        format!("{secs}.{nsec:09}")
    }
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n", where <len> counts its own digits.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(header: &Header, flag: u8) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    // The name field: the path when it fits, else its first 100 bytes (the pax `path`
    // record is authoritative).
    let name = truncate_utf8(&header.path, 100);
    block[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut block[100..108], u64::from(header.mode & 0o7777));
    octal(&mut block[108..116], u64::from(header.uid).min(OCTAL7));
    octal(&mut block[116..124], u64::from(header.gid).min(OCTAL7));
    octal(&mut block[124..136], header.size.min(OCTAL11));
    octal(&mut block[136..148], (header.mtime.max(0) as u64).min(OCTAL11));
    block[156] = flag;
    let link = truncate_utf8(header.link.as_deref().unwrap_or(""), 100);
    block[157..157 + link.len()].copy_from_slice(link.as_bytes());
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let (major, minor) = header.device.unwrap_or((0, 0));
    octal(&mut block[329..337], u64::from(major).min(OCTAL7));
    octal(&mut block[337..345], u64::from(minor).min(OCTAL7));
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    octal(&mut block[148..155], u64::from(sum));
    block[155] = b' ';
    block
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Zero-padded octal filling the field but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Reads members one after the other.
pub struct Reader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Data and padding of the current member not yet read.
    remaining: u64,
    padding: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
        }
    }

    /// The next member's header, skipping what is left of the current one; `None` at the end
    /// of the archive.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        self.skip_rest()?;
        let Some(block) = self.read_block()? else {
            return Err(self.error("the archive ends without its end marker"));
        };
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let start = self.offset - BLOCK as u64;
        let mut fields = self.parse_block(&block, start)?;
        let mut pax = None;
        if block[156] == b'x' {
            if fields.size > MAX_PAX {
                return Err(self.error(format!("extended header of {} bytes (at most {MAX_PAX})", fields.size)));
            }
            let mut data = vec![0u8; fields.size as usize];
            self.read_exact_counted(&mut data)?;
            self.skip_padding(fields.size)?;
            pax = Some(data);
            let Some(next) = self.read_block()? else {
                return Err(self.error("the archive ends after an extended header"));
            };
            let start = self.offset - BLOCK as u64;
            if next[156] == b'x' {
                return Err(self.error("two extended headers in a row"));
            }
            fields = self.parse_block(&next, start)?;
        }
        let mut header = fields;
        if let Some(pax) = pax {
            apply_pax(&mut header, &pax).map_err(|detail| self.error(detail))?;
        }
        if header.kind != Kind::File && header.size != 0 {
            return Err(self.error(format!("{}: a non-file member with data", header.path)));
        }
        // The data is skipped in whole blocks: a (pax) size whose last block ends beyond
        // u64::MAX cannot be skipped.
        let padded = header.size.checked_next_multiple_of(BLOCK as u64).ok_or_else(|| {
            self.error(format!(
                "{}: a member of {} bytes (the last block ends beyond 2^64)",
                header.path, header.size
            ))
        })?;
        self.remaining = header.size;
        self.padding = padded - header.size;
        Ok(Some(header))
    }

    /// The current member's data.
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    fn parse_block(&self, block: &[u8; BLOCK], start: u64) -> Result<Header, TarError> {
        let err = |detail: String| TarError::Format { offset: start, detail };
        if &block[257..263] != b"ustar\0" {
            return Err(err("not a ustar header".into()));
        }
        let stored = parse_octal(&block[148..156]).ok_or_else(|| err("bad checksum field".into()))?;
        let mut sum: u64 = 0;
        for (i, &b) in block.iter().enumerate() {
            sum += if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            };
        }
        if sum != stored {
            return Err(err(format!("checksum {stored} but the header sums to {sum}")));
        }
        let field = |range: std::ops::Range<usize>, what: &str| {
            parse_octal(&block[range]).ok_or_else(|| err(format!("bad {what} field")))
        };
        let kind = if block[156] == b'x' {
            Kind::File
        } else {
            Kind::from_flag(block[156])
                .ok_or_else(|| err(format!("unsupported member type {:?}", block[156] as char)))?
        };
        let text = |range: std::ops::Range<usize>| -> Result<String, TarError> {
            let raw = &block[range];
            let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            String::from_utf8(raw.to_vec()).map_err(|_| err("a name is not UTF-8".into()))
        };
        let mut path = text(0..100)?;
        let prefix = text(345..500)?;
        if !prefix.is_empty() {
            path = format!("{prefix}/{path}");
        }
        let link = text(157..257)?;
        let device = matches!(kind, Kind::CharDevice | Kind::BlockDevice)
            .then(|| -> Result<(u32, u32), TarError> {
                Ok((
                    small(field(329..337, "device major")?).ok_or_else(|| err("device major too large".into()))?,
                    small(field(337..345, "device minor")?).ok_or_else(|| err("device minor too large".into()))?,
                ))
            })
            .transpose()?;
        Ok(Header {
            path,
            kind,
            mode: small(field(100..108, "mode")?).ok_or_else(|| err("mode too large".into()))?,
            uid: small(field(108..116, "uid")?).ok_or_else(|| err("uid too large".into()))?,
            gid: small(field(116..124, "gid")?).ok_or_else(|| err("gid too large".into()))?,
            size: field(124..136, "size")?,
            mtime: field(136..148, "mtime")? as i64,
            mtime_nsec: 0,
            link: (!link.is_empty()).then_some(link),
            device,
            xattrs: Vec::new(),
        })
    }

    fn error(&self, detail: impl Into<String>) -> TarError {
        TarError::Format {
            offset: self.offset,
            detail: detail.into(),
        }
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(self.error("the archive ends inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += BLOCK as u64;
        Ok(Some(block))
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        self.inner.read_exact(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip_padding(&mut self, size: u64) -> Result<(), TarError> {
        let rest = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let mut pad = [0u8; BLOCK];
        self.read_exact_counted(&mut pad[..rest as usize])
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let total = self.remaining + self.padding;
        let copied = io::copy(&mut (&mut self.inner).take(total), &mut io::sink())?;
        self.offset += copied;
        if copied != total {
            return Err(self.error("the archive ends inside a member's data"));
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }
}

/// The data of the current member.
pub struct Data<'a, R> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reader = &mut *self.reader;
        if reader.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(reader.remaining).unwrap_or(usize::MAX));
        let n = reader.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside a member's data (byte {})", reader.offset),
            ));
        }
        reader.remaining -= n as u64;
        reader.offset += n as u64;
        Ok(n)
    }
}

fn small(value: u64) -> Option<u32> {
    u32::try_from(value).ok()
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = field.split(|&b| b == 0).next()?;
    let text = std::str::from_utf8(text).ok()?.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn apply_pax(header: &mut Header, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or("extended header record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("bad extended header record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("extended header record length out of bounds".into());
        }
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("extended header record without `=`")?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| "extended header key is not UTF-8")?;
        let value = &record[eq + 1..];
        let text = || std::str::from_utf8(value).map_err(|_| format!("extended header {key} is not UTF-8"));
        let number = || -> Result<u64, String> { text()?.parse().map_err(|_| format!("bad extended header {key}")) };
        match key {
            "path" => header.path = text()?.to_owned(),
            "linkpath" => header.link = Some(text()?.to_owned()),
            "uid" => header.uid = small(number()?).ok_or("uid too large")?,
            "gid" => header.gid = small(number()?).ok_or("gid too large")?,
            "size" => header.size = number()?,
            "mtime" => (header.mtime, header.mtime_nsec) = parse_mtime(text()?).ok_or("bad extended header mtime")?,
            _ => {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    header.xattrs.push((name.to_owned(), value.to_vec()));
                }
                // Other keywords (atime, comments) carry nothing a bundle uses.
            }
        }
    }
    Ok(())
}

fn parse_mtime(text: &str) -> Option<(i64, u32)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let nsec: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    if !negative {
        return Some((whole, nsec));
    }
    let total = -(i128::from(whole) * 1_000_000_000 + i128::from(nsec));
    let secs = i64::try_from(total.div_euclid(1_000_000_000)).ok()?;
    Some((secs, total.rem_euclid(1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(header: &Header, data: &[u8]) -> (Header, Vec<u8>) {
        let mut out = Vec::new();
        write_header(&mut out, header).unwrap();
        out.extend_from_slice(data);
        write_padding(&mut out, data.len() as u64).unwrap();
        write_end(&mut out).unwrap();
        let mut reader = Reader::new(out.as_slice());
        let got = reader.next_header().unwrap().unwrap();
        let mut body = Vec::new();
        reader.data().read_to_end(&mut body).unwrap();
        assert!(reader.next_header().unwrap().is_none());
        (got, body)
    }

    #[test]
    fn long_paths_times_ids_and_xattrs_round_trip() {
        let mut header = Header::plain(&format!("files/{}/é", "d".repeat(200)), Kind::File, 5, -2);
        header.mtime_nsec = 500_000_000;
        header.uid = 100_000_000;
        header.gid = 7;
        header.mode = 0o4755;
        header.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2, 0, b'\n', 0xff])];
        let (got, body) = roundtrip(&header, b"hello");
        assert_eq!(got, header);
        assert_eq!(body, b"hello");
        let mut link = Header::plain("files/a", Kind::Symlink, 0, 1);
        link.link = Some("x".repeat(300));
        assert_eq!(roundtrip(&link, b"").0, link);
        let mut dev = Header::plain("files/dev/null", Kind::CharDevice, 0, 1);
        dev.device = Some((1, 3));
        assert_eq!(roundtrip(&dev, b"").0, dev);
    }

    #[test]
    fn pax_times_parse_both_signs() {
        assert_eq!(parse_mtime("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_mtime("12.000000001"), Some((12, 1)));
        assert_eq!(format_mtime(-2, 500_000_000), "-1.500000000");
        assert_eq!(parse_mtime("1.0000000001"), None);
    }

    #[test]
    fn damaged_headers_are_refused() {
        let mut out = Vec::new();
        write_header(&mut out, &Header::plain("a", Kind::File, 0, 0)).unwrap();
        write_end(&mut out).unwrap();
        out[0] = b'b';
        let err = Reader::new(out.as_slice()).next_header().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let truncated = &out[..100];
        assert!(Reader::new(truncated).next_header().is_err());
    }

    #[test]
    fn a_pax_size_near_u64_max_is_refused() {
        let mut out = Vec::new();
        write_header(&mut out, &Header::plain("huge", Kind::File, u64::MAX, 0)).unwrap();
        write_end(&mut out).unwrap();
        let mut reader = Reader::new(out.as_slice());
        let err = reader
            .next_header()
            .and_then(|_| reader.next_header())
            .unwrap_err()
            .to_string();
        assert!(err.contains("huge: a member of 18446744073709551615 bytes"), "{err}");
    }
}
