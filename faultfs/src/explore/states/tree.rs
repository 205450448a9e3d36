//! The file tree a crash state leaves, by inode, and its materialisation on disk.
use std::collections::{BTreeMap, HashMap};

use super::*;

#[derive(Clone, Debug)]
pub enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<String, Ino>),
    Symlink(String),
}

/// A file tree by inode, as a crash state leaves it.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    modes: HashMap<Ino, u32>,
}

impl Tree {
    pub(super) fn new(kinds: &HashMap<Ino, (NodeKind, u32)>) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(BTreeMap::new()));
        let modes = kinds.iter().map(|(&ino, (_, mode))| (ino, *mode)).collect();
        for (&ino, (kind, _)) in kinds {
            let node = match kind {
                NodeKind::File => Node::File(Vec::new()),
                NodeKind::Dir => Node::Dir(BTreeMap::new()),
                NodeKind::Symlink { target } => Node::Symlink(target.clone()),
            };
            nodes.insert(ino, node);
        }
        Tree { nodes, modes }
    }

    /// The permission bits of a node as the state has them (None: the root, left as made).
    pub fn mode(&self, ino: Ino) -> Option<u32> {
        self.modes.get(&ino).copied()
    }

    pub(super) fn apply(&mut self, effect: &Effect, cut: Option<usize>) {
        match effect {
            Effect::AddEntry { dir, name, ino } => {
                if let Some(Node::Dir(entries)) = self.nodes.get_mut(dir) {
                    entries.insert(name.clone(), *ino);
                }
            }
            Effect::RemoveEntry { dir, name, ino } => {
                if let Some(Node::Dir(entries)) = self.nodes.get_mut(dir)
                    && entries.get(name) == Some(ino)
                {
                    entries.remove(name);
                }
            }
            Effect::Write { ino, offset, data } => {
                if let Some(Node::File(bytes)) = self.nodes.get_mut(ino) {
                    let data = &data[..cut.unwrap_or(data.len()).min(data.len())];
                    let start = *offset as usize;
                    if bytes.len() < start + data.len() {
                        bytes.resize(start + data.len(), 0);
                    }
                    bytes[start..start + data.len()].copy_from_slice(data);
                }
            }
            Effect::Resize { ino, size } => {
                if let Some(Node::File(bytes)) = self.nodes.get_mut(ino) {
                    bytes.resize(*size as usize, 0);
                }
            }
            Effect::SetMode { ino, mode } => {
                self.modes.insert(*ino, *mode);
            }
        }
    }

    /// Every name reachable from the root, parents before children, with its inode. A
    /// directory reachable under two names (a rename durable in its new directory only) is
    /// shown under the first.
    pub fn walk(&self) -> Vec<(PathBuf, Ino, &Node)> {
        let mut out = Vec::new();
        let mut seen_dirs = HashSet::from([ROOT]);
        let mut pending = vec![(PathBuf::new(), ROOT)];
        while let Some((path, dir)) = pending.pop() {
            let Some(Node::Dir(entries)) = self.nodes.get(&dir) else {
                continue;
            };
            let mut children = Vec::new();
            for (name, &ino) in entries {
                let Some(node) = self.nodes.get(&ino) else {
                    continue;
                };
                let child = path.join(name);
                if let Node::Dir(_) = node {
                    if !seen_dirs.insert(ino) {
                        continue;
                    }
                    children.push((child.clone(), ino));
                }
                out.push((child, ino, node));
            }
            pending.extend(children.into_iter().rev());
        }
        out
    }

    /// A digest of what a program would see: names, kinds, contents and which names share a
    /// file.
    pub fn digest(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        let mut first_path: HashMap<Ino, PathBuf> = HashMap::new();
        for (path, ino, node) in self.walk() {
            path.hash(&mut hasher);
            self.mode(ino).hash(&mut hasher);
            match node {
                Node::File(bytes) => {
                    0u8.hash(&mut hasher);
                    if let Some(original) = first_path.get(&ino) {
                        original.hash(&mut hasher);
                    } else {
                        bytes.hash(&mut hasher);
                        first_path.insert(ino, path);
                    }
                }
                Node::Dir(_) => 1u8.hash(&mut hasher),
                Node::Symlink(target) => {
                    2u8.hash(&mut hasher);
                    target.hash(&mut hasher);
                }
            }
        }
        hasher.finish()
    }
}
