//! rpm's header structure, the one reader of it for the installed-package database and the
//! tracer's scriptlets (facts: rpm `lib/header.c`, `docs/manual/format.md`): an intro (index
//! count and data length, big-endian u32), 16-byte index entries (tag, type, offset, count),
//! then the data store. A package file holds a 96-byte lead, the signature header padded to
//! 8 bytes, then the main header, each header preceded by 8 bytes of magic; `rpmdb.sqlite`
//! stores the main header alone, without magic.
//!
//! Hostile input: every count, offset and length is bounded; nothing panics.

/// Most index entries in one header, and bytes in its data store (beyond any real package).
const MAX_ENTRIES: usize = 65_536;
const MAX_DATA: usize = 64 << 20;
/// Most values read from one entry: more than the file list of any real package.
const MAX_VALUES: usize = 1_000_000;

pub const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_LEN: u64 = 96;
const HEADER_MAGIC: [u8; 3] = [0x8e, 0xad, 0xe8];

pub const TYPE_INT32: u32 = 4;
pub const TYPE_STRING: u32 = 6;
pub const TYPE_STRING_ARRAY: u32 = 8;
pub const TYPE_I18NSTRING: u32 = 9;

/// The identity tags every reader needs (`include/rpm/rpmtag.h`).
pub const TAG_NAME: u32 = 1000;
pub const TAG_VERSION: u32 = 1001;
pub const TAG_RELEASE: u32 = 1002;
pub const TAG_EPOCH: u32 = 1003;
pub const TAG_ARCH: u32 = 1022;

#[derive(Debug, thiserror::Error)]
#[error("rpm header at byte {offset}: {what}")]
pub struct HeaderError {
    /// In the package file, or in the header blob.
    pub offset: u64,
    pub what: String,
}

fn err(offset: u64, what: impl Into<String>) -> HeaderError {
    HeaderError {
        offset,
        what: what.into(),
    }
}

struct Entry {
    tag: u32,
    kind: u32,
    offset: usize,
    count: usize,
}

/// One header's index and data store.
pub struct Header<'a> {
    entries: Vec<Entry>,
    data: &'a [u8],
    /// Where the data store starts in the input, for error offsets.
    base: u64,
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The index count and data length at the start of a header without magic.
fn lengths(blob: &[u8], base: u64) -> Result<(usize, usize), HeaderError> {
    let il = be32(blob, 0).ok_or_else(|| err(base, "header truncated"))? as usize;
    let dl = be32(blob, 4).ok_or_else(|| err(base, "header truncated"))? as usize;
    if il > MAX_ENTRIES || dl > MAX_DATA {
        return Err(err(
            base,
            format!("{il} entries and {dl} data bytes: beyond any real header"),
        ));
    }
    Ok((il, dl))
}

impl<'a> Header<'a> {
    /// `blob` starts at the index count (no magic), as rpmdb.sqlite stores it; `base` is where
    /// it starts in the input, for error offsets.
    pub fn parse(blob: &'a [u8], base: u64) -> Result<Self, HeaderError> {
        let (il, dl) = lengths(blob, base)?;
        let store = 8 + 16 * il;
        let data = blob
            .get(store..store + dl)
            .ok_or_else(|| err(base + store as u64, "header data store truncated"))?;
        let entries = (0..il)
            .map(|i| {
                let at = 8 + 16 * i;
                let word = |k: usize| be32(blob, at + 4 * k).ok_or_else(|| err(base + at as u64, "index truncated"));
                Ok(Entry {
                    tag: word(0)?,
                    kind: word(1)?,
                    offset: word(2)? as usize,
                    count: word(3)? as usize,
                })
            })
            .collect::<Result<_, HeaderError>>()?;
        Ok(Header {
            entries,
            data,
            base: base + store as u64,
        })
    }

