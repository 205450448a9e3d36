//! What the write-ahead log did, for /metrics: fsync latency as a histogram, bytes appended.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the fsync latency buckets, in seconds (Prometheus `le`).
pub const FSYNC_BUCKETS: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
pub struct WalStats {
    /// Cumulative counts per bucket, plus the +Inf bucket at the end.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    fsync_micros: AtomicU64,
    fsyncs: AtomicU64,
    bytes_appended: AtomicU64,
    /// The highest index known committed and written to the log, plus one (0: none yet).
    committed_plus_one: AtomicU64,
    /// The term of the newest vote written to the log (0: none yet).
    vote_term: AtomicU64,
    /// Set while appends wait for space (the disk filled up), cleared once they are written.
    disk_full: AtomicBool,
}

impl WalStats {
    pub fn record_fsync(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let first = FSYNC_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(FSYNC_BUCKETS.len());
        for bucket in &self.buckets[first..] {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.fsync_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_committed(&self, index: u64) {
        self.committed_plus_one
            .fetch_max(index + 1, Ordering::Relaxed);
    }

    /// The commit index this node has made durable, if any.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }

    pub fn record_vote_term(&self, term: u64) {
        self.vote_term.fetch_max(term, Ordering::Relaxed);
    }

    /// The term of the vote this node has made durable (0: none).
    pub fn vote_term(&self) -> u64 {
        self.vote_term.load(Ordering::Relaxed)
    }

    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::Relaxed);
    }

    /// Whether appends are waiting for space right now.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    pub fn record_append(&self, bytes: u64) {
        self.bytes_appended.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The histogram and counters in Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut text = String::from("# TYPE targetdb_wal_fsync_seconds histogram\n");
        for (le, bucket) in FSYNC_BUCKETS.iter().zip(&self.buckets) {
            text.push_str(&format!(
                "targetdb_wal_fsync_seconds_bucket{{le=\"{le}\"}} {}\n",
                bucket.load(Ordering::Relaxed)
            ));
        }
        let count = self.fsyncs.load(Ordering::Relaxed);
        text.push_str(&format!(
            "targetdb_wal_fsync_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        text.push_str(&format!(
            "targetdb_wal_fsync_seconds_sum {}\ntargetdb_wal_fsync_seconds_count {count}\n",
            self.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        text.push_str(&format!(
            "# TYPE targetdb_wal_appended_bytes_total counter\ntargetdb_wal_appended_bytes_total {}\n",
            self.bytes_appended.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "# TYPE targetdb_disk_full gauge\ntargetdb_disk_full {}\n",
            u8::from(self.disk_full())
        ));
        text
    }
}
