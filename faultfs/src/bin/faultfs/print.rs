//! What `faultfs explore` and `faultfs ctl` print for a person.
use faultfs::explore;

pub fn print_summary(summary: &explore::Summary) {
    println!(
        "explored {} distinct crash states ({} candidates, {} duplicates) at {} crash points, \
         --metadata {}, in {:.1} s{}",
        summary.states_explored,
        summary.candidate_states,
        summary.duplicates,
        summary.crash_points,
        explore::model_name(summary.model),
        summary.elapsed_ms as f64 / 1000.0,
        if summary.sampled {
            " (stopped at --max-states: a seeded sample, not every state)"
        } else {
            ""
        }
    );
    if summary.failing.is_empty() {
        println!("every state passed the check");
        return;
    }
    println!(
        "FAILED: {} states at {} crash points fail the check",
        summary.failing_states,
        summary.failing.len()
    );
    for point in &summary.failing {
        println!(
            "\n- after operation #{} ({} {}): {} failing states; the smallest:",
            point.after.number,
            point.after.call,
            point.after.path.display(),
            point.failing_states
        );
        print_failing_state(&point.smallest);
    }
    if let Some(journal) = &summary.journal {
        println!("\nrecord: {}", journal.display());
    }
}

pub fn print_failing_state(state: &explore::FailingState) {
    println!(
        "    state {} loses {} unsynced operation(s)",
        state.id, state.lost
    );
    const SHOWN: usize = 12;
    for op in state.dropped.iter().take(SHOWN) {
        println!(
            "      dropped #{} {} {}",
            op.number,
            op.call,
            op.path.display()
        );
    }
    if state.dropped.len() > SHOWN {
        println!(
            "      ... and {} more dropped (all in --json)",
            state.dropped.len() - SHOWN
        );
    }
    if let Some(op) = &state.torn {
        println!(
            "      torn    #{} {} {}",
            op.number,
            op.call,
            op.path.display()
        );
    }
    let ending = match (state.timed_out, state.check_exit) {
        (true, _) => "killed at the timeout".to_string(),
        (false, Some(code)) => format!("exit {code}"),
        (false, None) => "killed by a signal".to_string(),
    };
    println!("    check: {ending}");
    for line in state.check_output.lines().take(20) {
        println!("      | {line}");
    }
    if let Some(at) = &state.kept_at {
        println!("    state kept at {}", at.display());
    }
    if !state.replay.is_empty() {
        println!("    replay: {}", state.replay);
    }
}

pub fn print_answer(answer: &serde_json::Value) {
    let mut fields = answer.as_object().cloned().unwrap_or_default();
    fields.remove("ok");
    if fields.is_empty() {
        println!("ok");
        return;
    }
    for (key, value) in fields {
        println!("{key}: {value}");
    }
}
