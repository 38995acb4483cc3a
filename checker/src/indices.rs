//! Repository indices: decompression, and a cache of parsed `Packages` indices and rpm-md
//! `primary.xml`/`updateinfo.xml` files shared by every VM of a run, keyed by the SHA-256 of
//! the file's bytes (a hundred guests of one distribution share a handful of indices).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use packages::apt::{self, IndexEntry};
use packages::rpmmd::{self, Advisory, Available};
use sha2::{Digest, Sha256};

use crate::CheckError;

/// Debian's largest index (main, amd64) is ~100 MB uncompressed; anything far beyond is not an
/// index.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

/// How an index file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Gzip,
    Lz4,
    /// rpm-md metadata (Fedora ≥ 39 compresses primary.xml with zstd).
    Zstd,
}

impl Compression {
    /// The suffixes apt gives index files, in the order this crate prefers them.
    pub const ALL: [(&'static str, Compression); 4] = [
        ("", Self::None),
        (".lz4", Self::Lz4),
        (".gz", Self::Gzip),
        (".xz", Self::Xz),
    ];

    /// How an rpm-md file (`repodata/…-primary.xml.gz`) is compressed, from its name.
    pub fn of_rpmmd(href: &str) -> Result<Self, CheckError> {
        match href.rsplit_once('.').map(|(_, ext)| ext) {
            Some("xml") => Ok(Self::None),
            Some("gz") => Ok(Self::Gzip),
            Some("xz") => Ok(Self::Xz),
            Some("zst") => Ok(Self::Zstd),
            _ => Err(CheckError::index(
                href,
                "compression not supported (gz, xz and zst are; bz2 only appears with yum's sqlite primary_db, which is not read)",
            )),
        }
    }

    /// A decompressing reader over `raw`.
    pub fn reader<'a>(self, raw: &'a [u8], name: &str) -> Result<Box<dyn Read + 'a>, CheckError> {
        Ok(match self {
            Self::None => Box::new(raw),
            Self::Xz => Box::new(lzma_rust2::XzReader::new(raw, true)),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Self::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
            Self::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(raw)
                    .map_err(|e| CheckError::index(name, format!("decompressing (zstd): {e}")))?,
            ),
        })
    }

    pub fn decompress(self, raw: &[u8], name: &str) -> Result<Vec<u8>, CheckError> {
        if self == Self::None {
            return Ok(raw.to_vec());
        }
        let mut reader = self.reader(raw, name)?;
        let mut out = Vec::new();
        reader
            .by_ref()
            .take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| CheckError::index(name, format!("decompressing ({self:?}): {e}")))?;
        if out.len() as u64 > MAX_INDEX_BYTES {
            return Err(CheckError::index(
                name,
                format!("decompresses to more than {MAX_INDEX_BYTES} bytes"),
            ));
        }
        Ok(out)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Default)]
pub struct IndexCache {
    packages: HashMap<[u8; 32], Arc<Vec<IndexEntry>>>,
    primaries: HashMap<[u8; 32], Arc<Vec<Available>>>,
    advisories: HashMap<[u8; 32], Arc<Vec<Advisory>>>,
    pub hits: u64,
    pub misses: u64,
}

impl IndexCache {
    /// The parsed entries of an index file (`raw` as stored, compressed or not).
    pub fn packages(
        &mut self,
        raw: &[u8],
        compression: Compression,
        name: &str,
    ) -> Result<Arc<Vec<IndexEntry>>, CheckError> {
        let key: [u8; 32] = Sha256::digest(raw).into();
        if let Some(hit) = self.packages.get(&key) {
            self.hits += 1;
            return Ok(Arc::clone(hit));
        }
        self.misses += 1;
        let text = compression.decompress(raw, name)?;
        let entries = Arc::new(apt::parse_packages(&String::from_utf8_lossy(&text), name)?);
        self.packages.insert(key, Arc::clone(&entries));
        Ok(entries)
    }

    /// The packages of an rpm-md `primary.xml` (`raw` as stored), streamed through its
    /// decompressor.
    pub fn primary(&mut self, raw: &[u8], name: &str) -> Result<Arc<Vec<Available>>, CheckError> {
        rpmmd_cached(
            &mut self.primaries,
            (&mut self.hits, &mut self.misses),
            raw,
            name,
            |r| rpmmd::parse_primary(r, name, MAX_INDEX_BYTES),
        )
    }

    /// The advisories of an rpm-md `updateinfo.xml` (`raw` as stored).
    pub fn updateinfo(&mut self, raw: &[u8], name: &str) -> Result<Arc<Vec<Advisory>>, CheckError> {
        rpmmd_cached(
            &mut self.advisories,
            (&mut self.hits, &mut self.misses),
            raw,
            name,
            |r| rpmmd::parse_updateinfo(r, name, MAX_INDEX_BYTES),
        )
    }
}

/// An rpm-md file parsed once per content: `parse` reads it decompressed (by its name's
/// suffix).
fn rpmmd_cached<T>(
    map: &mut HashMap<[u8; 32], Arc<T>>,
    (hits, misses): (&mut u64, &mut u64),
    raw: &[u8],
    name: &str,
    parse: impl FnOnce(&mut dyn std::io::BufRead) -> Result<T, rpmmd::RpmMdError>,
) -> Result<Arc<T>, CheckError> {
    let key: [u8; 32] = Sha256::digest(raw).into();
    if let Some(hit) = map.get(&key) {
        *hits += 1;
        return Ok(Arc::clone(hit));
    }
    *misses += 1;
    let mut reader = std::io::BufReader::new(Compression::of_rpmmd(name)?.reader(raw, name)?);
    let parsed = Arc::new(parse(&mut reader).map_err(|e| CheckError::index(name, e.to_string()))?);
    map.insert(key, Arc::clone(&parsed));
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompressors_and_cache() {
        let text = b"Package: a\nArchitecture: all\nVersion: 1\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, text).unwrap();
        let gz = gz.finish().unwrap();
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut lz, text).unwrap();
        let lz = lz.finish().unwrap();
        assert_eq!(Compression::Gzip.decompress(&gz, "x").unwrap(), text);
        assert_eq!(Compression::Lz4.decompress(&lz, "x").unwrap(), text);
        assert!(Compression::Xz.decompress(b"not xz", "x").is_err());

        let mut cache = IndexCache::default();
        let a = cache.packages(&gz, Compression::Gzip, "a").unwrap();
        let b = cache.packages(&gz, Compression::Gzip, "b").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((cache.hits, cache.misses), (1, 1));
        assert_eq!(a[0].name, "a");
    }
}
