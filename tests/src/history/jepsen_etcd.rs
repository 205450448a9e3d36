//! Jepsen's etcd logs: one compare-and-set register, `INFO  jepsen.util - P :TYPE :F VALUE`.
//! Line numbers serve as times, which keeps Jepsen's real-time order.
use super::{Event, Func, History, HistoryError, Kind, Value, pair_events};

/// The single key all operations of these logs act on.
pub const REGISTER: &str = "register";

pub fn parse(text: &str) -> Result<History, HistoryError> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let Some((_, rest)) = line.split_once(" - ") else {
            continue;
        };
        let error = |message: String| HistoryError::Parse {
            line: line_no,
            message,
        };
        let mut fields = rest.split_whitespace();
        let (Some(process), Some(kind), Some(f)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(error(format!("expected `P :TYPE :F VALUE`, got {rest:?}")));
        };
        let value: Vec<&str> = fields.collect();
        let process: u64 = process
            .parse()
            .map_err(|_| error(format!("process {process:?} is not a number")))?;
        let f = match f {
            ":read" => Func::Get,
            ":write" => Func::Put,
            ":cas" => Func::Cas,
            other => return Err(error(format!("unknown function {other}"))),
        };
        let value = parse_value(&value.join(" "));
        // A cas that etcd answered with "compare failed" is logged as :fail; it did run and saw
        // another value, which constrains the register as much as a read does.
        let (kind, matched) = match (kind, f) {
            (":invoke", _) => (Kind::Invoke, None),
            (":ok", Func::Cas) => (Kind::Ok, Some(true)),
            (":ok", _) => (Kind::Ok, None),
            (":fail", Func::Cas) => (Kind::Ok, Some(false)),
            (":fail", _) => (Kind::Fail, None),
            (":info", _) => (Kind::Info, None),
            (other, _) => return Err(error(format!("unknown type {other}"))),
        };
        let value = match (kind, f) {
            // A read's invoke carries `nil`; a failed read carries `:timed-out`.
            (Kind::Invoke | Kind::Fail | Kind::Info, Func::Get) => Value::Nil,
            _ => value,
        };
        events.push((
            line_no,
            Event {
                process,
                kind,
                f,
                key: REGISTER.to_owned(),
                value,
                matched,
                time: line_no as u64,
            },
        ));
    }
    pair_events(events)
}

fn parse_value(text: &str) -> Value {
    let text = text.trim();
    if let Some(pair) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let mut parts = pair.split_whitespace();
        if let (Some(from), Some(to)) = (parts.next(), parts.next()) {
            return Value::Pair(from.to_owned(), to.to_owned());
        }
    }
    match text {
        "nil" | "" => Value::Nil,
        other => Value::One(other.to_owned()),
    }
}
