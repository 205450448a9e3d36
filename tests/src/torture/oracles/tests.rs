use super::*;
use serde_json::json;

fn status(state: &str, term: u64, boot: u64, commit: u64) -> Value {
    json!({"state": state, "term": term, "boot": boot, "commit_index": commit, "up_ms": 0})
}

#[test]
fn replicas_that_report_different_results_at_one_index_are_caught_once() {
    let with = |checkpoints: Value| {
        let mut status = status("Follower", 2, 1, 0);
        status["result_checkpoints"] = checkpoints;
        status
    };
    let mut oracles = Oracles::default();
    assert_eq!(oracles.verdict(SAME_RESULTS).0, Verdict::NotApplicable);
    oracles.observe(1, (10, 10), &with(json!([[1000, "aa"], [2000, "bb"]])));
    oracles.observe(2, (20, 20), &with(json!([[2000, "bb"]])));
    // n3 restarted from a snapshot at 1500 and applied 2000 again: the same hash is fine.
    oracles.observe(3, (30, 30), &with(json!([[2000, "bb"], [3000, "cc"]])));
    assert_eq!(oracles.verdict(SAME_RESULTS).0, Verdict::Pass);
    oracles.observe(2, (40, 40), &with(json!([[2000, "bb"], [3000, "dd"]])));
    oracles.observe(2, (50, 50), &with(json!([[3000, "dd"]])));
    let (verdict, detail) = oracles.verdict(SAME_RESULTS);
    assert_eq!(verdict, Verdict::Fail);
    assert!(detail.starts_with("1 violation(s)"), "{detail}");
    assert!(
        detail.contains("at log index 3000 n2 reports results hash dd, but n3 reported cc"),
        "{detail}"
    );
}

#[test]
fn two_leaders_of_one_term_are_a_violation_one_leader_twice_is_not() {
    let mut oracles = Oracles::default();
    oracles.observe(1, (10, 10), &status("Leader", 3, 1, 5));
    oracles.observe(1, (20, 20), &status("Leader", 3, 1, 6));
    oracles.observe(2, (30, 30), &status("Leader", 4, 2, 6));
    assert_eq!(oracles.verdict(ONE_LEADER_PER_TERM).0, Verdict::Pass);
    oracles.observe(3, (40, 40), &status("Leader", 4, 3, 6));
    let (verdict, detail) = oracles.verdict(ONE_LEADER_PER_TERM);
    assert_eq!(verdict, Verdict::Fail);
    assert!(detail.contains("n3 leads term 4"), "{detail}");
}

#[test]
fn a_commit_index_going_back_within_one_process_is_a_violation() {
    let mut oracles = Oracles::default();
    oracles.observe(1, (10, 10), &status("Follower", 3, 7, 50));
    oracles.observe(1, (20, 20), &status("Follower", 3, 7, 40));
    assert_eq!(oracles.verdict(NOTHING_GOES_BACK).0, Verdict::Fail);
    // After a restart (another boot) it may start lower.
    let mut oracles = Oracles::default();
    oracles.observe(1, (10, 10), &status("Follower", 3, 7, 50));
    oracles.observe(1, (20, 20), &status("Follower", 3, 8, 40));
    assert_eq!(oracles.verdict(NOTHING_GOES_BACK).0, Verdict::Pass);
}

#[test]
fn a_follower_that_recovers_less_than_it_acknowledged_is_caught() {
    let leader = |time_matched: u64, commit: u64| {
        json!({"state": "Leader", "term": 2, "boot": 1, "commit_index": commit, "up_ms": 0,
               "matched": {"1": commit, "2": time_matched}})
    };
    let mut oracles = Oracles::default();
    oracles.observe(2, (0, 0), &status("Follower", 2, 20, 0));
    // At 1 s the leader saw n2 match 120, committed up to 100.
    oracles.observe(1, (1_000_000_000, 1_000_000_000), &leader(120, 100));
    // n2 restarted at about 1.5 s (up 500 ms at 2 s) and recovered 90: it lost 91..=100.
    let mut restarted = status("Follower", 2, 21, 0);
    restarted["up_ms"] = json!(500);
    restarted["recovered_index"] = json!(90);
    oracles.observe(2, (2_000_000_000, 2_000_000_000), &restarted);
    let (verdict, detail) = oracles.verdict(ACKNOWLEDGED_KEPT);
    assert_eq!(verdict, Verdict::Fail, "{detail}");
    assert!(detail.contains("up to index 100"), "{detail}");
}

