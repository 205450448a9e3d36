//! `injector probe` tries the mechanisms for real and explains every refusal.
mod common;

use std::process::Command;

use common::INJECTOR;
use serde_json::Value;

#[test]
fn probe_reports_each_mechanism_with_the_kernels_answer() {
    let output = Command::new(INJECTOR)
        .args(["probe", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mechanisms = report["mechanisms"].as_array().unwrap();
    assert!(mechanisms.len() >= 6);
    for mechanism in mechanisms {
        let works = mechanism["works"].as_bool().unwrap();
        let detail = mechanism["detail"].as_str().unwrap();
        assert_eq!(
            works,
            detail.is_empty(),
            "a refusal always says why: {mechanism}"
        );
    }
    let works = |name: &str| {
        mechanisms
            .iter()
            .find(|m| m["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("{name} not probed"))["works"]
            == true
    };
    // What every other test of the injector relies on.
    assert!(works("tp_btf/sys_enter"));
    assert!(works("tp_btf/sys_exit"));
    assert!(works("tracepoint task/task_newtask"));
    assert!(works("tc classifier"));
    assert!(works("seccomp user notification"));
    assert!(works("NFQUEUE via iptables"));
}
