//! `dormouse generate-docs --out DIR`: man pages and shell completions of `dormouse` and
//! `dormouse-agent`, rendered from the clap definitions the binaries parse with (clap_mangen,
//! clap_complete), plus the EXIT STATUS and EXAMPLES of every page, written here. Kept out of
//! the command list (`main` dispatches it before clap), so neither `--help` nor the
//! completions offer it; `scripts/package` runs it.
//!
//! DIR/man/man1/dormouse.1, dormouse-emulate.1, dormouse-bundle-show.1, ... (one page per
//! command and subcommand), DIR/man/man8/dormouse-agent.8, dormouse-agent-apply.8, ...;
//! DIR/completions/{bash,zsh,fish}/ with each shell's file names (`dormouse`, `_dormouse`,
//! `dormouse.fish`, and the agent's).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The word `main` looks for in the first argument.
pub(crate) const SUBCOMMAND: &str = "generate-docs";

/// `dormouse generate-docs`'s own arguments.
#[derive(Parser)]
#[command(
    name = "dormouse generate-docs",
    bin_name = "dormouse generate-docs",
    about = "Write the man pages and shell completions"
)]
pub(crate) struct DocsArgs {
    /// Output directory (created): man/man1, man/man8, completions/{bash,zsh,fish}.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The date the pages carry (YYYY-MM-DD; scripts/package passes the last commit's, so the
    /// pages are the same bytes for the same source).
    #[arg(long, default_value = "")]
    date: String,
}

/// One page's hand-written sections: EXIT STATUS rows (status, meaning) and EXAMPLES (what
/// it does, the command line).
struct Page {
    name: &'static str,
    exit: &'static [(&'static str, &'static str)],
    examples: &'static [(&'static str, &'static str)],
}

const OK: (&str, &str) = ("0", "Success.");
const FAILED: (&str, &str) = (
    "1",
    "Failure; the message on standard error says what failed and what to do next.",
);
const USAGE: (&str, &str) = ("2", "Usage error: an unknown option, a missing or malformed argument.");
/// Commands that print: a reader that goes away (`| head`) ends them quietly, as success.
const PRINTS: (&str, &str) = (
    "0",
    "Success, also when the reader of standard output went away early (`| head`).",
);
const COMMON: &[(&str, &str)] = &[PRINTS, FAILED, USAGE];

