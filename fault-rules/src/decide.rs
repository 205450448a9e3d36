//! The one decision every tool makes for a call: which rule, if any, faults it. faultfs asks it
//! for each file operation, the injector's `run` mode for each syscall it is notified of.
use std::net::SocketAddr;

use crate::{Action, Filter, Rule};

/// What a tool knows of one call, for the rules' filters. A tool answers what it can; a filter
/// on a fact it does not answer never matches. Facts are asked for only when a rule filters on
/// them, so a costly one (a path read from /proc) is looked up only then.
pub trait CallFacts {
    fn path(&self) -> Option<String> {
        None
    }
    fn fd(&self) -> Option<i32> {
        None
    }
    fn dst(&self) -> Option<SocketAddr> {
        None
    }
    fn thread(&self) -> Option<String> {
        None
    }
}

impl Filter {
    /// Whether this filter lets `call` through.
    pub fn matches(&self, call: &impl CallFacts) -> bool {
        match self {
            Filter::Path(glob) => call.path().is_some_and(|path| glob.matches(&path)),
            Filter::Fd(fd) => call.fd() == Some(*fd),
            Filter::Dst(dst) => call.dst() == Some(*dst),
            Filter::Thread(name) => call.thread().as_deref() == Some(name.as_str()),
        }
    }
}

/// A rule's fault for one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    /// The key the rule was passed with.
    pub key: u64,
    pub action: Action,
}

/// Decides one call. `rules` are those on the call's operation, in order, each with its key:
/// a number that stays the rule's own while it is active, which seeds its probabilities.
/// Every rule whose filters match counts the call, so a rule's Nth call is the same whatever
/// the rules before it did; the first whose chain fires something other than `off` (or
/// `count`, which only counts) decides.
pub fn decide<'a>(
    rules: impl IntoIterator<Item = (u64, &'a mut Rule)>,
    seed: u64,
    call: &impl CallFacts,
) -> Option<Fired> {
    let mut decision = None;
    for (key, rule) in rules {
        if !rule.filters.iter().all(|filter| filter.matches(call)) {
            continue;
        }
        let action = rule.chain.eval(seed, key).cloned();
        if decision.is_none()
            && let Some(action) = action.filter(|a| !matches!(a, Action::Off | Action::Count))
        {
            decision = Some(Fired { key, action });
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_rule;

    struct File(&'static str);

    impl CallFacts for File {
        fn path(&self) -> Option<String> {
            Some(self.0.to_owned())
        }
    }

    fn rules(texts: &[&str]) -> Vec<Rule> {
        texts.iter().map(|text| parse_rule(text).unwrap()).collect()
    }

    fn keyed(rules: &mut [Rule]) -> impl Iterator<Item = (u64, &mut Rule)> {
        rules
            .iter_mut()
            .enumerate()
            .map(|(i, rule)| (i as u64, rule))
    }

    #[test]
    fn the_first_rule_that_fires_decides_and_every_matching_rule_counts_the_call() {
        let mut set = rules(&["fsync=1*error(EIO)", "fsync=2*off->error(ENOSPC)"]);
        let wal = File("wal/1");
        let first = decide(keyed(&mut set), 0, &wal).unwrap();
        assert_eq!((first.key, first.action), (0, Action::Error(libc_eio())));
        // The second rule counted that call too, so its third call is the one it fails.
        assert_eq!(decide(keyed(&mut set), 0, &wal), None);
        let third = decide(keyed(&mut set), 0, &wal).unwrap();
        assert_eq!(third.key, 1);
        assert_eq!(set[1].chain.calls(), 3);
    }

    #[test]
    fn a_filter_on_a_fact_the_tool_does_not_know_never_matches() {
        let mut set = rules(&["fsync(path=\"wal/*\")=error(EIO)", "fsync(fd=3)=error(EIO)"]);
        assert_eq!(decide(keyed(&mut set[..1]), 0, &File("data/x")), None);
        assert!(decide(keyed(&mut set[..1]), 0, &File("wal/2")).is_some());
        assert_eq!(decide(keyed(&mut set[1..]), 0, &File("wal/2")), None);
        assert_eq!(
            set[1].chain.calls(),
            0,
            "a call its filter refused is not counted"
        );
    }

    fn libc_eio() -> i32 {
        crate::errno_from_name("EIO").unwrap()
    }
}
