//! rpm's package database. rpm ≥ 4.16 keeps it in SQLite (`/var/lib/rpm/rpmdb.sqlite`,
//! table `Packages`, one header blob per package); the older BerkeleyDB `Packages` and the
//! NDB `Packages.db` formats have no pure-Rust reader and are reported as unsupported.

use std::path::Path;

use serde::Serialize;

use crate::rpmheader::{Header, HeaderError, TAG_ARCH, TAG_EPOCH, TAG_NAME, TAG_RELEASE, TAG_VERSION};
use crate::rpmversion;

/// More packages than any real database holds.
pub const MAX_PACKAGES: usize = 200_000;

/// Bound on the expanded file list of one header, as a multiple of the header's size. The
/// header stores each path as a shared directory plus a basename, so a crafted one pointing a
/// million basenames at one long directory would expand to terabytes. A real header also
/// stores a digest, size, mode, owner and flags per file, which outweigh the path: its
/// expanded list is smaller than the header itself.
const MAX_FILES_EXPANSION: usize = 4;

const TAG_LICENSE: u32 = 1014;
const TAG_SOURCERPM: u32 = 1044;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;

#[derive(Debug, thiserror::Error)]
pub enum RpmDbError {
    #[error("{path}: {source} (is it an rpm ≥ 4.16 rpmdb.sqlite?)")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("{path}: header {hnum}: {source}")]
    Header {
        path: String,
        hnum: i64,
        source: HeaderError,
    },
    #[error("{path}: more than {MAX_PACKAGES} packages")]
    TooMany { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpmPackage {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// Absolute paths of the files the package owns.
    pub files: Vec<String>,
    /// The source rpm it was built from (`SOURCERPM`, e.g. `curl-8.6.0-1.fc40.src.rpm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourcerpm: Option<String>,
    /// The package's `License` tag, as the packager wrote it (not always an SPDX expression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

impl RpmPackage {
    /// `[epoch:]version-release`, as rpm compares it.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }

    pub fn cmp_evr(&self, other: &Self) -> std::cmp::Ordering {
        rpmversion::compare_evr(&self.evr(), &other.evr())
    }
}

/// An installed package from one header blob as the SQLite backend stores it.
pub fn parse_header(blob: &[u8]) -> Result<RpmPackage, HeaderError> {
    let h = Header::parse(blob, 0)?;
    let required = |tag, what| {
        h.string(tag)?
            .ok_or_else(|| h.error(tag, format!("header without a {what}")))
    };
    let basenames = h.string_array(TAG_BASENAMES)?;
    let dirnames = h.string_array(TAG_DIRNAMES)?;
    let dirindexes = h.int32s(TAG_DIRINDEXES)?;
    if !dirindexes.is_empty() && dirindexes.len() != basenames.len() {
        return Err(h.error(TAG_DIRINDEXES, "dirindexes do not match basenames"));
    }
    let max_files_bytes = blob.len().saturating_mul(MAX_FILES_EXPANSION);
    let mut files_bytes = 0usize;
    let files = dirindexes
        .iter()
        .zip(&basenames)
        .map(|(&index, base)| {
            let dir = dirnames
                .get(index as usize)
                .ok_or_else(|| h.error(TAG_DIRINDEXES, format!("dirindex {index} names no directory")))?;
            files_bytes = files_bytes.saturating_add(dir.len() + base.len());
            if files_bytes > max_files_bytes {
                return Err(h.error(
                    TAG_BASENAMES,
                    format!(
                        "the file list expands beyond {max_files_bytes} bytes ({MAX_FILES_EXPANSION} times the \
                         {}-byte header)",
                        blob.len()
                    ),
                ));
            }
            Ok(format!("{dir}{base}"))
        })
        .collect::<Result<_, HeaderError>>()?;
    Ok(RpmPackage {
        name: required(TAG_NAME, "name")?,
        epoch: h.int32s(TAG_EPOCH)?.first().copied(),
        version: required(TAG_VERSION, "version")?,
        release: required(TAG_RELEASE, "release")?,
        // gpg-pubkey pseudo-packages have no arch.
        arch: h.string(TAG_ARCH)?.unwrap_or_default(),
        files,
        // Descriptive only: a malformed entry leaves it unknown rather than failing the
        // whole database.
        sourcerpm: h.strings(TAG_SOURCERPM).ok().and_then(|v| v.into_iter().next()),
        license: h.strings(TAG_LICENSE).ok().and_then(|v| v.into_iter().next()),
    })
}

/// Reads every header of an `rpmdb.sqlite` through `parse`, opened read-only and immutable
/// (nothing is written next to it, no journal is replayed). `shown_as` names the database in
/// errors: the guest's path when `path` is a private copy.
pub fn read_sqlite<T>(
    path: &Path,
    shown_as: &str,
    parse: impl Fn(&[u8]) -> Result<T, HeaderError>,
) -> Result<Vec<T>, RpmDbError> {
    let name = path.display().to_string();
    let sql = |source| RpmDbError::Sqlite {
        path: shown_as.to_owned(),
        source,
    };
    let uri = format!(
        "file:{}?immutable=1",
        name.replace('%', "%25").replace('?', "%3f").replace('#', "%23")
    );
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(sql)?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        if out.len() >= MAX_PACKAGES {
            return Err(RpmDbError::TooMany {
                path: shown_as.to_owned(),
            });
        }
        let hnum: i64 = row.get(0).map_err(sql)?;
        let blob: Vec<u8> = row.get(1).map_err(sql)?;
        out.push(parse(&blob).map_err(|source| RpmDbError::Header {
            path: shown_as.to_owned(),
            hnum,
            source,
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpmheader::{TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, encode};

    /// Name, version and release of a package, then `more` entries.
    fn bash(more: &[(u32, u32, u32, &[u8])]) -> Vec<u8> {
        let mut entries: Vec<(u32, u32, u32, &[u8])> = [TAG_NAME, TAG_VERSION, TAG_RELEASE]
            .into_iter()
            .zip([&b"bash\0"[..], b"5.2.15\0", b"2.fc38\0"])
            .map(|(tag, value)| (tag, TYPE_STRING, 1, value))
            .collect();
        entries.extend_from_slice(more);
        encode(&entries)
    }

    #[test]
    fn installed_package_fields() {
        let pkg = parse_header(&bash(&[
            (TAG_EPOCH, TYPE_INT32, 1, &[0, 0, 0, 1]),
            (TAG_ARCH, TYPE_STRING, 1, b"x86_64\0"),
            (TAG_BASENAMES, TYPE_STRING_ARRAY, 3, b"bash\0sh\0bash.1.gz\0"),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 2, b"/usr/bin/\0/usr/share/man/man1/\0"),
            (TAG_DIRINDEXES, TYPE_INT32, 3, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ]))
        .unwrap();
        assert_eq!(pkg.name, "bash");
        assert_eq!(pkg.evr(), "1:5.2.15-2.fc38");
        assert_eq!(pkg.arch, "x86_64");
        assert_eq!(
            pkg.files,
            ["/usr/bin/bash", "/usr/bin/sh", "/usr/share/man/man1/bash.1.gz"]
        );
        let gpg_pubkey = parse_header(&bash(&[])).unwrap();
        assert_eq!((gpg_pubkey.epoch, gpg_pubkey.arch.as_str()), (None, ""));
        assert!(gpg_pubkey.files.is_empty());
    }

    #[test]
    fn inconsistent_headers_are_errors() {
        let bad_index = bash(&[
            (TAG_BASENAMES, TYPE_STRING_ARRAY, 1, b"bash\0"),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, b"/usr/bin/\0"),
            (TAG_DIRINDEXES, TYPE_INT32, 1, &[0, 0, 0, 5]),
        ]);
        let e = parse_header(&bad_index).unwrap_err();
        assert!(e.to_string().contains("names no directory"), "{e}");
        let short_index = bash(&[
            (TAG_BASENAMES, TYPE_STRING_ARRAY, 2, b"a\0b\0"),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, b"/\0"),
            (TAG_DIRINDEXES, TYPE_INT32, 1, &[0, 0, 0, 0]),
        ]);
        assert!(parse_header(&short_index).is_err());
        let no_release = encode(&[
            (TAG_NAME, TYPE_STRING, 1, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, 1, b"5.2.15\0"),
        ]);
        let e = parse_header(&no_release).unwrap_err();
        assert!(e.to_string().contains("without a release"), "{e}");
        let array_name = encode(&[(TAG_NAME, TYPE_STRING_ARRAY, 1, b"bash\0")]);
        let e = parse_header(&array_name).unwrap_err();
        assert!(e.to_string().contains("tag 1000"), "name of the wrong type: {e}");
    }

    #[test]
    fn file_list_expansion_is_bounded_by_the_header_size() {
        // 20k empty basenames in one 4 KiB directory: a 100 KB header, 80 MB of paths.
        let count = 20_000;
        let dir = format!("/{}/\0", "d".repeat(4094));
        let basenames = vec![0u8; count];
        let dirindexes = vec![0u8; 4 * count];
        let blob = bash(&[
            (TAG_BASENAMES, TYPE_STRING_ARRAY, count as u32, &basenames),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, dir.as_bytes()),
            (TAG_DIRINDEXES, TYPE_INT32, count as u32, &dirindexes),
        ]);
        let e = parse_header(&blob).unwrap_err();
        assert!(e.to_string().contains("tag 1117: the file list expands beyond"), "{e}");
    }
}
