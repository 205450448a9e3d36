use std::net::SocketAddr;

use crate::Glob;

/// Which calls of an operation a rule applies to. All filters of a rule must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// The file's path matches (faultfs: relative to the mount; injector: absolute).
    Path(Glob),
    /// The call's file descriptor.
    Fd(i32),
    /// The peer a socket call sends to or receives from.
    Dst(SocketAddr),
    /// The calling thread's name (comm).
    Thread(String),
}

impl Filter {
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Path(_) => "path",
            Filter::Fd(_) => "fd",
            Filter::Dst(_) => "dst",
            Filter::Thread(_) => "thread",
        }
    }
}