#[test]
fn acknowledgements_seen_after_a_restart_do_not_count_against_it() {
    let mut oracles = Oracles::default();
    oracles.observe(2, (0, 0), &status("Follower", 2, 20, 0));
    // The leader saw 100 matched only after n2's new process had started (re-replicated).
    let leader = json!({"state": "Leader", "term": 2, "boot": 1, "commit_index": 100,
                        "up_ms": 0, "matched": {"2": 100}});
    oracles.observe(1, (1_900_000_000, 1_900_000_000), &leader);
    let mut restarted = status("Follower", 2, 21, 0);
    restarted["up_ms"] = json!(500);
    restarted["recovered_index"] = json!(90);
    oracles.observe(2, (2_000_000_000, 2_000_000_000), &restarted);
    assert_eq!(oracles.verdict(ACKNOWLEDGED_KEPT).0, Verdict::Pass);
}

#[test]
fn a_node_that_recovers_a_lower_commit_point_than_it_reported_is_caught() {
    let mut oracles = Oracles::default();
    oracles.observe(
        2,
        (1_000_000_000, 1_000_000_000),
        &status("Follower", 2, 20, 100),
    );
    // Restarted at about 1.5 s with the commit point of 90 on disk.
    let mut restarted = status("Follower", 2, 21, 90);
    restarted["up_ms"] = json!(500);
    restarted["recovered_commit"] = json!(90);
    oracles.observe(2, (2_000_000_000, 2_000_000_000), &restarted);
    let (verdict, detail) = oracles.verdict(NOTHING_GOES_BACK);
    assert_eq!(verdict, Verdict::Fail, "{detail}");
    assert!(detail.contains("commit point of 90"), "{detail}");
    // Recovering all of it (or more, from a snapshot) is what a safe node does.
    let mut oracles = Oracles::default();
    oracles.observe(
        2,
        (1_000_000_000, 1_000_000_000),
        &status("Follower", 2, 20, 100),
    );
    restarted["recovered_commit"] = json!(100);
    oracles.observe(2, (2_000_000_000, 2_000_000_000), &restarted);
    assert_eq!(oracles.verdict(NOTHING_GOES_BACK).0, Verdict::Pass);
}

#[test]
fn a_node_that_recovers_an_older_vote_than_it_reported_is_caught() {
    let mut oracles = Oracles::default();
    let mut voted = status("Follower", 5, 20, 100);
    voted["vote_term"] = json!(5);
    oracles.observe(2, (1_000_000_000, 1_000_000_000), &voted);
    let mut restarted = status("Follower", 4, 21, 100);
    restarted["up_ms"] = json!(500);
    restarted["recovered_term"] = json!(4);
    oracles.observe(2, (2_000_000_000, 2_000_000_000), &restarted);
    let (verdict, detail) = oracles.verdict(NOTHING_GOES_BACK);
    assert_eq!(verdict, Verdict::Fail, "{detail}");
    assert!(detail.contains("recovered a vote of term 4"), "{detail}");
}

#[test]
fn without_the_fields_an_oracle_is_not_applicable() {
    let mut oracles = Oracles::default();
    oracles.observe(1, (10, 10), &json!({"state": "Follower"}));
    for name in NAMES {
        assert_eq!(oracles.verdict(name).0, Verdict::NotApplicable, "{name}");
    }
}
