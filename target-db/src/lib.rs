//! target-db: a replicated key-value database bundled so Faultline's tools have a real system to
//! break. This part: the write-ahead log, durable when it says so and honest when it is not.
pub mod wal;
