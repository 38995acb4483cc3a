//! rpm headers as far as scriptlets need them: which package a scriptlet exec belongs to, and
//! which packages carry `<lua>` scriptlets (facts: ../shared/specs/package-scripts.md §4.5,
//! rpm 4.18 `lib/rpmscript.c`, `include/rpm/rpmtag.h`).
//!
//! Headers come from package files the rpm process has open and from its rpmdb.sqlite, both
//! hostile input, read by [`packages::rpmheader`]; this module keeps only what scriptlets mean.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::rc::Rc;

use packages::rpmdb;
use packages::rpmheader::{Header, HeaderError, LEAD_MAGIC, TAG_ARCH, TAG_EPOCH, TAG_NAME, TAG_RELEASE, TAG_VERSION};

/// Largest rpmdb copied for reading.
const MAX_RPMDB: u64 = 1 << 30;

/// RPMSCRIPT_FLAG_EXPAND | RPMSCRIPT_FLAG_QFORMAT: rpm rewrites the body before writing it.
const FLAGS_REWRITE_BODY: u32 = 0b11;

/// The single scriptlets: (name as in a spec, body tag, program tag, flags tag).
const SLOTS: [(&str, u32, u32, u32); 7] = [
    ("%pretrans", 1151, 1153, 5024),
    ("%pre", 1023, 1085, 5020),
    ("%post", 1024, 1086, 5021),
    ("%preun", 1025, 1087, 5022),
    ("%postun", 1026, 1088, 5023),
    ("%posttrans", 1152, 1154, 5025),
    ("%verifyscript", 1079, 1091, 5026),
];

/// Trigger scriptlets: (prefix, scripts, programs, flags, names' script index, names' sense).
const TRIGGERS: [(&str, u32, u32, u32, u32, u32); 3] = [
    ("%trigger", 1065, 1092, 5027, 1069, 1068),
    ("%filetrigger", 5066, 5067, 5068, 5070, 5072),
    ("%transfiletrigger", 5076, 5077, 5078, 5080, 5082),
];

/// RPMSENSE_TRIGGER* bits of a trigger's flags, and the suffix rpm names them with.
const SENSES: [(u32, &str); 4] = [
    (1 << 25, "prein"),
    (1 << 16, "in"),
    (1 << 17, "un"),
    (1 << 18, "postun"),
];

/// One scriptlet of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scriptlet {
    /// As a spec names it: `%pre`, `%post`, `%triggerin`, `%filetriggerun`, ...
    pub tag: String,
    /// The interpreter and its arguments (`-p`); empty means rpm's default, `/bin/sh`.
    pub prog: Vec<String>,
    /// The body; `None` for a bare `-p <program>`, which rpm execs without a temp file.
    pub body: Option<String>,
    /// RPMTAG_*FLAGS: macro or queryformat expansion rewrite the body before it is written.
    pub flags: u32,
}

impl Scriptlet {
    /// The argv rpm starts the scriptlet with, before the temp file and `$1`/`$2`.
    pub fn interpreter(&self) -> Vec<String> {
        if self.prog.is_empty() {
            vec!["/bin/sh".to_owned()]
        } else {
            self.prog.clone()
        }
    }

    pub fn is_lua(&self) -> bool {
        self.prog.first().is_some_and(|p| p == "<lua>")
    }

    pub fn body_is_rewritten(&self) -> bool {
        self.flags & FLAGS_REWRITE_BODY != 0
    }
}

/// A package's identity and scriptlets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub scriptlets: Vec<Scriptlet>,
}

impl RpmHeader {
    /// `name-version-release`, as rpm prints a package.
    pub fn nvr(&self) -> String {
        format!("{}-{}-{}", self.name, self.version, self.release)
    }

    /// Tells two builds of the same name-version-release apart (epoch and arch).
    pub fn key(&self) -> String {
        format!("{}:{}.{}", self.epoch.unwrap_or(0), self.nvr(), self.arch)
    }
}

