//! `--refresh`: fresh indices from the repositories the guest is configured for, over HTTP,
//! with the release signature checked against the keys the guest trusts.
//!
//! Signatures are checked by dom0's `gpgv` (OpenPGP in a separate, well-reviewed program)
//! with the guest's keyring files passed as *data*, copied out of the guest tree into a
//! private directory; nothing of the guest is executed.

use std::io::Read;
use std::process::Command;

use base64::Engine;
use packages::apt::{SignedBy, SourceEntry};

use crate::CheckError;
use crate::tree::GuestTree;

const MAX_RELEASE_BYTES: u64 = 64 << 20;
const MAX_KEYRING_BYTES: u64 = 16 << 20;
const MAX_KEYRINGS: usize = 256;

/// GETs `url`; `Ok(None)` for a 404, so callers can try the next name.
pub fn fetch(url: &str, limit: u64) -> Result<Option<Vec<u8>>, CheckError> {
    let err = |what: String| CheckError::Fetch {
        url: url.to_owned(),
        what,
    };
    if !url.starts_with("http://") {
        return Err(err(
            "only http:// sources can be refreshed (the release signature protects them)".into(),
        ));
    }
    match ureq::get(url).call() {
        Ok(mut resp) => {
            let mut body = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(limit + 1)
                .read_to_end(&mut body)
                .map_err(|e| err(format!("reading the body: {e}")))?;
            if body.len() as u64 > limit {
                return Err(err(format!("larger than {limit} bytes")));
            }
            Ok(Some(body))
        }
        Err(ureq::Error::StatusCode(404)) => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// The release file of a source, fetched: `InRelease`, or `Release` with `Release.gpg`.
pub struct SignedRelease {
    /// The signed text (for InRelease, the clearsigned message as fetched).
    pub signed: Vec<u8>,
    pub detached_signature: Option<Vec<u8>>,
    pub url: String,
}

pub fn fetch_release(source: &SourceEntry) -> Result<SignedRelease, CheckError> {
    let url = source.release_uri("InRelease");
    if let Some(signed) = fetch(&url, MAX_RELEASE_BYTES)? {
        return Ok(SignedRelease {
            signed,
            detached_signature: None,
            url,
        });
    }
    let url = source.release_uri("Release");
    let signed = fetch(&url, MAX_RELEASE_BYTES)?.ok_or_else(|| CheckError::Fetch {
        url: url.clone(),
        what: "neither InRelease nor Release exists (404)".into(),
    })?;
    let detached_signature = fetch(&source.release_uri("Release.gpg"), MAX_RELEASE_BYTES)?;
    Ok(SignedRelease {
        signed,
        detached_signature,
        url,
    })
}

/// The keys a source trusts, from the guest: its `signed-by` keyrings (or an embedded key),
/// else apt's global `trusted.gpg` and `trusted.gpg.d/`. Also the fingerprints `signed-by`
/// names instead of files.
pub fn guest_keyrings(tree: &GuestTree, source: &SourceEntry) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut keyrings = Vec::new();
    let mut fingerprints = Vec::new();
    let read = |keyrings: &mut Vec<(String, Vec<u8>)>, path: &str| {
        if let Ok(bytes) = tree.read(path, MAX_KEYRING_BYTES) {
            if keyrings.len() < MAX_KEYRINGS {
                keyrings.push((path.to_owned(), dearmor_or_raw(bytes)));
            }
        }
    };
    match &source.signed_by {
        Some(SignedBy::Inline(key)) => {
            if let Some(bytes) = dearmor(key.as_bytes()) {
                keyrings.push(("Signed-By of ".to_owned() + &source.origin, bytes));
            }
        }
        Some(SignedBy::Keys(items)) => {
            for item in items {
                if item.starts_with('/') {
                    read(&mut keyrings, item);
                } else {
                    fingerprints.push(item.trim_end_matches('!').to_ascii_uppercase());
                }
            }
        }
        None => {}
    }
    if keyrings.is_empty() && !matches!(source.signed_by, Some(SignedBy::Inline(_))) {
        read(&mut keyrings, "/etc/apt/trusted.gpg");
        for name in tree.list("/etc/apt/trusted.gpg.d") {
            if name.ends_with(".gpg") || name.ends_with(".asc") {
                read(&mut keyrings, &format!("/etc/apt/trusted.gpg.d/{name}"));
            }
        }
    }
    (keyrings, fingerprints)
}

/// A key file as gpgv reads it: dearmored when ASCII-armored, else as is.
pub(crate) fn dearmor_or_raw(bytes: Vec<u8>) -> Vec<u8> {
    dearmor(&bytes).unwrap_or(bytes)
}

/// The binary packets of an ASCII-armored key block; `None` if `bytes` is not armored.
fn dearmor(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN PGP"));
    lines.next()?;
    // Armor headers end at the first empty line.
    let body: String = lines
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .take_while(|l| !l.starts_with('=') && !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Verifies a release with dom0's gpgv against the given keyrings. Returns the signing key's
/// fingerprint.
pub fn verify(
    release: &SignedRelease,
    keyrings: &[(String, Vec<u8>)],
    fingerprints: &[String],
) -> Result<String, CheckError> {
    let err = |what: String| CheckError::Signature {
        url: release.url.clone(),
        what,
    };
    if keyrings.is_empty() {
        return Err(err("the guest has none of the keys this source trusts".into()));
    }
    let dir = tempfile::Builder::new()
        .prefix("dormouse-gpgv-")
        .tempdir()
        .map_err(|e| err(format!("creating a private directory for gpgv: {e}")))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
        Ok::<_, CheckError>(path)
    };
    let mut cmd = Command::new("gpgv");
    cmd.arg("--homedir").arg(dir.path()).args(["--status-fd", "1"]);
    for (i, (_, bytes)) in keyrings.iter().enumerate() {
        cmd.arg("--keyring").arg(write(&format!("keyring{i}.gpg"), bytes)?);
    }
    match &release.detached_signature {
        Some(sig) => cmd
            .arg(write("Release.gpg", sig)?)
            .arg(write("Release", &release.signed)?),
        None => cmd.arg(write("InRelease", &release.signed)?),
    };
    let out = cmd
        .output()
        .map_err(|e| err(format!("running gpgv (install Debian's gpgv package): {e}")))?;
    let status = String::from_utf8_lossy(&out.stdout);
    let valid = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .find_map(|rest| {
            let words: Vec<&str> = rest.split_ascii_whitespace().collect();
            let (signing, primary) = (*words.first()?, *words.last()?);
            let wanted = fingerprints.is_empty()
                || fingerprints
                    .iter()
                    .any(|f| signing.ends_with(f.as_str()) || primary.ends_with(f.as_str()));
            wanted.then(|| primary.to_owned())
        });
    match (out.status.success(), valid) {
        (true, Some(fpr)) => Ok(fpr),
        (true, None) => Err(err(format!(
            "signed by a key other than the fingerprints signed-by names ({})",
            fingerprints.join(", ")
        ))),
        (false, _) => Err(err(format!(
            "gpgv refused the signature with the guest's keyrings ({}): {}",
            keyrings.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
