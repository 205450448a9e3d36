use fault_rules::{Action, Capabilities, Corruption, Filter, Glob, parse_rule, parse_rule_list};

fn fire_sequence(rule: &str, seed: u64, calls: usize) -> Vec<Option<Action>> {
    let mut rule = parse_rule(rule).unwrap();
    (0..calls)
        .map(|_| rule.chain.eval(seed, 0).cloned())
        .collect()
}

#[test]
fn the_examples_users_write_parse() {
    let rule = parse_rule(r#"fsync(path="wal/*")=2*off->1*error(EIO)"#).unwrap();
    assert_eq!(rule.op, "fsync");
    assert_eq!(rule.filters, vec![Filter::Path(Glob::new("wal/*"))]);
    assert_eq!(rule.chain.terms().len(), 2);
    assert_eq!(rule.chain.terms()[1].action, Action::Error(5));

    let rule = parse_rule("sendmsg(dst=127.0.0.1:7002)=error(ECONNRESET)").unwrap();
    assert_eq!(
        rule.filters,
        vec![Filter::Dst("127.0.0.1:7002".parse().unwrap())]
    );
    assert_eq!(rule.chain.terms()[0].action, Action::Error(104));

    let rule = parse_rule("write=20%delay(50)").unwrap();
    assert_eq!(rule.chain.terms()[0].percent, Some(20));
    assert_eq!(rule.chain.terms()[0].action, Action::Delay(50));

    let rule = parse_rule("read(path=\"db/*\", thread=worker)=corrupt(flip)").unwrap();
    assert_eq!(rule.filters.len(), 2);
    assert_eq!(
        rule.chain.terms()[0].action,
        Action::Corrupt(Corruption::Flip)
    );

    for text in [
        "fsync=pause",
        "fsync=3*off->1*kill",
        "write=short(100)",
        "fsync=lose",
        "fsync=fsyncgate",
        "write=signal(SIGTERM)",
        "openat=count",
    ] {
        parse_rule(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn counts_run_in_order_and_off_uses_its_count() {
    let fired = fire_sequence("fsync=3*off->1*error(EIO)->off", 1, 7);
    let eio = Some(Action::Error(5));
    let off = Some(Action::Off);
    assert_eq!(
        fired,
        vec![
            off.clone(),
            off.clone(),
            off.clone(),
            eio,
            off.clone(),
            off.clone(),
            off
        ]
    );
    // Without a final `off` the chain runs dry and calls proceed (None).
    let fired = fire_sequence("fsync=1*error(EIO)", 1, 3);
    assert_eq!(fired, vec![Some(Action::Error(5)), None, None]);
}

#[test]
fn probabilities_are_deterministic_per_seed_and_differ_across_seeds() {
    let a = fire_sequence("write=30%error(EIO)", 42, 2000);
    let b = fire_sequence("write=30%error(EIO)", 42, 2000);
    let c = fire_sequence("write=30%error(EIO)", 43, 2000);
    assert_eq!(a, b, "same seed, same calls: same faults");
    assert_ne!(a, c, "another seed fires other calls");
    let fired = a.iter().filter(|f| f.is_some()).count();
    assert!(
        (450..750).contains(&fired),
        "about 30% of 2000 fired, got {fired}"
    );
}

#[test]
fn a_probability_miss_falls_through_to_the_next_term() {
    let fired = fire_sequence("write=50%error(EIO)->delay(5)", 7, 200);
    assert!(
        fired
            .iter()
            .all(|f| matches!(f, Some(Action::Error(5)) | Some(Action::Delay(5))))
    );
    assert!(fired.contains(&Some(Action::Delay(5))));
}

#[test]
fn lists_split_on_semicolons_outside_quotes() {
    let rules = parse_rule_list(r#"fsync=error(EIO); write(path="a;b")=delay(1);"#).unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].filters, vec![Filter::Path(Glob::new("a;b"))]);
}

#[test]
fn bad_rules_say_what_is_wrong_and_what_would_be_right() {
    let cases = [
        (
            "fsync=3*of",
            "unknown action `of`; actions are: off, error(ERRNO)",
        ),
        ("fsync=error(EIOX)", "`EIOX` is not an errno name"),
        (
            "fsync",
            "expected `=` and actions after `fsync`, as in `fsync=3*off->1*error(EIO)`",
        ),
        ("fsync(size=3)=off", "unknown filter `size`"),
        ("fsync=150%off", "a probability is at most 100%"),
        ("write(dst=nowhere)=off", "`nowhere` is not an address"),
        ("fsync=delay", "`delay` needs an argument"),
        (
            "fsync=delay(18446744073709551615)",
            "a delay is at most 3600000 ms (an hour); to stall a call until you lift it, use pause",
        ),
        ("fsync=off off", "unexpected text after the actions"),
    ];
    for (text, expected) in cases {
        let error = parse_rule(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(
            error.starts_with(&format!("bad fault rule `{text}`")),
            "{error}"
        );
    }
}

#[test]
fn validation_names_what_the_tool_supports() {
    let caps = Capabilities {
        tool: "faultfs",
        ops: &["fsync", "write"],
        actions: &["off", "error", "delay"],
        filters: &["path"],
    };
    parse_rule("fsync(path=\"x\")=error(EIO)")
        .unwrap()
        .validate(&caps)
        .unwrap();
    let error = parse_rule("fsync=kill")
        .unwrap()
        .validate(&caps)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("faultfs cannot carry out `kill`; its actions are: off, error, delay"),
        "{error}"
    );
    let error = parse_rule("sendmsg=off")
        .unwrap()
        .validate(&caps)
        .unwrap_err()
        .to_string();
    assert!(error.contains("faultfs cannot fault `sendmsg`"), "{error}");
    let error = parse_rule("fsync(fd=3)=off")
        .unwrap()
        .validate(&caps)
        .unwrap_err()
        .to_string();
    assert!(error.contains("faultfs has no `fd` filter"), "{error}");
}
