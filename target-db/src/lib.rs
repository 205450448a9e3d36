//! target-db: a replicated key-value database on openraft with its own write-ahead log and
//! snapshots, bundled so the tools have a real system to break.
//!
//! Not built yet: this crate is the place for it (issue "target-db").
