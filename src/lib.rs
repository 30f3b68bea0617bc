//! fanout: a chat relay server.
//!
//! A client connects over TCP, joins rooms and publishes; the server forwards each message to
//! every *other* member of the room. The wire protocol is in `protocol.md`.
//!
//! Data flows one way through the modules:
//! bytes → [`codec`] → [`session`] → [`router`] (through [`hub`]) → [`outbox`] → bytes, with
//! `reactor` moving bytes and readiness at both ends and nothing else. Everything but the
//! reactor is plain data, tested without sockets. [`limits`] holds every limit.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use fanout_proto::{backoff, client, codec, failover, names, rng};

pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod hub;
pub mod interest;
pub mod limits;
pub(crate) mod linger;
pub mod link;
pub mod logging;
pub(crate) mod mailbox;
pub mod metrics;
pub(crate) mod metrics_server;
pub mod outbox;
pub(crate) mod presence;
pub(crate) mod reactor;
pub mod router;
pub mod server;
pub mod session;
