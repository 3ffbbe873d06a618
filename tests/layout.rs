//! The source layout's rules, by scanning `src/`: data flows one way, so
//! no module names one in a higher layer, and no two files name each other
//! (test modules included: a test that reaches up is still a cycle).
//!
//! Layers, lowest first: `pure` (the core: no I/O, no runtime), `ops` (the
//! counters every layer bumps, and their rendering), `rt` (glue between
//! glommio and hyper), `places`, `shard`, `net`, `admin` (the admin
//! endpoint and `herd status`, which read everything), `process` (the
//! server that wires it all). The binaries and `lib.rs` sit above.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const LAYERS: &[&str] = &[
    "pure", "ops", "rt", "places", "shard", "net", "admin", "process",
];

/// Every library source file by module path (`places/upstream/mod.rs` is
/// `places::upstream`), binaries left out.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("src/ is readable")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, root, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src/");
                let mut parts: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                    parts.pop();
                }
                let text = fs::read_to_string(&path).expect("a readable source file");
                out.insert(parts.join("::"), text);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The code of a file without its comments (doc links name modules
/// without importing them).
fn code(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths a file names, each as written after `crate::` or resolved from
/// `super::`, with `use` groups (`a::{b, c::d}`) spread out.
fn named_paths(module: &str, code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not text: `i` may sit inside a character of a string.
        let rest = &bytes[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let base = if starts_word && rest.starts_with(b"crate::") {
            i += "crate::".len();
            Some(Vec::new())
        } else if starts_word && rest.starts_with(b"super::") {
            let mut parent: Vec<&str> = module.split("::").collect();
            while bytes[i..].starts_with(b"super::") {
                i += "super::".len();
                parent.pop();
            }
            Some(parent.into_iter().map(str::to_owned).collect())
        } else {
            None
        };
        let Some(base) = base else {
            i += 1;
            continue;
        };
        // The path after the prefix, up to its end; a group is spread.
        let end = code[i..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(code.len(), |n| i + n);
        let head = code[i..end].trim_end_matches(':');
        let mut prefix = base.clone();
        prefix.extend(
            head.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        if code[end..].starts_with('{') && code[i..end].ends_with("::") {
            let close = code[end..].find(';').map_or(code.len(), |n| end + n);
            spread(&prefix, &code[end + 1..close], &mut paths);
        }
        paths.push(prefix.join("::"));
        i = end;
    }
    paths
}

/// Spreads the items of a `use` group after `prefix`, nested groups too.
fn spread(prefix: &[String], group: &str, paths: &mut Vec<String>) {
    // Split at the commas outside nested braces.
    let (mut depth, mut start) = (0, 0);
    let mut items = Vec::new();
    for (n, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..n]);
                start = group.len();
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..n]);
                start = n + 1;
            }
            _ => {}
        }
    }
    if start < group.len() {
        items.push(&group[start..]);
    }
    for item in items
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty() && *i != "self")
    {
        let mut path = prefix.to_vec();
        match item.split_once('{') {
            Some((head, inner)) => {
                path.extend(
                    head.split("::")
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                spread(&path, inner, paths);
            }
            None => {
                path.extend(item.split("::").map(|s| s.trim().to_owned()));
                paths.push(path.join("::"));
            }
        }
    }
}

/// The module a path lands in: its longest prefix that is a file.
fn module_of(path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

/// Which module names which.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    modules
        .iter()
        .map(|(module, text)| {
            let named = named_paths(module, &code(text))
                .iter()
                .filter_map(|p| module_of(p, &modules))
                .filter(|m| m != module && !m.is_empty())
                .collect();
            (module.clone(), named)
        })
        .collect()
}

fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| *l == top)
}

#[test]
fn every_folder_of_src_has_a_layer() {
    let unplaced: BTreeSet<String> = modules()
        .keys()
        .filter(|m| !m.is_empty() && layer(m).is_none())
        .cloned()
        .collect();
    assert!(
        unplaced.is_empty(),
        "give these a layer in LAYERS: {unplaced:?}"
    );
}

#[test]
fn no_module_names_a_higher_layer() {
    let mut upward = Vec::new();
    for (from, named) in imports() {
        for to in named {
            if let (Some(a), Some(b)) = (layer(&from), layer(&to)) {
                if b > a {
                    upward.push(format!("{from} -> {to}"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_files_name_each_other() {
    let imports = imports();
    let mut cycles = Vec::new();
    for (a, named) in &imports {
        for b in named {
            if a < b && imports.get(b).is_some_and(|n| n.contains(a)) {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_scan_sees_paths_groups_and_super() {
    // The rules above are only as good as the scan: it must find what a
    // file names however it is written, and nothing in comments.
    let paths = named_paths(
        "places::upstream::call",
        &code(
            "use crate::pure::config::{self, Limits, clients::{A, B}};\n\
             // crate::net::hidden\n\
             use super::classify::Verdict;\n\
             let x = crate::ops::metrics::Counter::new();\n",
        ),
    );
    for want in [
        "pure::config::Limits",
        "pure::config::clients::A",
        "places::upstream::classify::Verdict",
        "ops::metrics::Counter::new",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains("hidden")), "{paths:?}");
}
