//! Whether the kernel lets the injector fail calls through BPF LSM, as `injector probe` says:
//! faults like wal-write-error need it ("probe at run time, never guess").
use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// None if BPF LSM works here, else the kernel's reason for refusing it.
pub fn refusal(injector: &Path) -> Result<Option<String>> {
    let output = Command::new(injector)
        .args(["probe", "--json"])
        .output()
        .with_context(|| format!("running {} probe", injector.display()))?;
    let probe: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("injector probe did not answer in JSON")?;
    let Some(lsm) = probe["mechanisms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"].as_str().is_some_and(|n| n.starts_with("BPF LSM")))
    else {
        bail!("injector probe did not report BPF LSM");
    };
    Ok((lsm["works"] != true).then(|| lsm["detail"].to_string()))
}
