//! The `fanout` command: `serve` runs the relay, `chat` is an interactive terminal client.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fanout::config::{ClusterConfig, ConfigError, ServerConfig, DEFAULT_LISTEN};
use fanout::limits;
use fanout::server::Server;
use log::LevelFilter;

mod chat;

#[derive(Parser)]
#[command(name = "fanout", version, about = "A chat relay server and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server.
    Serve(ServeArgs),
    /// Chat from the terminal: type lines, read everyone else's.
    Chat(chat::ChatArgs),
    /// Load-test a server (fanout, NATS or Redis pub/sub): throughput, latency, loss.
    Bench(fanout::bench::BenchArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to accept clients on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Most concurrent client connections; the next one gets SERVER_FULL.
    #[arg(long, default_value_t = limits::CONNECTIONS_MAX)]
    max_connections: usize,
    /// Output bytes queued per connection before it is cut as a slow consumer.
    #[arg(long, default_value_t = limits::OUTPUT_BYTES_MAX)]
    max_output_bytes: usize,
    /// Rooms one connection may be in at once.
    #[arg(long, default_value_t = limits::ROOMS_PER_CONNECTION_MAX)]
    max_rooms_per_connection: usize,
    /// Time a binary client has to send HELLO, in milliseconds.
    #[arg(long, default_value_t = limits::HANDSHAKE_TIMEOUT.as_millis() as u64)]
    handshake_timeout_ms: u64,
    /// Silence from a client before the server pings it, in milliseconds.
    #[arg(long, default_value_t = limits::PING_INTERVAL.as_millis() as u64)]
    ping_interval_ms: u64,
    /// Further silence after a ping before the client is closed, in milliseconds.
    #[arg(long, default_value_t = limits::PING_TIMEOUT.as_millis() as u64)]
    ping_timeout_ms: u64,
    /// Require clients to present one of the tokens in this file (one per line) in HELLO.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Join a cluster: accept links from other nodes here (and tell them to dial it).
    #[arg(long)]
    cluster_listen: Option<SocketAddr>,
    /// The address other nodes should dial to reach this one (default: --cluster-listen's).
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// A node of the cluster to dial (repeat for more); the rest are learned from it.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// File holding the cluster's shared secret (required with --cluster-listen).
    #[arg(long)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// This node's id, unique in the cluster (default: derived from --cluster-listen).
    #[arg(long)]
    node_id: Option<u16>,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Reactor threads, each owning its share of the connections (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Log level: error, warn, info, debug, trace (default: $FANOUT_LOG, else info).
    #[arg(long, value_parser = parse_level)]
    log_level: Option<LevelFilter>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Chat(args) => chat::run(&args),
        Command::Bench(args) => fanout::bench::run(args),
    }
}

fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse().map_err(|_| format!("unknown log level {text:?}"))
}

fn serve(args: ServeArgs) -> ExitCode {
    fanout::logging::init(args.log_level);
    // Every connection is a file descriptor: take the hard limit, which may allow far more
    // than the usual soft 1,024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            log::info!("file descriptor limit {limit}");
            if (limit as usize) < args.max_connections {
                log::warn!("--max-connections {} is above the descriptor limit {limit}", args.max_connections);
            }
        }
        Err(e) => log::warn!("could not raise the file descriptor limit: {e}"),
    }
    let mut config = ServerConfig::new(args.listen);
    config.hub.connections_max = args.max_connections;
    config.hub.output_bytes_max = args.max_output_bytes;
    config.hub.rooms_per_connection_max = args.max_rooms_per_connection;
    config.hub.timeouts.handshake = Duration::from_millis(args.handshake_timeout_ms);
    config.hub.timeouts.ping_interval = Duration::from_millis(args.ping_interval_ms);
    config.hub.timeouts.ping_timeout = Duration::from_millis(args.ping_timeout_ms);
    config.metrics = args.metrics;
    if let Some(path) = &args.token_file {
        match fanout::auth::Tokens::read(path) {
            Ok(tokens) => config.hub.tokens = Some(tokens),
            Err(e) => {
                log::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match cluster_config(&args) {
        Ok(cluster) => config.cluster = cluster,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    let reactor = match Server::bind(config, threads) {
        Ok(reactor) => reactor,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.local_addr() {
        Ok(addr) => {
            // Scripts and tests read this line: keep the address last.
            log::info!("{threads} reactor threads");
            log::info!("listening on {addr}");
        }
        Err(e) => log::warn!("listening, address unknown: {e}"),
    }
    match reactor.run(true) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("reactor failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cluster_config(args: &ServeArgs) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(listen) = args.cluster_listen else {
        if !args.peers.is_empty() || args.cluster_secret_file.is_some() {
            return Err(ConfigError("--peer and --cluster-secret-file need --cluster-listen".into()));
        }
        return Ok(None);
    };
    let Some(secret_file) = &args.cluster_secret_file else {
        return Err(ConfigError("--cluster-listen needs --cluster-secret-file".into()));
    };
    let secret = ClusterConfig::read_secret(secret_file)?;
    Ok(Some(ClusterConfig {
        listen,
        advertise: args.cluster_advertise.clone(),
        peers: args.peers.clone(),
        secret,
        node_id: args.node_id,
    }))
}
