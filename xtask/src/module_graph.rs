//! The import graph between the modules of each library crate, from `use crate::...` and
//! `super::...` paths, and its circles: a module that imports one that imports it back (perhaps
//! through others) makes the two one concept, which the architecture keeps apart.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A module by its crate and path (`tests`, `torture/nemesis`).
type Module = (String, String);

/// Every group of modules that import each other in a circle, in every crate under `root`.
pub fn circles(root: &Path) -> Vec<Vec<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for crate_dir in crate_dirs(root) {
        let name = crate_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let src = crate_dir.join("src");
        for file in rust_files(&src) {
            let me = module_path(&src, &file);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for target in referenced_modules(&me, &code_before_tests(&text)) {
                let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common < me.len() && common < target.len() {
                    let from = me[..=common].join("/");
                    let to = target[..=common].join("/");
                    edges
                        .entry((name.clone(), from))
                        .or_default()
                        .insert((name.clone(), to));
                }
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|group| group.len() > 1)
        .collect()
}

fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| dir.join("Cargo.toml").is_file() && dir.join("src").is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The library's and binaries' own module files; `src/bin/` holds separate crates.
fn rust_files(src: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && path != src.join("bin") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str()))
    {
        parts.pop();
    }
    parts
}

/// The file's code without comments and without its test module (tests may reach anywhere).
fn code_before_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `crate::` and `super::` paths in `code` name, absolute within the crate.
fn referenced_modules(me: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::super::", me[..me.len().saturating_sub(2)].to_vec()),
        ("super::", me[..me.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(anchor) {
            let before = &rest[..at];
            rest = &rest[at + anchor.len()..];
            // `super::super::` is counted once, under its own anchor.
            if anchor == "super::" && (before.ends_with("super::") || rest.starts_with("super::")) {
                continue;
            }
            let preceded_by_word = before
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded_by_word {
                continue;
            }
            for path in paths_in(rest) {
                let mut full = base.clone();
                full.extend(path);
                found.push(full);
            }
        }
    }
    found
}

/// The paths a `use` tree starting at `text` names: `a::b`, `{a, b::{c, d}}`.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let text = text.trim_start();
    if let Some(inner) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        return top_level_items(&inner[..end])
            .into_iter()
            .flat_map(paths_in)
            .collect();
    }
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_lowercase()) || name == "self" {
        return Vec::new();
    }
    match text[name.len()..].trim_start().strip_prefix("::") {
        Some(rest) => {
            let deeper = paths_in(rest);
            if deeper.is_empty() {
                vec![vec![name]]
            } else {
                deeper
                    .into_iter()
                    .map(|path| std::iter::once(name.clone()).chain(path).collect())
                    .collect()
            }
        }
        None => vec![vec![name]],
    }
}

fn top_level_items(list: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        groups: Vec<Vec<Module>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: &Module) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    group.push(w);
                    if done {
                        break;
                    }
                }
                self.groups.push(group);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    let nodes: BTreeSet<&Module> = edges.keys().chain(edges.values().flatten()).collect();
    for v in nodes {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_name_every_module_path() {
        let paths = paths_in("{cluster::Cluster, crash_points::{self, CrashAttempt}, poll};");
        assert_eq!(
            paths,
            vec![
                vec!["cluster".to_owned()],
                vec!["crash_points".to_owned()],
                vec!["poll".to_owned()],
            ]
        );
    }

    #[test]
    fn two_modules_importing_each_other_are_a_circle() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("demo/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(dir.path().join("demo/Cargo.toml"), "").unwrap();
        std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
        std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
        std::fs::write(src.join("b.rs"), "use super::{a::Other, c};\n").unwrap();
        std::fs::write(src.join("c.rs"), "// crate::a::Named only in a comment\n").unwrap();
        let found = circles(dir.path());
        let demo = |m: &str| ("demo".to_owned(), m.to_owned());
        assert_eq!(found.len(), 1, "{found:?}");
        let mut group = found[0].clone();
        group.sort();
        assert_eq!(group, vec![demo("a"), demo("b")]);
    }

    /// The architecture's rule, on this workspace: no module imports one that imports it back.
    #[test]
    fn the_workspace_has_no_import_circles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_eq!(circles(&root), Vec::<Vec<Module>>::new());
    }
}
