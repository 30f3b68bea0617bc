//! Runtime configuration of a server, validated once at start-up.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

pub use crate::limits::DEFAULT_BACKLOG;
use crate::limits::{
    CONNECTIONS_MAX, FRAME_BODY_BYTES_MAX, HANDSHAKE_TIMEOUT, HEADER_BYTES, OUTPUT_BYTES_MAX, PING_INTERVAL,
    PING_TIMEOUT, ROOMS_PER_CONNECTION_MAX,
};
use crate::limits::{TICKS_PER_TIMEOUT, TICK_MAX, TICK_MIN, TIMEOUT_MIN};
use crate::session::Timeouts;
use crate::tls::{ClusterTls, ListenerTls};

/// Default address `fanout serve` listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

/// The hub's settings, from the server configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This node's id (in `WELCOME`, session and stream ids).
    pub node_id: u16,
    /// This reactor's id (in `WELCOME`, session and stream ids).
    pub core_id: u16,
    /// Where this process's session and stream id counters start: on a clustered node the wall
    /// clock at start-up in microseconds (modulo 2^40), so a restarted node does not hand out its
    /// old ids again; 0 on a lone server. Given by the server (the hub never reads the clock).
    pub id_epoch: u64,
    /// Rooms one connection may be in.
    pub rooms_per_connection_max: usize,
    /// Output bytes queued per connection before it is cut.
    pub output_bytes_max: usize,
    /// Connections this hub accepts.
    pub connections_max: usize,
    /// Handshake and keepalive timeouts.
    pub timeouts: Timeouts,
    /// Tokens a client must present in `HELLO`, if any.
    pub tokens: Option<crate::auth::Tokens>,
    /// Connections held by every hub of the server: `connections_max` is per server, so the
    /// reactors share this one counter (an atomic touched once per accept and per close).
    pub live_connections: Arc<AtomicUsize>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            core_id: 0,
            id_epoch: 0,
            rooms_per_connection_max: ROOMS_PER_CONNECTION_MAX,
            output_bytes_max: OUTPUT_BYTES_MAX,
            connections_max: CONNECTIONS_MAX,
            timeouts: Timeouts {
                handshake: HANDSHAKE_TIMEOUT,
                ping_interval: PING_INTERVAL,
                ping_timeout: PING_TIMEOUT,
            },
            tokens: None,
            live_connections: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Everything a reactor needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Listen backlog.
    pub backlog: i32,
    /// Limits and timeouts of the connections.
    pub hub: HubConfig,
    /// Where to serve Prometheus metrics over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Membership of a cluster, if this server is a node of one.
    pub cluster: Option<ClusterConfig>,
    /// What SIGHUP runs (on the reactor that catches signals); without one, SIGHUP only logs.
    pub reload: Option<ReloadHook>,
    /// Over how long a draining server (SIGUSR2) closes its clients, spread evenly.
    pub drain_period: Duration,
    /// How long a busy reactor may hold its clients' bytes after a flush pass (`linger.rs`);
    /// zero flushes every turn.
    pub flush_linger_max: Duration,
    /// Where clients connect over TLS, and with which certificate, if anywhere.
    pub tls: Option<TlsListenerConfig>,
}

/// The client TLS listener: a port of its own (as NATS and Redis do), beside the plain one.
#[derive(Debug, Clone)]
pub struct TlsListenerConfig {
    /// Address TLS clients connect to.
    pub listen: SocketAddr,
    /// The certificate (re-read on reload) and, for mutual TLS, the clients' CA.
    pub tls: ListenerTls,
    /// TLS only: no plain listener at all (`--tls-only`).
    pub only: bool,
}

/// What SIGHUP runs: re-reads the files the server was started from and applies what may change
/// while it runs. The embedder gives it (the `fanout` binary knows its flags and config file;
/// the library does not), so the reactor only has to call it.
#[derive(Clone)]
pub struct ReloadHook(Arc<dyn Fn() + Send + Sync>);

impl ReloadHook {
    /// A hook that runs `reload` on every SIGHUP.
    pub fn new(reload: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(reload))
    }

    /// Runs the reload (on the signal-catching reactor's thread: it should only read small files).
    pub fn run(&self) {
        (self.0)()
    }
}

impl fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadHook")
    }
}

