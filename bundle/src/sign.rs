//! Ed25519 signatures in minisign's formats, so a bundle verifies with the standard tool too:
//! `minisign -Vm B.dmb -p KEY.pub` (the signature is `B.dmb.minisig`).
//!
//! - public key: `untrusted comment:` line, then base64 of `Ed` ‖ key id (8) ‖ public key (32);
//! - signature: `untrusted comment:` line, base64 of `ED` ‖ key id ‖ Ed25519 signature of the
//!   file's BLAKE2b-512 digest; `trusted comment:` line; base64 of the signature of (the first
//!   signature ‖ the trusted comment), which minisign also checks;
//! - secret key: minisign's layout with the "no KDF" marker (`minisign -G -W` writes the same),
//!   i.e. unencrypted: `Ed` ‖ `\0\0` ‖ `B2` ‖ salt and scrypt limits (zero) ‖ key id ‖
//!   seed ‖ public key ‖ BLAKE2b-256 checksum. Protect it with file permissions (dormouse
//!   writes it 0600).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::BundleError;

const UNTRUSTED: &str = "untrusted comment: ";
const TRUSTED: &str = "trusted comment: ";
/// minisign's `COMMENTMAXBYTES` and `TRUSTEDCOMMENTMAXBYTES`.
const COMMENT_MAX: usize = 1024;
const TRUSTED_COMMENT_MAX: usize = 8192;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;

/// The signature file of a bundle: `B.dmb.minisig`.
pub fn signature_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

fn key_error(path: &Path, detail: impl Into<String>) -> BundleError {
    BundleError::Key {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

fn sig_error(path: &Path, detail: impl Into<String>) -> BundleError {
    BundleError::Signature {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// The comment line and the decoded base64 line of a minisign file.
fn two_lines<'a>(
    text: &'a str,
    path: &Path,
    err: fn(&Path, String) -> BundleError,
) -> Result<(&'a str, Vec<u8>), BundleError> {
    let mut lines = text.lines();
    let comment = lines
        .next()
        .and_then(|l| l.strip_prefix(UNTRUSTED))
        .filter(|c| c.len() <= COMMENT_MAX)
        .ok_or_else(|| err(path, "the first line is not an `untrusted comment:` line".into()))?;
    let data = lines
        .next()
        .ok_or_else(|| err(path, "no base64 line after the comment".into()))?;
    let bytes = STANDARD
        .decode(data.trim())
        .map_err(|e| err(path, format!("the second line is not base64: {e}")))?;
    Ok((comment, bytes))
}

/// A verifying key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: [u8; 8],
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str, path: &Path) -> Result<PublicKey, BundleError> {
        let (_, bytes) = two_lines(text, path, key_error_owned)?;
        if bytes.len() != 42 || &bytes[..2] != b"Ed" {
            return Err(key_error(path, "not a minisign Ed25519 public key"));
        }
        let key_id: [u8; 8] = bytes[2..10].try_into().map_err(|_| key_error(path, "short key id"))?;
        let raw: [u8; 32] = bytes[10..42].try_into().map_err(|_| key_error(path, "short key"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| key_error(path, format!("invalid Ed25519 key: {e}")))?;
        Ok(PublicKey { key_id, key })
    }

    pub fn read(path: &Path) -> Result<PublicKey, BundleError> {
        let text = read_small(path, key_error_owned)?;
        PublicKey::parse(&text, path)
    }

    /// The key id as minisign prints it (hex of the little-endian number).
    pub fn key_id_hex(&self) -> String {
        format!("{:016X}", u64::from_le_bytes(self.key_id))
    }

    /// The `.pub` file's text.
    pub fn to_file_text(&self) -> String {
        let mut bytes = b"Ed".to_vec();
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "{UNTRUSTED}minisign public key {}\n{}\n",
            self.key_id_hex(),
            STANDARD.encode(bytes)
        )
    }

    /// Checks `file` against its minisign signature text; returns the trusted comment.
    pub fn verify_file(&self, file: &Path, signature_text: &str, sig_path: &Path) -> Result<String, BundleError> {
        let (_, sig) = two_lines(signature_text, sig_path, sig_error_owned)?;
        let mut lines = signature_text.lines().skip(2);
        if sig.len() != 74 {
            return Err(sig_error(sig_path, "not a minisign signature"));
        }
        match &sig[..2] {
            b"ED" => {}
            b"Ed" => {
                return Err(sig_error(
                    sig_path,
                    "legacy (non-prehashed) signature; dormouse only accepts prehashed ones",
                ));
            }
            _ => return Err(sig_error(sig_path, "unknown signature algorithm")),
        }
        if sig[2..10] != self.key_id {
            return Err(sig_error(
                sig_path,
                format!(
                    "signed with key {:016X}, not with the given key {}",
                    u64::from_le_bytes(sig[2..10].try_into().unwrap_or_default()),
                    self.key_id_hex()
                ),
            ));
        }
        let signature = Signature::from_slice(&sig[10..74]).map_err(|e| sig_error(sig_path, e.to_string()))?;
        let trusted = lines
            .next()
            .and_then(|l| l.strip_prefix(TRUSTED))
            .filter(|c| c.len() <= TRUSTED_COMMENT_MAX)
            .ok_or_else(|| sig_error(sig_path, "no `trusted comment:` line"))?;
        let global = lines
            .next()
            .and_then(|l| STANDARD.decode(l.trim()).ok())
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| sig_error(sig_path, "no valid global signature line"))?;
        let digest = blake2b512_file(file)?;
        self.key
            .verify_strict(&digest, &signature)
            .map_err(|_| sig_error(sig_path, format!("{} does not match its signature", file.display())))?;
        let mut signed = sig[10..74].to_vec();
        signed.extend_from_slice(trusted.as_bytes());
        self.key
            .verify_strict(&signed, &global)
            .map_err(|_| sig_error(sig_path, "the trusted comment does not match its signature"))?;
        Ok(trusted.to_owned())
    }
}

