//! target-db's client API in types, and the HTTP client that speaks it.
pub mod api;
pub mod client;

pub use api::{
    NodeId, Op, Outcome, Peers, ReadReply, Refusal, Request, Response, Role, Status, WriteReply,
};
pub use client::{Client, Error};
