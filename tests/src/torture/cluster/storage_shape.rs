//! The storage shape of each node (snapshot interval, log segment size), chosen by the seed.
/// How often a node snapshots and how large its log segments are, chosen by the seed for each
/// node, so runs reach log rotation, purge and snapshot installs at different rates (one fixed
/// shape never rotated a segment in a 60 s run), and one run meets several shapes. A flag the
/// run passes itself wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StorageShape {
    /// None: the run's own --snapshot-every.
    pub snapshot_every: Option<u64>,
    /// None: the run's own --segment-bytes.
    pub segment_bytes: Option<u64>,
}

/// The smallest log segment a node may get: a few appends each.
const SMALLEST_SEGMENT: u64 = 4 << 10;
/// The shortest snapshot interval a node may get, in entries: a few snapshots a second.
const MOST_FREQUENT_SNAPSHOTS: u64 = 100;

impl StorageShape {
    /// Every node's shape for a run: each drawn by the seed, and one node (unless one drew it
    /// already) with the smallest segments and the most frequent snapshots. A purge deletes
    /// the segments wholly below the snapshot, and an off-by-one there deletes an entry no
    /// snapshot holds only when the entry after the snapshot ends a segment: with segments of
    /// a few entries and a purge every fraction of a second that comes within seconds, with
    /// larger segments or rarer purges once in a run or never (measured on a planted purge
    /// off by one: caught within 30 s of kills on 4 KiB segments and 100-entry snapshots,
    /// never on 4 KiB and 2,000, nor by two default runs with no node of that shape).
    pub fn for_run(seed: u64, nodes: usize, db_flags: &[String]) -> Vec<Self> {
        let mut shapes: Vec<Self> = (1..=nodes)
            .map(|node| Self::for_seed(seed, node, db_flags))
            .collect();
        let compaction_edge = Self {
            snapshot_every: Some(MOST_FREQUENT_SNAPSHOTS),
            segment_bytes: Some(SMALLEST_SEGMENT),
        };
        let all_drawn = shapes
            .iter()
            .all(|shape| shape.segment_bytes.is_some() && shape.snapshot_every.is_some());
        if all_drawn && !shapes.contains(&compaction_edge) && nodes > 0 {
            let mut rng = fault_rules::SplitMix64::new(seed ^ 0x534d_414c_4c53_4547);
            shapes[rng.below(nodes as u64) as usize] = compaction_edge;
        }
        shapes
    }

    fn for_seed(seed: u64, node: usize, db_flags: &[String]) -> Self {
        let mut rng = fault_rules::SplitMix64::new(
            seed ^ 0x0053_544f_5241_4745 ^ (node as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let snapshot_every = [MOST_FREQUENT_SNAPSHOTS, 500, 2000][rng.below(3) as usize];
        // 4 KiB segments hold a few appends each: a purge or a rotation lands on a segment's
        // edge often, where off-by-one and missing-sync bugs in compaction live.
        let segment_bytes = [SMALLEST_SEGMENT, 16 << 10, 64 << 10, 1 << 20][rng.below(4) as usize];
        let given = |flag: &str| db_flags.iter().any(|f| f.starts_with(flag));
        Self {
            snapshot_every: (!given("--snapshot-every")).then_some(snapshot_every),
            segment_bytes: (!given("--segment-bytes")).then_some(segment_bytes),
        }
    }

    /// No shape of the harness's: the target keeps its own (these flags are target-db's).
    pub fn theirs() -> Self {
        Self {
            snapshot_every: None,
            segment_bytes: None,
        }
    }

    /// The shape the named scenarios were written for: a snapshot every 500 entries, one large
    /// segment (unless the run gives its own flags).
    pub fn fixed(db_flags: &[String]) -> Self {
        let given = |flag: &str| db_flags.iter().any(|f| f.starts_with(flag));
        Self {
            snapshot_every: (!given("--snapshot-every")).then_some(500),
            segment_bytes: None,
        }
    }

    pub(super) fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(every) = self.snapshot_every {
            flags.extend(["--snapshot-every".to_owned(), every.to_string()]);
        }
        if let Some(bytes) = self.segment_bytes {
            flags.extend(["--segment-bytes".to_owned(), bytes.to_string()]);
        }
        flags
    }

    /// Every node's shape, as the run's first lines say it.
    pub fn describe_all(shapes: &[StorageShape]) -> String {
        let first = shapes[0].describe();
        if shapes.iter().all(|shape| shape.describe() == first) {
            return first;
        }
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| format!("n{}: {}", i + 1, shape.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// As the run's first line says it.
    pub fn describe(&self) -> String {
        let every = self
            .snapshot_every
            .map_or("as given".to_owned(), |n| format!("every {n} entries"));
        let bytes = self
            .segment_bytes
            .map_or("as given or target-db's default".to_owned(), |b| {
                format!("{} KiB", b >> 10)
            });
        format!("snapshots {every}, log segments {bytes}")
    }
}

#[cfg(test)]
mod tests {
    use super::{MOST_FREQUENT_SNAPSHOTS, SMALLEST_SEGMENT, StorageShape};

    #[test]
    fn every_run_has_a_node_at_the_compaction_edge_unless_the_run_sets_the_shape() {
        for seed in 0..200 {
            let shapes = StorageShape::for_run(seed, 3, &[]);
            assert!(
                shapes
                    .iter()
                    .any(|s| s.segment_bytes == Some(SMALLEST_SEGMENT)
                        && s.snapshot_every == Some(MOST_FREQUENT_SNAPSHOTS)),
                "seed {seed}: {}",
                StorageShape::describe_all(&shapes)
            );
            assert_eq!(shapes, StorageShape::for_run(seed, 3, &[]), "seed {seed}");
        }
        let given = ["--segment-bytes=1048576".to_owned()];
        for seed in 0..50 {
            let shapes = StorageShape::for_run(seed, 3, &given);
            assert!(
                shapes.iter().all(|s| s.segment_bytes.is_none()),
                "seed {seed}"
            );
        }
        // Not every node: the other shapes are met too.
        assert!((0..50).any(|seed| {
            StorageShape::for_run(seed, 3, &[])
                .iter()
                .any(|s| s.segment_bytes != Some(SMALLEST_SEGMENT))
        }));
    }
}
