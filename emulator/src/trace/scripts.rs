//! Which execs are maintainer scripts (facts: ../shared/specs/package-scripts.md).
//!
//! dpkg runs `<admindir>/info/<package>[:<arch>].<type>` for installed packages and
//! `<admindir>/tmp.ci/<type>` for the package being unpacked (its control area, extracted
//! there just before), with `DPKG_MAINTSCRIPT_PACKAGE`, `DPKG_MAINTSCRIPT_ARCH`,
//! `DPKG_MAINTSCRIPT_NAME` and `DPKG_ADMINDIR` in the environment. Any exec of such a path is a
//! maintainer script, whoever runs it.
//!
//! debconf's `config` scripts (`/var/cache/debconf/tmp.ci/<pkg>.config`, run by
//! dpkg-preconfigure before dpkg, and again by the postinst through confmodule) are *not*
//! intercepted: they only ask questions and store the answers in debconf's database under
//! /var/cache/debconf, which the upper layer captures; with `DEBIAN_FRONTEND=noninteractive`
//! they take the defaults. Running them in the sandbox keeps those answers, which the
//! postinst reads when it runs in the guest; deferring them would lose nothing either (the
//! postinst re-runs `config`), but the offline run would then prompt-less differ from what the
//! guest's own preconfiguration stored.
//!
//! rpm (4.18, `lib/rpmscript.c`) writes a scriptlet's body to `%{_tmppath}/rpm-tmp.XXXXXX`
//! (/var/tmp) and, from a child forked by librpm (rpm itself, or dnf/yum/zypper in-process),
//! `execv`s `<interpreter...> <tempfile> [$1 [$2]]` — interpreter `/bin/sh` or the `-p`
//! program; a bare `-p <program>` without body is exec'd alone, no temp file, no `$1`.
//! Nothing in argv or the environment names the package or the scriptlet, so they are found
//! in the headers the exec'ing process has at hand, by content: the package files it has
//! open (the element being installed; rpm's callback opens it for the element's whole run)
//! first, then its open `rpmdb.sqlite` (installed packages: `%preun`/`%postun` of erased and
//! upgraded-away packages, triggers), then every package file seen earlier in the run (a
//! trigger of a package added earlier in the same transaction, not yet committed to the
//! database). A scriptlet matches when its interpreter is the exec's
//! argv before the temp file and its body is the temp file's bytes (or, bare `-p`, when its
//! program is the whole argv). Identical scriptlets in several packages (typically
//! `-p /sbin/ldconfig`) leave the package ambiguous: the first is recorded and a warning names
//! all; what runs in the guest (interpreter, bytes, `$1`/`$2`) is the same whichever it was.
//! An exec of a temp file that no header explains is still intercepted, as `(unknown)`.
//!
//! `<lua>` scriptlets run inside rpm, never exec'd: they cannot be stopped at the syscall
//! layer. They are reported instead: every exec of an rpm front-end (rpm, dnf, yum, ...)
//! snapshots the rpmdb, and when that process exits the packages it added (their
//! `%pretrans`/`%pre`/`%post`/`%posttrans`) and removed (`%preun`/`%postun`) are checked for
//! `<lua>` scriptlets. Lua triggers fired in other packages are not seen.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;

use nix::unistd::Pid;

use super::record::{LuaScriptlet, Manager, ScriptType};
use super::rpm::{HeaderCache, RpmHeader, Scriptlet};

/// An exec at its seccomp stop: the process is still the image that calls execve.
pub struct Exec<'a> {
    pub pid: Pid,
    /// The absolute, normalized guest path being executed.
    pub path: &'a str,
    pub argv: &'a [String],
    pub env: &'a [String],
}

/// A maintainer-script exec, identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptIdentity {
    pub manager: Manager,
    pub script_type: ScriptType,
    pub package: String,
    pub arch: Option<String>,
    pub triggered: bool,
    pub rpm_tag: Option<String>,
    /// The script file inside the guest.
    pub script_path: String,
    /// The environment entries recorded with it.
    pub env: Vec<String>,
    /// The script's bytes when the classifier already read them (rpm); otherwise the tracer
    /// reads `script_path`.
    pub bytes: Option<Vec<u8>>,
    /// Something the report should say about this identification (an ambiguous package).
    pub note: Option<String>,
}

