//! The plan of a run's crash points (which (class, call) pair next, each walked before one
//! repeats) and the coverage report of which were reached.
use super::*;

/// The seeded walk over every (class, call) pair, and what was placed so far.
pub struct CrashPlan {
    /// The target's classes of files.
    pub classes: &'static [FileClass],
    pairs: Vec<(FileClass, &'static str)>,
    next: usize,
    pub attempts: Vec<CrashAttempt>,
    /// The observer rules on each node's mount (`CALL(path=GLOB)=off`, which only count), by
    /// node, in the order of `pairs`: which pairs a node's database actually makes.
    observers: Vec<Vec<u64>>,
    /// Pairs some node was seen making.
    pub seen: BTreeSet<(&'static str, &'static str)>,
}

impl CrashPlan {
    pub fn new(classes: &'static [FileClass], rng: &mut SplitMix64) -> Self {
        let mut pairs: Vec<(FileClass, &'static str)> = classes
            .iter()
            .flat_map(|class| CALLS.iter().map(move |call| (*class, *call)))
            .collect();
        // Fisher-Yates with the seed: each run covers the pairs in its own order.
        for i in (1..pairs.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            pairs.swap(i, j);
        }
        // A run places only a handful of ordinary crash points (election and catch-up points
        // take the rest), fewer than the pairs a database makes, and the log's writes and
        // syncs are crashed at anyway by the points that follow a recovery and an election. So
        // the calls that change which files exist come first, in the seeded order: ordering
        // bugs between durable steps (a segment sealed before its successor exists, a rename
        // before its data is synced) sit at them (ALICE, CrashMonkey).
        pairs.sort_by_key(|(_, call)| !NAMESPACE_CALLS.contains(call));
        Self {
            classes,
            pairs,
            next: 0,
            attempts: Vec::new(),
            observers: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Installs on every node's mount a rule per pair that only counts its calls, so crash
    /// points go where the database actually makes calls (a pair it never makes would only
    /// time out).
    pub async fn observe(&mut self, cluster: &Arc<Mutex<Cluster>>) -> Result<()> {
        let cluster = cluster.lock().await;
        for node in 1..=cluster.nodes.len() {
            let mut ids = Vec::new();
            for (class, call) in &self.pairs {
                ids.push(cluster.add_fault(node, &format!("{call}(path=\"{}\")=off", class.glob))?);
            }
            self.observers.push(ids);
        }
        Ok(())
    }

    /// Reads the observers' counts on `node`: every pair with a call so far is seen.
    pub(super) fn look(&mut self, faultfs_status: &serde_json::Value) {
        let Some(rules) = faultfs_status["faults"].as_array() else {
            return;
        };
        for (index, (class, call)) in self.pairs.iter().enumerate() {
            let counted = self.observers.iter().any(|ids| {
                rules.iter().any(|rule| {
                    rule["id"].as_u64() == ids.get(index).copied()
                        && rule["calls"].as_u64() > Some(0)
                })
            });
            if counted {
                self.seen.insert((class.name, call));
            }
        }
    }

    /// The next pair to try: a pair seen made (all of them until something is seen), those
    /// never reached first, in the seeded order.
    pub(super) fn next_pair(&mut self) -> (FileClass, &'static str) {
        if !self.seen.is_empty() {
            let seen = self.seen.clone();
            for _ in 0..self.pairs.len() {
                let pair = self.next_unreached();
                if seen.contains(&(pair.0.name, pair.1)) {
                    return pair;
                }
            }
        }
        self.next_unreached()
    }

    /// A durable call for a catch-up crash point, among the pairs seen made.
    pub(super) fn catch_up_pair(&self, rng: &mut SplitMix64) -> Option<(FileClass, &'static str)> {
        let candidates: Vec<(FileClass, &'static str)> = self
            .pairs
            .iter()
            .filter(|(class, call)| {
                CATCH_UP_CALLS.contains(call) && self.seen.contains(&(class.name, *call))
            })
            .copied()
            .collect();
        // Half the time one of the snapshot's own calls: installing it is the catch-up's steps
        // (write, sync, rename into place) that the log's purge must not run ahead of.
        let snapshot: Vec<(FileClass, &'static str)> = candidates
            .iter()
            .filter(|(class, _)| class.name == "snapshot")
            .copied()
            .collect();
        let pool = if !snapshot.is_empty() && rng.below(2) == 0 {
            snapshot
        } else {
            candidates
        };
        (!pool.is_empty()).then(|| pool[rng.below(pool.len() as u64) as usize])
    }

    pub(super) fn next_unreached(&mut self) -> (FileClass, &'static str) {
        let reached: BTreeSet<(&str, &str)> = self
            .attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| (a.class, a.call))
            .collect();
        for _ in 0..self.pairs.len() {
            let pair = self.pairs[self.next % self.pairs.len()];
            self.next += 1;
            if !reached.contains(&(pair.0.name, pair.1)) {
                return pair;
            }
        }
        let pair = self.pairs[self.next % self.pairs.len()];
        self.next += 1;
        pair
    }
}

/// The calls that create, rename, remove or cut a file.
pub(super) const NAMESPACE_CALLS: &[&str] = &["create", "rename", "unlink", "truncate"];

/// The log's writes and syncs come by the hundred a second, the other calls a few times a
/// second or less (a snapshot every few seconds on a node that takes them rarely).
pub(super) fn frequent(class: &FileClass, call: &str) -> bool {
    class.name == "wal" && matches!(call, "write" | "fdatasync")
}

/// How many matching calls to let pass before the crash.
pub(super) fn calls_to_skip(class: &FileClass, call: &str, rng: &mut SplitMix64) -> u64 {
    rng.below(if frequent(class, call) { 40 } else { 2 })
}

/// How long a crash point may take to be reached: a rare call (a snapshot's) needs seconds.
pub(super) fn reach_within(class: &FileClass, call: &str) -> Duration {
    if frequent(class, call) {
        REACH_WITHIN
    } else {
        RARE_REACH_WITHIN
    }
}

/// How long a crash point may take to be reached before it is reported as not reached.
pub(super) const REACH_WITHIN: Duration = Duration::from_millis(2500);

/// The same for a call a node makes a few times a second or less.
pub(super) const RARE_REACH_WITHIN: Duration = Duration::from_millis(5000);

/// What the report says about the crash points of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CrashCoverage {
    pub placed: usize,
    pub reached: usize,
    /// `class call role` for each point reached (role: leader, follower, candidate, recovering).
    pub covered: Vec<String>,
    /// `class call` pairs placed and never reached.
    pub never_reached: Vec<String>,
    pub correlated: usize,
    pub during_recovery: usize,
    /// Reached second crashes once a node had recovered and written again.
    pub after_recovery: usize,
    /// Reached crashes of the program alone (no power loss).
    pub program_crashes: usize,
    /// `class call` pairs the nodes were seen making.
    pub seen: Vec<String>,
    pub attempts: Vec<CrashAttempt>,
}

impl CrashCoverage {
    pub fn of(attempts: &[CrashAttempt], seen: Vec<String>) -> Self {
        let covered: BTreeSet<String> = attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| format!("{} {} {}", a.class, a.call, a.role))
            .collect();
        let reached_pairs: BTreeSet<(&str, &str)> = attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| (a.class, a.call))
            .collect();
        let never: BTreeSet<String> = attempts
            .iter()
            .filter(|a| !reached_pairs.contains(&(a.class, a.call)))
            .map(|a| format!("{} {}", a.class, a.call))
            .collect();
        Self {
            placed: attempts.len(),
            reached: attempts.iter().filter(|a| a.reached).count(),
            covered: covered.into_iter().collect(),
            never_reached: never.into_iter().collect(),
            correlated: attempts
                .iter()
                .filter(|a| a.reached && a.correlation != Correlation::Alone)
                .count(),
            during_recovery: attempts
                .iter()
                .filter(|a| a.reached && a.during_recovery)
                .count(),
            after_recovery: attempts
                .iter()
                .filter(|a| a.reached && a.after_recovery)
                .count(),
            program_crashes: attempts
                .iter()
                .filter(|a| a.reached && a.program_crash)
                .count(),
            seen,
            attempts: attempts.to_vec(),
        }
    }
}
