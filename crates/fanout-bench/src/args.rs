//! The flags of `fanout bench` and the plan derived from them, checked once before any
//! connection is opened.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::payload::STAMP_BYTES;
use super::sweep::SweepArgs;
use fanout_proto::limits::TOKEN_BYTES_MAX;
use fanout_proto::tls::ClientTls;

/// Largest payload the bench sends: fanout's payload limit, and well under NATS' and Redis'.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Most connections one run may open (subscribers plus publishers).
const CONNECTIONS_MAX: usize = 100_000;

/// Most client threads.
const THREADS_MAX: usize = 64;

/// Longest warm-up or measured window, in seconds.
const SECONDS_MAX: f64 = 3600.0;

/// Bytes the automatic window lets be in flight towards one subscriber: enough to keep a
/// server's pipeline full, far below fanout's 4 MiB slow-consumer limit.
const WINDOW_BYTES_PER_SUBSCRIBER: u64 = 256 * 1024;

/// Bytes the automatic window lets be in flight towards all subscribers together: more only
/// adds queueing delay (measured on loopback: 1,000 subscribers gain no throughput past it).
const WINDOW_BYTES_TOTAL: u64 = 16 * 1024 * 1024;

/// Smallest automatic in-flight window, in messages per publisher.
const WINDOW_AUTO_MIN: u64 = 8;

/// Largest automatic in-flight window, in messages per publisher.
const WINDOW_AUTO_MAX: u64 = 1000;

/// Per-message overhead assumed by the automatic window (headers, room, name).
const MESSAGE_OVERHEAD_BYTES: u64 = 32;

/// Which server protocol `fanout bench` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// fanout's binary protocol (`protocol.md`); publishers join with `SEND_ONLY`.
    Fanout,
    /// The NATS core text protocol (`SUB` / `PUB` / `MSG`).
    Nats,
    /// Redis pub/sub over RESP (`SUBSCRIBE` / `PUBLISH`).
    Redis,
}

impl Protocol {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Nats => "nats",
            Self::Redis => "redis",
        }
    }
}

/// The flags of `fanout bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: String,
    /// Server protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Fanout)]
    pub protocol: Protocol,
    /// Subscriber connections, spread evenly over the rooms.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publisher connections; publisher p publishes to room p % rooms.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Rooms (subjects, channels).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Payload bytes per message (at least 21: timestamp, publisher id, sequence, flags).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Total publish rate in messages per second over all publishers, spread evenly over time
    /// (each publisher offset by its share of the period); 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Messages per publisher not yet delivered to all its room's subscribers; 0 = automatic.
    #[arg(long, default_value_t = 0)]
    pub window: u64,
    /// Measured window in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of publishing before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Client threads, each with its own poll loop; connections are spread over them.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Process id of the server, to report its CPU seconds from /proc/PID/stat.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also print the results as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Token sent in every fanout `HELLO`, for a server started with --token-file (NATS and
    /// Redis targets ignore it).
    #[arg(long, env = "FANOUT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connect over TLS (fanout's --tls-listen, Redis' tls-port, NATS with `tls {}`: after the
    /// server's plain INFO line), verifying the server against the system's CAs or --tls-ca's.
    #[arg(long)]
    pub tls: bool,
    /// NATS over TLS: start the handshake at once instead of after the server's plain INFO line,
    /// for a nats-server (2.10+) configured with `tls { handshake_first: true }`.
    #[arg(long)]
    pub nats_tls_first: bool,
    /// Trust the CAs in this PEM file instead of the system's (implies --tls).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this certificate chain, PEM, to a server that requires client certificates
    /// (with --tls-key; implies --tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must hold (default: --addr's host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// The flags of `--sweep`, which raises the rate step by step to find the sustained load.
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// A run, checked: what every thread needs to know, shared read-only.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server.
    pub addr: SocketAddr,
    /// The address as the user gave it (for reports).
    pub addr_text: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Payload bytes.
    pub size: usize,
    /// Total messages per second, 0 = unbounded.
    pub rate: u64,
    /// In-flight window per publisher, in messages.
    pub window: u64,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up.
    pub warmup: Duration,
    /// Client threads actually started.
    pub threads: usize,
    /// Server process, if known.
    pub server_pid: Option<u32>,
    /// Token for fanout's `HELLO` (empty: none); never printed.
    pub token: Vec<u8>,
    /// TLS settings, when the run connects over TLS.
    pub tls: Option<ClientTls>,
    /// TLS starts only after the server's plain NATS `INFO` line (NATS over TLS without
    /// `handshake_first`), not at connect.
    pub tls_after_info: bool,
}

