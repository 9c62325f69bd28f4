//! The house's rules, checked on the source itself: no two modules import each other,
//! directly or in a loop, and no file grows past what one person can hold in mind.
//!
//! A module is a file under `src/`; it imports another when it names it through
//! `crate::…`, `super::…` or `self::…`. A module naming its own parent or one of its
//! own children is how Rust nests them, not an import, and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a file under `src/` may hold.
const MOST_LINES: usize = 550;

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/a/b.rs` → `crate::a::b`; `src/lib.rs` and `src/main.rs` → `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => "crate".into(),
        _ => format!("crate::{}", parts.join("::")),
    }
}

/// The code without comments and without the unit tests at the end.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path written in `code` that starts at `crate`, `super` or `self`, with
/// the paths inside `use x::{…}` groups spelt out (a nested group down to its base).
fn paths_in(code: &str) -> Vec<String> {
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = ["crate::", "super::", "self::"]
        .iter()
        .filter_map(|root| rest.find(root))
        .min()
    {
        let boundary = rest[..at].chars().next_back().is_none_or(|c| !is_path(c));
        let from = &rest[at..];
        let end = from.find(|c: char| !is_path(c)).unwrap_or(from.len());
        let base = from[..end].trim_end_matches("::");
        rest = &from[end..];
        if !boundary {
            continue;
        }
        if !(from[..end].ends_with("::") && rest.starts_with('{')) {
            paths.push(base.to_owned());
            continue;
        }
        let mut depth = 0;
        let close = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let group = &rest[1..close];
        let mut item_depth = 0;
        for item in group.split(|c: char| {
            item_depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            c == ',' && item_depth == 0
        }) {
            let item = item.split("::{").next().unwrap_or("").trim();
            if !item.is_empty() {
                paths.push(format!("{base}::{item}"));
            }
        }
        rest = &rest[close..];
    }
    paths
}

/// The module that `path`, written in `module`, names: its longest prefix that is
/// a module.
fn resolve(module: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let mut current: Vec<&str> = match segments.next()? {
        "crate" => vec!["crate"],
        "self" => module.split("::").collect(),
        "super" => {
            let mut parent: Vec<&str> = module.split("::").collect();
            parent.pop();
            parent
        }
        _ => return None,
    };
    for segment in segments {
        if segment == "super" {
            current.pop();
            continue;
        }
        let candidate = format!("{}::{segment}", current.join("::"));
        if modules.contains(&candidate) {
            current.push(segment);
        } else {
            break;
        }
    }
    Some(current.join("::"))
}

fn nests(outer: &str, inner: &str) -> bool {
    inner.starts_with(&format!("{outer}::"))
}

/// Modules reachable from `from` by imports.
fn reachable(from: &str, imports: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(module) = stack.pop() {
        for next in imports.get(&module).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_two_modules_import_each_other_directly_or_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = code_of(&std::fs::read_to_string(file).expect("a source file"));
        for path in paths_in(&code) {
            let Some(target) = resolve(&module, &path, &modules) else {
                continue;
            };
            if target != module && !nests(&module, &target) && !nests(&target, &module) {
                imports.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    assert!(
        imports
            .get("crate::fleet::worker")
            .is_some_and(|i| i.contains("crate::reconcile")),
        "the checker sees imports (the fleet's worker reaches the reconciler): {imports:#?}"
    );
    let circles: Vec<String> = modules
        .iter()
        .filter(|m| reachable(m, &imports).contains(*m))
        .cloned()
        .collect();
    assert!(
        circles.is_empty(),
        "these modules import themselves through others: {circles:?}\nimports: {imports:#?}"
    );
}

#[test]
fn no_source_file_is_longer_than_one_person_holds_in_mind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MOST_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MOST_LINES} lines: {long:?}");
}

#[test]
fn the_checker_finds_a_loop_and_leaves_nesting_alone() {
    let modules: BTreeSet<String> = ["crate", "crate::a", "crate::a::inner", "crate::b"]
        .map(String::from)
        .into();
    assert_eq!(
        resolve("crate::a", "crate::b::Thing", &modules).as_deref(),
        Some("crate::b")
    );
    assert_eq!(
        resolve("crate::a::inner", "super::Thing", &modules).as_deref(),
        Some("crate::a")
    );
    let paths = paths_in("use crate::{a::X, b::{C, D}};\nuse super::inner::Y; my_crate::z");
    assert_eq!(paths, ["crate::a::X", "crate::b", "super::inner::Y"]);
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    imports
        .entry("crate::a".into())
        .or_default()
        .insert("crate::b".into());
    imports
        .entry("crate::b".into())
        .or_default()
        .insert("crate::a".into());
    assert!(reachable("crate::a", &imports).contains("crate::a"));
    assert!(nests("crate::a", "crate::a::inner") && !nests("crate::a", "crate::ab"));
}
