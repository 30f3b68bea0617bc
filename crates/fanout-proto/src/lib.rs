//! The fanout wire protocol and its clients: everything a program needs to talk to a fanout
//! server, and nothing of the server (no event loop, no CLI, no cluster code): it depends on
//! `bytes` and `memchr` only (and rustls with the `tls` feature).
//!
//! * [`codec`]: the length-prefixed frames of `protocol.md` (client, server and peer-link
//!   frames) and the line-mode text, sans-IO: bytes in, frames out, and back.
//! * [`client::Client`]: a blocking client on `std::net` — connect, join, publish, read.
//! * [`failover::FailoverClient`]: the same over several servers, moving to the next when one
//!   dies and re-joining its rooms (at most once across a failover).
//! * [`limits`], [`names`], [`error`]: the protocol's limits, name rules and error codes.
//! * `tls` (with the `tls` feature, which adds rustls): a sans-IO TLS layer for event loops,
//!   and what [`client::Client`] needs to connect over TLS.
//!
//! ```no_run
//! use fanout_proto::client::Client;
//!
//! let mut alice = Client::connect("127.0.0.1:7400", "alice")?;
//! alice.join("lobby")?;
//! alice.publish("lobby", b"hello, room")?;
//! let message = alice.next_message()?;
//! println!("{}: {}", String::from_utf8_lossy(&message.name), String::from_utf8_lossy(&message.payload));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
pub mod client;
pub mod codec;
pub mod error;
pub mod failover;
pub mod limits;
pub mod names;
pub mod rng;
#[cfg(feature = "tls")]
pub mod tls;
