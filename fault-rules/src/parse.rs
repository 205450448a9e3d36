//! `OP[(FILTER=VALUE, ...)]=TERM[->TERM...]`, TERM = `[P%][N*]ACTION[(ARG)]`.
use thiserror::Error;

use crate::{Action, Chain, Corruption, Filter, Glob, Rule, Term, errno_from_name};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("bad fault rule `{rule}`: {message}{}", at_column(*column))]
pub struct ParseError {
    pub rule: String,
    /// 1-based column of the problem, 0 when it concerns the whole rule.
    pub column: usize,
    pub message: String,
}

fn at_column(column: usize) -> String {
    if column == 0 {
        String::new()
    } else {
        format!(" (column {column})")
    }
}

impl ParseError {
    pub fn new(rule: &str, column: usize, message: String) -> Self {
        Self {
            rule: rule.to_owned(),
            column,
            message,
        }
    }
}

/// Parses rules separated by `;` (as in `INJECTOR_FAULTS="rule;rule"`), skipping empty ones.
pub fn parse_rule_list(text: &str) -> Result<Vec<Rule>, ParseError> {
    split_outside_quotes(text, ';')
        .into_iter()
        .map(str::trim)
        .filter(|rule| !rule.is_empty())
        .map(parse_rule)
        .collect()
}