const DEFAULT_ADMINDIR: &str = "/var/lib/dpkg";

pub fn classify(exec: &Exec<'_>, rpm: &mut RpmTracker) -> Option<ScriptIdentity> {
    classify_dpkg(exec.path, exec.argv, exec.env).or_else(|| classify_rpm(exec, rpm))
}

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn script_type(name: &str) -> Option<ScriptType> {
    Some(match name {
        "preinst" => ScriptType::Preinst,
        "postinst" => ScriptType::Postinst,
        "prerm" => ScriptType::Prerm,
        "postrm" => ScriptType::Postrm,
        _ => return None,
    })
}

fn classify_dpkg(path: &str, argv: &[String], env: &[String]) -> Option<ScriptIdentity> {
    let mut admindirs = vec![DEFAULT_ADMINDIR.to_owned()];
    if let Some(dir) = env_value(env, "DPKG_ADMINDIR") {
        admindirs.insert(0, normalize(dir));
    }
    let (dir, file) = path.rsplit_once('/')?;
    let (package_from_path, script_type) = admindirs.iter().find_map(|admindir| {
        if dir == format!("{admindir}/info") {
            let (package, kind) = file.rsplit_once('.')?;
            Some((Some(package.to_owned()), script_type(kind)?))
        } else if dir == format!("{admindir}/tmp.ci") {
            Some((None, script_type(file)?))
        } else {
            None
        }
    })?;
    // The name in info/ may carry `:arch` (multi-arch same packages).
    let (path_package, path_arch) = match package_from_path.as_deref().map(|p| p.split_once(':')) {
        Some(Some((p, a))) => (Some(p.to_owned()), Some(a.to_owned())),
        Some(None) => (package_from_path.clone(), None),
        None => (None, None),
    };
    let package = env_value(env, "DPKG_MAINTSCRIPT_PACKAGE")
        .map(str::to_owned)
        .or(path_package)
        .unwrap_or_else(|| "(unknown)".into());
    let arch = env_value(env, "DPKG_MAINTSCRIPT_ARCH").map(str::to_owned).or(path_arch);
    let triggered = script_type == ScriptType::Postinst && argv.get(1).is_some_and(|a| a == "triggered");
    let recorded_env = env
        .iter()
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            key.starts_with("DPKG_") || key.starts_with("DEBCONF_") || key == "DEBIAN_FRONTEND"
        })
        .cloned()
        .collect();
    Some(ScriptIdentity {
        manager: Manager::Dpkg,
        script_type,
        package,
        arch,
        triggered,
        rpm_tag: None,
        script_path: path.to_owned(),
        env: recorded_env,
        bytes: None,
        note: None,
    })
}

/// Most open descriptors of one process looked at for package files and the rpmdb.
const MAX_FDS: usize = 4096;
/// Most bytes of /proc/PID/maps read to find librpm.
const MAX_MAPS: u64 = 4 << 20;
/// Where RPM distributions keep the rpmdb (Fedora ≥ 36 and openSUSE: /usr/lib/sysimage/rpm,
/// with /var/lib/rpm a link to it on Fedora).
const RPMDB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];
/// Programs that run rpm transactions through librpm.
const RPM_FRONTENDS: [&str; 9] = [
    "rpm", "dnf", "dnf-3", "dnf4", "dnf5", "yum", "microdnf", "zypper", "tdnf",
];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether the process maps librpm: rpm, or a dnf/yum/zypper driving it in-process.
fn uses_librpm(pid: Pid) -> bool {
    use std::io::Read;
    let mut maps = String::new();
    File::open(format!("/proc/{pid}/maps"))
        .and_then(|f| f.take(MAX_MAPS).read_to_string(&mut maps))
        .is_ok()
        && maps
            .lines()
            .any(|l| basename(l).starts_with("librpm.so") || basename(l).starts_with("librpm-"))
}

fn scriptlet_type(tag: &str) -> ScriptType {
    match tag {
        "%pre" => ScriptType::Preinst,
        "%post" => ScriptType::Postinst,
        "%preun" => ScriptType::Prerm,
        "%postun" => ScriptType::Postrm,
        _ => ScriptType::Other,
    }
}

