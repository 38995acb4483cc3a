//! Everything dormouse asks of the Xen toolstack goes through [`Toolstack`], so tests can stand
//! a network namespace in for a domain. [`XlToolstack`] is the real one: the `xenstore-*` tools
//! that come with Xen (Debian: xen-utils-common / xenstore-utils).
//!
//! xenstore layout read here, as libxl writes it: the vifs of domain D are the backend devices
//! `/local/domain/0/backend/vif/D/N`; device N is named `vifD.N` by netback and renamed by the
//! hotplug script to the `vifname` key when the xl config sets one; an HVM domain's emulated
//! twin is `<name>-emu`.
//!
//! The toolstack hook `scripts/vif-dormouse` isolates the vifs of a domain whose UUID has a
//! key `/dormouse/pending/<uuid>` (value: the `--allow` endpoints, space separated). That key
//! sits outside `/local/domain/D`, so the guest cannot write it, and is keyed by UUID because
//! the domid is unknown until the domain exists.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bound on the vif devices read for one domain (libxl allows far fewer in practice).
const MAX_VIFS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ToolstackError {
    #[error("running `{command}`: {source}; is it installed and on PATH (Xen's xl, xenstore-utils)?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}; is domain {domid} running (`xl list`) and xenstored up?")]
    Failed {
        command: String,
        domid: u32,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{path} lists {count} devices, more than the {MAX_VIFS} dormouse reads")]
    TooMany { path: String, count: usize },
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` printed {output:?}; expected {expected}")]
    Output {
        command: String,
        output: String,
        expected: &'static str,
    },
    #[error(
        "after `{command}`: {found} new domains appeared ({domids:?}), expected exactly one; was another domain created meanwhile?"
    )]
    NewDomain {
        command: String,
        found: usize,
        domids: Vec<u32>,
    },
}

/// The toolstack operations dormouse needs. Small on purpose: each is one xenstore or `xl`
/// interaction, replaceable in tests.
pub trait Toolstack {
    /// Names of the network interfaces in dom0 that carry domain `domid`'s traffic: every
    /// name each vif has or will have (netback's, the configured `vifname`, the HVM `-emu`
    /// twin), so isolating them all leaves no window.
    fn vifs(&self, domid: u32) -> Result<Vec<String>, ToolstackError>;

    /// Restores the domain saved in `image`, paused (`xl restore -p`); returns its domid.
    fn restore_paused(&self, image: &Path) -> Result<u32, ToolstackError>;

    fn unpause(&self, domid: u32) -> Result<(), ToolstackError>;

    /// Whether the domain is paused (`xl unpause` of a running domain is an error).
    fn paused(&self, domid: u32) -> Result<bool, ToolstackError>;

    /// The domain's UUID, lowercase with dashes.
    fn domain_uuid(&self, domid: u32) -> Result<String, ToolstackError>;

    fn xenstore_write(&self, path: &str, value: &str) -> Result<(), ToolstackError>;

    /// Removes `path` (and what is below it); a missing path is not an error.
    fn xenstore_remove(&self, path: &str) -> Result<(), ToolstackError>;
}

/// Runs `program args`, returning its standard output; failure to start or a non-zero exit is
/// an error quoting the command.
fn run_tool(program: &Path, args: &[&str]) -> Result<String, ToolstackError> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ToolstackError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolstackError::Tool {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn parse_domid(command: &str, output: &str) -> Result<u32, ToolstackError> {
    output.trim().parse().map_err(|_| ToolstackError::Output {
        command: command.to_owned(),
        output: output.to_owned(),
        expected: "a domain id",
    })
}

/// A UUID as libxl prints it: 8-4-4-4-12 hex digits.
fn check_uuid(command: &str, output: &str) -> Result<String, ToolstackError> {
    let uuid = output.trim().to_ascii_lowercase();
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(ToolstackError::Output {
            command: command.to_owned(),
            output: output.to_owned(),
            expected: "a UUID",
        });
    }
    Ok(uuid)
}

/// A toolstack implemented by an external program, for toolstacks dormouse does not drive
/// itself (and the tests' network namespaces): `PROGRAM restore-paused IMAGE` prints the new
/// domid; `PROGRAM unpause DOMID`; `PROGRAM vifs DOMID` prints one interface name a line;
/// `PROGRAM paused DOMID` prints `yes` or `no`; `PROGRAM domain-uuid DOMID` prints the UUID;
/// `PROGRAM xenstore-write PATH VALUE`;
/// `PROGRAM xenstore-rm PATH`. Exit status 0 is success.
#[derive(Debug, Clone)]
pub struct CommandToolstack {
    pub program: PathBuf,
}

impl Toolstack for CommandToolstack {
    fn vifs(&self, domid: u32) -> Result<Vec<String>, ToolstackError> {
        let out = run_tool(&self.program, &["vifs", &domid.to_string()])?;
        let names: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() > MAX_VIFS {
            return Err(ToolstackError::TooMany {
                path: format!("{} vifs {domid}", self.program.display()),
                count: names.len(),
            });
        }
        Ok(names)
    }

    fn restore_paused(&self, image: &Path) -> Result<u32, ToolstackError> {
        let image = image.to_string_lossy();
        let out = run_tool(&self.program, &["restore-paused", &image])?;
        parse_domid(&format!("{} restore-paused {image}", self.program.display()), &out)
    }

    fn unpause(&self, domid: u32) -> Result<(), ToolstackError> {
        run_tool(&self.program, &["unpause", &domid.to_string()]).map(drop)
    }

    fn paused(&self, domid: u32) -> Result<bool, ToolstackError> {
        let out = run_tool(&self.program, &["paused", &domid.to_string()])?;
        match out.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(ToolstackError::Output {
                command: format!("{} paused {domid}", self.program.display()),
                output: out,
                expected: "yes or no",
            }),
        }
    }

    fn domain_uuid(&self, domid: u32) -> Result<String, ToolstackError> {
        let out = run_tool(&self.program, &["domain-uuid", &domid.to_string()])?;
        check_uuid(&format!("{} domain-uuid {domid}", self.program.display()), &out)
    }

    fn xenstore_write(&self, path: &str, value: &str) -> Result<(), ToolstackError> {
        run_tool(&self.program, &["xenstore-write", path, value]).map(drop)
    }

    fn xenstore_remove(&self, path: &str) -> Result<(), ToolstackError> {
        run_tool(&self.program, &["xenstore-rm", path]).map(drop)
    }
}

/// The toolstack of a real dom0, through `xl` and the `xenstore-*` tools found on PATH.
#[derive(Debug, Default, Clone, Copy)]
pub struct XlToolstack;

impl XlToolstack {
    fn xenstore(&self, tool: &str, path: &str, domid: u32) -> Result<String, ToolstackError> {
        run_tool(Path::new(tool), &[path]).map_err(|e| match e {
            ToolstackError::Tool {
                command,
                status,
                stderr,
            } => ToolstackError::Failed {
                command,
                domid,
                status,
                stderr,
            },
            other => other,
        })
    }

    /// The domids xenstore knows (`/local/domain/*`).
    fn domids(&self) -> Result<Vec<u32>, ToolstackError> {
        let listing = run_tool(Path::new("xenstore-list"), &["/local/domain"])?;
        Ok(listing.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

impl Toolstack for XlToolstack {
    fn restore_paused(&self, image: &Path) -> Result<u32, ToolstackError> {
        // `xl restore` does not print the domid in a stable form: the new domain is the one
        // that was not there before.
        let before = self.domids()?;
        let image = image.to_string_lossy();
        run_tool(Path::new("xl"), &["restore", "-p", &image])?;
        let new: Vec<u32> = self.domids()?.into_iter().filter(|d| !before.contains(d)).collect();
        match new[..] {
            [domid] => Ok(domid),
            _ => Err(ToolstackError::NewDomain {
                command: format!("xl restore -p {image}"),
                found: new.len(),
                domids: new,
            }),
        }
    }

    fn unpause(&self, domid: u32) -> Result<(), ToolstackError> {
        run_tool(Path::new("xl"), &["unpause", &domid.to_string()]).map(drop)
    }

    fn paused(&self, domid: u32) -> Result<bool, ToolstackError> {
        // `xl list D`: a header, then `Name ID Mem VCPUs State Time`, State as `-b----`
        // (running, blocked, paused, shutdown, crashed, dying).
        let command = format!("xl list {domid}");
        let out = run_tool(Path::new("xl"), &["list", &domid.to_string()])?;
        let state = out
            .lines()
            .nth(1)
            .and_then(|line| line.split_whitespace().nth_back(1))
            .filter(|state| state.len() == 6);
        match state {
            Some(state) => Ok(state.as_bytes()[2] == b'p'),
            None => Err(ToolstackError::Output {
                command,
                output: out,
                expected: "a domain line with a six-letter state",
            }),
        }
    }

    fn domain_uuid(&self, domid: u32) -> Result<String, ToolstackError> {
        // libxl writes `/local/domain/D/vm` = `/vm/<uuid>`.
        let path = format!("/local/domain/{domid}/vm");
        let vm = self.xenstore("xenstore-read", &path, domid)?;
        check_uuid(&format!("xenstore-read {path}"), vm.trim().trim_start_matches("/vm/"))
    }

    fn xenstore_write(&self, path: &str, value: &str) -> Result<(), ToolstackError> {
        run_tool(Path::new("xenstore-write"), &[path, value]).map(drop)
    }

    fn xenstore_remove(&self, path: &str) -> Result<(), ToolstackError> {
        match run_tool(Path::new("xenstore-exists"), &[path]) {
            // xenstore-exists fails when the path is absent: nothing to remove.
            Err(ToolstackError::Tool { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => run_tool(Path::new("xenstore-rm"), &[path]).map(drop),
        }
    }

    fn vifs(&self, domid: u32) -> Result<Vec<String>, ToolstackError> {
        let base = format!("/local/domain/0/backend/vif/{domid}");
        let listing = self.xenstore("xenstore-list", &base, domid)?;
        let devices: Vec<u32> = listing.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if devices.len() > MAX_VIFS {
            return Err(ToolstackError::TooMany {
                path: base,
                count: devices.len(),
            });
        }
        let mut names = Vec::new();
        for devid in devices {
            let device = format!("{base}/{devid}");
            let keys = self.xenstore("xenstore-list", &device, domid)?;
            let mut device_names = vec![format!("vif{domid}.{devid}")];
            if keys.lines().any(|k| k.trim() == "vifname") {
                let vifname = self.xenstore("xenstore-read", &format!("{device}/vifname"), domid)?;
                if !vifname.is_empty() && !device_names.contains(&vifname) {
                    device_names.push(vifname);
                }
            }
            for name in device_names {
                // A name longer than IFNAMSIZ allows cannot become an interface.
                names.extend(
                    [format!("{name}-emu"), name]
                        .into_iter()
                        .filter(|n| n.len() <= crate::isolate::IFNAME_MAX),
                );
            }
        }
        names.sort();
        Ok(names)
    }
}
