//! faultfs: serves a backing directory through FUSE, keeping everything a program has not made
//! durable (fsync of the file, fsync of the parent directory) volatile, so a simulated power loss
//! drops it. Also tears writes and injects errors and latency.
//!
//! Not built yet: this crate is the place for it (issue "faultfs").
