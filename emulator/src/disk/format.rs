//! Disk image container formats, and the rules for trusting a format.
//!
//! A raw disk's first sector belongs to the guest, which can write a qcow2 header there naming
//! `/etc/shadow` as its backing file (CVE-2008-2004). So dormouse never guesses its way into an
//! external reference: a *probed* image is accepted only when its header proves it references
//! nothing outside itself, and a *declared* qcow2 chain must record the format of every backing
//! file, so qemu never guesses one either.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Longest backing chain followed; qemu itself has no limit, a loop must end somewhere.
const MAX_CHAIN: usize = 16;
/// The qcow2 specification caps the backing file name at 1023 bytes.
const MAX_BACKING_NAME: u32 = 1023;
/// Header extensions live in the first cluster; bound the walk independently of the cluster size.
const MAX_HEADER_EXTENSIONS: usize = 64;
const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
const QCOW2_EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Qcow,
    Qed,
    Vmdk,
    Vhdx,
    /// Microsoft VHD (qemu's `vpc` driver; xl calls it `vhd`).
    Vpc,
    Vdi,
}

impl ImageFormat {
    /// Parses a format name as xl configs and qemu spell it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "raw" => Self::Raw,
            "qcow2" => Self::Qcow2,
            "qcow" => Self::Qcow,
            "qed" => Self::Qed,
            "vmdk" => Self::Vmdk,
            "vhdx" => Self::Vhdx,
            "vpc" | "vhd" => Self::Vpc,
            "vdi" => Self::Vdi,
            _ => return None,
        })
    }

    /// The qemu block driver that reads this format.
    pub fn qemu_driver(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Qcow => "qcow",
            Self::Qed => "qed",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vpc => "vpc",
            Self::Vdi => "vdi",
        }
    }

    /// Recognises a container format from the first bytes of an image. Fixed VHDs (raw data
    /// plus a footer) read correctly as raw and are reported as raw.
    pub fn detect(head: &[u8]) -> Self {
        let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
        if at(0, QCOW_MAGIC) {
            return if be32(head, 4) == Some(1) {
                Self::Qcow
            } else {
                Self::Qcow2
            };
        }
        if at(0, b"QED\0") {
            Self::Qed
        } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
            Self::Vmdk
        } else if at(0, b"vhdxfile") {
            Self::Vhdx
        } else if at(0, b"conectix") {
            Self::Vpc
        } else if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
            Self::Vdi
        } else {
            Self::Raw
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.qemu_driver())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the image header of {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} looks like a {found} image, but its format was not declared; a guest can forge \
         such a header in a raw disk, so dormouse opens it only when told: declare format={found} \
         (or format=raw)"
    )]
    Undeclared { path: PathBuf, found: ImageFormat },
    #[error(
        "{path} looks like a qcow2 image that {what}; a guest can forge such a header in a raw \
         disk, so dormouse follows it only when the format is declared: declare format=qcow2 \
         (or format=raw)"
    )]
    ProbedReference { path: PathBuf, what: &'static str },
    #[error(
        "{path} has backing file {backing:?} but no recorded backing format, so qemu would guess \
         it (and a guest can forge what it guesses); record it with `qemu-img rebase -u -F <fmt> \
         -b {backing:?} {path}`"
    )]
    UnrecordedBackingFormat { path: PathBuf, backing: String },
    #[error("{path}: malformed qcow2 header: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: backing chain longer than {MAX_CHAIN} images (a loop?)")]
    ChainTooLong { path: PathBuf },
}

/// What a qcow2 header says about files outside the image.
#[derive(Debug, Default, PartialEq, Eq)]
struct Qcow2References {
    backing: Option<String>,
    backing_format: Option<String>,
    external_data_file: bool,
}