const DORMOUSE_PAGES: &[Page] = &[
    Page {
        name: "dormouse",
        exit: &[
            PRINTS,
            FAILED,
            USAGE,
            (
                "other",
                "dormouse emulate exits with the status of the command it ran; see dormouse-emulate(1).",
            ),
        ],
        examples: &[
            (
                "What a suspended domU's kernel knew, from the file xl save wrote:",
                "dormouse inspect web1.save",
            ),
            (
                "Its update, run offline, packed into a signed bundle:",
                "dormouse emulate web1.save --out web1.dmb --sign-key dom0.key -- sh -c 'apt-get update && apt-get -y upgrade'",
            ),
            (
                "Restore it isolated, deliver the bundle to its agent, release it:",
                "dormouse restore web1.save --bundle web1.dmb --key dom0.pub",
            ),
        ],
    },
    Page {
        name: "dormouse-disk",
        exit: COMMON,
        examples: &[
            (
                "Partitions, filesystems, the root and its fstab, without writing a byte:",
                "dormouse disk /srv/xen/web1-disk.img",
            ),
            ("The same as JSON:", "dormouse disk /dev/vg0/web1-disk --json"),
        ],
    },
    Page {
        name: "dormouse-inspect",
        exit: COMMON,
        examples: &[
            (
                "Kernel, KASLR, where symbols and types came from, mounts, interfaces:",
                "dormouse inspect web1.save",
            ),
            ("The whole snapshot as JSON:", "dormouse inspect web1.save --json"),
            (
                "Profile files from the guest's own /boot:",
                "dormouse inspect web1.save --disk /srv/xen/web1-disk.img",
            ),
            (
                "A live domain, paused while it is read (dormouse built with the xen feature):",
                "xl pause 7; dormouse inspect domain:7; xl unpause 7",
            ),
        ],
    },
    Page {
        name: "dormouse-isf",
        exit: COMMON,
        examples: &[
            (
                "A Volatility 3 profile from the guest's RAM alone:",
                "dormouse isf web1.save -o symbols/linux/web1.json.xz",
            ),
            (
                "Then, with Volatility 3 and an ELF core of that kernel:",
                "vol -s symbols -f web1.elf linux.pslist",
            ),
        ],
    },
    Page {
        name: "dormouse-ps",
        exit: COMMON,
        examples: &[("The guest's processes, like ps -e:", "dormouse ps web1.save")],
    },
    Page {
        name: "dormouse-proc",
        exit: COMMON,
        examples: &[
            (
                "One file of the guest's /proc:",
                "dormouse proc web1.save /proc/sys/kernel/osrelease",
            ),
            ("A directory lists its entries:", "dormouse proc web1.save /proc/1"),
        ],
    },
    Page {
        name: "dormouse-shadowfs",
        exit: &[
            ("0", "The mount was served and removed after SIGINT or SIGTERM."),
            FAILED,
            USAGE,
        ],
        examples: &[(
            "The guest's /proc, read-only, until Ctrl-C:",
            "dormouse shadowfs web1.save /mnt/web1-proc",
        )],
    },
    Page {
        name: "dormouse-emulate",
        exit: &[
            ("0", "COMMAND succeeded (and, with --out, the bundle was written)."),
            ("N", "COMMAND's own exit status N; no bundle is written unless it is 0."),
            ("128+N", "COMMAND was killed by signal N."),
            ("124", "COMMAND exceeded --timeout and was killed."),
            (
                "125",
                "dormouse failed: the disks, the snapshot, the sandbox's setup, the bundle (the message says which).",
            ),
            (
                "127",
                "COMMAND could not be executed in the guest's tree (not found, not executable).",
            ),
            (
                "2",
                "Also a usage error of dormouse itself, before anything ran (the message says so).",
            ),
        ],
        examples: &[
            (
                "The guest's own apt, in a sandbox over a copy-on-write overlay of its disks:",
                "dormouse emulate web1.save -- sh -c 'apt-get update && apt-get -y upgrade'",
            ),
            (
                "A stopped VM: no memory image, its /proc synthesized from the disk:",
                "dormouse emulate --disk web1.qcow2 -- apt-get -y upgrade",
            ),
            (
                "Packed and signed into a bundle for dormouse-agent:",
                "dormouse emulate web1.save --out web1.dmb --sign-key dom0.key -- sh -c 'apt-get update && apt-get -y upgrade'",
            ),
            (
                "With a record of what it read and did, for dormouse replay, diff and report:",
                "dormouse emulate web1.save --record web1.record.json -- apt-get -y upgrade",
            ),
        ],
    },
    Page {
        name: "dormouse-replay",
        exit: &[
            (
                "0",
                "The replay did what the record says (after the documented normalisations).",
            ),
            (
                "3",
                "The replay differs; standard output says where (execs, files, removals, indices).",
            ),
            (
                "1",
                "The replay failed or was refused: an input's SHA-256 is not the record's (without --allow-drift), or the emulation failed.",
            ),
            USAGE,
        ],
        examples: &[
            (
                "Record an emulation, then run it again and compare:",
                "dormouse emulate web1.save --record web1.record.json -- sh -c 'apt-get update && apt-get -y upgrade'; dormouse replay web1.record.json",
            ),
            (
                "On a changed disk, to see what the change does:",
                "dormouse replay web1.record.json --disk /srv/xen/web1-v2.img --allow-drift --json",
            ),
        ],
    },
    Page {
        name: "dormouse-diff",
        exit: COMMON,
        examples: &[(
            "The same update on two guests, side by side:",
            "dormouse diff web1.record.json web2.record.json",
        )],
    },
    Page {
        name: "dormouse-report",
        exit: COMMON,
        examples: &[(
            "Figures (SVG, PNG) and their numbers (CSV) from a set of records:",
            "dormouse report -o figures/ runs/*.record.json",
        )],
    },
    Page {
        name: "dormouse-cleanup",
        exit: &[
            OK,
            (
                "1",
                "Something could not be removed; each problem is listed above the error.",
            ),
            USAGE,
        ],
        examples: &[("After a crashed emulation:", "dormouse cleanup")],
    },
    Page {
        name: "dormouse-check",
        exit: COMMON,
        examples: &[
            (
                "What is outdated on a dormant VM, with fresh indices from its repositories:",
                "dormouse check --disk /srv/xen/web1-disk.img --refresh",
            ),
            (
                "Which running processes use outdated files, too:",
                "dormouse check web1.save --disk /srv/xen/web1-disk.img",
            ),
            (
                "Many VMs, one per line of a file:",
                "dormouse check --batch vms.txt --json",
            ),
        ],
    },
    Page {
        name: "dormouse-keygen",
        exit: COMMON,
        examples: &[(
            "dom0.key (secret, 0600) and dom0.pub (for the guests' /etc/dormouse/trusted.pub):",
            "dormouse keygen --out /etc/dormouse/dom0",
        )],
    },
    Page {
        name: "dormouse-bundle",
        exit: COMMON,
        examples: &[
            ("What a bundle changes:", "dormouse bundle show web1.dmb"),
            (
                "Its signature and members:",
                "dormouse bundle verify web1.dmb --key dom0.pub",
            ),
        ],
    },
    Page {
        name: "dormouse-bundle-show",
        exit: COMMON,
        examples: &[
            (
                "Files, scripts and packages a bundle changes:",
                "dormouse bundle show web1.dmb",
            ),
            ("As JSON:", "dormouse bundle show web1.dmb --json"),
        ],
    },
    Page {
        name: "dormouse-bundle-verify",
        exit: &[
            ("0", "The signature and every member check out."),
            (
                "1",
                "They do not (or the bundle cannot be read); the message names what.",
            ),
            USAGE,
        ],
        examples: &[
            (
                "Signature and members:",
                "dormouse bundle verify web1.dmb --key dom0.pub",
            ),
            (
                "The same signature check by the standard tool:",
                "minisign -Vm web1.dmb -p dom0.pub",
            ),
        ],
    },
    Page {
        name: "dormouse-isolate",
        exit: COMMON,
        examples: &[
            (
                "Only the agent channel to dom0 passes:",
                "dormouse isolate --domain 7 --allow 10.0.0.1:7878",
            ),
            ("What is isolated:", "dormouse isolate --list"),
        ],
    },
    Page {
        name: "dormouse-release",
        exit: COMMON,
        examples: &[
            ("A domain's vifs:", "dormouse release --domain 7"),
            ("One vif, by name:", "dormouse release --vif vif7.0"),
        ],
    },
    Page {
        name: "dormouse-restore",
        exit: &[
            (
                "0",
                "The agent applied the bundle and the domain's network was released.",
            ),
            (
                "1",
                "Failure. If the domain was restored, it stays isolated: the message says how to look (dormouse isolate --list) and how to finish (dormouse deliver ...).",
            ),
            USAGE,
        ],
        examples: &[
            (
                "Restore, isolated; deliver; release:",
                "dormouse restore web1.save --bundle web1.dmb --key dom0.pub",
            ),
            (
                "Naming both ends of the agent channel:",
                "dormouse restore web1.save --bundle web1.dmb --key dom0.pub --agent 10.0.0.7 --dom0-addr 10.0.0.1",
            ),
        ],
    },
    Page {
        name: "dormouse-pend",
        exit: COMMON,
        examples: &[
            (
                "Mark it pending, then restore it by other means:",
                "dormouse pend web1.save --bundle web1.dmb --key dom0.pub",
            ),
            ("It comes up isolated by vif-dormouse:", "xl restore web1.save"),
        ],
    },
    Page {
        name: "dormouse-deliver",
        exit: &[
            (
                "0",
                "The agent applied the bundle (or had already) and the domain's network was released.",
            ),
            ("1", "Failure; the domain stays isolated and the message says why."),
            USAGE,
        ],
        examples: &[(
            "After a plain xl restore of a pending domain, or an interrupted restore:",
            "dormouse deliver --domain \"$(xl domid web1)\" --bundle web1.dmb --key dom0.pub --agent 10.0.0.7",
        )],
    },
    Page {
        name: "dormouse-uname",
        exit: COMMON,
        examples: &[("All fields, as uname -a prints them:", "dormouse uname -a web1.save")],
    },
];

