//! Writing a bundle from a captured [`ChangeSet`] and the tracer's script records (dom0).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use emulator::capture::{self, BaseKind, CaptureLayer, ChangeSet, Entry, EntryKind};
use emulator::trace::record::{Manager, ScriptRecord};
use introspect::linux::GuestSnapshot;
use serde::Serialize;
use sha2::{Digest, Sha256};

use bundle::manifest::{
    BaseFingerprint, BaseType, EntryType, Excluded, GuestIdentity, Manifest, PackageChange, PayloadEntry, SCHEMA,
    Script, ScriptType,
};
use bundle::read::HashingReader;
use bundle::sign::SecretKey;
use bundle::tar::{self, Header, Kind};
use bundle::{BundleError, MANIFEST_MEMBER, file_member, hex};

/// Packing failed: the bundle could not be written, or the changes not read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Capture(#[from] emulator::capture::CaptureError),
}

/// Largest dpkg status file read (a desktop system's is a few MB).
const MAX_STATUS: u64 = 64 << 20;
/// zstd level: level 3 (zstd's default) compresses at well over 100 MB/s on one core.
const ZSTD_LEVEL: i32 = 3;

/// Everything besides the change set that goes into the manifest.
pub struct BundleInputs<'a> {
    pub bundle_id: String,
    pub created_unix: u64,
    pub guest: GuestIdentity,
    pub command: Vec<String>,
    pub packages: Vec<PackageChange>,
    pub scripts: &'a [ScriptRecord],
}

/// What writing cost, for the emulation record and benchmarks.
#[derive(Debug, Clone, Serialize)]
pub struct WriteStats {
    pub members: u64,
    /// Uncompressed bytes of script and file data.
    pub payload_bytes: u64,
    /// Size of the `.dmb`.
    pub bundle_bytes: u64,
    pub seconds: f64,
}

/// The guest identity the agent checks before applying.
pub fn guest_identity(snapshot: &GuestSnapshot) -> GuestIdentity {
    GuestIdentity {
        domain_name: snapshot.domain.as_ref().and_then(|d| d.name.clone()),
        domain_uuid: snapshot.domain.as_ref().and_then(|d| d.uuid.clone()),
        kernel_release: snapshot.uts.release.clone(),
        boot_id: snapshot.boot_id.clone(),
        hostname: snapshot.uts.nodename.clone(),
    }
}

/// Package changes from dpkg's status file before (the guest's) and after (the run's).
pub fn dpkg_changes(layers: &[CaptureLayer]) -> Result<Vec<PackageChange>, PackError> {
    const STATUS: &str = "/var/lib/dpkg/status";
    let versions = capture::read_versions(layers, STATUS, MAX_STATUS)?;
    let parse = |bytes: Option<Vec<u8>>, which: &str| -> Result<BTreeMap<(String, String), String>, BundleError> {
        let Some(bytes) = bytes else {
            return Ok(BTreeMap::new());
        };
        let text = String::from_utf8(bytes).map_err(|_| BundleError::Format {
            path: PathBuf::from(STATUS),
            detail: format!("the {which} dpkg status is not UTF-8"),
        })?;
        let packages = packages::dpkg::parse_status(&text).map_err(|e| BundleError::Format {
            path: PathBuf::from(STATUS),
            detail: format!("the {which} dpkg status: {e}"),
        })?;
        Ok(packages
            .into_iter()
            .map(|p| ((p.name, p.arch), p.version.to_string()))
            .collect())
    };
    let before = parse(versions.before, "guest's")?;
    let after = parse(versions.after, "emulated")?;
    let mut keys: Vec<&(String, String)> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|(name, arch)| PackageChange {
            manager: "dpkg".into(),
            name: name.clone(),
            arch: arch.clone(),
            old_version: before.get(&(name.clone(), arch.clone())).cloned(),
            new_version: after.get(&(name.clone(), arch.clone())).cloned(),
        })
        .collect())
}

/// A new signing key from the system's random source.
pub fn generate_key() -> Result<SecretKey, BundleError> {
    let mut seed = [0u8; 32];
    let mut key_id = [0u8; 8];
    for buf in [&mut seed[..], &mut key_id[..]] {
        getrandom::fill(buf).map_err(|e| BundleError::Key {
            path: PathBuf::from("(new key)"),
            detail: format!("no randomness from the system: {e}"),
        })?;
    }
    Ok(SecretKey::from_seed(seed, key_id))
}

