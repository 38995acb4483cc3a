//! What the tracer records of each intercepted maintainer script: enough to run it later,
//! inside the guest, exactly as the package manager would have.

use serde::{Deserialize, Serialize};

/// Which package manager ran the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Dpkg,
    Rpm,
}

pub use bundle::manifest::{Phase, ScriptType};

/// One intercepted maintainer-script execution, turned into a successful no-op in dom0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRecord {
    /// Order of execution in the run, from 0.
    pub seq: u64,
    pub manager: Manager,
    pub phase: Phase,
    #[serde(rename = "type")]
    pub script_type: ScriptType,
    /// The package (`DPKG_MAINTSCRIPT_PACKAGE`, or rpm's name-version-release).
    pub package: String,
    /// `DPKG_MAINTSCRIPT_ARCH` when dpkg sets it.
    pub arch: Option<String>,
    /// `postinst triggered <triggers>`: the argv says so; recorded for the figures.
    pub triggered: bool,
    /// rpm's scriptlet tag as a spec names it (`%post`, `%posttrans`, `%triggerin`, ...); the
    /// only name of an `ScriptType::Other` scriptlet. `None` for dpkg, and for an rpm temp-file
    /// exec no header explained.
    pub rpm_tag: Option<String>,
    /// The script file inside the guest (`/var/lib/dpkg/info/x.postinst`,
    /// `/var/lib/dpkg/tmp.ci/preinst`, rpm's `/var/tmp/rpm-tmp.Ab12Cd`, which argv passes to the
    /// interpreter); for a bare `%post -p <program>`, the program (and `bytes` is empty).
    pub path: String,
    /// The whole argv as executed (argv[0] first).
    pub argv: Vec<String>,
    /// The environment variables the script depends on: every `DPKG_*` and `RPM_*`/`LANG`/`PATH`
    /// the package manager set, as `KEY=VALUE`, in the order found.
    pub env: Vec<String>,
    /// The script's bytes when it was executed (dpkg deletes `tmp.ci/` right after).
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, hex.
    pub sha256: String,
}

/// An rpm `<lua>` scriptlet: it runs inside rpm (or dnf, ...), so it cannot be intercepted at
/// exec and ran in the sandbox; reported so the guest side knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuaScriptlet {
    /// name-version-release.
    pub package: String,
    pub arch: String,
    /// `%pre`, `%post`, `%preun`, `%postun`, `%pretrans` or `%posttrans`.
    pub tag: String,
}