/// How a node joins its cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Where this node accepts links from other nodes (also what it tells them to dial).
    pub listen: SocketAddr,
    /// What other nodes should dial to reach this one (default: the bound listen address).
    pub advertise: Option<String>,
    /// Nodes to dial at start; the rest are learned from them.
    pub peers: Vec<String>,
    /// The shared secret every node proves it knows; empty when node-link TLS alone proves
    /// membership (see `protocol.md`, "TLS").
    pub secret: Vec<u8>,
    /// Node-link TLS: every link encrypted, both ends verified against the cluster CA.
    pub tls: Option<ClusterTls>,
    /// This node's id, unique in the cluster; `None` derives one from the bound cluster address.
    pub node_id: Option<u16>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .field("node_id", &self.node_id)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// Reads the secret from `path`: its bytes without trailing whitespace, 1 to 4096 of them.
    pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError(format!("cannot read --cluster-secret-file {}: {e}", path.display())))?;
        let len = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |at| at + 1);
        if len == 0 || len > crate::cluster::SECRET_BYTES_MAX {
            return Err(ConfigError(format!(
                "the cluster secret in {} must be 1 to {} bytes",
                path.display(),
                crate::cluster::SECRET_BYTES_MAX
            )));
        }
        Ok(bytes[..len].to_vec())
    }

    /// The id of a node that tells other nodes to dial `advertised`: `node_id` if given, else
    /// one derived from the advertised address. Refuses an unspecified host (`0.0.0.0`, `::`),
    /// which no other node can dial, and requires `node_id` for a loopback one (`127.0.0.1`,
    /// `::1`, `localhost`), which every host has and so names no node.
    pub fn node_identity(advertised: &str, node_id: Option<u16>) -> Result<u16, ConfigError> {
        let host = match advertised.parse::<SocketAddr>() {
            Ok(addr) => Host::Ip(addr.ip()),
            Err(_) => Host::Name(advertised.rsplit_once(':').map_or(advertised, |(host, _)| host)),
        };
        if host.is_unspecified() {
            return Err(ConfigError(format!(
                "this node would tell other nodes to dial {advertised}, which is no address they can \
                 reach: give --cluster-advertise HOST:PORT (this node's address as other nodes see it) \
                 or a specific --cluster-listen address"
            )));
        }
        match node_id {
            Some(id) => Ok(id),
            None if host.is_loopback() => Err(ConfigError(format!(
                "--node-id is required: this node advertises the loopback address {advertised}, which \
                 every host has, so no node id can be derived from it"
            ))),
            None => Ok(crate::cluster::default_node_id(advertised)),
        }
    }
}

/// The host part of an advertised address.
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl Host<'_> {
    fn is_unspecified(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_unspecified())
    }

    fn is_loopback(&self) -> bool {
        match self {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Name(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        }
    }
}

pub use crate::error::ConfigError;

impl ServerConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            backlog: DEFAULT_BACKLOG,
            hub: HubConfig::default(),
            metrics: None,
            cluster: None,
            reload: None,
            drain_period: crate::limits::DRAIN_PERIOD,
            tls: None,
            flush_linger_max: crate::limits::FLUSH_LINGER_MAX,
        }
    }

    /// Checks the relations between settings that the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let hub = &self.hub;
        if hub.output_bytes_max < HEADER_BYTES + FRAME_BODY_BYTES_MAX {
            return Err(ConfigError(format!(
                "--max-output-bytes must hold at least one full frame ({} bytes)",
                HEADER_BYTES + FRAME_BODY_BYTES_MAX
            )));
        }
        if self.flush_linger_max > crate::limits::FLUSH_LINGER_CONFIG_MAX {
            return Err(ConfigError(format!(
                "--flush-linger-us must be at most {} µs",
                crate::limits::FLUSH_LINGER_CONFIG_MAX.as_micros()
            )));
        }
        if hub.rooms_per_connection_max == 0 {
            return Err(ConfigError("--max-rooms-per-connection must be at least 1".into()));
        }
        if hub.connections_max == 0 {
            return Err(ConfigError("--max-connections must be at least 1".into()));
        }
        let t = &hub.timeouts;
        for (name, value) in
            [("handshake", t.handshake), ("ping interval", t.ping_interval), ("ping timeout", t.ping_timeout)]
        {
            if value < TIMEOUT_MIN {
                return Err(ConfigError(format!("the {name} must be at least {} ms", TIMEOUT_MIN.as_millis())));
            }
        }
        if hub.core_id > crate::limits::MAX_CORE_ID {
            return Err(ConfigError(format!("at most {} cores", crate::limits::MAX_CORE_ID as usize + 1)));
        }
        if self.backlog < 1 {
            return Err(ConfigError("the backlog must be at least 1".into()));
        }
        Ok(())
    }

    /// How often the reactor runs connection (and node link) timers: a quarter of the shortest timeout, between
    /// 10 ms and 1 s, so a timeout fires at most 25% late.
    pub fn tick(&self) -> Duration {
        let t = &self.hub.timeouts;
        let mut shortest = t.handshake.min(t.ping_interval).min(t.ping_timeout);
        if self.cluster.is_some() {
            // Node links ping after 0.5 s of silence and are given up after 3 s.
            shortest = shortest.min(crate::cluster::LINK_PING_INTERVAL);
        }
        (shortest / TICKS_PER_TIMEOUT).clamp(TICK_MIN, TICK_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_advertised_address_is_refused_naming_the_flag_that_fixes_it() {
        for addr in ["0.0.0.0:7501", "[::]:7501"] {
            let e = ClusterConfig::node_identity(addr, Some(1)).unwrap_err();
            assert!(e.0.contains("--cluster-advertise") && e.0.contains(addr), "{e}");
        }
    }

    #[test]
    fn no_node_id_is_derived_from_a_loopback_address() {
        for addr in ["127.0.0.1:7501", "[::1]:7501", "localhost:7501", "LOCALHOST.:7501", "a.localhost:1"] {
            let e = ClusterConfig::node_identity(addr, None).unwrap_err();
            assert!(e.0.contains("--node-id"), "{addr}: {e}");
            assert_eq!(ClusterConfig::node_identity(addr, Some(3)), Ok(3));
        }
        let derived = ClusterConfig::node_identity("10.0.0.5:7501", None).unwrap();
        assert_eq!(derived, crate::cluster::default_node_id("10.0.0.5:7501"));
        let named = ClusterConfig::node_identity("fanout-0.fanout.default.svc:7501", None).unwrap();
        assert_eq!(named, crate::cluster::default_node_id("fanout-0.fanout.default.svc:7501"));
    }
}
