//! Where the tools a run starts are: target-db, faultfs and the injector.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Clone)]
pub struct Binaries {
    pub target_db: PathBuf,
    pub faultfs: PathBuf,
    pub injector: PathBuf,
}

impl Binaries {
    /// The tools next to this executable (they are built into the same target directory).
    pub fn beside_me(dir: Option<&Path>) -> Result<Binaries> {
        let dir = match dir {
            Some(dir) => dir.to_owned(),
            None => std::env::current_exe()?
                .parent()
                .context("no parent dir")?
                .to_owned(),
        };
        let binaries = Binaries {
            target_db: dir.join("target-db"),
            faultfs: dir.join("faultfs"),
            injector: dir.join("injector"),
        };
        for binary in [&binaries.target_db, &binaries.faultfs, &binaries.injector] {
            if !binary.exists() {
                bail!(
                    "{} is missing: build the workspace first (cargo xtask torture does)",
                    binary.display()
                );
            }
        }
        Ok(binaries)
    }
}