    fn find(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    /// An error at the data of `tag`'s entry (or at the data store when it has none).
    pub fn error(&self, tag: u32, what: impl std::fmt::Display) -> HeaderError {
        let at = self.find(tag).map_or(0, |e| e.offset as u64);
        err(self.base + at, format!("tag {tag}: {what}"))
    }

    /// The strings of a string, i18n-string or string-array entry, whichever type it has
    /// (rpm writes a one-word scriptlet interpreter as a string, several as an array); empty
    /// when absent.
    pub fn strings(&self, tag: u32) -> Result<Vec<String>, HeaderError> {
        self.strings_of(tag, &[TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING])
    }

    /// The value of a string entry; an entry of another type is an error.
    pub fn string(&self, tag: u32) -> Result<Option<String>, HeaderError> {
        Ok(self.strings_of(tag, &[TYPE_STRING])?.into_iter().next())
    }

    /// The strings of a string-array entry; an entry of another type is an error.
    pub fn string_array(&self, tag: u32) -> Result<Vec<String>, HeaderError> {
        self.strings_of(tag, &[TYPE_STRING_ARRAY])
    }

    /// NUL-terminated strings from the entry's offset: one for a string, `count` otherwise.
    fn strings_of(&self, tag: u32, kinds: &[u32]) -> Result<Vec<String>, HeaderError> {
        let Some(e) = self.find(tag) else { return Ok(Vec::new()) };
        if !kinds.contains(&e.kind) {
            return Err(self.error(tag, format!("type {} where a string type was expected", e.kind)));
        }
        let count = if e.kind == TYPE_STRING { 1 } else { self.count(tag, e)? };
        let mut out = Vec::with_capacity(count.min(1024));
        let mut pos = e.offset;
        for _ in 0..count {
            let at = self.base + pos as u64;
            let rest = self
                .data
                .get(pos..)
                .ok_or_else(|| err(at, format!("tag {tag}: string beyond the data store")))?;
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| err(at, format!("tag {tag}: unterminated string")))?;
            out.push(String::from_utf8_lossy(&rest[..len]).into_owned());
            pos += len + 1;
        }
        Ok(out)
    }

    fn count(&self, tag: u32, e: &Entry) -> Result<usize, HeaderError> {
        if e.count > MAX_VALUES {
            return Err(self.error(tag, format!("{} values: beyond any real header", e.count)));
        }
        Ok(e.count)
    }

    /// The values of an int32 entry; empty when absent, an error for another type.
    pub fn int32s(&self, tag: u32) -> Result<Vec<u32>, HeaderError> {
        let Some(e) = self.find(tag) else { return Ok(Vec::new()) };
        if e.kind != TYPE_INT32 {
            return Err(self.error(tag, format!("type {} where an int32 was expected", e.kind)));
        }
        (0..self.count(tag, e)?)
            .map(|i| {
                let at = e.offset + 4 * i;
                be32(self.data, at)
                    .ok_or_else(|| err(self.base + at as u64, format!("tag {tag}: beyond the data store")))
            })
            .collect()
    }
}

