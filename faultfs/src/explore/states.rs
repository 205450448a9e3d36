//! The crash states a persistence model allows at each point of a recorded run, and the file
//! tree each one leaves. Pure: no FUSE, no disk.
//!
//! After operation k, every effect a sync before k covered is on the disk; the others are
//! pending, grouped by the operation that made them (a rename's two entries go together, as
//! a namespace operation survives whole or not at all). The states tried at that point, as
//! ALICE does: none of the pending operations, each prefix of them in the order they were made,
//! all but one (a reordering), and each pending write torn at its first and last 512-byte
//! sector and 4 KiB page boundary with the operations before it kept.
//!
//! What a sync covers follows `faultfs mount --metadata`: a file's data and size by its fsync or
//! fdatasync; a name (a create, link, unlink or either side of a rename) by an fsync of its
//! directory; under `ext4` a file's fsync (a directory's too) also covers its own name and the
//! names of the directories above it, and a pending name is kept only with every pending name
//! made before it (a journal commits names in order). Modes and owners are not modelled.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::Arc,
};

use crate::{
    journal::{Entry, NodeKind, Op},
    state::{Ino, MetadataMode, ROOT},
};

/// One change to the tree, made by one operation.
#[derive(Clone, Debug)]
enum Effect {
    AddEntry {
        dir: Ino,
        name: String,
        ino: Ino,
    },
    RemoveEntry {
        dir: Ino,
        name: String,
        ino: Ino,
    },
    Write {
        ino: Ino,
        offset: u64,
        data: Arc<[u8]>,
    },
    Resize {
        ino: Ino,
        size: u64,
    },
    SetMode {
        ino: Ino,
        mode: u32,
    },
}

#[derive(Clone, Debug)]
struct Recorded {
    /// Index of the operation (0-based) among the recorded operations.
    op: usize,
    effect: Effect,
    /// The operation index of the sync that made it durable.
    durable_at: Option<usize>,
}

/// A point a crash can follow: after operation `after` (1-based; 0 is before the first).
#[derive(Clone, Debug)]
pub struct CrashPoint {
    pub after: usize,
    pub call: &'static str,
    pub path: PathBuf,
    /// How many lines the workload had printed before the next operation began.
    pub output_lines: usize,
}

/// Which of the pending operations a state keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kept {
    /// None of them: only what was made durable.
    Nothing,
    /// The first n, in the order they were made (n = all: nothing lost).
    Prefix(usize),
    /// All but the one at this position.
    AllBut(usize),
    /// The first n, and the write at position n cut after `bytes` bytes.
    Torn { before: usize, bytes: usize },
}

/// One crash state: a point and what of its pending operations survived.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CrashState {
    pub point: usize,
    pub kept: Kept,
    /// How many pending operations it loses (a torn one counts as lost).
    pub lost: usize,
}

/// How many states a point has: nothing kept and the prefixes (the likeliest, tried first
/// when states must be sampled), and the rest (all but one, torn writes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub primary: usize,
    pub secondary: usize,
}

/// What the plan keeps of each operation.
#[derive(Clone, Debug, Default)]
struct OpInfo {
    /// Whether it changed anything (a sync does not).
    changes: bool,
    /// The operation index of the last sync that made one of its effects durable; None while
    /// some effect never was.
    durable_after: Option<usize>,
    /// It sets or removes a name (the ext4 journal keeps these in order).
    naming: bool,
    /// A write's (offset, length).
    write: Option<(u64, usize)>,
}

/// A recorded run made ready for building crash states.
pub struct Plan {
    effects: Vec<Recorded>,
    kinds: HashMap<Ino, (NodeKind, u32)>,
    ops: Vec<OpInfo>,
    pub points: Vec<CrashPoint>,
    output: Vec<String>,
}

