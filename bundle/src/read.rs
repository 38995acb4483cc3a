//! Reading a bundle: the manifest, then every member streamed in order and checked against it
//! (name, type, size, SHA-256). Check the signature ([`super::sign`]) before trusting any of
//! it; even then, everything here is bounded, so a damaged file is an error, never a crash.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::{EntryType, Manifest, PayloadEntry, SCHEMA, Script};
use super::tar::{Header, Kind, Reader};
use super::{BundleError, MANIFEST_MEMBER, MAX_MANIFEST, file_member, hex};

type Decoder = ruzstd::decoding::StreamingDecoder<BufReader<File>, ruzstd::decoding::FrameDecoder>;

/// An opened bundle with its parsed and checked manifest.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    manifest: Manifest,
}

/// What a member is, from the manifest.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    Script(&'a Script),
    File(&'a PayloadEntry),
}

/// Counts of a full pass over the members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyStats {
    pub members: u64,
    /// Bytes of script and file data checked.
    pub bytes: u64,
}

impl Bundle {
    /// Opens `path` and reads its manifest (the first member), checking its schema and that
    /// its paths are well formed.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let (manifest, _) = open_stream(path)?;
        Ok(Bundle {
            path: path.to_owned(),
            manifest,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Streams every member after the manifest, in archive order, to `visit` with its tar
    /// header and data. Each member is checked against the manifest: its name and type, and
    /// once `visit` returns (the rest of the data is read if `visit` did not), its size and
    /// SHA-256. The archive must end right after the last member the manifest lists. An
    /// error stops the walk: what `visit` did with earlier members must not be used unless
    /// this returns `Ok`.
    pub fn for_each_member(
        &self,
        mut visit: impl FnMut(Member<'_>, &Header, &mut dyn Read) -> Result<(), BundleError>,
    ) -> Result<VerifyStats, BundleError> {
        let (_, mut reader) = open_stream(&self.path)?;
        let mut stats = VerifyStats::default();
        // Member names of the regular files seen, which hardlinks may name.
        let mut regular: HashSet<String> = HashSet::new();
        let scripts = self.manifest.scripts.iter().map(Member::Script);
        let files = self.manifest.files.iter().map(Member::File);
        for member in scripts.chain(files) {
            let (name, kind, size, sha256) = match member {
                Member::Script(s) => (s.file.clone(), Kind::File, s.size, Some(s.sha256.as_str())),
                Member::File(f) => (file_member(&f.path), kind_of(f.entry_type), f.size, f.sha256.as_deref()),
            };
            let header = reader
                .next_header()
                .map_err(|e| self.format(format!("reading the header of {name}: {e}")))?
                .ok_or_else(|| self.format(format!("the archive ends before {name}")))?;
            if header.path != name {
                return Err(self.format(format!("member {:?} where the manifest has {name}", header.path)));
            }
            if header.kind != kind || header.size != size {
                return Err(self.format(format!(
                    "{name}: a {:?} of {} bytes where the manifest has a {kind:?} of {size} bytes",
                    header.kind, header.size
                )));
            }
            match header.kind {
                Kind::Hardlink => {
                    let target = header.link.as_deref().unwrap_or("");
                    if !regular.contains(target) {
                        return Err(self.format(format!(
                            "{name}: hardlink to {target:?}, which is no earlier regular file"
                        )));
                    }
                }
                Kind::Symlink if header.link.as_deref().is_none_or(str::is_empty) => {
                    return Err(self.format(format!("{name}: symlink without a target")));
                }
                _ => {}
            }
            let mut data = HashingReader {
                inner: reader.data(),
                hasher: Sha256::new(),
                bytes: 0,
            };
            visit(member, &header, &mut data)?;
            io::copy(&mut data, &mut io::sink()).map_err(|e| self.format(format!("reading {name}: {e}")))?;
            if data.bytes != size {
                return Err(self.format(format!(
                    "{name}: {} bytes of data, the manifest says {size}",
                    data.bytes
                )));
            }
            if let Some(expected) = sha256 {
                let got = hex(&data.hasher.finalize());
                if got != expected {
                    return Err(self.format(format!(
                        "{name}: SHA-256 {got}, the manifest says {expected}: the bundle is damaged or was altered"
                    )));
                }
            }
            if matches!(member, Member::File(_)) && header.kind == Kind::File {
                regular.insert(name);
            }
            stats.members += 1;
            stats.bytes += size;
        }
        match reader.next_header() {
            Ok(None) => Ok(stats),
            Ok(Some(h)) => Err(self.format(format!("member {:?} that the manifest does not list", h.path))),
            Err(e) => Err(self.format(format!("after the last member: {e}"))),
        }
    }

    /// Checks every member against the manifest without doing anything with it.
    pub fn verify_payload(&self) -> Result<VerifyStats, BundleError> {
        self.for_each_member(|_, _, _| Ok(()))
    }

    fn format(&self, detail: String) -> BundleError {
        BundleError::Format {
            path: self.path.clone(),
            detail,
        }
    }
}

fn kind_of(entry_type: EntryType) -> Kind {
    match entry_type {
        EntryType::File => Kind::File,
        EntryType::Hardlink => Kind::Hardlink,
        EntryType::Dir => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::CharDevice => Kind::CharDevice,
        EntryType::BlockDevice => Kind::BlockDevice,
        EntryType::Fifo => Kind::Fifo,
    }
}

/// Passes data through, counting and hashing it.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn open_stream(path: &Path) -> Result<(Manifest, Reader<Decoder>), BundleError> {
    let format = |detail: String| BundleError::Format {
        path: path.to_owned(),
        detail,
    };
    let file = File::open(path).map_err(|source| BundleError::Io {
        what: "opening the bundle",
        path: path.to_owned(),
        source,
    })?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(BufReader::new(file))
        .map_err(|e| format(format!("not zstd-compressed: {e}")))?;
    let mut reader = Reader::new(decoder);
    let header = reader
        .next_header()
        .map_err(|e| format(format!("reading the first member: {e}")))?
        .ok_or_else(|| format("empty archive".into()))?;
    if header.path != MANIFEST_MEMBER || header.kind != Kind::File {
        return Err(format(format!(
            "the first member is {:?}, not {MANIFEST_MEMBER}",
            header.path
        )));
    }
    if header.size > MAX_MANIFEST {
        return Err(format(format!(
            "a manifest of {} bytes (at most {MAX_MANIFEST})",
            header.size
        )));
    }
    let mut text = Vec::new();
    reader
        .data()
        .read_to_end(&mut text)
        .map_err(|e| format(format!("reading {MANIFEST_MEMBER}: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format(format!("{MANIFEST_MEMBER}: {e}")))?;
    check_manifest(&manifest).map_err(format)?;
    Ok((manifest, reader))
}

/// Structural checks the agent relies on: the schema, absolute normalized UTF-8 paths,
/// payload sorted without duplicates, digests where they belong, script members under
/// `scripts/`.
pub fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    if manifest.schema != SCHEMA {
        return Err(format!("schema {:?}, this dormouse reads {SCHEMA}", manifest.schema));
    }
    let mut previous: Option<&str> = None;
    for entry in &manifest.files {
        check_guest_path(&entry.path)?;
        if previous.is_some_and(|p| p.as_bytes() >= entry.path.as_bytes()) {
            return Err(format!("files are not sorted and unique at {}", entry.path));
        }
        previous = Some(&entry.path);
        let is_file = entry.entry_type == EntryType::File;
        if is_file != entry.sha256.is_some() || (!is_file && entry.size != 0) {
            return Err(format!("{}: size and digest do not fit its type", entry.path));
        }
        if let Some(d) = &entry.sha256 {
            check_digest(d, &entry.path)?;
        }
    }
    let mut seqs = HashSet::new();
    for script in &manifest.scripts {
        check_digest(&script.sha256, &script.file)?;
        let name = script
            .file
            .strip_prefix("scripts/")
            .ok_or_else(|| format!("script member {:?} is not under scripts/", script.file))?;
        if name.is_empty() || name.contains('/') || name.starts_with('.') || !seqs.insert(script.seq) {
            return Err(format!("bad or repeated script member {:?}", script.file));
        }
    }
    for path in manifest
        .removals
        .iter()
        .chain(&manifest.opaque_dirs)
        .chain(manifest.base.iter().map(|b| &b.path))
    {
        check_guest_path(path)?;
    }
    Ok(())
}

fn check_digest(digest: &str, what: &str) -> Result<(), String> {
    if digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("{what}: {digest:?} is not a SHA-256 in lowercase hex"))
    }
}

/// Absolute, no empty, `.` or `..` component, no NUL: the agent joins it to the guest root.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("guest path {path:?} is not absolute"))?;
    if rest.is_empty() || path.contains('\0') || rest.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("guest path {path:?} is not normalized"));
    }
    Ok(())
}
