//! fanout: a chat relay server.
//!
//! A client connects over TCP, joins rooms and publishes; the server forwards each message to
//! every *other* member of the room. The wire protocol is in `protocol.md`.
//!
//! Data flows one way through the modules:
//! bytes → [`codec`] → `session` → `router` (through `hub`) → `outbox` → bytes, with
//! `reactor` moving bytes and readiness at both ends and nothing else. Everything but the
//! reactor is plain data, tested without sockets. [`limits`] holds every limit.
//!
//! What an embedder uses is [`server`] with its [`config`] (and the protocol crate's
//! [`client`]); the sans-IO core (`hub`, `session`, `router`, `interest`, `link`, `outbox`,
//! `cluster`) is public only with the `testing` feature, which this workspace's tests, simulator,
//! benches and fuzz targets turn on to drive it without sockets.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use fanout_proto::{backoff, client, codec, failover, names, rng};

/// Declares modules of the sans-IO core: `pub` with the `testing` feature (the workspace's tests,
/// simulator, benches and fuzz targets drive them directly), private to the crate otherwise.
macro_rules! core_modules {
    ($($name:ident),*) => {$(
        #[cfg(feature = "testing")]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        mod $name;
    )*};
}

core_modules!(cluster, hub, interest, link, outbox, router, session);

pub mod auth;
pub mod config;
pub mod error;
pub(crate) mod keyed_slab;
pub mod limits;
pub(crate) mod linger;
pub mod logging;
pub(crate) mod mailbox;
pub mod metrics;
pub(crate) mod metrics_server;
pub(crate) mod presence;
pub(crate) mod reactor;
pub mod server;
pub mod tls;
