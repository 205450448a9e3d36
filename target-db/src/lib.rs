//! target-db: a replicated key-value database bundled so Faultline's tools have a real system to
//! break: the data directory's owner (`data_dir`), the write-ahead log (`wal`), openraft's storage on it (`log_store`, `state_machine`),
//! the Raft network and the HTTP server (`network`; `server` for the client routes and `/status`,
//! `admin` for the operators' routes, `refusals` for how a request is turned down, `node` for
//! what every handler shares, `cluster_token` guarding the routes peers and operators use), and
//! leadership hand-off (`handoff`). The `target-db` binary (`src/bin/target-db/`) is its CLI:
//! `serve`, and `client`/`admin` through `target-db-client`.
pub mod admin;
pub mod bad_request;
pub mod cluster_token;
pub mod data_dir;
pub mod handoff;
pub mod log_store;
pub mod network;
pub mod node;
pub mod refusals;
pub mod server;
pub mod state_machine;
pub mod types;
pub mod wal;
