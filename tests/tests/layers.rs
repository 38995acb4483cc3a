//! The layers of `introspect` are its data flow: memory sources, then address translation, then
//! the kernel's profile, then the Linux walkers. A module never names a layer above its own
//! (`crate::<layer>` paths, outside comments and test modules).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use dormouse_tests::workspace_root;

/// Lowest first.
const INTROSPECT_LAYERS: &[&str] = &["source", "arch", "profile", "linux"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<layer>` paths in `text`, outside `//` comments and the `#[cfg(test)] mod tests`
/// block at the end of a file.
fn named_layers(text: &str, layers: &[&str]) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        for layer in layers {
            let needle = format!("crate::{layer}");
            let named = line.match_indices(&needle).any(|(at, _)| {
                !line[at + needle.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named {
                found.push((*layer).to_owned());
            }
        }
    }
    found
}

fn violations(src: &Path, layers: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (rank, layer) in layers.iter().enumerate() {
        let mut files = Vec::new();
        let dir = src.join(layer);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let single = src.join(format!("{layer}.rs"));
        if single.is_file() {
            files.push(single);
        }
        assert!(!files.is_empty(), "{}: no layer {layer}", src.display());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for higher in named_layers(&text, &layers[rank + 1..]) {
                out.push(format!("{} ({layer}) uses {higher}", file.display()));
            }
        }
    }
    out
}

#[test]
fn introspect_layers_only_look_down() {
    let found = violations(&workspace_root().join("introspect/src"), INTROSPECT_LAYERS);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn a_look_up_is_found() {
    let dir = tempfile::tempdir().unwrap();
    for layer in INTROSPECT_LAYERS {
        std::fs::create_dir(dir.path().join(layer)).unwrap();
        std::fs::write(dir.path().join(layer).join("mod.rs"), "// crate::linux in a comment\n").unwrap();
    }
    assert!(violations(dir.path(), INTROSPECT_LAYERS).is_empty());
    std::fs::write(
        dir.path().join("arch/paging.rs"),
        "use crate::profile::btf::Btf;\nuse crate::source::memory::PhysMemory;\n",
    )
    .unwrap();
    let found = violations(dir.path(), INTROSPECT_LAYERS);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("paging.rs (arch) uses profile"), "{found:?}");
}
