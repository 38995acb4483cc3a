//! `dormouse generate-docs`: a man page for every command and subcommand of `dormouse` and
//! `dormouse-agent`, each with EXIT STATUS and EXAMPLES, and completions for bash, zsh, fish.

use std::path::Path;
use std::process::Command;

/// The visible commands, as `dormouse help` lists them (the page names follow).
fn commands(bin: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} {args:?} --help: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("Commands:")
        .nth(1)
        .map(|list| {
            list.lines()
                .skip(1) // the rest of the "Commands:" line
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn check_page(path: &Path) {
    let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH \"EXIT STATUS\"", ".SH EXAMPLES"] {
        assert!(page.contains(section), "{}: no {section}", path.display());
    }
    let examples = page.split(".SH EXAMPLES").nth(1).unwrap();
    assert!(
        examples.contains(".EX"),
        "{}: EXAMPLES without a command",
        path.display()
    );
}

#[test]
fn man_pages_and_completions() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(crate::dormouse_bin())
        .args(["generate-docs", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());

    let man1 = out.path().join("man/man1");
    check_page(&man1.join("dormouse.1"));
    let mut pages = 1;
    for command in commands(crate::dormouse_bin(), &[]) {
        check_page(&man1.join(format!("dormouse-{command}.1")));
        pages += 1;
        for sub in commands(crate::dormouse_bin(), &[&command]) {
            check_page(&man1.join(format!("dormouse-{command}-{sub}.1")));
            pages += 1;
        }
    }
    assert!(
        pages > 15,
        "only {pages} pages: did `dormouse --help` change its layout?"
    );
    assert_eq!(
        std::fs::read_dir(&man1).unwrap().count(),
        pages,
        "pages of no command in {}",
        man1.display()
    );
    for page in [
        "dormouse-agent",
        "dormouse-agent-apply",
        "dormouse-agent-serve",
        "dormouse-agent-status",
        "dormouse-agent-rollback",
    ] {
        check_page(&out.path().join(format!("man/man8/{page}.8")));
    }

    for (file, needle) in [
        ("bash/dormouse.bash", "complete -F _dormouse"),
        ("zsh/_dormouse", "#compdef dormouse"),
        ("fish/dormouse.fish", "complete -c dormouse"),
        ("bash/dormouse-agent.bash", "dormouse-agent"),
        ("zsh/_dormouse-agent", "#compdef dormouse-agent"),
        ("fish/dormouse-agent.fish", "complete -c dormouse-agent"),
    ] {
        let path = out.path().join("completions").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(needle), "{}: no {needle:?}", path.display());
        assert!(
            text.contains("emulate") || file.contains("agent"),
            "{}: no emulate",
            path.display()
        );
        assert!(
            !text.contains("generate-docs"),
            "{}: offers the hidden generate-docs",
            path.display()
        );
    }
}

/// The generator runs in `bash`'s completion too: sourcing the file defines the completion.
#[test]
fn bash_completion_loads() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(crate::dormouse_bin())
        .args(["generate-docs", "--out"])
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let file = out.path().join("completions/bash/dormouse.bash");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && complete -p dormouse"#)
        .arg("bash")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("_dormouse"), "{out:?}");
}
