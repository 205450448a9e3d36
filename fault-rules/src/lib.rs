//! Faultline's fault rules: one language for faultfs and the injector.
//!
//! A rule names an operation, optional filters, and a chain of actions in the syntax of the
//! `fail` crate's failpoints:
//!
//! ```text
//! fsync(path="wal/*")=3*off->1*error(EIO)->off
//! write=20%delay(50)
//! sendmsg(dst=127.0.0.1:7002)=error(ECONNRESET)
//! ```
//!
//! Each term is `[P%][N*]action[(arg)]`. On every matching call the terms are tried in order: a
//! term whose count is used up is skipped, a term whose probability misses falls through to the
//! next one, and the first term that fires decides the call (`off` fires as "no fault"). When no
//! term fires, the call proceeds normally. Probabilities come from a counter-based generator
//! keyed by a seed, so the same seed and the same sequence of calls fire the same faults.
mod action;
mod chain;
mod decide;
mod errno;
mod filter;
mod glob;
mod parse;
mod rng;

pub use action::{Action, Corruption};
pub use chain::{Chain, Term};
pub use decide::{CallFacts, Fired, decide};
pub use errno::{errno_from_name, errno_name};
pub use filter::Filter;
pub use glob::Glob;
pub use parse::{ParseError, parse_rule, parse_rule_list};
pub use rng::SplitMix64;

/// One rule: which operation, which calls of it (filters), and what to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub op: String,
    pub filters: Vec<Filter>,
    pub chain: Chain,
    /// The text the rule was parsed from, for logs and listings.
    pub text: String,
}

/// What a tool supports, for [`Rule::validate`]: rules are parsed by one grammar but each tool
/// implements its own operations, actions and filters.
pub struct Capabilities<'a> {
    pub tool: &'a str,
    pub ops: &'a [&'a str],
    pub actions: &'a [&'a str],
    pub filters: &'a [&'a str],
}

impl Rule {
    /// Checks that `tool` can carry out this rule, naming what it can do instead if not.
    pub fn validate(&self, caps: &Capabilities<'_>) -> Result<(), ParseError> {
        if !caps.ops.contains(&self.op.as_str()) {
            return Err(ParseError::new(
                &self.text,
                0,
                format!(
                    "{} cannot fault `{}`; its operations are: {}",
                    caps.tool,
                    self.op,
                    caps.ops.join(", ")
                ),
            ));
        }
        self.validate_actions_and_filters(caps)
    }

    /// Like [`Rule::validate`] without the operation check, for tools whose operations are an
    /// open set (the injector accepts any syscall).
    pub fn validate_actions_and_filters(&self, caps: &Capabilities<'_>) -> Result<(), ParseError> {
        let refuse = |message: String| Err(ParseError::new(&self.text, 0, message));
        for filter in &self.filters {
            if !caps.filters.contains(&filter.name()) {
                return refuse(format!(
                    "{} has no `{}` filter; its filters are: {}",
                    caps.tool,
                    filter.name(),
                    caps.filters.join(", ")
                ));
            }
        }
        for term in self.chain.terms() {
            let name = term.action.name();
            if !caps.actions.contains(&name) {
                return refuse(format!(
                    "{} cannot carry out `{name}`; its actions are: {}",
                    caps.tool,
                    caps.actions.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
