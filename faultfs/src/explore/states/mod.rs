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

mod sweep;
mod tree;

pub use sweep::Sweep;
use sweep::tear_points;
pub use tree::{Node, Tree};

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

#[cfg(test)]
mod tests;
