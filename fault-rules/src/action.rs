use std::fmt;

/// How a read is silently corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// One bit of the data read is flipped.
    Flip,
    /// The data read is zeroed.
    Zero,
}

/// What a firing term does. Which of these a tool supports is checked by `Rule::validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No fault: the call proceeds normally.
    Off,
    /// The call fails with this errno.
    Error(i32),
    /// The call is held for this many milliseconds, then proceeds.
    Delay(u64),
    /// The call is held until the rule is removed.
    Pause,
    /// The process is killed (SIGKILL) at the call.
    Kill,
    /// The process gets this signal at the call.
    Signal(i32),
    /// A write stores only this many bytes and returns that count.
    Short(u64),
    /// fsync succeeds but makes nothing durable (a lying disk).
    Lose,
    /// fsync fails with EIO and the dirty data is dropped and marked clean, as Linux does.
    Fsyncgate,
    /// A read returns silently corrupted data.
    Corrupt(Corruption),
    /// Observe only: count the call.
    Count,
    /// The call completes, then the storage stops as at a power cut: nothing after it becomes
    /// durable and every later operation fails with EIO until a power loss is applied (a crash
    /// point, placed by call rather than by time).
    Crash,
}

impl Action {
    /// The action's name as written in rules.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Error(_) => "error",
            Action::Delay(_) => "delay",
            Action::Pause => "pause",
            Action::Kill => "kill",
            Action::Signal(_) => "signal",
            Action::Short(_) => "short",
            Action::Lose => "lose",
            Action::Fsyncgate => "fsyncgate",
            Action::Corrupt(_) => "corrupt",
            Action::Count => "count",
            Action::Crash => "crash",
        }
    }

    /// Every action with the shape of its argument, for error messages.
    pub const SYNTAX: &'static [&'static str] = &[
        "off",
        "error(ERRNO)",
        "delay(MS)",
        "pause",
        "kill",
        "signal(SIG)",
        "short(BYTES)",
        "lose",
        "fsyncgate",
        "corrupt(flip|zero)",
        "count",
        "crash",
    ];
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Error(errno) => {
                write!(f, "error({})", crate::errno_name(*errno).unwrap_or("?"))
            }
            Action::Delay(ms) => write!(f, "delay({ms})"),
            Action::Signal(signal) => write!(f, "signal({signal})"),
            Action::Short(bytes) => write!(f, "short({bytes})"),
            Action::Corrupt(Corruption::Flip) => write!(f, "corrupt(flip)"),
            Action::Corrupt(Corruption::Zero) => write!(f, "corrupt(zero)"),
            other => f.write_str(other.name()),
        }
    }
}
