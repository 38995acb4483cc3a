//! Every command with `--json` has its JSON Schema in `docs/schemas/`, named after the command
//! path (`bundle show` → `bundle-show.schema.json`), and every schema file belongs to such a
//! command; `tests/cli/schemas.rs` validates the real outputs against them.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;

use crate::Cli;

/// `(schema name, command path)` of every (sub)command that takes `--json`.
fn json_commands(command: &clap::Command, path: &[&str], out: &mut Vec<(String, String)>) {
    if command.get_arguments().any(|a| a.get_long() == Some("json")) {
        out.push((path.join("-"), path.join(" ")));
    }
    for sub in command.get_subcommands() {
        let mut path = path.to_vec();
        path.push(sub.get_name());
        json_commands(sub, &path, out);
    }
}

#[test]
fn every_json_command_has_a_schema_and_every_schema_a_command() {
    let mut commands = Vec::new();
    json_commands(&Cli::command(), &[], &mut commands);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let missing: Vec<_> = commands
        .iter()
        .filter(|(name, _)| !dir.join(format!("{name}.schema.json")).is_file())
        .map(|(name, command)| format!("dormouse {command} --json: no docs/schemas/{name}.schema.json"))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let names: BTreeSet<_> = commands.iter().map(|(name, _)| name.as_str()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".schema.json") {
            assert!(
                names.contains(name),
                "docs/schemas/{file}: no command `{name}` takes --json"
            );
        }
    }
    // The commands this test was written with, so that a broken walk cannot pass vacuously.
    for name in [
        "inspect",
        "ps",
        "proc",
        "uname",
        "keygen",
        "bundle-show",
        "bundle-verify",
        "emulate",
        "check",
    ] {
        assert!(names.contains(name), "{name} lost its --json? {names:?}");
    }
}
