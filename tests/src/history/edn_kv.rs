//! Multi-key histories as EDN maps, one per line:
//! `{:process 0, :type :ok, :f :get, :key "3", :value ""}`. A get of `""` means the key was
//! absent. Line numbers serve as times.
use super::{Event, Func, History, HistoryError, Kind, Value, pair_events};

pub fn parse(text: &str) -> Result<History, HistoryError> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| HistoryError::Parse {
            line: line_no,
            message,
        };
        let map = parse_map(line).map_err(error)?;
        let field = |name: &str| {
            map.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| error(format!("missing :{name}")))
        };
        let process: u64 = match field("process")? {
            Edn::Int(process) => process,
            other => return Err(error(format!(":process must be a number, got {other:?}"))),
        };
        let kind = match field("type")? {
            Edn::Keyword(kind) if kind == "invoke" => Kind::Invoke,
            Edn::Keyword(kind) if kind == "ok" => Kind::Ok,
            Edn::Keyword(kind) if kind == "fail" => Kind::Fail,
            Edn::Keyword(kind) if kind == "info" => Kind::Info,
            other => return Err(error(format!("unknown :type {other:?}"))),
        };
        let f = match field("f")? {
            Edn::Keyword(f) if f == "get" => Func::Get,
            Edn::Keyword(f) if f == "put" => Func::Put,
            Edn::Keyword(f) if f == "append" => Func::Append,
            other => return Err(error(format!("unknown :f {other:?}"))),
        };
        let key = match field("key")? {
            Edn::Str(key) => key,
            Edn::Int(key) => key.to_string(),
            other => return Err(error(format!(":key must be a string, got {other:?}"))),
        };
        let value = match (f, field("value")?) {
            (Func::Get, Edn::Str(read)) if read.is_empty() => Value::Nil,
            (_, Edn::Str(value)) => Value::One(value),
            (_, Edn::Int(value)) => Value::One(value.to_string()),
            (_, _) => Value::Nil,
        };
        events.push((
            line_no,
            Event {
                process,
                kind,
                f,
                key,
                value,
                matched: None,
                time: line_no as u64,
            },
        ));
    }
    pair_events(events)
}

#[derive(Clone, Debug, PartialEq)]
enum Edn {
    Nil,
    Int(u64),
    Str(String),
    Keyword(String),
}

/// Parses one flat map of keyword keys to scalar values.
fn parse_map(line: &str) -> Result<Vec<(String, Edn)>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| format!("expected an EDN map `{{...}}`, got {line:?}"))?;
    let mut chars = body.chars().peekable();
    let mut entries = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(entries);
        }
        let Edn::Keyword(key) = parse_scalar(&mut chars)? else {
            return Err(format!("map keys must be keywords in {line:?}"));
        };
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        entries.push((key, parse_scalar(&mut chars)?));
    }
}

fn parse_scalar(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Edn, String> {
    if chars.peek() == Some(&'"') {
        chars.next();
        let mut text = String::new();
        loop {
            match chars.next() {
                Some('"') => return Ok(Edn::Str(text)),
                Some('\\') => text.push(chars.next().ok_or("unterminated escape")?),
                Some(c) => text.push(c),
                None => return Err("unterminated string".into()),
            }
        }
    }
    let mut token = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            break;
        }
        token.push(c);
        chars.next();
    }
    if let Some(keyword) = token.strip_prefix(':') {
        Ok(Edn::Keyword(keyword.to_owned()))
    } else if token == "nil" {
        Ok(Edn::Nil)
    } else {
        token
            .parse()
            .map(Edn::Int)
            .map_err(|_| format!("cannot read {token:?}"))
    }
}