/// Writes `PREFIX.key` (0600, refusing to overwrite) and `PREFIX.pub`.
pub fn write_key_pair(key: &SecretKey, prefix: &Path) -> Result<(PathBuf, PathBuf), BundleError> {
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    };
    let (secret, public) = (with(".key"), with(".pub"));
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { what, path, source }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .map_err(io("creating the secret key (it must not exist yet)", &secret))?;
    file.write_all(key.to_file_text().as_bytes())
        .map_err(io("writing the secret key", &secret))?;
    fs::write(&public, key.public().to_file_text()).map_err(io("writing the public key", &public))?;
    Ok((secret, public))
}

/// Signs `bundle` into `bundle.minisig`; the trusted comment names the bundle id and time.
pub fn sign_bundle(key: &SecretKey, bundle: &Path, manifest: &Manifest) -> Result<PathBuf, BundleError> {
    let name = bundle.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let comment = format!(
        "timestamp:{}\tfile:{}\thashed\tbundle:{}",
        manifest.created_unix,
        name.replace(['\t', '\n', '\r'], "_"),
        manifest.bundle_id
    );
    let text = key.sign_file(bundle, &comment)?;
    let path = bundle::sign::signature_path(bundle);
    fs::write(&path, text).map_err(|source| BundleError::Io {
        what: "writing the signature",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The member of a script: `scripts/<seq>-<package>.<type>`, with anything but
/// `[A-Za-z0-9+._-]` in the package name replaced (`pkg:amd64` → `pkg_amd64`).
fn script_member(record: &ScriptRecord) -> String {
    let package: String = record
        .package
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let kind = match (&record.rpm_tag, record.script_type) {
        (Some(tag), ScriptType::Other) => tag.chars().filter(char::is_ascii_alphanumeric).collect::<String>(),
        (_, t) => t.name().to_owned(),
    };
    format!("scripts/{:06}-{package}.{kind}", record.seq)
}

/// The manifest for `changes` and `inputs` (scripts in their execution order).
pub fn manifest(changes: &ChangeSet, inputs: &BundleInputs) -> Manifest {
    let mut scripts: Vec<&ScriptRecord> = inputs.scripts.iter().collect();
    scripts.sort_by_key(|s| s.seq);
    Manifest {
        schema: SCHEMA.into(),
        bundle_id: inputs.bundle_id.clone(),
        created_unix: inputs.created_unix,
        dormouse_version: env!("CARGO_PKG_VERSION").into(),
        guest: inputs.guest.clone(),
        command: inputs.command.clone(),
        packages: inputs.packages.clone(),
        scripts: scripts
            .into_iter()
            .map(|s| Script {
                seq: s.seq,
                phase: s.phase,
                manager: match s.manager {
                    Manager::Dpkg => "dpkg".into(),
                    Manager::Rpm => "rpm".into(),
                },
                package: s.package.clone(),
                arch: s.arch.clone(),
                script_type: s.script_type,
                triggered: s.triggered,
                rpm_tag: s.rpm_tag.clone(),
                path: s.path.clone(),
                argv: s.argv.clone(),
                env: s.env.clone(),
                file: script_member(s),
                size: s.bytes.len() as u64,
                sha256: hex(&Sha256::digest(&s.bytes)),
            })
            .collect(),
        removals: changes.removals.clone(),
        opaque_dirs: changes.opaque_dirs.clone(),
        base: changes
            .base
            .iter()
            .map(|b| BaseFingerprint {
                path: b.path.clone(),
                base_type: match b.kind {
                    BaseKind::File => BaseType::File,
                    BaseKind::Dir => BaseType::Dir,
                    BaseKind::Symlink => BaseType::Symlink,
                    BaseKind::Other => BaseType::Other,
                },
                size: b.size,
                sha256: b.sha256.clone(),
            })
            .collect(),
        files: changes.entries.iter().map(payload_entry).collect(),
        excluded: changes
            .excluded
            .iter()
            .map(|e| Excluded {
                path: e.path.clone(),
                pattern: e.pattern.clone(),
                removal: e.removal,
                entries: e.entries,
                bytes: e.bytes,
            })
            .collect(),
    }
}

fn payload_entry(entry: &Entry) -> PayloadEntry {
    let (entry_type, size, sha256) = match &entry.kind {
        EntryKind::File { size, sha256, .. } => (EntryType::File, *size, Some(sha256.clone())),
        EntryKind::Hardlink { .. } => (EntryType::Hardlink, 0, None),
        EntryKind::Dir => (EntryType::Dir, 0, None),
        EntryKind::Symlink { .. } => (EntryType::Symlink, 0, None),
        EntryKind::CharDevice { .. } => (EntryType::CharDevice, 0, None),
        EntryKind::BlockDevice { .. } => (EntryType::BlockDevice, 0, None),
        EntryKind::Fifo => (EntryType::Fifo, 0, None),
    };
    PayloadEntry {
        path: entry.path.clone(),
        entry_type,
        size,
        sha256,
    }
}

fn entry_header(entry: &Entry) -> Header {
    let (kind, size, link, device) = match &entry.kind {
        EntryKind::File { size, .. } => (Kind::File, *size, None, None),
        EntryKind::Hardlink { target } => (Kind::Hardlink, 0, Some(file_member(target)), None),
        EntryKind::Dir => (Kind::Dir, 0, None, None),
        EntryKind::Symlink { target } => (Kind::Symlink, 0, Some(target.clone()), None),
        EntryKind::CharDevice { major, minor } => (Kind::CharDevice, 0, None, Some((*major, *minor))),
        EntryKind::BlockDevice { major, minor } => (Kind::BlockDevice, 0, None, Some((*major, *minor))),
        EntryKind::Fifo => (Kind::Fifo, 0, None, None),
    };
    Header {
        path: file_member(&entry.path),
        kind,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size,
        mtime: entry.mtime,
        mtime_nsec: entry.mtime_nsec,
        link,
        device,
        xattrs: entry.xattrs.iter().map(|x| (x.name.clone(), x.value.clone())).collect(),
    }
}

/// Writes the bundle to `out` (through a temporary file beside it, renamed at the end) and
/// returns its manifest and what it cost. A file that changed since the capture is an error.
pub fn write_bundle(
    out: &Path,
    changes: &ChangeSet,
    inputs: &BundleInputs,
) -> Result<(Manifest, WriteStats), BundleError> {
    let start = Instant::now();
    let manifest = manifest(changes, inputs);
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = write_archive(&tmp, &manifest, changes, inputs);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, out).map_err(|source| BundleError::Io {
        what: "moving the finished bundle into place",
        path: out.to_owned(),
        source,
    })?;
    let bundle_bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok((
        manifest,
        WriteStats {
            bundle_bytes,
            seconds: start.elapsed().as_secs_f64(),
            ..stats
        },
    ))
}

fn write_archive(
    path: &Path,
    manifest: &Manifest,
    changes: &ChangeSet,
    inputs: &BundleInputs,
) -> Result<WriteStats, BundleError> {
    let io = |what: &'static str| {
        let path = path.to_owned();
        move |source| BundleError::Io { what, path, source }
    };
    let file = File::create(path).map_err(io("creating the bundle"))?;
    let mut out = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), ZSTD_LEVEL)
        .map_err(io("starting zstd compression of the bundle"))?;
    let mut stats = WriteStats {
        members: 0,
        payload_bytes: 0,
        bundle_bytes: 0,
        seconds: 0.0,
    };
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| io("serializing the manifest of")(e.into()))?;
    let mtime = i64::try_from(inputs.created_unix).unwrap_or(i64::MAX);
    let mut header = Header::plain(MANIFEST_MEMBER, Kind::File, text.len() as u64, mtime);
    append(&mut out, &header, &text[..]).map_err(io("writing the manifest into"))?;
    stats.members += 1;

    let mut records: Vec<&ScriptRecord> = inputs.scripts.iter().collect();
    records.sort_by_key(|s| s.seq);
    for (record, script) in records.into_iter().zip(&manifest.scripts) {
        header = Header::plain(&script.file, Kind::File, record.bytes.len() as u64, mtime);
        header.mode = 0o755;
        append(&mut out, &header, &record.bytes[..]).map_err(io("writing a script into"))?;
        stats.members += 1;
        stats.payload_bytes += record.bytes.len() as u64;
    }

    for entry in &changes.entries {
        let header = entry_header(entry);
        match &entry.kind {
            EntryKind::File { source, size, sha256 } => {
                let file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(source)
                    .map_err(|source_err| BundleError::Io {
                        what: "opening a captured file",
                        path: source.clone(),
                        source: source_err,
                    })?;
                let mut hashing = HashingReader {
                    inner: file.take(*size),
                    hasher: Sha256::new(),
                    bytes: 0,
                };
                tar::write_header(&mut out, &header).map_err(io("writing into"))?;
                io::copy(&mut hashing, &mut out).map_err(io("writing into"))?;
                if hashing.bytes != *size || hex(&hashing.hasher.finalize()) != *sha256 {
                    return Err(BundleError::Format {
                        path: source.clone(),
                        detail: format!("{} changed since it was captured", entry.path),
                    });
                }
                tar::write_padding(&mut out, *size).map_err(io("writing into"))?;
                stats.payload_bytes += size;
            }
            _ => tar::write_header(&mut out, &header).map_err(io("writing into"))?,
        }
        stats.members += 1;
    }
    tar::write_end(&mut out).map_err(io("finishing"))?;
    let buffered = out.finish().map_err(io("finishing zstd compression of"))?;
    let file = buffered.into_inner().map_err(|e| io("flushing")(e.into_error()))?;
    file.sync_all().map_err(io("syncing"))?;
    Ok(stats)
}