impl Plan {
    /// Checks `args` and resolves the address.
    pub fn new(args: &BenchArgs) -> Result<Self, String> {
        if args.publishers == 0 {
            return Err("--publishers must be at least 1".into());
        }
        if args.rooms == 0 {
            return Err("--rooms must be at least 1".into());
        }
        if args.size < STAMP_BYTES || args.size > PAYLOAD_BYTES_MAX {
            return Err(format!("--size must be in {STAMP_BYTES}..={PAYLOAD_BYTES_MAX} bytes"));
        }
        if args.threads == 0 || args.threads > THREADS_MAX {
            return Err(format!("--threads must be in 1..={THREADS_MAX}"));
        }
        let connections = args.subscribers.saturating_add(args.publishers);
        if connections > CONNECTIONS_MAX {
            return Err(format!("at most {CONNECTIONS_MAX} connections (subscribers + publishers)"));
        }
        if !(args.duration > 0.0 && args.duration <= SECONDS_MAX) {
            return Err(format!("--duration must be in (0, {SECONDS_MAX}] seconds"));
        }
        if !(args.warmup >= 0.0 && args.warmup <= SECONDS_MAX) {
            return Err(format!("--warmup must be in [0, {SECONDS_MAX}] seconds"));
        }
        let token = args.token.clone().unwrap_or_default().into_bytes();
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("--token must be at most {TOKEN_BYTES_MAX} bytes"));
        }
        let addr = args
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve --addr {}: {e}", args.addr))?
            .next()
            .ok_or_else(|| format!("--addr {} resolves to no address", args.addr))?;
        let tls = ClientTls::from_flags_if_asked(
            args.tls,
            args.tls_ca.as_deref(),
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            args.tls_server_name.as_deref(),
            std::slice::from_ref(&args.addr),
        )
        .map_err(|e| e.0)?;
        let mut plan = Self {
            addr,
            addr_text: args.addr.clone(),
            protocol: args.protocol,
            subscribers: args.subscribers,
            publishers: args.publishers,
            rooms: args.rooms,
            size: args.size,
            rate: args.rate,
            window: args.window,
            duration: Duration::from_secs_f64(args.duration),
            warmup: Duration::from_secs_f64(args.warmup),
            threads: args.threads.min(connections),
            server_pid: args.server_pid,
            token,
            tls_after_info: tls.is_some() && args.protocol == Protocol::Nats && !args.nats_tls_first,
            tls,
        };
        if plan.window == 0 {
            plan.window = plan.auto_window();
        }
        Ok(plan)
    }

    /// The window that keeps at most [`WINDOW_BYTES_PER_SUBSCRIBER`] in flight to each
    /// subscriber of the busiest room and [`WINDOW_BYTES_TOTAL`] to all of them.
    fn auto_window(&self) -> u64 {
        let per_message = self.size as u64 + MESSAGE_OVERHEAD_BYTES;
        let busiest = self.pubs_in_room(0).max(1) as u64;
        let deliveries_per_round: u64 =
            (0..self.publishers).map(|p| self.subs_in_room(self.pub_room(p)) as u64).sum::<u64>().max(1);
        let per_subscriber = WINDOW_BYTES_PER_SUBSCRIBER / per_message / busiest;
        let total = WINDOW_BYTES_TOTAL / per_message / deliveries_per_round;
        per_subscriber.min(total).clamp(WINDOW_AUTO_MIN, WINDOW_AUTO_MAX)
    }

    /// Room of subscriber `index`.
    pub fn sub_room(&self, index: usize) -> usize {
        index % self.rooms
    }

    /// Room of publisher `index`.
    pub fn pub_room(&self, index: usize) -> usize {
        index % self.rooms
    }

    /// Subscribers in `room` (the first `subscribers % rooms` rooms get one more).
    pub fn subs_in_room(&self, room: usize) -> usize {
        self.subscribers / self.rooms + usize::from(room < self.subscribers % self.rooms)
    }

    /// Publishers in `room`.
    pub fn pubs_in_room(&self, room: usize) -> usize {
        self.publishers / self.rooms + usize::from(room < self.publishers % self.rooms)
    }

    /// The name of `room` on the wire (a valid fanout room, NATS subject and Redis channel).
    pub fn room_name(&self, room: usize) -> Vec<u8> {
        format!("bench.room{room}").into_bytes()
    }

    /// Messages per second one publisher sends, 0 for unbounded.
    pub fn rate_per_publisher(&self) -> f64 {
        self.rate as f64 / self.publishers as f64
    }

    /// Subscribers plus publishers.
    pub fn connections(&self) -> usize {
        self.subscribers + self.publishers
    }
}