/// Whether `scriptlet` is what rpm execs as `argv`, with `temp` the index of the temp file.
fn scriptlet_matches(scriptlet: &Scriptlet, argv: &[String], temp: Option<usize>, bytes: &[u8]) -> bool {
    if scriptlet.is_lua() {
        return false;
    }
    let interpreter = scriptlet.interpreter();
    match (temp, &scriptlet.body) {
        (Some(k), Some(body)) => {
            argv.get(..k) == Some(&interpreter[..])
                && (scriptlet.body_is_rewritten()
                    || bytes == body.as_bytes()
                    || bytes.strip_prefix(b"set -x\n") == Some(body.as_bytes()))
        }
        (None, None) => argv == interpreter,
        _ => false,
    }
}

/// The package files and the rpmdbs an exec'ing librpm process has open.
type OpenHeaders = (Vec<Rc<RpmHeader>>, Vec<Rc<Vec<RpmHeader>>>);

fn open_headers(pid: Pid, cache: &mut HeaderCache, notes: &mut Vec<String>) -> OpenHeaders {
    let (mut packages, mut dbs) = (Vec::new(), Vec::new());
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        notes.push(format!("pid {pid}: its open files could not be listed"));
        return (packages, dbs);
    };
    for entry in dir.flatten().take(MAX_FDS) {
        let fd_path = entry.path();
        // Regular files only: opening a FIFO or a device could block or have effects.
        if !std::fs::metadata(&fd_path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&fd_path)
        else {
            continue;
        };
        let name = std::fs::read_link(&fd_path).unwrap_or_default();
        if name.file_name().is_some_and(|n| n == "rpmdb.sqlite") {
            match cache.rpmdb(&file) {
                Ok(db) => dbs.push(db),
                Err(e) => notes.push(format!("{}: {e}", name.display())),
            }
        } else if super::rpm::is_package_file(&file) {
            match cache.package(&file) {
                Ok(header) => packages.push(header),
                Err(e) => notes.push(format!("{}: {e}", name.display())),
            }
        }
    }
    (packages, dbs)
}

fn classify_rpm(exec: &Exec<'_>, rpm: &mut RpmTracker) -> Option<ScriptIdentity> {
    let argv = exec.argv;
    let temp = argv
        .iter()
        .skip(1)
        .position(|a| basename(a).starts_with("rpm-tmp."))
        .map(|i| i + 1);
    if !uses_librpm(exec.pid) {
        return None;
    }
    let mut notes = Vec::new();
    let bytes = match temp {
        Some(k) => super::read_guest_file(exec.pid, &argv[k]).unwrap_or_else(|e| {
            notes.push(e);
            Vec::new()
        }),
        None => Vec::new(),
    };
    let (packages, dbs) = open_headers(exec.pid, &mut rpm.cache, &mut notes);
    // The first tier with a match decides: the package being processed, then the database,
    // then packages seen earlier in this run (a trigger of a package installed earlier in the
    // same transaction: rpm commits the database only when the transaction ends).
    let seen = rpm.cache.seen_packages();
    let mut tiers: Vec<Vec<&RpmHeader>> = vec![packages.iter().map(|h| &**h).collect()];
    tiers.extend(dbs.iter().map(|db| db.iter().collect()));
    tiers.push(seen.iter().map(|h| &**h).collect());
    let found: Vec<(&RpmHeader, &Scriptlet)> = tiers
        .iter()
        .map(|tier| {
            let mut found: Vec<(&RpmHeader, &Scriptlet)> = Vec::new();
            for header in tier {
                for scriptlet in &header.scriptlets {
                    if scriptlet_matches(scriptlet, argv, temp, &bytes)
                        && !found
                            .iter()
                            .any(|(h, s)| h.key() == header.key() && s.tag == scriptlet.tag)
                    {
                        found.push((header, scriptlet));
                    }
                }
            }
            found
        })
        .find(|found| !found.is_empty())
        .unwrap_or_default();
    let (package, arch, tag) = match found.first() {
        Some((header, scriptlet)) => (header.nvr(), Some(header.arch.clone()), Some(scriptlet.tag.clone())),
        // A bare program exec'd by librpm that no scriptlet explains is not a scriptlet.
        None if temp.is_none() => return None,
        None => {
            notes.push(format!(
                "rpm scriptlet {:?}: no package header at hand has this scriptlet; intercepted as (unknown)",
                argv
            ));
            ("(unknown)".to_owned(), None, None)
        }
    };
    if found.len() > 1 {
        let all: Vec<String> = found.iter().map(|(h, s)| format!("{} {}", h.nvr(), s.tag)).collect();
        notes.push(format!(
            "rpm scriptlet {:?} is identical in {}; recorded as the first",
            argv,
            all.join(", ")
        ));
    }
    let script_type = tag.as_deref().map_or(ScriptType::Other, scriptlet_type);
    let recorded_env = exec
        .env
        .iter()
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            key.starts_with("RPM_") || key == "PATH"
        })
        .cloned()
        .collect();
    Some(ScriptIdentity {
        manager: Manager::Rpm,
        script_type,
        package,
        arch,
        triggered: tag.as_deref().is_some_and(|t| t.contains("trigger")),
        rpm_tag: tag,
        script_path: temp.map_or_else(|| exec.path.to_owned(), |k| argv[k].clone()),
        env: recorded_env,
        bytes: Some(bytes),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

/// One rpm front-end process: the rpmdb as it found it.
struct RpmRun {
    root: OwnedFd,
    db_path: String,
    before: Rc<Vec<RpmHeader>>,
}

/// rpm state across execs: parsed headers, and the rpm front-ends running (for `<lua>`).
#[derive(Default)]
pub struct RpmTracker {
    cache: HeaderCache,
    runs: HashMap<Pid, RpmRun>,
}

/// The value of `--name VALUE` or `--name=VALUE` in argv.
fn option_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            argv.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(name)?.strip_prefix('=')
        }
    })
}