fn append(out: &mut impl Write, header: &Header, mut data: &[u8]) -> io::Result<()> {
    tar::write_header(out, header)?;
    io::copy(&mut data, out)?;
    tar::write_padding(out, header.size)
}

/// What [`bundle_from_run`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct BundleOutcome {
    pub bundle: PathBuf,
    pub signature: PathBuf,
    pub bundle_id: String,
    /// Writing and signing the bundle (capturing the changes is the run's `capture` phase).
    pub pack_seconds: f64,
    pub write: WriteStats,
    /// Bytes of regular files in the upper layers (what `du --apparent-size` counts).
    pub upper_bytes: u64,
    /// Bytes the exclusions kept out.
    pub excluded_bytes: u64,
}

/// Writes a finished run's captured changes to `out` as a bundle signed with `key`.
/// The bundle id is the run id; `created_unix` is the bundle's time.
pub fn bundle_from_run(
    context: &emulator::run::CaptureContext,
    changes: &ChangeSet,
    out: &Path,
    key: &SecretKey,
    created_unix: u64,
) -> Result<BundleOutcome, PackError> {
    let start = Instant::now();
    let packages = dpkg_changes(context.layers)?;
    let inputs = BundleInputs {
        bundle_id: context.report.run_id.clone(),
        created_unix,
        guest: guest_identity(context.snapshot),
        command: context.report.command.clone(),
        packages,
        scripts: &context.report.trace.scripts,
    };
    let (manifest, write) = write_bundle(out, changes, &inputs)?;
    let signature = sign_bundle(key, out, &manifest)?;
    Ok(BundleOutcome {
        bundle: out.to_owned(),
        signature,
        bundle_id: manifest.bundle_id,
        pack_seconds: start.elapsed().as_secs_f64(),
        write,
        upper_bytes: context.report.upper_layers.iter().map(|l| l.bytes).sum(),
        excluded_bytes: changes.excluded.iter().map(|e| e.bytes).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::read::Bundle;

    fn file_entry(path: &str, source: &Path, bytes: &[u8]) -> Entry {
        fs::write(source, bytes).unwrap();
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                source: source.to_owned(),
                size: bytes.len() as u64,
                sha256: hex(&Sha256::digest(bytes)),
            },
            uid: 0,
            gid: 0,
            mode: 0o644,
            mtime: 1,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        }
    }

    fn inputs() -> BundleInputs<'static> {
        BundleInputs {
            bundle_id: "id".into(),
            created_unix: 1_700_000_000,
            guest: GuestIdentity {
                domain_name: None,
                domain_uuid: None,
                kernel_release: "6.1.0".into(),
                boot_id: None,
                hostname: "g".into(),
            },
            command: vec!["true".into()],
            packages: Vec::new(),
            scripts: &[],
        }
    }

    /// Same inputs, same bytes; a payload altered after the manifest was written is caught by
    /// the reader's digest check, and a file changed since capture by the writer.
    #[test]
    fn deterministic_and_digests_checked() {
        let dir = tempfile::tempdir().unwrap();
        let changes = ChangeSet {
            entries: vec![file_entry("/etc/motd", &dir.path().join("motd"), b"hello guest\n")],
            ..Default::default()
        };
        let (one, two) = (dir.path().join("1.dmb"), dir.path().join("2.dmb"));
        write_bundle(&one, &changes, &inputs()).unwrap();
        write_bundle(&two, &changes, &inputs()).unwrap();
        assert_eq!(fs::read(&one).unwrap(), fs::read(&two).unwrap());
        let stats = Bundle::open(&one).unwrap().verify_payload().unwrap();
        assert_eq!((stats.members, stats.bytes), (1, 12));

        // Alter the payload inside the compressed archive, keeping the manifest.
        let tar = zstd::decode_all(fs::File::open(&one).unwrap()).unwrap();
        let at = tar.windows(12).position(|w| w == b"hello guest\n").unwrap();
        let mut altered = tar.clone();
        altered[at] = b'j';
        fs::write(&two, zstd::encode_all(&altered[..], 3).unwrap()).unwrap();
        let err = Bundle::open(&two).unwrap().verify_payload().unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");

        fs::write(dir.path().join("motd"), b"hello guesT\n").unwrap();
        let err = write_bundle(&two, &changes, &inputs()).unwrap_err();
        assert!(err.to_string().contains("changed since it was captured"), "{err}");
    }
}
