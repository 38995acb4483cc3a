//! No module of any crate imports, directly or through others, a module that imports it back:
//! inside a crate the module tree shows its layers (ARCHITECTURE.md). The check is textual:
//! every `.rs` file under a crate's `src/` is a module; `crate::` and `super::` paths (in `use`
//! trees and inline) resolve to the deepest existing module; a module's ancestors and
//! descendants do not count; `#[cfg(test)] mod tests` blocks are left out.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dormouse_tests::workspace_root;

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                out.insert(parts, path);
            }
        }
    }
    out
}

/// `a::{b::c, d as e}` into `[[a, b, c], [a, d]]`; nothing for what is not a use tree.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = tree.split_whitespace().collect();
    // Renames go: only the path matters.
    let mut kept = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "as" {
            i += 2;
            continue;
        }
        kept.push(words[i]);
        i += 1;
    }
    let tree: String = kept.concat();
    let path_like = tree.chars().all(|c| c.is_alphanumeric() || "_:{},*".contains(c));
    let balanced = tree.matches('{').count() == tree.matches('}').count();
    if !path_like || !balanced || tree.find('}') < tree.find('{') {
        return Vec::new();
    }
    expand_tree(&tree)
}

fn expand_tree(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect()];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => items.push(std::mem::take(&mut current)),
            '{' => (depth += 1, current.push(c)).1,
            '}' => (depth -= 1, current.push(c)).1,
            _ => current.push(c),
        }
    }
    items.push(current);
    items
        .iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| expand_tree(i))
        .map(|tail| prefix.iter().cloned().chain(tail).collect())
        .collect()
}

fn without_tests_and_comments(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.find("//").map_or(l, |at| &l[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn edges(mods: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph = BTreeMap::new();
    for (module, path) in mods {
        let text = without_tests_and_comments(&std::fs::read_to_string(path).unwrap());
        let mut paths = Vec::new();
        for (at, _) in text.match_indices("use ") {
            let word_start = text[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            if let Some(end) = text[at..].find(';').filter(|_| word_start) {
                paths.extend(expand(&text[at + 4..at + end]));
            }
        }
        for (at, _) in text.match_indices("crate::").chain(text.match_indices("super::")) {
            let word: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(word.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
        }
        let mut targets = BTreeSet::new();
        for parts in paths {
            let (base, rest): (Module, &[String]) = match parts.first().map(String::as_str) {
                Some("crate") => (Vec::new(), &parts[1..]),
                Some("super") => {
                    let ups = parts.iter().take_while(|p| *p == "super").count();
                    (module[..module.len().saturating_sub(ups)].to_vec(), &parts[ups..])
                }
                _ => continue,
            };
            let full: Module = base
                .into_iter()
                .chain(rest.iter().filter(|p| *p != "self" && *p != "*").cloned())
                .collect();
            let Some(target) = (1..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| mods.contains_key(m))
            else {
                continue;
            };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in &s.graph[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn crate_cycles(src: &Path) -> Vec<String> {
    cycles(&edges(&modules(src)))
        .into_iter()
        .map(|c| c.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" <-> "))
        .collect()
}

#[test]
fn no_module_imports_itself_through_others() {
    let root = workspace_root();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let src = entry.path().join("src");
        if entry.path().join("Cargo.toml").is_file() && src.is_dir() {
            for cycle in crate_cycles(&src) {
                found.push(format!("{}: {cycle}", entry.file_name().to_string_lossy()));
            }
        }
    }
    for cycle in crate_cycles(&root.join("src")) {
        found.push(format!("dormouse: {cycle}"));
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

/// The check itself finds a cycle through `use` trees, inline paths and `super::`.
#[test]
fn a_planted_cycle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod inner;\nuse crate::{b::{self, X}};\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "fn f() { super::super::c::g(); }\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct X;\n").unwrap();
    std::fs::write(src.join("c.rs"), "pub fn g() { let _ = crate::a::inner::f; }\n").unwrap();
    assert_eq!(crate_cycles(src), vec!["c <-> a::inner".to_owned()]);
    std::fs::write(src.join("b.rs"), "pub struct X;\n// use crate::a;\n").unwrap();
    assert_eq!(crate_cycles(src).len(), 1);
    std::fs::write(
        src.join("b.rs"),
        "pub struct X;\nuse crate::a::inner as i;\nfn h() { i::f() }\n",
    )
    .unwrap();
    std::fs::write(src.join("c.rs"), "pub fn g() {}\n").unwrap();
    assert!(
        crate_cycles(src).is_empty(),
        "a uses b, b uses a::inner, nothing leads back"
    );
}