/// Arguments for unit tests: a small fanout run against an address nothing listens on.
#[cfg(test)]
pub(crate) fn test_args() -> BenchArgs {
    BenchArgs {
        addr: "127.0.0.1:1".into(),
        protocol: Protocol::Fanout,
        subscribers: 10,
        publishers: 3,
        rooms: 4,
        size: 64,
        rate: 0,
        window: 0,
        duration: 1.0,
        warmup: 0.0,
        threads: 2,
        server_pid: None,
        json: false,
        token: None,
        tls: false,
        nats_tls_first: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls_server_name: None,
        sweep: SweepArgs::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
        test_args()
    }

    #[test]
    fn rooms_share_subscribers_and_publishers_evenly() {
        let plan = Plan::new(&args()).expect("valid");
        let subs: Vec<usize> = (0..4).map(|r| plan.subs_in_room(r)).collect();
        assert_eq!(subs, [3, 3, 2, 2]);
        assert_eq!((0..10).filter(|&s| plan.sub_room(s) == 1).count(), 3);
        let pubs: Vec<usize> = (0..4).map(|r| plan.pubs_in_room(r)).collect();
        assert_eq!(pubs, [1, 1, 1, 0]);
    }

    #[test]
    fn bad_flags_are_refused() {
        for change in [
            (|a: &mut BenchArgs| a.size = STAMP_BYTES - 1) as fn(&mut BenchArgs),
            |a| a.publishers = 0,
            |a| a.rooms = 0,
            |a| a.threads = 0,
            |a| a.duration = 0.0,
            |a| a.warmup = f64::NAN,
            |a| a.token = Some("t".repeat(TOKEN_BYTES_MAX + 1)),
        ] {
            let mut a = args();
            change(&mut a);
            assert!(Plan::new(&a).is_err());
        }
    }

    #[test]
    fn auto_window_shrinks_with_size_and_publishers() {
        let mut a = args();
        a.rooms = 1;
        a.publishers = 1;
        assert_eq!(Plan::new(&a).expect("valid").window, WINDOW_AUTO_MAX);
        a.publishers = 10;
        a.subscribers = 100;
        a.size = 1024;
        assert_eq!(Plan::new(&a).expect("valid").window, 15, "16 MiB over 10 x 100 x 1056 B");
        a.subscribers = 1000;
        a.size = 64;
        assert_eq!(Plan::new(&a).expect("valid").window, 17, "16 MiB over 10 x 1000 x 96 B");
    }
}
