//! The layout rules of docs/ARCHITECTURE.md, checked on the source: which module may
//! import which (the library's top-level modules and the engine's submodules each form
//! layers, and an arrow may only point to a lower layer), a `//!` line opening every
//! module, and no module over 600 lines without a reason written at its top.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest layer first. A module may import modules of
/// lower layers only (not its own layer: those are independent of each other).
#[rustfmt::skip]
const CRATE_LAYERS: &[&[&str]] = &[
    &["hash", "config", "progress", "interrupt"],
    &["trace"],
    &["engine"],
    &["data"],
    &["sim", "model"],
    &["report"],
    &["lab"],
    &["plan"],
    &["experiment"],
];

/// The engine's submodules, lowest layer first (`engine/mod.rs` itself, the row layout,
/// optimizer and errors, is below all of them).
#[rustfmt::skip]
const ENGINE_LAYERS: &[&[&str]] = &[
    &["testing"],
    &["dtype"],
    &["pool"],
    &["batch", "host"],
    &["storage", "device"],
    &["stats", "flat"],
    &["placement"],
    &["table"],
    &["prefetch"],
    &["collection"],
    &["grouped"],
];

/// Lines a module may have before it must say at its top why it is longer.
const MAX_LINES: usize = 600;
/// What such a module's header says.
const LONG_REASON: &str = "Longer than 600 lines because";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/engine/table/tier.rs` -> `["engine", "table", "tier"]`; `mod.rs` names its folder.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        file.strip_prefix(src).unwrap().with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The module paths a file refers to through `crate::` and `super::` outside comments,
/// each resolved to an absolute path of at least two segments where it has them.
fn references(module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find(['c', 's']) {
            let tail = &rest[at..];
            let boundary = rest[..at].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let (mut base, mut path) = (None, tail);
            if boundary && tail.starts_with("crate::") {
                base = Some(Vec::new());
                path = &tail["crate::".len()..];
            } else if boundary && tail.starts_with("super::") {
                // `super` of a file's module: its parent (a `mod.rs` names the folder itself).
                let mut parent = module.to_vec();
                while let Some(p) = path.strip_prefix("super::") {
                    parent.pop();
                    path = p;
                }
                base = Some(parent);
            }
            match base {
                Some(mut absolute) => {
                    let segments = path.split("::").map(|s| s.trim_start_matches('{'));
                    for segment in segments.take(2) {
                        let name: String = segment.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if name.is_empty() || !name.starts_with(|c: char| c.is_lowercase()) {
                            break;
                        }
                        absolute.push(name);
                    }
                    found.insert(absolute);
                    rest = path;
                }
                None => rest = &tail[1..],
            }
        }
    }
    found
}

fn layer_of(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&name))
}

/// The modules a folder holds: its `.rs` files (but `mod.rs`) and its subfolders.
fn modules_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| !["mod", "lib", "main", "bin"].contains(&name.as_str()))
        .collect()
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Paths that name no module (an item of the crate root, or `super::` out of an
    // inline `mod tests`) are not arrows between modules.
    let (top, engine) = (modules_in(&src), modules_in(&src.join("engine")));
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(src.join("bin")) && !f.ends_with("lib.rs")) {
        let module = module_path(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for target in references(&module, &text) {
            let (Some(from), Some(to)) = (module.first(), target.first()) else { continue };
            if !top.contains(to) {
                continue;
            }
            let (layers, from, to) = if from == to && from == "engine" {
                match (module.get(1), target.get(1)) {
                    (Some(from), Some(to)) if from != to && engine.contains(to) => (ENGINE_LAYERS, from, to),
                    _ => continue,
                }
            } else if from != to {
                (CRATE_LAYERS, from, to)
            } else {
                continue;
            };
            let (Some(a), Some(b)) = (layer_of(layers, from), layer_of(layers, to)) else {
                wrong.push(format!("{}: `{from}` or `{to}` is in no layer of tests/architecture.rs", file.display()));
                continue;
            };
            if b >= a {
                wrong.push(format!("{}: `{from}` (layer {a}) imports `{to}` (layer {b})", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_opens_with_a_doc_line_and_long_ones_say_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "policies/src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if !text.starts_with("//!") {
            wrong.push(format!("{}: does not open with a `//!` line saying what it owns", file.display()));
        }
        let header: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join(" ");
        let lines = text.lines().count();
        if lines > MAX_LINES && !header.contains(LONG_REASON) {
            wrong.push(format!("{}: {lines} lines, and its header does not say \"{LONG_REASON} ...\"", file.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn references_resolve_crate_and_super_paths() {
    let module: Vec<String> = ["engine", "table", "tier"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::engine::storage::{A, B};\nuse super::super::host::HostSlab;\n// crate::model is a comment\nlet x = crate::hash::mix64(1); supercrate::x;";
    let found = references(&module, text);
    let expect: BTreeSet<Vec<String>> = [vec!["engine", "storage"], vec!["engine", "host"], vec!["hash", "mix64"]]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect())
        .collect();
    assert_eq!(found, expect);
}