/// Decides which format to open `path` as: `declared` when given (after checking a qcow2
/// chain records every backing format), else the probed format when that is safe to follow.
pub fn resolve_format(path: &Path, declared: Option<ImageFormat>) -> Result<ImageFormat, FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_owned(),
        source,
    };
    let mut head = Vec::with_capacity(4096);
    File::open(path)
        .map_err(io)?
        .take(4096)
        .read_to_end(&mut head)
        .map_err(io)?;
    match declared {
        Some(ImageFormat::Qcow2) => {
            check_qcow2_chain(path)?;
            Ok(ImageFormat::Qcow2)
        }
        Some(format) => Ok(format),
        None => match ImageFormat::detect(&head) {
            ImageFormat::Raw => Ok(ImageFormat::Raw),
            ImageFormat::Qcow2 => {
                let refs = qcow2_references(path)?;
                let what = if refs.backing.is_some() {
                    "names a backing file"
                } else if refs.external_data_file {
                    "keeps its data in an external file"
                } else {
                    return Ok(ImageFormat::Qcow2);
                };
                Err(FormatError::ProbedReference {
                    path: path.to_owned(),
                    what,
                })
            }
            found => Err(FormatError::Undeclared {
                path: path.to_owned(),
                found,
            }),
        },
    }
}

/// Walks a declared qcow2 image's backing chain and requires each link's format on record.
fn check_qcow2_chain(top: &Path) -> Result<(), FormatError> {
    let mut path = top.to_owned();
    for _ in 0..MAX_CHAIN {
        let refs = qcow2_references(&path)?;
        let Some(backing) = refs.backing else {
            return Ok(());
        };
        match refs.backing_format.as_deref() {
            Some("qcow2") => {
                // qemu resolves a relative backing name against the referring image's directory.
                let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
                path = dir.join(&backing);
            }
            Some(_) => return Ok(()),
            None => {
                return Err(FormatError::UnrecordedBackingFormat { path, backing });
            }
        }
    }
    Err(FormatError::ChainTooLong { path: top.to_owned() })
}

fn qcow2_references(path: &Path) -> Result<Qcow2References, FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut header = Vec::with_capacity(64 << 10);
    (&mut file).take(64 << 10).read_to_end(&mut header).map_err(io)?;
    let malformed = |what: String| FormatError::Malformed {
        path: path.to_owned(),
        what,
    };
    let (mut refs, unread) = parse_qcow2_header(&header).map_err(malformed)?;
    // The backing name may lie beyond the first 64 KiB; read it where the header says.
    if let Some((offset, len)) = unread {
        let mut name = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.read_exact(&mut name).map_err(io)?;
        refs.backing = Some(String::from_utf8_lossy(&name).into_owned());
    }
    Ok(refs)
}

/// Where a backing name lies when it is beyond the bytes parsed: (offset, length).
type Unread = Option<(u64, u32)>;