/// A package's identity and scriptlets from its header.
fn package(h: &Header<'_>) -> Result<RpmHeader, HeaderError> {
    // Any string type, as rpm's own getters take them.
    let first = |tag| Ok::<_, HeaderError>(h.strings(tag)?.into_iter().next());
    let required = |tag, what: &str| first(tag)?.ok_or_else(|| h.error(tag, format!("no {what}")));
    let mut scriptlets = Vec::new();
    for (name, body_tag, prog_tag, flags_tag) in SLOTS {
        let body = first(body_tag)?;
        let prog = h.strings(prog_tag)?;
        if body.is_none() && prog.is_empty() {
            continue;
        }
        scriptlets.push(Scriptlet {
            tag: name.to_owned(),
            prog,
            body,
            flags: h.int32s(flags_tag)?.first().copied().unwrap_or(0),
        });
    }
    for (prefix, scripts_tag, progs_tag, flags_tag, index_tag, sense_tag) in TRIGGERS {
        let scripts = h.strings(scripts_tag)?;
        let progs = h.strings(progs_tag)?;
        let flags = h.int32s(flags_tag)?;
        let (indexes, senses) = (h.int32s(index_tag)?, h.int32s(sense_tag)?);
        for (i, body) in scripts.into_iter().enumerate() {
            // A script's kind (in, un, ...) is on the trigger conditions pointing at it.
            let sense = indexes
                .iter()
                .zip(&senses)
                .find(|(index, _)| **index as usize == i)
                .and_then(|(_, sense)| SENSES.iter().find(|(bit, _)| sense & bit != 0))
                .map_or("", |(_, suffix)| suffix);
            scriptlets.push(Scriptlet {
                tag: format!("{prefix}{sense}"),
                prog: progs.get(i).cloned().into_iter().collect(),
                body: Some(body),
                flags: flags.get(i).copied().unwrap_or(0),
            });
        }
    }
    Ok(RpmHeader {
        name: required(TAG_NAME, "name")?,
        epoch: h.int32s(TAG_EPOCH)?.first().copied(),
        version: required(TAG_VERSION, "version")?,
        release: required(TAG_RELEASE, "release")?,
        arch: first(TAG_ARCH)?.unwrap_or_default(),
        scriptlets,
    })
}

/// Parses an rpmdb.sqlite header blob.
pub fn parse_db_header(blob: &[u8]) -> Result<RpmHeader, HeaderError> {
    package(&Header::parse(blob, 0)?)
}

/// Whether `file` starts with an rpm package lead.
pub fn is_package_file(file: &File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == LEAD_MAGIC
}

/// Reads the main header of a package file, never its payload.
pub fn read_package_header(file: &File) -> Result<RpmHeader, HeaderError> {
    let (blob, base) = packages::rpmheader::read_package_header(|at, buf| file.read_exact_at(buf, at))?;
    package(&Header::parse(&blob, base)?)
}

/// What identifies a file's content between two reads: device, inode, size, mtime.
type FileStamp = (u64, u64, u64, i64, i64);

fn stamp(file: &File) -> std::io::Result<FileStamp> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

#[derive(Debug, thiserror::Error)]
pub enum RpmDbError {
    #[error("rpmdb {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] rpmdb::RpmDbError),
    #[error("rpmdb: larger than {MAX_RPMDB} bytes")]
    TooLarge,
}

/// Parsed package files and rpmdbs, re-read only when the file changed.
#[derive(Default)]
pub struct HeaderCache {
    packages: HashMap<FileStamp, Rc<RpmHeader>>,
    dbs: HashMap<FileStamp, Rc<Vec<RpmHeader>>>,
}

impl HeaderCache {
    /// Every package file read so far, in a stable order.
    pub fn seen_packages(&self) -> Vec<Rc<RpmHeader>> {
        let mut seen: Vec<_> = self.packages.values().cloned().collect();
        seen.sort_by_key(|h| h.key());
        seen.dedup_by_key(|h| h.key());
        seen
    }

    pub fn package(&mut self, file: &File) -> Result<Rc<RpmHeader>, HeaderError> {
        let key = stamp(file).map_err(|e| HeaderError {
            offset: 0,
            what: format!("fstat: {e}"),
        })?;
        if let Some(h) = self.packages.get(&key) {
            return Ok(h.clone());
        }
        let header = Rc::new(read_package_header(file)?);
        self.packages.insert(key, header.clone());
        Ok(header)
    }

