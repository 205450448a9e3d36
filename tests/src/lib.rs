//! The torture harness: runs a cluster under a client workload, applies faults from outside and
//! checks the recorded history (no acknowledged write lost, linearizable, nodes converge).
//!
//! Not built yet: this crate is the place for it (issues "checkers" and "torture runs").
