//! `manifest.json`, the first member of a bundle: what the bundle changes and on which guest.
//! Plain serde structs, read by the guest agent; every list is sorted or in apply order.

use serde::{Deserialize, Serialize};

/// The manifest's `schema`; a reader refuses any other.
pub const SCHEMA: &str = "dormouse.bundle/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub bundle_id: String,
    /// Seconds since the epoch.
    pub created_unix: u64,
    pub dormouse_version: String,
    pub guest: GuestIdentity,
    /// The emulated command.
    pub command: Vec<String>,
    pub packages: Vec<PackageChange>,
    /// Maintainer scripts in execution order.
    pub scripts: Vec<Script>,
    /// Guest paths to remove (a directory with everything under it), sorted.
    pub removals: Vec<String>,
    /// Directories whose guest contents are replaced by exactly the bundle's entries below
    /// them, sorted.
    pub opaque_dirs: Vec<String>,
    /// What the guest had at every path the bundle changes or removes, sorted by path.
    pub base: Vec<BaseFingerprint>,
    /// The `files/` members, in archive order, with the digests of regular files.
    pub files: Vec<PayloadEntry>,
    /// What was deliberately left out of the bundle.
    pub excluded: Vec<Excluded>,
}

/// The guest the bundle was made for; the agent refuses another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestIdentity {
    pub domain_name: Option<String>,
    pub domain_uuid: Option<String>,
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id` of the suspended kernel.
    pub boot_id: Option<String>,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageChange {
    /// `dpkg` or `rpm`.
    pub manager: String,
    pub name: String,
    pub arch: String,
    /// `None`: newly installed.
    pub old_version: Option<String>,
    /// `None`: removed.
    pub new_version: Option<String>,
}

/// Whether a script runs before the files are replaced (`pre`) or after (`post`), in the
/// guest agent's apply: preinst and prerm are `pre`; postinst (incl. triggers) and postrm are
/// `post`. The one type for the tracer's records and the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pre,
    Post,
}

/// A maintainer script's role. dpkg: `preinst`, `postinst` (also `postinst triggered ...`),
/// `prerm`, `postrm`; rpm scriptlets map onto the same four (`%pre`, `%post`, `%preun`,
/// `%postun`) plus the trigger and transaction scriptlets, named as rpm names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptType {
    Preinst,
    Postinst,
    Prerm,
    Postrm,
    /// rpm's other scriptlets (`%pretrans`, `%triggerin`, ...), named in `rpm_tag`.
    Other,
}

impl ScriptType {
    pub fn phase(self) -> Phase {
        match self {
            ScriptType::Preinst | ScriptType::Prerm => Phase::Pre,
            ScriptType::Postinst | ScriptType::Postrm | ScriptType::Other => Phase::Post,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScriptType::Preinst => "preinst",
            ScriptType::Postinst => "postinst",
            ScriptType::Prerm => "prerm",
            ScriptType::Postrm => "postrm",
            ScriptType::Other => "other",
        }
    }
}

/// One maintainer script to run in the guest, exactly as the package manager ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub seq: u64,
    pub phase: Phase,
    /// `dpkg` or `rpm`.
    pub manager: String,
    pub package: String,
    pub arch: Option<String>,
    #[serde(rename = "type")]
    pub script_type: ScriptType,
    /// `postinst triggered ...`.
    pub triggered: bool,
    pub rpm_tag: Option<String>,
    /// Where the package manager executed it, in the guest.
    pub path: String,
    pub argv: Vec<String>,
    /// `KEY=VALUE`, in the order the package manager set them.
    pub env: Vec<String>,
    /// Its member (`scripts/...`).
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Hardlink,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One `files/` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadEntry {
    /// Absolute guest path.
    pub path: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Regular files: bytes; 0 otherwise.
    pub size: u64,
    /// Regular files: SHA-256 of the bytes.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseFingerprint {
    pub path: String,
    #[serde(rename = "type")]
    pub base_type: BaseType,
    /// File: size; symlink: target length; otherwise 0.
    pub size: u64,
    /// File: SHA-256 of its bytes; symlink: of its target.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    pub path: String,
    pub pattern: String,
    /// The emulation removed it; the removal is not carried.
    pub removal: bool,
    pub entries: u64,
    pub bytes: u64,
}
