//! The checker against histories it did not write: Jepsen's etcd logs and the multi-key logs,
//! each with a known verdict.
use std::path::Path;

use tests::{
    check::{self, Limits, Verdict},
    history::History,
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/linearizability");

fn verdict_of(path: &Path) -> Verdict {
    let history = History::load(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check::check(&history, Limits::default()).verdict
}

#[test]
fn every_corpus_file_gives_its_expected_verdict() {
    let etcd = Path::new(CORPUS).join("jepsen-etcd");
    let expected = std::fs::read_to_string(etcd.join("EXPECTED")).unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for line in expected.lines().filter(|line| !line.trim().is_empty()) {
        let (file, verdict) = line.split_once(' ').unwrap();
        let want = match verdict.trim() {
            "linearizable" => Verdict::Pass,
            "not-linearizable" => Verdict::Fail,
            other => panic!("unknown expectation {other}"),
        };
        let got = verdict_of(&etcd.join(file));
        if got != want {
            wrong.push(format!("{file}: expected {want:?}, got {got:?}"));
        }
        checked += 1;
    }
    for entry in std::fs::read_dir(Path::new(CORPUS).join("kv")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = if name.ends_with("-ok.txt") {
            Verdict::Pass
        } else {
            assert!(name.ends_with("-bad.txt"), "unexpected corpus file {name}");
            Verdict::Fail
        };
        let got = verdict_of(&path);
        if got != want {
            wrong.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 74, "the whole corpus is checked");
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}
