//! Errors: what a peer did wrong (the protocol's [`ErrorCode`] and [`DecodeError`], from
//! `fanout_proto`) and a configuration that cannot work ([`ConfigError`]). Low in the module
//! order, so that `auth` and `config` can both name a configuration error without a cycle.

use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use fanout_proto::error::*;

/// A configuration that cannot work, found before the server starts (or a reload refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a failed bind or listen of the listener `name` on `addr` into an error that names
/// both, keeping its kind: a server has up to three listeners, and the operator must learn
/// which one's address is taken.
pub(crate) fn bind_error(name: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    let text = match e.kind() {
        io::ErrorKind::AddrInUse => format!("{name}: address {addr} is already in use"),
        _ => format!("{name}: cannot listen on {addr}: {e}"),
    };
    io::Error::new(e.kind(), text)
}
