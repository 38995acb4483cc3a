//! Running one recorded maintainer script as the package manager ran it: the recorded argv and
//! environment, cwd `/`, stdin `/dev/null`, chrooted into the target root in `--root` mode,
//! its output (stdout and stderr interleaved) in the journal's `scripts/<seq>.log`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bundle::manifest::Script;

/// The environment every script starts from, as `dormouse emulate` gave the package manager
/// (emulator's `command_env`); the recorded `DPKG_*`/`DEBCONF_*`/`DEBIAN_FRONTEND` (and rpm's)
/// variables come on top.
const BASE_ENV: [(&str, &str); 6] = [
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("USER", "root"),
    ("LOGNAME", "root"),
    ("TERM", "dumb"),
    ("DEBIAN_FRONTEND", "noninteractive"),
];
/// Bytes of a script's output kept in the report (the log keeps all of it).
const OUTPUT_TAIL: u64 = 16 << 10;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    pub seconds: f64,
    /// The last bytes of its output.
    pub output: String,
}

/// Runs `script`; `chroot` is the target root in `--root` mode.
pub fn run(script: &Script, chroot: Option<&Path>, log: &Path) -> io::Result<Outcome> {
    let program = script.argv.first().map(String::as_str).unwrap_or(&script.path);
    // The program is what the package manager executed: the script itself (dpkg), or an
    // interpreter given the script's path (rpm's `/bin/sh /var/tmp/rpm-tmp.*`).
    let exe = if program.starts_with('/') {
        program
    } else {
        &script.path
    };
    let out = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(log)?;
    let mut command = Command::new(exe);
    command
        .arg0(program)
        .args(script.argv.iter().skip(1))
        .env_clear()
        .envs(BASE_ENV)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?);
    for pair in &script.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let root = chroot
        .map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()))
        .transpose()?;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (chroot, chdir) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if let Some(root) = &root {
                if libc::chroot(root.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let status = command
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {} ({}): {e}", script.file, script.path)))?;
    let seconds = start.elapsed().as_secs_f64();
    let exit_code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1);
    Ok(Outcome {
        exit_code,
        seconds,
        output: tail(out)?,
    })
}

fn tail(mut file: File) -> io::Result<String> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))?;
    let mut bytes = Vec::new();
    file.take(OUTPUT_TAIL).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