impl RpmTracker {
    /// An exec that runs: when it starts an rpm front-end, the rpmdb it will change is read
    /// now, to compare when the process exits.
    pub fn exec_allowed(&mut self, pid: Pid, path: &str, argv: &[String]) -> Option<String> {
        if !RPM_FRONTENDS.contains(&basename(path)) {
            return None;
        }
        let root: OwnedFd = match File::open(format!("/proc/{pid}/root")) {
            Ok(root) => root.into(),
            Err(e) => return Some(format!("pid {pid}: opening its root for the rpmdb: {e}")),
        };
        let install_root = option_value(argv, "--root")
            .or_else(|| option_value(argv, "--installroot"))
            .unwrap_or("");
        let dirs: Vec<String> = match option_value(argv, "--dbpath") {
            Some(dir) => vec![dir.to_owned()],
            None => RPMDB_DIRS.iter().map(|d| d.to_string()).collect(),
        };
        let db_path = dirs
            .iter()
            .map(|d| normalize(&format!("{install_root}/{d}/rpmdb.sqlite")))
            .find(|p| crate::disk::open_in_root(&root, p, libc::O_RDONLY).is_ok())
            .unwrap_or_else(|| normalize(&format!("{install_root}/{}/rpmdb.sqlite", RPMDB_DIRS[0])));
        let (before, warning) = match self.read_db(&root, &db_path) {
            Ok(db) => (db, None),
            Err(e) => (Rc::new(Vec::new()), Some(e)),
        };
        self.runs.insert(pid, RpmRun { root, db_path, before });
        warning
    }