/// Reads the main header of a package file through `read_at(offset, buffer)`, which fills
/// the buffer or fails: lead, signature header (padded to 8 bytes), main header. Only the
/// headers are read, never the payload. Returns the main header without its magic, for
/// [`Header::parse`], and where that starts in the file.
pub fn read_package_header(
    read_at: impl Fn(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<(Vec<u8>, u64), HeaderError> {
    let read = |at: u64, len: usize| -> Result<Vec<u8>, HeaderError> {
        let mut buf = vec![0u8; len];
        read_at(at, &mut buf).map_err(|e| err(at, format!("reading {len} bytes: {e}")))?;
        Ok(buf)
    };
    if read(0, 4)? != LEAD_MAGIC {
        return Err(err(0, "not an rpm package (no lead magic)"));
    }
    // The total length of the header with magic at `at`.
    let header_len = |at: u64| -> Result<u64, HeaderError> {
        let intro = read(at, 16)?;
        if intro[..3] != HEADER_MAGIC {
            return Err(err(at, "no header magic"));
        }
        let (il, dl) = lengths(&intro[8..], at + 8)?;
        Ok(16 + 16 * il as u64 + dl as u64)
    };
    let signature_len = header_len(LEAD_LEN)?;
    let main = LEAD_LEN + signature_len.div_ceil(8) * 8;
    let main_len = header_len(main)?;
    // Bounded by `lengths`: at most 16 × MAX_ENTRIES + MAX_DATA + 8 bytes.
    Ok((read(main + 8, (main_len - 8) as usize)?, main + 8))
}

/// Lays out a header as rpmdb.sqlite stores it, from (tag, type, count, data) entries in
/// order, int32 data aligned as rpm aligns it: for tests of header readers.
#[cfg(any(test, feature = "test-support"))]
pub fn encode(entries: &[(u32, u32, u32, &[u8])]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    for (tag, kind, count, bytes) in entries {
        if *kind == TYPE_INT32 {
            while data.len() % 4 != 0 {
                data.push(0);
            }
        }
        for word in [*tag, *kind, data.len() as u32, *count] {
            index.extend_from_slice(&word.to_be_bytes());
        }
        data.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend(index);
    out.extend(data);
    out
}

/// `read_at` for [`read_package_header`] over bytes in memory: for tests and fuzzing.
#[cfg(any(test, feature = "test-support"))]
pub fn read_at(bytes: &[u8]) -> impl Fn(u64, &mut [u8]) -> std::io::Result<()> + '_ {
    |at, buf| {
        let src = usize::try_from(at)
            .ok()
            .and_then(|at| bytes.get(at..at.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(&[
            (TAG_NAME, TYPE_STRING, 1, b"demo\0"),
            (1117, TYPE_STRING_ARRAY, 2, b"a\0bc\0"),
            (1004, TYPE_I18NSTRING, 1, b"summary\0"),
            (TAG_EPOCH, TYPE_INT32, 2, &[0, 0, 0, 7, 0, 0, 1, 0]),
        ])
    }

    /// A package file: lead, a signature header whose length is not a multiple of 8, the
    /// padding, then the main header `main`.
    fn package(main: &[u8]) -> Vec<u8> {
        let mut file = LEAD_MAGIC.to_vec();
        file.resize(LEAD_LEN as usize, 0);
        let signature = encode(&[(1000, TYPE_STRING, 1, b"sig\0")]);
        for header in [&signature[..], main] {
            while file.len() % 8 != 0 {
                file.push(0);
            }
            file.extend_from_slice(&[0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0]);
            file.extend_from_slice(header);
        }
        file
    }

    #[test]
    fn typed_getters() {
        let blob = sample();
        let h = Header::parse(&blob, 0).unwrap();
        assert_eq!(h.string(TAG_NAME).unwrap().as_deref(), Some("demo"));
        assert_eq!(h.strings(TAG_NAME).unwrap(), ["demo"]);
        assert_eq!(h.string_array(1117).unwrap(), ["a", "bc"]);
        assert_eq!(h.strings(1004).unwrap(), ["summary"]);
        assert_eq!(h.int32s(TAG_EPOCH).unwrap(), [7, 256]);
        assert_eq!(h.string(TAG_VERSION).unwrap(), None, "absent");
        assert!(h.int32s(TAG_VERSION).unwrap().is_empty());
        assert!(h.string(1117).is_err(), "array where a string is expected");
        assert!(h.string_array(TAG_NAME).is_err(), "string where an array is expected");
        let e = h.int32s(TAG_NAME).unwrap_err();
        assert!(e.to_string().contains("tag 1000"), "{e}");
        assert!(h.strings(TAG_EPOCH).is_err());
    }

    #[test]
    fn hostile_headers_fail_cleanly() {
        let good = sample();
        for cut in 0..good.len() {
            assert!(Header::parse(&good[..cut], 0).is_err(), "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Header::parse(&huge, 0).is_err());
        let mut huge_data = good.clone();
        huge_data[4..8].copy_from_slice(&((MAX_DATA + 1) as u32).to_be_bytes());
        assert!(Header::parse(&huge_data, 0).is_err());
        let blob = encode(&[(1117, TYPE_STRING_ARRAY, u32::MAX, b"a\0")]);
        assert!(
            Header::parse(&blob, 0).unwrap().string_array(1117).is_err(),
            "count beyond the data"
        );
        let blob = encode(&[(1116, TYPE_INT32, 3, &[0, 0, 0, 1])]);
        assert!(Header::parse(&blob, 0).unwrap().int32s(1116).is_err());
        let blob = encode(&[(1116, TYPE_INT32, MAX_VALUES as u32 + 1, &[0; 4])]);
        let e = Header::parse(&blob, 0).unwrap().int32s(1116).unwrap_err();
        assert!(e.to_string().contains("beyond any real header"), "{e}");
        let blob = encode(&[(TAG_NAME, TYPE_STRING, 1, b"no terminator")]);
        assert!(Header::parse(&blob, 0).unwrap().string(TAG_NAME).is_err());
        // Offsets past the data store, up to the largest a guest can write.
        let mut far = encode(&[(TAG_NAME, TYPE_STRING, 1, b"x\0"), (TAG_EPOCH, TYPE_INT32, 1, &[0; 4])]);
        far[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        far[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        let h = Header::parse(&far, 0).unwrap();
        assert!(h.string(TAG_NAME).is_err());
        assert!(h.int32s(TAG_EPOCH).is_err());
    }

    #[test]
    fn package_file_framing() {
        let main = sample();
        let file = package(&main);
        let (blob, base) = read_package_header(read_at(&file)).unwrap();
        assert_eq!(blob, main);
        // The signature header (36 bytes with its magic) is padded to 40.
        assert_eq!(base, LEAD_LEN + 40 + 8);
        assert_eq!(
            Header::parse(&blob, base).unwrap().string(TAG_NAME).unwrap().as_deref(),
            Some("demo")
        );
        for cut in 0..file.len() {
            assert!(read_package_header(read_at(&file[..cut])).is_err(), "cut at {cut}");
        }
        let mut no_lead = file.clone();
        no_lead[0] = 0;
        assert!(
            read_package_header(read_at(&no_lead))
                .unwrap_err()
                .to_string()
                .contains("lead")
        );
        let mut no_magic = file.clone();
        no_magic[LEAD_LEN as usize] = 0;
        let e = read_package_header(read_at(&no_magic)).unwrap_err();
        assert_eq!(e.offset, LEAD_LEN, "{e}");
        let mut huge = file;
        huge[LEAD_LEN as usize + 8..][..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_package_header(read_at(&huge)).is_err());
    }
}
