//! Hand-made histories, one per rule of the checkers, written in Faultline's JSON lines.
use std::time::Duration;

use tests::{
    check::{self, CheckReport, Limits, Verdict},
    history::{
        History,
        generate::{Shape, exhausting_history, linearizable_history},
    },
};

/// Builds a history from compact lines: `P invoke|ok|fail|info f key value time`, where value is
/// `-` (none), a string, or `from>to` for cas; a cas completion `ok` with value `nomatch` means
/// it ran and found another value.
fn history(lines: &[&str]) -> History {
    let mut json = String::new();
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [process, kind, f, key, value, time] = parts[..] else {
            panic!("bad test line {line}");
        };
        let mut event = serde_json::json!({
            "process": process.parse::<u64>().unwrap(),
            "kind": kind, "f": f, "key": key, "time": time.parse::<u64>().unwrap(),
        });
        event["value"] = match value {
            "-" => serde_json::Value::Null,
            "nomatch" => {
                event["matched"] = false.into();
                serde_json::Value::Null
            }
            cas if cas.contains('>') => {
                let (from, to) = cas.split_once('>').unwrap();
                serde_json::json!([from, to])
            }
            one => one.into(),
        };
        json.push_str(&event.to_string());
        json.push('\n');
    }
    History::parse_json_lines(json.as_bytes()).unwrap()
}

fn check(lines: &[&str]) -> CheckReport {
    check::check(&history(lines), Limits::default())
}

#[test]
fn sequential_put_then_get_passes() {
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke get k - 30",
        "2 ok get k a 40",
    ]);
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
}

#[test]
fn an_unknown_write_may_have_taken_effect() {
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke put k b 30",
        "2 info put k b 40",
        "3 invoke get k - 100",
        "3 ok get k b 110",
    ]);
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
}

#[test]
fn an_unknown_write_may_never_take_effect() {
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke put k b 30",
        "3 invoke get k - 100",
        "3 ok get k a 110",
    ]);
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
}

#[test]
fn an_unknown_write_takes_effect_once_and_not_before_its_invoke() {
    // b is read before its write was invoked: impossible however the unknown outcome went.
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "3 invoke get k - 30",
        "3 ok get k b 40",
        "2 invoke put k b 50",
        "2 info put k b 60",
    ]);
    assert_eq!(report.linearizability.verdict, Verdict::Fail, "{report:#?}");
    assert_eq!(
        report.durability.values_from_nowhere.len(),
        1,
        "{report:#?}"
    );
}

#[test]
fn a_failed_write_never_takes_effect() {
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke put k b 30",
        "2 fail put k b 40",
        "3 invoke get k - 100",
        "3 ok get k b 110",
    ]);
    assert_eq!(report.verdict, Verdict::Fail, "{report:#?}");
    assert_eq!(report.durability.values_from_nowhere.len(), 1);
}

#[test]
fn a_lost_acknowledged_write_is_named() {
    let report = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "1 invoke put k b 30",
        "1 ok put k b 40",
        "2 invoke get k - 100",
        "2 ok get k a 110",
    ]);
    assert_eq!(report.verdict, Verdict::Fail);
    let lost = &report.durability.lost_writes;
    assert_eq!(lost.len(), 1, "{report:#?}");
    assert_eq!(
        lost[0].operations,
        vec![1, 2],
        "the put of b and the final read"
    );
    assert!(
        lost[0].explanation.contains("put(k, \"b\")"),
        "{}",
        lost[0].explanation
    );
    let violation = &report.linearizability.violations[0];
    assert_eq!(violation.key, "k");
    assert_eq!(
        violation.stuck_at, 2,
        "the final read is what no order explains"
    );
}

#[test]
fn a_write_that_a_concurrent_write_may_have_overwritten_is_not_lost() {
    let report = check(&[
        "1 invoke put k a 10",
        "2 invoke put k b 12",
        "1 ok put k a 20",
        "2 ok put k b 25",
        "3 invoke get k - 100",
        "3 ok get k a 110",
    ]);
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
}

#[test]
fn a_stale_read_by_one_client_is_named() {
    let report = check(&[
        "1 invoke put k old 10",
        "1 ok put k old 20",
        "1 invoke put k new 30",
        "1 ok put k new 40",
        "2 invoke get k - 50",
        "2 ok get k new 60",
        "2 invoke get k - 70",
        "2 ok get k old 80",
    ]);
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.durability.stale_reads.len(), 1, "{report:#?}");
    assert_eq!(report.linearizability.verdict, Verdict::Fail);
    // The smallest window: the two reads alone, with no write between them, cannot be ordered.
    let violation = &report.linearizability.violations[0];
    assert_eq!(violation.window, vec![2, 3], "{violation:#?}");
    assert!(violation.from_any_value);
}