/// Parses the parts of a qcow2 (v1–v3) header that point outside the image. `header` is the
/// file's first bytes; a backing name beyond them is returned as a location to read.
fn parse_qcow2_header(header: &[u8]) -> Result<(Qcow2References, Unread), String> {
    if header.get(..4) != Some(QCOW_MAGIC) {
        return Err("no QFI\\xfb magic".into());
    }
    let field = |name: &str, v: Option<u64>| v.ok_or_else(|| format!("header too short for {name}"));
    let version = field("version", be32(header, 4).map(u64::from))?;
    let backing_offset = field("backing_file_offset", be64(header, 8))?;
    let backing_len = field("backing_file_size", be32(header, 16).map(u64::from))?;
    if version == 0 || version > 3 {
        return Err(format!("unsupported version {version}"));
    }
    if backing_len > u64::from(MAX_BACKING_NAME) {
        return Err(format!(
            "backing file name of {backing_len} bytes (at most {MAX_BACKING_NAME})"
        ));
    }
    let mut refs = Qcow2References::default();
    let mut unread = None;
    if backing_offset != 0 {
        match usize::try_from(backing_offset)
            .ok()
            .and_then(|start| header.get(start..start.checked_add(backing_len as usize)?))
        {
            Some(name) => refs.backing = Some(String::from_utf8_lossy(name).into_owned()),
            None => unread = Some((backing_offset, backing_len as u32)),
        }
    }
    if version == 1 {
        // qcow v1 has no extensions.
        return Ok((refs, unread));
    }
    let header_len = if version == 3 {
        refs.external_data_file = field("incompatible_features", be64(header, 72))? & QCOW2_INCOMPAT_DATA_FILE != 0;
        field("header_length", be32(header, 100).map(u64::from))?
    } else {
        72
    };
    // Header extensions: (type u32, length u32, data padded to 8), ending with type 0.
    let mut at = usize::try_from(header_len).map_err(|_| "header_length out of range")?;
    for _ in 0..MAX_HEADER_EXTENSIONS {
        let (Some(kind), Some(len)) = (be32(header, at), be32(header, at + 4)) else {
            break;
        };
        if kind == 0 {
            break;
        }
        let data = at + 8;
        let Some(bytes) = header.get(data..data + len as usize) else {
            return Err(format!("header extension {kind:#x} at byte {at} runs past the header"));
        };
        if kind == QCOW2_EXT_BACKING_FORMAT {
            refs.backing_format = Some(String::from_utf8_lossy(bytes).into_owned());
        }
        at = data + (len as usize).div_ceil(8) * 8;
    }
    Ok((refs, unread))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A qcow2 v3 header with an optional backing name and backing-format extension.
    fn qcow2(backing: Option<&str>, backing_fmt: Option<&str>, incompat: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        let at = 104;
        if let Some(fmt) = backing_fmt {
            h[at..at + 4].copy_from_slice(&QCOW2_EXT_BACKING_FORMAT.to_be_bytes());
            h[at + 4..at + 8].copy_from_slice(&(fmt.len() as u32).to_be_bytes());
            h[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
        }
        if let Some(name) = backing {
            h[8..16].copy_from_slice(&1024u64.to_be_bytes());
            h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            h[1024..1024 + name.len()].copy_from_slice(name.as_bytes());
        }
        h
    }

    #[test]
    fn detects_container_magics() {
        assert_eq!(ImageFormat::detect(&qcow2(None, None, 0)), ImageFormat::Qcow2);
        assert_eq!(ImageFormat::detect(b"KDMV\x01\0\0\0"), ImageFormat::Vmdk);
        assert_eq!(ImageFormat::detect(b"vhdxfile"), ImageFormat::Vhdx);
        assert_eq!(ImageFormat::detect(b"conectix"), ImageFormat::Vpc);
        assert_eq!(ImageFormat::detect(&[0u8; 512]), ImageFormat::Raw);
        assert_eq!(ImageFormat::detect(b"QF"), ImageFormat::Raw);
        assert_eq!(ImageFormat::from_name("VHD"), Some(ImageFormat::Vpc));
        assert_eq!(ImageFormat::from_name("empty"), None);
    }

    #[test]
    fn qcow2_header_references() {
        let plain = parse_qcow2_header(&qcow2(None, None, 0)).unwrap();
        assert_eq!(plain, (Qcow2References::default(), None));
        let (chained, _) = parse_qcow2_header(&qcow2(Some("/etc/shadow"), Some("raw"), 0)).unwrap();
        assert_eq!(chained.backing.as_deref(), Some("/etc/shadow"));
        assert_eq!(chained.backing_format.as_deref(), Some("raw"));
        assert!(
            parse_qcow2_header(&qcow2(None, None, QCOW2_INCOMPAT_DATA_FILE))
                .unwrap()
                .0
                .external_data_file
        );
    }

    #[test]
    fn hostile_qcow2_headers_are_errors_not_panics() {
        let mut h = qcow2(Some("base"), None, 0);
        h[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_qcow2_header(&h).is_err());
        let mut h = qcow2(None, None, 0);
        h[100..104].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_qcow2_header(&h).unwrap().0.backing_format.is_none());
        let mut h = qcow2(None, Some("raw"), 0);
        h[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_qcow2_header(&h).is_err());
        assert!(parse_qcow2_header(&h[..50]).is_err());
        let mut h = qcow2(Some("x"), None, 0);
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            parse_qcow2_header(&h).unwrap(),
            (Qcow2References::default(), Some((u64::MAX, 1)))
        );
    }
}