fn key_error_owned(path: &Path, detail: String) -> BundleError {
    key_error(path, detail)
}

fn sig_error_owned(path: &Path, detail: String) -> BundleError {
    sig_error(path, detail)
}

/// Key and signature files are a few hundred bytes; refuse to read anything large.
fn read_small(path: &Path, err: fn(&Path, String) -> BundleError) -> Result<String, BundleError> {
    let file = File::open(path).map_err(|e| err(path, e.to_string()))?;
    let mut text = String::new();
    file.take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| err(path, e.to_string()))?;
    Ok(text)
}

/// Reads a signature file (`B.dmb.minisig`).
pub fn read_signature(path: &Path) -> Result<String, BundleError> {
    read_small(path, sig_error_owned)
}

fn blake2b512_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    let mut file = File::open(path).map_err(|source| BundleError::Io {
        what: "opening",
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Blake2b512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|source| BundleError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

/// A signing key.
pub struct SecretKey {
    pub key_id: [u8; 8],
    key: SigningKey,
}

impl SecretKey {
    /// A key from 32 random seed bytes and 8 random key-id bytes.
    pub fn from_seed(seed: [u8; 32], key_id: [u8; 8]) -> SecretKey {
        SecretKey {
            key_id,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    fn checksum(&self) -> [u8; 32] {
        let mut hasher = Blake2b::<U32>::new();
        hasher.update(b"Ed");
        hasher.update(self.key_id);
        hasher.update(self.key.to_keypair_bytes());
        hasher.finalize().into()
    }

    /// The `.key` file's text.
    pub fn to_file_text(&self) -> String {
        let mut bytes = Vec::with_capacity(SECRET_KEY_LEN);
        bytes.extend_from_slice(b"Ed\0\0B2");
        bytes.extend_from_slice(&[0u8; 32 + 8 + 8]);
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(&self.key.to_keypair_bytes());
        bytes.extend_from_slice(&self.checksum());
        format!(
            "{UNTRUSTED}minisign secret key {} (unencrypted)\n{}\n",
            self.public().key_id_hex(),
            STANDARD.encode(bytes)
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<SecretKey, BundleError> {
        let (_, bytes) = two_lines(text, path, key_error_owned)?;
        if bytes.len() != SECRET_KEY_LEN || &bytes[..2] != b"Ed" || &bytes[4..6] != b"B2" {
            return Err(key_error(path, "not a minisign Ed25519 secret key"));
        }
        if &bytes[2..4] != b"\0\0" {
            return Err(key_error(
                path,
                "the key is encrypted (minisign's default); dormouse reads unencrypted keys: make one with `dormouse keygen` or `minisign -G -W`",
            ));
        }
        let at = 54;
        let key_id: [u8; 8] = bytes[at..at + 8]
            .try_into()
            .map_err(|_| key_error(path, "short key id"))?;
        let pair: [u8; 64] = bytes[at + 8..at + 72]
            .try_into()
            .map_err(|_| key_error(path, "short key"))?;
        let key = SigningKey::from_keypair_bytes(&pair)
            .map_err(|_| key_error(path, "the public half does not belong to the secret half"))?;
        let secret = SecretKey { key_id, key };
        let stored = &bytes[at + 72..at + 104];
        // `minisign -G -W` leaves the checksum zero (it only computes it when encrypting).
        if stored.iter().any(|&b| b != 0) && stored != secret.checksum() {
            return Err(key_error(path, "checksum mismatch: the key file is damaged"));
        }
        Ok(secret)
    }

    pub fn read(path: &Path) -> Result<SecretKey, BundleError> {
        let text = read_small(path, key_error_owned)?;
        SecretKey::parse(&text, path)
    }

    /// The minisign signature text of `file` (prehashed), with `trusted_comment` signed too.
    pub fn sign_file(&self, file: &Path, trusted_comment: &str) -> Result<String, BundleError> {
        if trusted_comment.contains(['\n', '\r']) || trusted_comment.len() > TRUSTED_COMMENT_MAX {
            return Err(sig_error(
                file,
                "the trusted comment must be one line of at most 8192 bytes",
            ));
        }
        let digest = blake2b512_file(file)?;
        let signature = self.key.sign(&digest).to_bytes();
        let mut sig = b"ED".to_vec();
        sig.extend_from_slice(&self.key_id);
        sig.extend_from_slice(&signature);
        let mut signed = signature.to_vec();
        signed.extend_from_slice(trusted_comment.as_bytes());
        let global = self.key.sign(&signed).to_bytes();
        Ok(format!(
            "{UNTRUSTED}signature from dormouse secret key {}\n{}\n{TRUSTED}{trusted_comment}\n{}\n",
            self.public().key_id_hex(),
            STANDARD.encode(sig),
            STANDARD.encode(global)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"bundle bytes").unwrap();
        let key = SecretKey::from_seed([7; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let parsed = SecretKey::parse(&key.to_file_text(), &file).unwrap();
        let public = PublicKey::parse(&parsed.public().to_file_text(), &file).unwrap();
        assert_eq!(public, key.public());
        let sig = parsed.sign_file(&file, "timestamp:1\tfile:f\thashed").unwrap();
        let sig_path = dir.path().join("f.minisig");
        assert_eq!(
            public.verify_file(&file, &sig, &sig_path).unwrap(),
            "timestamp:1\tfile:f\thashed"
        );
        std::fs::write(&file, b"bundle bytez").unwrap();
        assert!(public.verify_file(&file, &sig, &sig_path).is_err());
        std::fs::write(&file, b"bundle bytes").unwrap();
        let forged = sig.replace("timestamp:1", "timestamp:2");
        assert!(public.verify_file(&file, &forged, &sig_path).is_err());
        let other = SecretKey::from_seed([8; 32], [9; 8]).public();
        assert!(other.verify_file(&file, &sig, &sig_path).is_err());
    }
}
