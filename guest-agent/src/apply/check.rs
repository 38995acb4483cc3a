//! Step 2: is this the guest the bundle was made for (identity), and is every path it touches
//! as it was when the bundle was made (base fingerprints)?

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};

use anyhow::Result;
use bundle::manifest::{BaseType, Manifest};
use sha2::{Digest, Sha256};

use super::IdentityCheck;
use crate::fs::{Kind, Root, hex};

fn host_file(path: &str) -> Option<String> {
    let mut text = String::new();
    File::open(path).ok()?.take(4096).read_to_string(&mut text).ok()?;
    Some(text.trim().to_owned())
}

fn uname() -> Option<(String, String)> {
    // SAFETY: an all-zero utsname is valid, and uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some((field(&uts.release), field(&uts.nodename)))
}

/// Step 2a: is this the guest the bundle was made for?
pub(super) fn identity(manifest: &Manifest, root_mode: bool) -> Result<Vec<IdentityCheck>> {
    let guest = &manifest.guest;
    let compare = |what: &'static str, have: Option<String>, want: Option<&str>, skip: &str| {
        let (status, detail) = match (have, want) {
            (_, None) => ("skipped", format!("{what}: the bundle records none")),
            (None, Some(_)) => ("skipped", format!("{what}: {skip}")),
            (Some(h), Some(w)) if h == w => ("ok", format!("{what} {h}")),
            (Some(h), Some(w)) => ("mismatch", format!("{what} is {h}, the bundle was made for {w}")),
        };
        IdentityCheck { what, status, detail }
    };
    let mut checks = Vec::new();
    if root_mode {
        let why = "skipped with --root: the running kernel is not the target's";
        checks.push(compare("boot_id", None, guest.boot_id.as_deref(), why));
        checks.push(compare("kernel release", None, Some(&guest.kernel_release), why));
        checks.push(compare("domain UUID", None, guest.domain_uuid.as_deref(), why));
        // /etc/hostname need not be the name the kernel had (DHCP, transient names).
        checks.push(compare("hostname", None, Some(&guest.hostname), why));
    } else {
        let uts = uname();
        checks.push(compare(
            "boot_id",
            host_file("/proc/sys/kernel/random/boot_id"),
            guest.boot_id.as_deref(),
            "/proc/sys/kernel/random/boot_id is not readable",
        ));
        checks.push(compare(
            "kernel release",
            uts.as_ref().map(|u| u.0.clone()),
            Some(&guest.kernel_release),
            "uname failed",
        ));
        checks.push(compare(
            "domain UUID",
            host_file("/sys/hypervisor/uuid"),
            guest.domain_uuid.as_deref(),
            "/sys/hypervisor/uuid is not readable (not a Xen guest, or no xenfs)",
        ));
        checks.push(compare(
            "hostname",
            uts.map(|u| u.1),
            Some(&guest.hostname),
            "uname failed",
        ));
    }
    Ok(checks)
}

fn sha256_of(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Step 2b: every path the bundle replaces or removes is what it was when the bundle was
/// made, and every path it adds is free.
pub(super) fn base_conflicts(root: &Root, manifest: &Manifest) -> Result<Vec<String>> {
    let mut conflicts = Vec::new();
    let mut based = HashSet::new();
    for base in &manifest.base {
        based.insert(base.path.as_str());
        let at = match root.at_if_parent(&base.path) {
            Ok(Some(at)) => at,
            Ok(None) => {
                conflicts.push(format!("{}: missing (its directory is gone)", base.path));
                continue;
            }
            Err(e) => {
                conflicts.push(format!("{}: {e}", base.path));
                continue;
            }
        };
        let Some(meta) = at.meta()? else {
            conflicts.push(format!("{}: missing", base.path));
            continue;
        };
        let want = match base.base_type {
            BaseType::File => Kind::File,
            BaseType::Dir => Kind::Dir,
            BaseType::Symlink => Kind::Symlink,
            BaseType::Other => meta.kind,
        };
        if meta.kind != want
            || (base.base_type == BaseType::Other && matches!(meta.kind, Kind::File | Kind::Dir | Kind::Symlink))
        {
            conflicts.push(format!(
                "{}: a {:?} where the bundle expects a {:?}",
                base.path, meta.kind, base.base_type
            ));
            continue;
        }
        let actual = match meta.kind {
            Kind::File => Some(sha256_of(at.open(libc::O_RDONLY, 0)?)?),
            Kind::Symlink => {
                let target = meta.link.unwrap_or_default();
                Some((target.len() as u64, hex(&Sha256::digest(target.as_bytes()))))
            }
            _ => None,
        };
        if let (Some((size, digest)), Some(want)) = (&actual, &base.sha256) {
            if *size != base.size || digest != want {
                conflicts.push(format!(
                    "{}: changed since the bundle was made ({size} bytes, SHA-256 {digest}; the bundle expects {} bytes, {want})",
                    base.path, base.size
                ));
            }
        }
    }
    for entry in manifest.files.iter().filter(|e| !based.contains(e.path.as_str())) {
        match root.lstat(&entry.path) {
            Ok(None) => {}
            Ok(Some(meta)) => conflicts.push(format!(
                "{}: a {:?} exists where the bundle adds a new entry",
                entry.path, meta.kind
            )),
            Err(e) => conflicts.push(format!("{}: {e}", entry.path)),
        }
    }
    Ok(conflicts)
}