const AGENT_PAGES: &[Page] = &[
    Page {
        name: "dormouse-agent",
        exit: &[
            OK,
            FAILED,
            USAGE,
            (
                "3",
                "dormouse-agent apply refused the bundle; nothing changed. See dormouse-agent-apply(8).",
            ),
        ],
        examples: &[
            (
                "Apply a bundle made in dom0:",
                "dormouse-agent apply web1.dmb --key /etc/dormouse/trusted.pub",
            ),
            ("What was applied:", "dormouse-agent status"),
        ],
    },
    Page {
        name: "dormouse-agent-apply",
        exit: &[
            ("0", "Applied, or applied already."),
            (
                "1",
                "Failed; the journal is kept: applying again resumes, rollback undoes.",
            ),
            USAGE,
            (
                "3",
                "Refused (signature, identity, base fingerprints); nothing changed.",
            ),
        ],
        examples: &[
            (
                "Into the running system:",
                "dormouse-agent apply web1.dmb --key /etc/dormouse/trusted.pub",
            ),
            (
                "Into a mounted copy of a guest:",
                "dormouse-agent apply web1.dmb --root /mnt/web1",
            ),
        ],
    },
    Page {
        name: "dormouse-agent-rollback",
        exit: &[OK, FAILED, USAGE],
        examples: &[(
            "Undo an apply by its bundle id (dormouse-agent status lists them):",
            "dormouse-agent rollback BUNDLE_ID",
        )],
    },
    Page {
        name: "dormouse-agent-serve",
        exit: &[
            ("0", "Not in practice: it serves until stopped."),
            ("1", "It could not start (address, key, spool); the message says which."),
            USAGE,
        ],
        examples: &[(
            "What the dormouse-agent unit runs (its address, dom0's, from /etc/dormouse/agent.env):",
            "dormouse-agent serve --listen 10.0.0.7:7878 --allow-from 10.0.0.1:7878",
        )],
    },
    Page {
        name: "dormouse-agent-status",
        exit: &[OK, FAILED, USAGE],
        examples: &[(
            "Applied, partial and rolled-back bundles:",
            "dormouse-agent status --json",
        )],
    },
];

