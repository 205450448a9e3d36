//! target-db: a replicated key-value database bundled so Faultline's tools have a real system to
//! break. Built so far: the write-ahead log and openraft's storage on it (log store, state
//! machine with client sessions and durable snapshots).
pub mod log_store;
pub mod network;
pub mod server;
pub mod state_machine;
pub mod types;
pub mod wal;