pub fn parse_rule(text: &str) -> Result<Rule, ParseError> {
    let text = text.trim();
    let mut parser = Parser { text, position: 0 };
    let op = parser.identifier();
    if op.is_empty() {
        return Err(parser.error(
            "expected an operation name, as in `fsync=error(EIO)` or `write(path=\"wal/*\")=delay(10)`",
        ));
    }
    let mut filters = Vec::new();
    if parser.eat('(') {
        loop {
            filters.push(parser.filter()?);
            if parser.eat(')') {
                break;
            }
            if !parser.eat(',') {
                return Err(parser.error("expected `,` or `)` after a filter"));
            }
        }
    }
    if !parser.eat('=') {
        return Err(parser.error(&format!(
            "expected `=` and actions after `{}`, as in `{}=3*off->1*error(EIO)`",
            &text[..parser.position],
            &text[..parser.position]
        )));
    }
    let mut terms = vec![parser.term()?];
    while parser.eat_str("->") {
        terms.push(parser.term()?);
    }
    if parser.position < text.len() {
        return Err(parser.error("unexpected text after the actions (chain terms with `->`)"));
    }
    Ok(Rule {
        op: op.to_owned(),
        filters,
        chain: Chain::new(terms),
        text: text.to_owned(),
    })
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start();
        self.position = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(c) {
            self.position += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(s) {
            self.position += s.len();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        self.skip_spaces();
        let rest = self.rest();
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.position += end;
        &rest[..end]
    }

    fn identifier(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn number(&mut self) -> Option<u64> {
        let digits = self.take_while(|c| c.is_ascii_digit());
        digits.parse().ok()
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError::new(self.text, self.position + 1, message.to_owned())
    }

    fn value(&mut self) -> Result<&'a str, ParseError> {
        self.skip_spaces();
        if self.eat('"') {
            let rest = self.rest();
            let Some(end) = rest.find('"') else {
                return Err(self.error("unterminated quoted value"));
            };
            self.position += end + 1;
            return Ok(&rest[..end]);
        }
        Ok(self.take_while(|c| c != ',' && c != ')').trim_end())
    }

    fn filter(&mut self) -> Result<Filter, ParseError> {
        let start = self.position;
        let name = self.identifier();
        if !self.eat('=') {
            return Err(self.error("expected `name=value` in the filter list"));
        }
        let value = self.value()?;
        let bad =
            |what: &str| ParseError::new(self.text, start + 1, format!("filter `{name}`: {what}"));
        match name {
            "path" => Ok(Filter::Path(Glob::new(value))),
            "fd" => value
                .parse()
                .map(Filter::Fd)
                .map_err(|_| bad(&format!("`{value}` is not a file descriptor number"))),
            "dst" | "peer" => value
                .parse()
                .map(Filter::Dst)
                .map_err(|_| bad(&format!("`{value}` is not an address like 127.0.0.1:7002"))),
            "thread" | "comm" => Ok(Filter::Thread(value.to_owned())),
            other => Err(bad(&format!(
                "unknown filter `{other}`; filters are path=GLOB, fd=N, dst=IP:PORT, thread=NAME"
            ))),
        }
    }

    fn term(&mut self) -> Result<Term, ParseError> {
        let mut percent = None;
        let mut count = None;
        let checkpoint = self.position;
        if let Some(number) = self.number() {
            if self.eat('%') {
                if number > 100 {
                    return Err(self.error("a probability is at most 100%"));
                }
                percent = Some(number as u8);
            } else {
                self.position = checkpoint;
            }
        }
        let checkpoint = self.position;
        if let Some(number) = self.number() {
            if self.eat('*') {
                count = Some(number);
            } else {
                self.position = checkpoint;
            }
        }
        let start = self.position;
        let name = self.identifier();
        let argument = if self.eat('(') {
            let argument = self.take_while(|c| c != ')').trim();
            if !self.eat(')') {
                return Err(self.error("expected `)` to close the action's argument"));
            }
            Some(argument)
        } else {
            None
        };
        let action = action(name, argument)
            .map_err(|message| ParseError::new(self.text, start + 1, message))?;
        Ok(Term {
            percent,
            count,
            action,
        })
    }
}

/// The longest delay a rule may hold a call for: longer is a typo or an overflow, and a caller
/// held that long cannot be told apart from a hang.
pub const MAX_DELAY_MS: u64 = 3_600_000;

fn action(name: &str, argument: Option<&str>) -> Result<Action, String> {
    let needs = |shape: &str| format!("`{name}` needs an argument: {shape}");
    let number = |shape: &str| -> Result<u64, String> {
        argument.ok_or_else(|| needs(shape))?.parse().map_err(|_| {
            format!(
                "`{name}({})`: expected {shape}",
                argument.unwrap_or_default()
            )
        })
    };
    Ok(match name {
        "off" => Action::Off,
        "pause" => Action::Pause,
        "kill" => Action::Kill,
        "lose" => Action::Lose,
        "fsyncgate" => Action::Fsyncgate,
        "count" => Action::Count,
        "crash" => Action::Crash,
        "delay" | "sleep" => {
            let ms = number("milliseconds, as in delay(50)")?;
            if ms > MAX_DELAY_MS {
                return Err(format!(
                    "`{name}({ms})`: a delay is at most {MAX_DELAY_MS} ms (an hour); to stall a call until you lift it, use pause"
                ));
            }
            Action::Delay(ms)
        }
        "short" => Action::Short(number("a byte count, as in short(100)")?),
        "error" | "return" => {
            let errno = argument.ok_or_else(|| needs("an errno, as in error(EIO)"))?;
            Action::Error(errno_from_name(errno).ok_or_else(|| {
                format!("`{errno}` is not an errno name like EIO, ENOSPC, ECONNRESET")
            })?)
        }
        "signal" => {
            let signal = argument.ok_or_else(|| needs("a signal, as in signal(SIGTERM)"))?;
            Action::Signal(signal_number(signal).ok_or_else(|| {
                format!("`{signal}` is not a signal like SIGKILL, SIGTERM, SIGSTOP or a number")
            })?)
        }
        "corrupt" => match argument {
            Some("flip") => Action::Corrupt(Corruption::Flip),
            Some("zero") => Action::Corrupt(Corruption::Zero),
            _ => return Err("`corrupt` takes `flip` or `zero`, as in corrupt(flip)".into()),
        },
        "" => {
            return Err(format!(
                "expected an action; actions are: {}",
                Action::SYNTAX.join(", ")
            ));
        }
        other => {
            return Err(format!(
                "unknown action `{other}`; actions are: {}",
                Action::SYNTAX.join(", ")
            ));
        }
    })
}

fn signal_number(name: &str) -> Option<i32> {
    if let Ok(number) = name.parse::<i32>() {
        return (1..65).contains(&number).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "BUS" => 7,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "TERM" => 15,
        "STOP" => 19,
        _ => return None,
    })
}
