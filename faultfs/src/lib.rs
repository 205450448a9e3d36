//! faultfs: serves a backing directory through FUSE and keeps everything a program has not made
//! durable volatile, so a simulated power loss drops it. Also tears writes and injects errors
//! and latency, driven by Faultline's fault rules.
pub mod control;
pub mod explore;
pub mod faults;
pub mod fs;
pub mod journal;
pub mod mount;
pub mod power_loss;
mod ranges;
pub mod reference;
pub mod state;
mod store;
pub mod trace;
