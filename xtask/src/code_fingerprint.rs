//! Which code a campaign tested, as one git object id: every committed file but the prose (the
//! `docs/` folder and Markdown files). Two campaigns with the same fingerprint ran the same
//! code, so a campaign cut short by the end of a session can be continued later, even after
//! its results were written into the docs.
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};

/// Paths that do not change what a test binary does.
fn is_prose(path: &str) -> bool {
    path.starts_with("docs/") || path.ends_with(".md")
}

/// The fingerprint of HEAD's code, or an error naming the files that make the work tree differ
/// from HEAD (a campaign on uncommitted code could never be matched again).
pub fn of_head(root: &Path) -> Result<String> {
    let status = git(root, &["status", "--porcelain", "--untracked-files=normal"])?;
    let changed: Vec<&str> = status
        .lines()
        .filter_map(|line| line.get(3..))
        .filter(|path| !is_prose(path))
        .collect();
    if !changed.is_empty() {
        bail!(
            "the work tree has uncommitted code ({}); commit it (or stash it) so the campaign's results name the code they tested",
            changed.join(", ")
        );
    }
    let listing = git(root, &["ls-tree", "-r", "HEAD"])?;
    hash_object(root, &code_listing(&listing))
}

/// `git ls-tree -r` lines (`mode type id<TAB>path`) without the prose, in git's order.
fn code_listing(ls_tree: &str) -> String {
    ls_tree
        .lines()
        .filter(|line| {
            line.split_once('\t')
                .is_some_and(|(_, path)| !is_prose(path))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .context("running git (the campaign's code is named by its git objects)")?;
    ensure!(
        output.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn hash_object(root: &Path, text: &str) -> Result<String> {
    let mut child = Command::new("git")
        .current_dir(root)
        .args(["hash-object", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running git hash-object")?;
    child
        .stdin
        .take()
        .context("git hash-object's stdin")?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "git hash-object failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "100644 blob aaaa\tREADME.md\n100644 blob bbbb\tdocs/flaky-tests.md\n100644 blob cccc\txtask/src/flakes.rs\n100644 blob dddd\tdocs/flakes/campaign.json\n";

    #[test]
    fn prose_does_not_count_and_code_does() {
        assert_eq!(
            code_listing(LISTING),
            "100644 blob cccc\txtask/src/flakes.rs\n"
        );
        let docs_changed = LISTING.replace("bbbb", "eeee").replace("aaaa", "ffff");
        assert_eq!(code_listing(&docs_changed), code_listing(LISTING));
        let code_changed = LISTING.replace("cccc", "eeee");
        assert_ne!(code_listing(&code_changed), code_listing(LISTING));
    }
}