impl Plan {
    pub fn new(entries: &[Entry], model: MetadataMode) -> Plan {
        let mut effects: Vec<Recorded> = Vec::new();
        let mut kinds = HashMap::new();
        let mut points = vec![CrashPoint {
            after: 0,
            call: "start",
            path: PathBuf::new(),
            output_lines: 0,
        }];
        let mut ops: Vec<OpInfo> = Vec::new();
        let mut output: Vec<String> = Vec::new();
        // The live parent of each directory, to find what an ext4 fsync commits above a file.
        let mut parents: HashMap<Ino, Ino> = HashMap::new();
        for entry in entries {
            let (op, path) = match entry {
                Entry::Output { line } => {
                    output.push(line.clone());
                    if let Some(last) = points.last_mut() {
                        last.output_lines = output.len();
                    }
                    continue;
                }
                Entry::Op { op, path } => (op, path),
            };
            let index = ops.len();
            let mut info = OpInfo::default();
            let mut add = |effect| {
                effects.push(Recorded {
                    op: index,
                    effect,
                    durable_at: None,
                })
            };
            match op {
                Op::Create {
                    parent,
                    name,
                    ino,
                    kind,
                    mode,
                } => {
                    kinds.insert(*ino, (kind.clone(), *mode));
                    if *kind == NodeKind::Dir {
                        parents.insert(*ino, *parent);
                    }
                    info.naming = true;
                    add(Effect::AddEntry {
                        dir: *parent,
                        name: name.clone(),
                        ino: *ino,
                    });
                }
                Op::Link { parent, name, ino } => {
                    info.naming = true;
                    add(Effect::AddEntry {
                        dir: *parent,
                        name: name.clone(),
                        ino: *ino,
                    });
                }
                Op::Remove { parent, name, ino } => {
                    info.naming = true;
                    add(Effect::RemoveEntry {
                        dir: *parent,
                        name: name.clone(),
                        ino: *ino,
                    });
                }
                Op::Rename {
                    from_parent,
                    from_name,
                    to_parent,
                    to_name,
                    ino,
                } => {
                    if parents.contains_key(ino) {
                        parents.insert(*ino, *to_parent);
                    }
                    info.naming = true;
                    add(Effect::RemoveEntry {
                        dir: *from_parent,
                        name: from_name.clone(),
                        ino: *ino,
                    });
                    add(Effect::AddEntry {
                        dir: *to_parent,
                        name: to_name.clone(),
                        ino: *ino,
                    });
                }
                Op::Write { ino, offset, data } => {
                    info.write = Some((*offset, data.len()));
                    add(Effect::Write {
                        ino: *ino,
                        offset: *offset,
                        data: data.as_slice().into(),
                    });
                }
                Op::Resize { ino, size } => add(Effect::Resize {
                    ino: *ino,
                    size: *size,
                }),
                Op::Chmod { ino, mode } => add(Effect::SetMode {
                    ino: *ino,
                    mode: *mode,
                }),
                Op::Fsync { ino, .. } | Op::FsyncDir { ino } => {
                    let is_dir = matches!(op, Op::FsyncDir { .. });
                    let mut above = Vec::new();
                    let mut at = *ino;
                    while let Some(&parent) = parents.get(&at) {
                        if above.contains(&parent) {
                            break;
                        }
                        above.push(at);
                        at = parent;
                    }
                    above.push(at);
                    for recorded in effects.iter_mut().filter(|r| r.durable_at.is_none()) {
                        let covered = match &recorded.effect {
                            Effect::Write { ino: of, .. } | Effect::Resize { ino: of, .. } => {
                                !is_dir && of == ino
                            }
                            // A file's or a directory's own fsync makes its mode durable.
                            Effect::SetMode { ino: of, .. } => of == ino,
                            Effect::AddEntry {
                                dir, ino: named, ..
                            } => {
                                (is_dir && dir == ino)
                                    || (model == MetadataMode::Ext4
                                        && (named == ino || above.contains(named)))
                            }
                            Effect::RemoveEntry { dir, .. } => is_dir && dir == ino,
                        };
                        if covered {
                            recorded.durable_at = Some(index);
                        }
                    }
                }
            }
            info.changes = effects.last().is_some_and(|r| r.op == index);
            if model == MetadataMode::Posix {
                info.naming = false;
            }
            ops.push(info);
            points.push(CrashPoint {
                after: index + 1,
                call: op.call(),
                path: path.clone(),
                output_lines: output.len(),
            });
        }
        for op in &mut ops {
            op.durable_after = Some(0);
        }
        for recorded in &effects {
            let info = &mut ops[recorded.op];
            info.durable_after = match (info.durable_after, recorded.durable_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        Plan {
            effects,
            kinds,
            ops,
            points,
            output,
        }
    }

    /// The lines the workload had printed at a point.
    pub fn output(&self, point: usize) -> &[String] {
        &self.output[..self.points[point].output_lines]
    }

    fn is_pending(&self, op: usize, point: usize) -> bool {
        let info = &self.ops[op];
        op < point && info.changes && info.durable_after.is_none_or(|at| at >= point)
    }

    /// The operations not yet durable at a point (0-based indexes), in order.
    pub fn pending_at(&self, point: usize) -> Vec<usize> {
        (0..point.min(self.ops.len()))
            .filter(|&op| self.is_pending(op, point))
            .collect()
    }

    /// Every point's state counts, in one pass.
    pub fn counts(&self) -> Vec<Counts> {
        let mut sweep = Sweep::new(self);
        (0..self.points.len())
            .map(|point| {
                sweep.advance_to(point);
                sweep.counts()
            })
            .collect()
    }

    /// The states a point allows, given its pending operations (`pending_at`): nothing kept
    /// and each prefix first (the primary states), then all but one, then torn writes.
    pub fn states_at(&self, point: usize, pending: &[usize]) -> Vec<CrashState> {
        let count = pending.len();
        let mut states = vec![CrashState {
            point,
            kept: Kept::Nothing,
            lost: count,
        }];
        for n in 1..=count {
            states.push(CrashState {
                point,
                kept: Kept::Prefix(n),
                lost: count - n,
            });
        }
        // All but one: under ext4 a name may be dropped only with every name after it.
        let last_naming = pending.iter().rposition(|&op| self.ops[op].naming);
        for (skipped, &op) in pending.iter().enumerate().take(count.saturating_sub(1)) {
            if self.ops[op].naming && Some(skipped) != last_naming {
                continue;
            }
            states.push(CrashState {
                point,
                kept: Kept::AllBut(skipped),
                lost: 1,
            });
        }
        for (position, &op) in pending.iter().enumerate() {
            let Some((offset, length)) = self.ops[op].write else {
                continue;
            };
            for bytes in tear_points(offset, length) {
                states.push(CrashState {
                    point,
                    kept: Kept::Torn {
                        before: position,
                        bytes,
                    },
                    lost: count - position,
                });
            }
        }
        states
    }

    /// The pending operations a state drops (1-based numbers) and the one it tears.
    pub fn losses(&self, state: &CrashState, pending: &[usize]) -> (Vec<usize>, Option<usize>) {
        let number = |position: usize| pending[position] + 1;
        let all = 0..pending.len();
        match &state.kept {
            Kept::Nothing => (all.map(number).collect(), None),
            Kept::Prefix(n) => (all.skip(*n).map(number).collect(), None),
            Kept::AllBut(skipped) => (vec![number(*skipped)], None),
            Kept::Torn { before, .. } => (
                all.skip(before + 1).map(number).collect(),
                Some(number(*before)),
            ),
        }
    }

    /// The tree a crash state leaves (`pending`: the point's pending operations).
    pub fn tree(&self, state: &CrashState, pending: &[usize]) -> Tree {
        let keeps = |op: usize| -> Option<Option<usize>> {
            let position = pending.binary_search(&op).ok()?;
            match &state.kept {
                Kept::Nothing => None,
                Kept::Prefix(n) => (position < *n).then_some(None),
                Kept::AllBut(skipped) => (position != *skipped).then_some(None),
                Kept::Torn { before, bytes } => {
                    if position < *before {
                        Some(None)
                    } else if position == *before {
                        Some(Some(*bytes))
                    } else {
                        None
                    }
                }
            }
        };
        let mut tree = Tree::new(&self.kinds);
        for recorded in self.effects.iter().filter(|r| r.op < state.point) {
            let durable = recorded.durable_at.is_some_and(|at| at < state.point);
            let cut = if durable {
                None
            } else {
                match keeps(recorded.op) {
                    Some(cut) => cut,
                    None => continue,
                }
            };
            tree.apply(&recorded.effect, cut);
        }
        tree
    }
}

/// Walks the points in order, keeping the pending operations as a set, so that counting or
/// visiting every point costs one pass over the record.
pub struct Sweep<'a> {
    plan: &'a Plan,
    point: usize,
    pending: std::collections::BTreeSet<usize>,
    naming: std::collections::BTreeSet<usize>,
    tears: usize,
    /// The point at which each operation stops being pending.
    ends: BTreeMap<usize, Vec<usize>>,
}

impl<'a> Sweep<'a> {
    pub fn new(plan: &'a Plan) -> Sweep<'a> {
        Sweep {
            plan,
            point: 0,
            pending: Default::default(),
            naming: Default::default(),
            tears: 0,
            ends: BTreeMap::new(),
        }
    }

    /// Moves forward to `point` (never back).
    pub fn advance_to(&mut self, point: usize) {
        while self.point < point {
            // Operation `self.point` has run: it is pending from the next point on.
            let op = self.point;
            self.point += 1;
            let info = &self.plan.ops[op];
            if info.changes && info.durable_after.is_none_or(|at| at >= self.point) {
                self.pending.insert(op);
                if info.naming {
                    self.naming.insert(op);
                }
                if let Some((offset, length)) = info.write {
                    self.tears += tear_points(offset, length).len();
                }
                if let Some(at) = info.durable_after {
                    self.ends.entry(at + 1).or_default().push(op);
                }
            }
            if let Some(done) = self.ends.remove(&self.point) {
                for op in done {
                    self.pending.remove(&op);
                    self.naming.remove(&op);
                    if let Some((offset, length)) = self.plan.ops[op].write {
                        self.tears -= tear_points(offset, length).len();
                    }
                }
            }
        }
    }

    pub fn pending(&self) -> Vec<usize> {
        self.pending.iter().copied().collect()
    }

    fn counts(&self) -> Counts {
        let count = self.pending.len();
        let last = self.pending.last();
        let last_naming = self.naming.last();
        let not_naming_before_last = (count - self.naming.len())
            .saturating_sub(usize::from(last.is_some() && last != last_naming));
        let all_but =
            not_naming_before_last + usize::from(last_naming.is_some() && last_naming != last);
        Counts {
            primary: 1 + count,
            secondary: all_but + self.tears,
        }
    }
}

/// Where a write of `length` bytes at `offset` can be torn: after its first and before its last
/// sector and page boundary (bytes kept, each strictly inside the write).
fn tear_points(offset: u64, length: usize) -> Vec<usize> {
    let end = offset + length as u64;
    let mut cuts = Vec::new();
    for unit in [512u64, 4096] {
        let first = (offset / unit + 1) * unit;
        let last = (end - 1) / unit * unit;
        for at in [first, last] {
            if at > offset && at < end {
                cuts.push((at - offset) as usize);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

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
    fn new(kinds: &HashMap<Ino, (NodeKind, u32)>) -> Tree {
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

    fn apply(&mut self, effect: &Effect, cut: Option<usize>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: Op) -> Entry {
        Entry::Op {
            op,
            path: PathBuf::from("x"),
        }
    }

    fn create(parent: Ino, name: &str, ino: Ino) -> Entry {
        op(Op::Create {
            parent,
            name: name.into(),
            ino,
            kind: NodeKind::File,
            mode: 0o644,
        })
    }

    fn write(ino: Ino, offset: u64, data: &[u8]) -> Entry {
        op(Op::Write {
            ino,
            offset,
            data: data.to_vec(),
        })
    }

    fn files(tree: &Tree) -> BTreeMap<String, Vec<u8>> {
        tree.walk()
            .into_iter()
            .filter_map(|(path, _, node)| match node {
                Node::File(bytes) => Some((path.display().to_string(), bytes.clone())),
                _ => None,
            })
            .collect()
    }

    fn states_at(plan: &Plan, point: usize) -> Vec<BTreeMap<String, Vec<u8>>> {
        let pending = plan.pending_at(point);
        plan.states_at(point, &pending)
            .iter()
            .map(|s| files(&plan.tree(s, &pending)))
            .collect()
    }

    /// The counts the sweep computes match the states listed, at every point.
    fn assert_counts_match(plan: &Plan) {
        for (point, counts) in plan.counts().into_iter().enumerate() {
            let pending = plan.pending_at(point);
            let states = plan.states_at(point, &pending);
            assert_eq!(
                counts.primary + counts.secondary,
                states.len(),
                "point {point}"
            );
            assert_eq!(counts.primary, pending.len() + 1);
        }
    }

    #[test]
    fn an_unsynced_rename_over_a_file_leaves_the_old_or_the_new_file() {
        let entries = vec![
            create(ROOT, "f", 2),
            write(2, 0, b"old"),
            op(Op::Fsync {
                ino: 2,
                data_only: false,
            }),
            op(Op::FsyncDir { ino: ROOT }),
            create(ROOT, "tmp", 3),
            write(3, 0, b"new"),
            op(Op::Rename {
                from_parent: ROOT,
                from_name: "tmp".into(),
                to_parent: ROOT,
                to_name: "f".into(),
                ino: 3,
            }),
        ];
        let plan = Plan::new(&entries, MetadataMode::Posix);
        assert_counts_match(&plan);
        let last = plan.points.len() - 1;
        let states = states_at(&plan, last);
        let old = BTreeMap::from([("f".to_string(), b"old".to_vec())]);
        let empty = BTreeMap::from([("f".to_string(), Vec::new())]);
        assert!(states.contains(&old));
        assert!(
            states.contains(&empty),
            "the rename kept without the write: the bug write+rename without fsync makes"
        );
        assert!(states.iter().all(|s| s.contains_key("f")), "never neither");
    }

    #[test]
    fn a_synced_file_in_an_unsynced_directory_is_lost_under_posix_but_not_ext4() {
        let entries = vec![
            create(ROOT, "f", 2),
            write(2, 0, b"data"),
            op(Op::Fsync {
                ino: 2,
                data_only: false,
            }),
        ];
        let posix = Plan::new(&entries, MetadataMode::Posix);
        assert!(states_at(&posix, 3).contains(&BTreeMap::new()));
        let ext4 = Plan::new(&entries, MetadataMode::Ext4);
        assert!(
            states_at(&ext4, 3)
                .iter()
                .all(|s| s.get("f").map(Vec::as_slice) == Some(&b"data"[..]))
        );
    }

    #[test]
    fn ext4_keeps_names_in_the_order_they_were_made() {
        let entries = vec![
            create(ROOT, "a", 2),
            create(ROOT, "b", 3),
            write(3, 0, b"x"),
        ];
        let plan = Plan::new(&entries, MetadataMode::Ext4);
        assert_counts_match(&plan);
        let states = states_at(&plan, 3);
        assert!(
            !states
                .iter()
                .any(|s| s.contains_key("b") && !s.contains_key("a"))
        );
        let posix = Plan::new(&entries, MetadataMode::Posix);
        assert!(
            states_at(&posix, 3)
                .iter()
                .any(|s| s.contains_key("b") && !s.contains_key("a"))
        );
    }

    #[test]
    fn a_write_is_torn_at_sector_and_page_boundaries() {
        assert_eq!(tear_points(0, 8192), vec![512, 4096, 7680]);
        assert_eq!(tear_points(100, 400), Vec::<usize>::new());
        assert_eq!(tear_points(4000, 200), vec![96]);
        let data = vec![7u8; 1024];
        let entries = vec![
            create(ROOT, "f", 2),
            op(Op::FsyncDir { ino: ROOT }),
            write(2, 0, &data),
        ];
        let plan = Plan::new(&entries, MetadataMode::Posix);
        assert_counts_match(&plan);
        let states = states_at(&plan, 3);
        assert!(states.contains(&BTreeMap::from([("f".to_string(), vec![7u8; 512])])));
    }

    #[test]
    fn output_belongs_to_the_point_before_the_next_operation() {
        let entries = vec![
            create(ROOT, "f", 2),
            Entry::Output { line: "one".into() },
            op(Op::FsyncDir { ino: ROOT }),
            Entry::Output { line: "two".into() },
        ];
        let plan = Plan::new(&entries, MetadataMode::Posix);
        assert!(plan.output(0).is_empty());
        assert_eq!(plan.output(1), ["one"]);
        assert_eq!(plan.output(2), ["one", "two"]);
    }

    #[test]
    fn the_sweep_counts_every_state_of_random_records() {
        for seed in 0..40 {
            let mut rng = fault_rules::SplitMix64::new(seed);
            let mut entries = Vec::new();
            let mut files: Vec<Ino> = Vec::new();
            let mut next = 2;
            for _ in 0..60 {
                let entry = match rng.below(7) {
                    0 | 1 => {
                        files.push(next);
                        next += 1;
                        create(ROOT, &format!("f{next}"), next - 1)
                    }
                    _ if files.is_empty() => op(Op::FsyncDir { ino: ROOT }),
                    2 | 3 => {
                        let ino = files[rng.below(files.len() as u64) as usize];
                        write(ino, rng.below(9000), &vec![1; 1 + rng.below(5000) as usize])
                    }
                    4 => op(Op::Fsync {
                        ino: files[rng.below(files.len() as u64) as usize],
                        data_only: false,
                    }),
                    5 => {
                        let ino = files[rng.below(files.len() as u64) as usize];
                        op(Op::Rename {
                            from_parent: ROOT,
                            from_name: format!("f{}", ino + 1),
                            to_parent: ROOT,
                            to_name: format!("g{ino}"),
                            ino,
                        })
                    }
                    _ => op(Op::FsyncDir { ino: ROOT }),
                };
                entries.push(entry);
            }
            for model in [MetadataMode::Posix, MetadataMode::Ext4] {
                assert_counts_match(&Plan::new(&entries, model));
            }
        }
    }
}
