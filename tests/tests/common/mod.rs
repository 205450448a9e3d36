//! Helpers shared by the whole-run tests.

/// The tools a run starts must sit next to the torture binary (one target directory).
pub fn build_tools() {
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--bins",
            "--package",
            "target-db",
            "--package",
            "faultfs",
            "--package",
            "injector-user",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building target-db, faultfs and injector failed"
    );
}