/// `dormouse generate-docs`: every page and completion file; fails naming a command that has
/// no EXAMPLES and EXIT STATUS above.
pub(crate) fn generate(dormouse: clap::Command, args: &DocsArgs) -> Result<()> {
    let agent = guest_agent::cli::Cli::command();
    let mut written = Vec::new();
    for (cmd, pages, section, see_also) in [
        (dormouse, DORMOUSE_PAGES, "1", "dormouse-agent(8)"),
        (agent, AGENT_PAGES, "8", "dormouse(1)"),
    ] {
        let dir = args.out.join("man").join(format!("man{section}"));
        create_dir(&dir)?;
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        man_pages(&cmd, pages, section, see_also, &args.date, &dir, &mut written)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = args.out.join("completions").join(shell.to_string());
            create_dir(&dir)?;
            let name = cmd.get_name().to_owned();
            let path = clap_complete::generate_to(shell, &mut cmd.clone(), name, &dir)
                .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
            written.push(path);
        }
    }
    for path in &written {
        println!("{}", path.display());
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The page of `cmd` and of each of its visible subcommands, recursively.
fn man_pages(
    cmd: &clap::Command,
    pages: &[Page],
    section: &str,
    see_also: &str,
    date: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned();
    let Some(page) = pages.iter().find(|p| p.name == name) else {
        bail!("no EXAMPLES and EXIT STATUS for {name}: add its Page to src/cli/docs.rs")
    };
    // Subcommands carry no version of their own: the program's, from the top.
    let version = cmd.get_version().unwrap_or(env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd.clone())
        .section(section)
        .date(date)
        .source(format!("dormouse {version}"))
        .manual("dormouse manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    let subcommands: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subcommands.is_empty() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (status, meaning) in page.exit {
        roff.control("TP", []).text([bold(*status)]).text([roman(*meaning)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (what, command) in page.examples {
        roff.text([roman(*what)]);
        roff.control("PP", []).control("RS", ["4"]).control("EX", []);
        roff.text([roman(*command)]);
        roff.control("EE", []).control("RE", []).control("PP", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = subcommands
        .iter()
        .map(|s| format!("{}({section})", s.get_display_name().unwrap_or_else(|| s.get_name())))
        .collect();
    if let Some(parent) = name
        .rsplit_once('-')
        .map(|(p, _)| p)
        .filter(|p| pages.iter().any(|x| x.name == *p))
    {
        refs.insert(0, format!("{parent}({section})"));
    }
    refs.push(see_also.to_owned());
    let last = refs.len() - 1;
    for (i, r) in refs.iter().enumerate() {
        let (page_name, sect) = r.split_once('(').unwrap_or((r, ""));
        let sep = if i == last { "" } else { "," };
        roff.text([bold(page_name), roman(format!("({sect}{sep}"))]);
    }
    roff.to_writer(&mut out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    let path = dir.join(man.get_filename());
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in subcommands {
        man_pages(sub, pages, section, see_also, date, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page written here is one clap knows (no stale page after a command is renamed).
    #[test]
    fn every_page_is_a_command() {
        for (cmd, pages) in [
            (crate::Cli::command(), DORMOUSE_PAGES),
            (guest_agent::cli::Cli::command(), AGENT_PAGES),
        ] {
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            let mut names = Vec::new();
            fn walk(c: &clap::Command, names: &mut Vec<String>) {
                names.push(c.get_display_name().unwrap_or_else(|| c.get_name()).to_owned());
                for s in c.get_subcommands().filter(|s| !s.is_hide_set()) {
                    walk(s, names);
                }
            }
            walk(&cmd, &mut names);
            for page in pages {
                assert!(
                    names.iter().any(|n| n == page.name),
                    "page {} names no command ({names:?})",
                    page.name
                );
            }
            assert_eq!(names.len(), pages.len(), "{names:?}");
        }
    }
}
