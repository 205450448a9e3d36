//! Pairs each invocation with its completion, per process.
use std::collections::HashMap;

use super::{Args, Event, Func, History, HistoryError, Kind, Operation, Outcome, Value};

/// Builds operations from events given in file order (`(line number, event)`). A process has at
/// most one operation in flight; an invoke left without completion is of unknown outcome.
pub fn pair_events(events: Vec<(usize, Event)>) -> Result<History, HistoryError> {
    let mut operations: Vec<Operation> = Vec::new();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    for (line, event) in events {
        let error = |message: String| HistoryError::Parse { line, message };
        if event.kind == Kind::Invoke {
            if let Some(&open) = in_flight.get(&event.process) {
                return Err(error(format!(
                    "process {} invokes {:?} while its {} is still in flight",
                    event.process, event.f, operations[open]
                )));
            }
            let args = args_of(&event).map_err(error)?;
            in_flight.insert(event.process, operations.len());
            operations.push(Operation {
                id: operations.len(),
                process: event.process,
                key: event.key,
                args,
                outcome: Outcome::Unknown,
                read: None,
                matched: true,
                invoke: event.time,
                complete: None,
            });
            continue;
        }
        let Some(index) = in_flight.remove(&event.process) else {
            return Err(error(format!(
                "process {} completes an operation it never invoked",
                event.process
            )));
        };
        let op = &mut operations[index];
        if op.func() != event.f || op.key != event.key {
            return Err(error(format!(
                "process {} completes {:?} on key {:?} but invoked {op}",
                event.process, event.f, event.key
            )));
        }
        if event.time < op.invoke {
            return Err(error(format!(
                "completion at time {} is before its invoke at {}",
                event.time, op.invoke
            )));
        }
        op.complete = Some(event.time);
        op.outcome = match event.kind {
            Kind::Ok => Outcome::Ok,
            Kind::Fail => Outcome::Fail,
            Kind::Info | Kind::Invoke => Outcome::Unknown,
        };
        if op.outcome == Outcome::Ok {
            match (&op.args, event.value) {
                (Args::Get, Value::One(read)) => op.read = Some(read),
                (Args::Get, Value::Nil) => op.read = None,
                (Args::Get, Value::Pair(..)) => {
                    return Err(error("a get cannot return a pair".into()));
                }
                (Args::Cas { .. }, _) => op.matched = event.matched.unwrap_or(true),
                _ => {}
            }
        }
    }
    Ok(History {
        operations,
        faults: Vec::new(),
        leaders: Vec::new(),
    })
}

fn args_of(event: &Event) -> Result<Args, String> {
    let wrong = |expected: &str| {
        format!(
            "{:?} needs {expected} as its value, got {:?}",
            event.f, event.value
        )
    };
    Ok(match (event.f, &event.value) {
        (Func::Get, _) => Args::Get,
        (Func::Delete, _) => Args::Delete,
        (Func::Put, Value::One(value)) => Args::Put(value.clone()),
        (Func::Append, Value::One(value)) => Args::Append(value.clone()),
        (Func::Cas, Value::Pair(from, to)) => Args::Cas {
            from: from.clone(),
            to: to.clone(),
        },
        (Func::Put | Func::Append, _) => return Err(wrong("a string")),
        (Func::Cas, _) => return Err(wrong("[from, to]")),
    })
}

/// The events an operation is written back as.
pub fn events_of(op: &Operation) -> Vec<Event> {
    let value = match &op.args {
        Args::Get | Args::Delete => Value::Nil,
        Args::Put(value) | Args::Append(value) => Value::One(value.clone()),
        Args::Cas { from, to } => Value::Pair(from.clone(), to.clone()),
    };
    let invoke = Event {
        process: op.process,
        kind: Kind::Invoke,
        f: op.func(),
        key: op.key.clone(),
        value: value.clone(),
        matched: None,
        time: op.invoke,
    };
    let Some(complete) = op.complete else {
        return vec![invoke];
    };
    let kind = match op.outcome {
        Outcome::Ok => Kind::Ok,
        Outcome::Fail => Kind::Fail,
        Outcome::Unknown => Kind::Info,
    };
    let value = match (&op.args, op.outcome) {
        (Args::Get, Outcome::Ok) => op.read.clone().map_or(Value::Nil, Value::One),
        _ => value,
    };
    let matched = (op.func() == Func::Cas && op.outcome == Outcome::Ok).then_some(op.matched);
    vec![
        invoke.clone(),
        Event {
            kind,
            value,
            matched,
            time: complete,
            ..invoke
        },
    ]
}