#[test]
fn a_value_out_of_nowhere_is_named() {
    let report = check(&["1 invoke get k - 10", "1 ok get k ghost 20"]);
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.durability.values_from_nowhere.len(), 1);
    assert!(!report.linearizability.violations[0].from_any_value);
}

#[test]
fn a_cas_that_found_another_value_constrains_the_state() {
    let ok = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke cas k b>c 30",
        "2 ok cas k nomatch 40",
        "3 invoke get k - 50",
        "3 ok get k a 60",
    ]);
    assert_eq!(ok.verdict, Verdict::Pass, "{ok:#?}");
    let bad = check(&[
        "1 invoke put k a 10",
        "1 ok put k a 20",
        "2 invoke cas k a>c 30",
        "2 ok cas k nomatch 40",
    ]);
    assert_eq!(bad.linearizability.verdict, Verdict::Fail, "{bad:#?}");
}

/// Enough concurrent writes of unknown outcome that the search cannot finish within the limits.
fn explosive_history() -> History {
    exhausting_history(26)
}

#[test]
fn running_out_of_time_is_unknown_never_pass() {
    let limits = Limits {
        time: Duration::from_millis(200),
        memory_bytes: usize::MAX,
    };
    let report = check::check(&explosive_history(), limits);
    assert_eq!(
        report.linearizability.verdict,
        Verdict::Unknown,
        "{report:#?}"
    );
    assert_eq!(report.linearizability.undecided_keys, vec!["k".to_owned()]);
    assert_eq!(report.verdict, Verdict::Unknown);
}

#[test]
fn running_out_of_memory_is_unknown_never_pass() {
    let limits = Limits {
        time: Duration::from_secs(600),
        memory_bytes: 1 << 20,
    };
    let report = check::check(&explosive_history(), limits);
    assert_eq!(
        report.linearizability.verdict,
        Verdict::Unknown,
        "{report:#?}"
    );
}

#[test]
fn a_large_concurrent_history_passes_and_one_changed_read_fails_it() {
    let mut history = linearizable_history(Shape {
        clients: 10,
        keys: 20,
        operations: 20_000,
        unknown_percent: 1,
        seed: 7,
    });
    assert_eq!(
        check::check(&history, Limits::default()).verdict,
        Verdict::Pass
    );

    // Change one read in the middle to a value its key had long before.
    let target = (10_000..)
        .find(|&i| history.operations[i].read.is_some())
        .unwrap();
    let key = history.operations[target].key.clone();
    let earlier = history.operations[..target - 2000]
        .iter()
        .find(|op| op.key == key && op.written_value().is_some())
        .and_then(|op| op.written_value().map(str::to_owned))
        .unwrap();
    history.operations[target].read = Some(earlier);
    let report = check::check(&history, Limits::default());
    assert_eq!(report.linearizability.verdict, Verdict::Fail);
    assert_eq!(report.linearizability.violations[0].key, key);
    assert_eq!(report.linearizability.violations[0].stuck_at, target);
}

#[test]
fn json_lines_round_trip() {
    let original = linearizable_history(Shape {
        clients: 4,
        keys: 3,
        operations: 500,
        unknown_percent: 5,
        seed: 3,
    });
    let text = original.to_json_lines();
    let parsed = History::parse_json_lines(text.as_bytes()).unwrap();
    assert_eq!(parsed.operations.len(), original.operations.len());
    for (a, b) in original.operations.iter().zip(&parsed.operations) {
        assert_eq!(
            (&a.key, &a.args, a.outcome, &a.read, a.matched, a.invoke),
            (&b.key, &b.args, b.outcome, &b.read, b.matched, b.invoke)
        );
    }
}

#[test]
fn a_completion_without_invoke_is_an_error_naming_the_line() {
    let text = "{\"process\":1,\"kind\":\"invoke\",\"f\":\"get\",\"key\":\"k\",\"time\":1}\n\
                {\"process\":2,\"kind\":\"ok\",\"f\":\"get\",\"key\":\"k\",\"value\":\"a\",\"time\":2}\n";
    let error = History::parse_json_lines(text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(
        error.contains("process 2 completes an operation it never invoked"),
        "{error}"
    );
}
