//! Each check of a run as the report shows it: a name, a verdict and one line that explains it,
//! made from what the run measured (the healed cluster, the history's checkers, the oracles, the
//! nodes' exits and logs). The order the run pushes them in is the order the report lists them.
use std::time::Duration;

use super::{CheckResult, cluster::DamagedLogs, oracles::Oracles, target::Target};
use crate::check::{CheckReport, Verdict};

/// The detail of a check the target cannot answer: `lacks` says why.
pub(super) fn not_reported(target: &Target, lacks: &str) -> String {
    format!("not applicable: {} {lacks}", target.name())
}

/// A check whose outcome is `Ok(detail)` for a pass or `Err((verdict, detail))` otherwise.
pub(super) fn of_outcome(name: &str, outcome: Result<String, (Verdict, String)>) -> CheckResult {
    CheckResult {
        name: name.into(),
        verdict: outcome.as_ref().map_or_else(|(v, _)| *v, |_| Verdict::Pass),
        detail: outcome.unwrap_or_else(|(_, e)| e),
    }
}

/// After healing: every node a voter again (`restored`: what was restored, or why not), a write
/// taken (`first_write`: how long after healing), and one leader agreed on (`serves`).
pub(super) fn serves_again(
    restored: &Result<Vec<String>, String>,
    first_write: Option<Duration>,
    serves: Option<u64>,
    settle: Duration,
) -> CheckResult {
    CheckResult {
        name: "serves again after healing".into(),
        verdict: if serves.is_some() && first_write.is_some() && restored.is_ok() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: match (restored, first_write, serves) {
            (Err(why), _, _) => format!("a node could not be made a voter again: {why}"),
            (Ok(_), None, _) => format!("no write taken within {} s", settle.as_secs()),
            (Ok(_), Some(_), None) => format!(
                "the nodes did not agree on a leader within {} s",
                settle.as_secs()
            ),
            (Ok(restored), Some(took), Some(leader)) => format!(
                "first write {:.1} s after healing, leader n{leader}{}",
                took.as_secs_f64(),
                if restored.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", restored.join("; "))
                }
            ),
        },
    }
}

/// What the history's checkers found: linearizability, lost writes (judged only if every key
/// was read at the end: `all_read`), and values from nowhere or stale reads.
pub(super) fn of_history(checked: &CheckReport, all_read: bool) -> Vec<CheckResult> {
    let lin = &checked.linearizability;
    let linearizable = CheckResult {
        name: "linearizable".into(),
        verdict: lin.verdict,
        detail: lin.violations.first().map_or_else(
            || {
                format!(
                    "{} keys, {} ms{}",
                    lin.keys_checked,
                    lin.elapsed_ms,
                    if lin.undecided_keys.is_empty() {
                        String::new()
                    } else {
                        format!(", undecided: {}", lin.undecided_keys.join(","))
                    }
                )
            },
            |v| v.explanation.clone(),
        ),
    };
    let lost = &checked.durability.lost_writes;
    let none_lost = CheckResult {
        name: "no acknowledged write lost".into(),
        verdict: if !all_read {
            Verdict::Unknown
        } else if lost.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: lost.first().map_or_else(
            || {
                if all_read {
                    "every key read at the end".into()
                } else {
                    "some final reads failed".into()
                }
            },
            |f| f.explanation.clone(),
        ),
    };
    let other = checked.durability.values_from_nowhere.len() + checked.durability.stale_reads.len();
    let nothing_else = CheckResult {
        name: "no value from nowhere, no stale read".into(),
        verdict: if other == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: format!("{other} found"),
    };
    vec![linearizable, none_lost, nothing_else]
}

/// One check per protocol oracle, from what the status watcher fed it.
pub(super) fn of_oracles(oracles: &Oracles) -> Vec<CheckResult> {
    super::oracles::NAMES
        .iter()
        .map(|name| {
            let (verdict, detail) = oracles.verdict(name);
            CheckResult {
                name: (*name).into(),
                verdict,
                detail,
            }
        })
        .collect()
}

/// No write applied twice: `doubles` are the answers that showed a second application,
/// `resent` how many writes were sent again.
pub(super) fn applied_once(target: &Target, doubles: &[String], resent: u64) -> CheckResult {
    CheckResult {
        name: "each write applied once".into(),
        verdict: if !target.deduplicates() {
            Verdict::NotApplicable
        } else if doubles.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: doubles.first().cloned().unwrap_or_else(|| {
            if !target.deduplicates() {
                return format!(
                    "not applicable: {} has no request ids, so no write was sent again",
                    target.name()
                );
            }
            format!("no answer showed a second application ({resent} writes sent again)")
        }),
    }
}

/// `exited`: the nodes that exited by themselves, each with how.
pub(super) fn still_running(exited: &[String]) -> CheckResult {
    CheckResult {
        name: "every node still running".into(),
        verdict: if exited.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if exited.is_empty() {
            "all running at the end".into()
        } else {
            exited.join("; ")
        },
    }
}

/// `panics`: the panic lines found in the nodes' logs.
pub(super) fn no_panic(target: &Target, panics: &[String]) -> CheckResult {
    CheckResult {
        name: "no node panicked".into(),
        verdict: if !target.has_panic_marker() {
            Verdict::NotApplicable
        } else if panics.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if target.has_panic_marker() {
            panics.first().cloned().unwrap_or_else(|| "none".into())
        } else {
            not_reported(target, "has no way to tell a panic from its log")
        },
    }
}

/// Every log the `corruption` fault damaged in the middle was refused: a node that started on
/// one cut durable records off as if a crash had torn them, or trusted a damaged one.
pub(super) fn damaged_logs_refused(damaged: &DamagedLogs) -> CheckResult {
    CheckResult {
        name: "a log damaged in the middle is refused".into(),
        verdict: if damaged.accepted.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: match (damaged.accepted.first(), damaged.refused) {
            (Some(accepted), _) => accepted.clone(),
            (None, 0) => "no log was damaged in the middle".into(),
            (None, refused) => format!("{refused} damaged logs refused"),
        },
    }
}
