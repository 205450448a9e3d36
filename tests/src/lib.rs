//! The torture harness: runs a cluster under a client workload, applies faults from outside and
//! checks the recorded history. This part holds the history format, importers for Jepsen
//! histories, the checkers (linearizability, durability) and the HTML report.
pub mod bench_db;
pub mod check;
pub mod history;
pub mod report;
pub mod results;
pub mod torture;