    /// Every package of an rpmdb.sqlite (`file`, opened from the guest). SQLite reads a
    /// private copy, immutable: the guest's own file, its WAL and locks are never touched, and
    /// a symlink the guest planted is never followed from dom0. Committed state only: rpm
    /// checkpoints its WAL when it closes the database, so this is the database as the
    /// current rpm run found it.
    pub fn rpmdb(&mut self, file: &File) -> Result<Rc<Vec<RpmHeader>>, RpmDbError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| RpmDbError::Io { what, source }
        };
        let key = stamp(file).map_err(io("fstat"))?;
        if let Some(db) = self.dbs.get(&key) {
            return Ok(db.clone());
        }
        if key.2 > MAX_RPMDB {
            return Err(RpmDbError::TooLarge);
        }
        let mut copy = tempfile::NamedTempFile::new().map_err(io("temporary copy"))?;
        std::io::copy(&mut file.take(MAX_RPMDB), copy.as_file_mut()).map_err(io("copy"))?;
        let headers = rpmdb::read_sqlite(copy.path(), "rpmdb", parse_db_header)?;
        let db = Rc::new(headers);
        self.dbs.insert(key, db.clone());
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packages::rpmheader::{TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, encode as header};

    fn identity() -> Vec<(u32, u32, u32, &'static [u8])> {
        vec![
            (TAG_NAME, TYPE_STRING, 1, b"demo\0"),
            (TAG_VERSION, TYPE_STRING, 1, b"1.0\0"),
            (TAG_RELEASE, TYPE_STRING, 1, b"2\0"),
            (TAG_ARCH, TYPE_STRING, 1, b"x86_64\0"),
        ]
    }

    #[test]
    fn scriptlets_and_triggers() {
        let mut entries = identity();
        entries.extend([
            (1023, TYPE_STRING, 1, b"echo pre\n\0" as &[u8]),
            (1086, TYPE_STRING_ARRAY, 1, b"/sbin/ldconfig\0"),
            (1025, TYPE_STRING, 1, b"print(1)\0"),
            (1087, TYPE_STRING_ARRAY, 1, b"<lua>\0"),
            (1065, TYPE_STRING_ARRAY, 2, b"echo a\0echo b\0"),
            (1066, TYPE_STRING_ARRAY, 2, b"x\0y\0"),
            (1068, TYPE_INT32, 2, &[0, 1, 0, 0, 0, 2, 0, 0]),
            (1069, TYPE_INT32, 2, &[0, 0, 0, 1, 0, 0, 0, 0]),
            (1092, TYPE_STRING_ARRAY, 2, b"/bin/sh\0/bin/bash\0"),
        ]);
        let h = parse_db_header(&header(&entries)).unwrap();
        assert_eq!(h.nvr(), "demo-1.0-2");
        assert_eq!(h.key(), "0:demo-1.0-2.x86_64");
        let tags: Vec<_> = h.scriptlets.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(tags, ["%pre", "%post", "%preun", "%triggerun", "%triggerin"]);
        assert_eq!(h.scriptlets[0].interpreter(), ["/bin/sh"]);
        assert_eq!(h.scriptlets[1].body, None, "bare -p program");
        assert!(h.scriptlets[2].is_lua());
        assert_eq!(h.scriptlets[4].prog, ["/bin/bash"]);
        assert_eq!(h.scriptlets[4].body.as_deref(), Some("echo b"));
    }

    /// The reader's bounds are tested in `packages::rpmheader`; here, that their errors stop
    /// the package instead of dropping a scriptlet.
    #[test]
    fn bad_entries_fail_the_package() {
        let mut entries = identity();
        entries.push((1065, TYPE_STRING_ARRAY, u32::MAX, b"a\0"));
        assert!(parse_db_header(&header(&entries)).is_err(), "count beyond the data");
        let mut entries = identity();
        entries.push((1068, TYPE_INT32, 3, &[0, 0, 0, 1]));
        assert!(parse_db_header(&header(&entries)).is_err());
        let mut entries = identity();
        entries[0] = (TAG_NAME, TYPE_INT32, 1, &[0, 0, 0, 1]);
        assert!(parse_db_header(&header(&entries)).is_err(), "name of the wrong type");
        let e = parse_db_header(&header(&identity()[1..])).unwrap_err();
        assert!(e.to_string().contains("no name"), "{e}");
        let good = header(&identity());
        assert!(parse_db_header(&good[..good.len() - 1]).is_err(), "truncated");
    }
}