    /// The rpmdb at `path` in the tree under `root`; a database that does not exist yet is
    /// empty.
    fn read_db(&mut self, root: &OwnedFd, path: &str) -> Result<Rc<Vec<RpmHeader>>, String> {
        match crate::disk::open_in_root(root, path, libc::O_RDONLY) {
            Ok(fd) => self.cache.rpmdb(&File::from(fd)).map_err(|e| format!("{path}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Rc::new(Vec::new())),
            Err(e) => Err(format!("opening {path}: {e}")),
        }
    }

    /// A process exited: when it was an rpm front-end, the `<lua>` scriptlets of the packages
    /// it added and removed, and what could not be read.
    pub fn exited(&mut self, pid: Pid) -> (Vec<LuaScriptlet>, Option<String>) {
        let Some(run) = self.runs.remove(&pid) else {
            return (Vec::new(), None);
        };
        let after = match self.read_db(&run.root, &run.db_path) {
            Ok(after) => after,
            Err(e) => return (Vec::new(), Some(format!("<lua> scriptlets not checked: {e}"))),
        };
        let mut lua = Vec::new();
        let changes = [
            (&after, &run.before, ["%pretrans", "%pre", "%post", "%posttrans"]),
            (&run.before, &after, ["%preun", "%postun", "", ""]),
        ];
        for (from, other, tags) in changes {
            for header in from.iter() {
                if other.iter().any(|h| h.key() == header.key()) {
                    continue;
                }
                for scriptlet in header
                    .scriptlets
                    .iter()
                    .filter(|s| s.is_lua() && tags.contains(&s.tag.as_str()))
                {
                    lua.push(LuaScriptlet {
                        package: header.nvr(),
                        arch: header.arch.clone(),
                        tag: scriptlet.tag.clone(),
                    });
                }
            }
        }
        (lua, None)
    }

    /// The command is over: every rpm front-end still tracked has exited.
    pub fn finish(&mut self) -> (Vec<LuaScriptlet>, Vec<String>) {
        let mut pids: Vec<Pid> = self.runs.keys().copied().collect();
        pids.sort();
        let mut lua = Vec::new();
        let mut warnings = Vec::new();
        for pid in pids {
            let (found, warning) = self.exited(pid);
            lua.extend(found);
            warnings.extend(warning);
        }
        (lua, warnings)
    }
}

/// Collapses `//`, `.` and `..` (never above `/`), like the kernel's walk of a path without
/// symlinks.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Classifies an exec as if this test process (which does not map librpm) made it.
    fn classify_here(path: &str, argv: &[String], env: &[String]) -> Option<ScriptIdentity> {
        let exec = Exec {
            pid: nix::unistd::getpid(),
            path,
            argv,
            env,
        };
        classify(&exec, &mut RpmTracker::default())
    }

    #[test]
    fn dpkg_info_scripts() {
        let env = strings(&[
            "PATH=/usr/bin",
            "DPKG_MAINTSCRIPT_PACKAGE=libc-bin",
            "DPKG_MAINTSCRIPT_ARCH=amd64",
            "DPKG_MAINTSCRIPT_NAME=postinst",
            "DPKG_ADMINDIR=/var/lib/dpkg",
        ]);
        let argv = strings(&["/var/lib/dpkg/info/libc-bin.postinst", "triggered", "ldconfig"]);
        let id = classify_here("/var/lib/dpkg/info/libc-bin.postinst", &argv, &env).unwrap();
        assert_eq!(id.package, "libc-bin");
        assert_eq!(id.script_type, ScriptType::Postinst);
        assert!(id.triggered);
        assert_eq!(id.arch.as_deref(), Some("amd64"));
        assert_eq!(id.env.len(), 4, "DPKG_* only: {:?}", id.env);

        let id = classify_here(
            "/var/lib/dpkg/info/liblzma5:amd64.prerm",
            &strings(&["x", "upgrade"]),
            &[],
        )
        .unwrap();
        assert_eq!((id.package.as_str(), id.arch.as_deref()), ("liblzma5", Some("amd64")));
        assert_eq!(id.script_type.phase(), super::super::record::Phase::Pre);

        let env = strings(&["DPKG_MAINTSCRIPT_PACKAGE=nginx"]);
        let id = classify_here("/var/lib/dpkg/tmp.ci/preinst", &strings(&["p", "install"]), &env).unwrap();
        assert_eq!((id.package.as_str(), id.script_type), ("nginx", ScriptType::Preinst));
    }

    #[test]
    fn other_execs_pass() {
        for path in [
            "/usr/bin/dpkg",
            "/var/lib/dpkg/info/nginx.list",
            "/var/lib/dpkg/info/nginx.config",
            "/var/cache/debconf/tmp.ci/nginx.config",
            "/var/lib/dpkg/tmp.ci/control",
            "/var/lib/dpkg/infoX/a.postinst",
        ] {
            assert_eq!(classify_here(path, &[], &[]), None, "{path}");
        }
    }

    #[test]
    fn custom_admindir_and_normalization() {
        let env = strings(&["DPKG_ADMINDIR=/srv//dpkg/"]);
        assert!(classify_here("/srv/dpkg/info/a.postrm", &[], &env).is_some());
        assert_eq!(
            normalize("/var/lib/dpkg/../dpkg/./info//a.postinst"),
            "/var/lib/dpkg/info/a.postinst"
        );
        assert_eq!(normalize("/../../etc"), "/etc");
    }
}
