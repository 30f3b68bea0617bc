//! The `fanout` command: `serve` runs the relay, `chat` is an interactive terminal client,
//! `bench` a load generator; `completions` and `manpage` print what packagers install.
//!
//! `serve` takes its settings from flags and, with `--config FILE`, from a file whose keys are
//! the flags ([`config_file`]): each file value becomes its flag's default, so a flag given on
//! the command line wins. SIGHUP runs [`Reloader::reload`], which reads everything again the same
//! way and applies what may change while the server runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use fanout::auth::Tokens;
use fanout::config::{ClusterConfig, ConfigError, ReloadHook, ServerConfig, TlsListenerConfig, DEFAULT_LISTEN};
use fanout::limits;
use fanout::logging::{self, LogFormat};
use fanout::server::Server;
use fanout::tls::{ClusterTls, ListenerTls, TlsFiles};
use log::LevelFilter;

mod chat;
mod config_file;

#[derive(Parser)]
#[command(name = "fanout", version, about = "A chat relay server and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server.
    // Boxed: the server's settings dwarf every other command's.
    Serve(Box<ServeArgs>),
    /// Chat from the terminal: type lines, read everyone else's.
    Chat(chat::ChatArgs),
    /// Load-test a server (fanout, NATS or Redis pub/sub): throughput, latency, loss.
    Bench(fanout_bench::BenchArgs),
    /// Print a shell completion script, e.g. `fanout completions bash > /etc/bash_completion.d/fanout`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into --dir.
    Manpage {
        /// Write fanout.1, fanout-serve.1, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Read settings from FILE: `key = value` lines, keys named like the flags (max_connections =
    /// 1000; peers = ["a:7501"]). Flags given here override it; SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the settings (flags, config file, token and secret files) and exit: 0 if they are valid.
    #[arg(long)]
    check_config: bool,
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
    /// On SIGUSR2 (lame duck), close the clients with DRAINING spread over this long, in
    /// milliseconds, then exit 0.
    #[arg(long, default_value_t = limits::DRAIN_PERIOD.as_millis() as u64)]
    drain_period_ms: u64,
    /// While a reactor is busy, hold its clients' bytes up to this long after a flush pass
    /// (never longer than that pass took), so that several messages leave in one write; an idle
    /// server sends every message at once. 0 flushes every turn. In microseconds.
    #[arg(long, default_value_t = limits::FLUSH_LINGER_MAX.as_micros() as u64)]
    flush_linger_us: u64,
    /// Require clients to present one of the tokens in this file (one per line) in HELLO; SIGHUP
    /// reads it again.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Accept clients over TLS on this address too (needs --tls-cert and --tls-key); the plain
    /// --listen stays open.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain, PEM (the certificate first); SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM; SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require TLS clients to present a certificate issued by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Serve clients over TLS only: no plain --listen port (needs --tls-listen).
    #[arg(long)]
    tls_only: bool,
    /// Join a cluster: accept links from other nodes here (and tell them to dial it).
    #[arg(long)]
    cluster_listen: Option<SocketAddr>,
    /// The address other nodes should dial to reach this one (default: --cluster-listen's; needed
    /// when that is 0.0.0.0 or ::).
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// A node of the cluster to dial, IP:port or host:port (repeat for more); a host name is
    /// resolved at every dial and each of its addresses dialed. The rest are learned from them.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<String>,
    /// File holding the cluster's shared secret (required with --cluster-listen unless node-link
    /// TLS is on; with it, a second proof of membership).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Node-link TLS: this node's certificate, PEM, for the addresses it is dialed at (its
    /// --cluster-advertise host); every node link is encrypted and both ends verified. SIGHUP
    /// reads it again.
    #[arg(long, value_name = "FILE")]
    cluster_tls_cert: Option<PathBuf>,
    /// The private key of --cluster-tls-cert, PEM.
    #[arg(long, value_name = "FILE")]
    cluster_tls_key: Option<PathBuf>,
    /// The CA that issued every node's certificate, PEM: a node link is accepted only from a node
    /// with a certificate it issued.
    #[arg(long, value_name = "FILE")]
    cluster_tls_ca: Option<PathBuf>,
    /// This node's id, unique in the cluster (default: derived from the advertised address;
    /// required when that is a loopback address).
    #[arg(long)]
    node_id: Option<u16>,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Reactor threads, each owning its share of the connections (default: one per core on
    /// machines with more than 2 cores, else 1: see the README's Performance section).
    #[arg(long)]
    threads: Option<usize>,
    /// Log level: off, error, warn, info, debug, trace (default: $FANOUT_LOG, else info).
    #[arg(long, value_parser = logging::parse_level)]
    log_level: Option<LevelFilter>,
    /// Log line format: text for people, json (one object per line: ts, level, target, msg) for
    /// log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match Cli::parse_from(&argv).command {
        Command::Serve(_) => serve(argv),
        Command::Chat(args) => chat::run(&args),
        Command::Bench(args) => fanout_bench::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "fanout", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Manpage { dir } => manpage(dir),
    }
}

fn manpage(dir: Option<PathBuf>) -> ExitCode {
    let written = match &dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fanout serve`'s settings and where each came from.
struct Loaded {
    args: ServeArgs,
    /// Keys given on the command line (or through an environment variable): they beat the file.
    from_command_line: BTreeSet<String>,
    /// Keys the config file set.
    from_file: BTreeSet<String>,
    /// Every setting as text, for telling what a reload changed.
    values: BTreeMap<String, Vec<String>>,
}

/// Reads the settings: `argv`, with the file of its `--config` (if any) as the flags' defaults.
/// Every error names what is wrong (a flag, or the file's line and key).
fn load(argv: &[OsString]) -> Result<Loaded, String> {
    let first = Cli::command().try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let config = first.subcommand_matches("serve").and_then(|m| m.get_one::<PathBuf>("config")).cloned();
    let (matches, from_file) = match config {
        None => (first, BTreeSet::new()),
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
            let entries =
                config_file::parse(&text).map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
            let command = Cli::command();
            let serve = command.find_subcommand("serve").expect("serve is a subcommand").clone();
            let (serve, from_file) = config_file::apply(serve, &entries, &path)?;
            let command = command.mut_subcommand("serve", |_| serve);
            (command.try_get_matches_from(argv).map_err(|e| e.to_string())?, from_file)
        }
    };
    let serve = matches.subcommand_matches("serve").ok_or("not a serve command")?;
    let from_command_line = setting_ids()
        .into_iter()
        .filter(|id| matches!(serve.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)))
        .collect();
    let values = setting_values(serve);
    let Command::Serve(args) = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?.command else {
        return Err("not a serve command".into());
    };
    let args = *args;
    Ok(Loaded { args, from_command_line, from_file, values })
}

/// The ids of `serve`'s settings (its flags but --config and --check-config).
fn setting_ids() -> Vec<String> {
    config_file::keys(Cli::command().find_subcommand("serve").expect("serve is a subcommand"))
}

fn setting_values(serve: &ArgMatches) -> BTreeMap<String, Vec<String>> {
    setting_ids()
        .into_iter()
        .map(|id| {
            let raw = serve.get_raw(&id).map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
            (id, raw.unwrap_or_default())
        })
        .collect()
}

/// The log level: `--log-level`, else `FANOUT_LOG`, else the file's `log_level`, else info;
/// with a warning to log when `FANOUT_LOG` holds no level.
fn log_level(loaded: &Loaded) -> (LevelFilter, Option<String>) {
    let flag = loaded.args.log_level;
    if loaded.from_command_line.contains("log_level") {
        return (flag.unwrap_or(LevelFilter::Info), None);
    }
    let (from_env, warning) = match logging::level_from_env() {
        Ok(level) => (level, None),
        Err(e) => (None, Some(format!("{e}; ignoring it"))),
    };
    (from_env.or(flag).unwrap_or(LevelFilter::Info), warning)
}

fn serve(argv: Vec<OsString>) -> ExitCode {
    let loaded = match load(&argv) {
        Ok(loaded) => loaded,
        Err(e) => {
            // Before the logger: clap's own errors start with "error:" already.
            let e = e.trim_end();
            if e.starts_with("error:") {
                eprintln!("{e}");
            } else {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let (level, env_warning) = log_level(&loaded);
    logging::init(level, loaded.args.log_format);
    if let Some(warning) = env_warning {
        log::warn!("{warning}");
    }
    let args = &loaded.args;
    let explicit = |key: &str| loaded.from_command_line.contains(key) || loaded.from_file.contains(key);
    check_descriptor_limit(args.max_connections, explicit("max_connections"));
    let mut config = match server_config(args) {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        limits::default_threads(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    });
    if args.check_config {
        return check_config(&config, threads);
    }
    if let Some(path) = &args.config {
        log::info!("settings from {} (flags override it)", path.display());
    }
    let reloader = Reloader {
        argv,
        tokens: config.hub.tokens.clone(),
        listener_tls: config.tls.as_ref().map(|t| t.tls.clone()),
        cluster_tls: config.cluster.as_ref().and_then(|c| c.tls.clone()),
        started_with: loaded.values,
    };
    config.reload = Some(ReloadHook::new(move || reloader.reload()));
    let reactor = match Server::bind(config, threads) {
        Ok(reactor) => reactor,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.local_tls_addr() {
        // Scripts and tests read this line too: keep the address last.
        Some(Ok(addr)) => log::info!("TLS clients connect to {addr}"),
        Some(Err(e)) => log::warn!("accepting TLS clients, address unknown: {e}"),
        None => {}
    }
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

/// `--check-config`: what `Server::bind` would refuse before binding anything, then exit.
fn check_config(config: &ServerConfig, threads: usize) -> ExitCode {
    let mut result = config.validate();
    if threads == 0 || threads > usize::from(fanout::limits::MAX_CORE_ID) + 1 {
        result =
            Err(ConfigError(format!("--threads must be between 1 and {}", fanout::limits::MAX_CORE_ID as usize + 1)));
    }
    if let (Ok(()), Some(cluster)) = (&result, &config.cluster) {
        let advertised = cluster.advertise.clone().unwrap_or_else(|| cluster.listen.to_string());
        result = ClusterConfig::node_identity(&advertised, cluster.node_id).map(drop);
    }
    match result {
        Ok(()) => {
            log::info!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the descriptor limit to the hard limit, and warns only when that is below what the
/// operator asked for (`--max-connections` given as a flag or in the file).
fn check_descriptor_limit(max_connections: usize, asked_for: bool) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("could not raise the file descriptor limit: {e}");
            return;
        }
    };
    let needed = max_connections as u64 + limits::DESCRIPTORS_RESERVED;
    if limit >= needed {
        log::info!("file descriptor limit {limit}");
    } else if asked_for {
        log::warn!(
            "--max-connections {max_connections} needs about {needed} file descriptors, but the limit is {limit}: \
             raise it (ulimit -n, LimitNOFILE=) or lower --max-connections; accepts pause while none are free"
        );
    } else {
        log::info!(
            "file descriptor limit {limit}: room for about {} client connections (the default \
             --max-connections is {max_connections})",
            limit.saturating_sub(limits::DESCRIPTORS_RESERVED)
        );
    }
}

/// The server's configuration from the settings; reads the token and secret files.
fn server_config(args: &ServeArgs) -> Result<ServerConfig, ConfigError> {
    let mut config = ServerConfig::new(args.listen);
    config.hub.connections_max = args.max_connections;
    config.hub.output_bytes_max = args.max_output_bytes;
    config.hub.rooms_per_connection_max = args.max_rooms_per_connection;
    config.hub.timeouts.handshake = Duration::from_millis(args.handshake_timeout_ms);
    config.hub.timeouts.ping_interval = Duration::from_millis(args.ping_interval_ms);
    config.hub.timeouts.ping_timeout = Duration::from_millis(args.ping_timeout_ms);
    config.metrics = args.metrics;
    config.drain_period = Duration::from_millis(args.drain_period_ms);
    config.flush_linger_max = Duration::from_micros(args.flush_linger_us);
    if let Some(path) = &args.token_file {
        config.hub.tokens = Some(Tokens::read(path)?);
    }
    config.tls = tls_listener_config(args)?;
    config.cluster = cluster_config(args)?;
    Ok(config)
}

/// The client TLS listener's settings; reads and checks the certificate and key.
fn tls_listener_config(args: &ServeArgs) -> Result<Option<TlsListenerConfig>, ConfigError> {
    let Some(listen) = args.tls_listen else {
        if args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_client_ca.is_some() || args.tls_only {
            return Err(ConfigError("--tls-cert, --tls-key, --tls-client-ca and --tls-only need --tls-listen".into()));
        }
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Err(ConfigError("--tls-listen needs --tls-cert and --tls-key".into()));
    };
    let files = TlsFiles {
        cert: ("--tls-cert", cert.clone()),
        key: ("--tls-key", key.clone()),
        ca: args.tls_client_ca.clone().map(|ca| ("--tls-client-ca", ca)),
    };
    Ok(Some(TlsListenerConfig { listen, tls: ListenerTls::load(files)?, only: args.tls_only }))
}

fn cluster_config(args: &ServeArgs) -> Result<Option<ClusterConfig>, ConfigError> {
    let tls = cluster_tls(args)?;
    let Some(listen) = args.cluster_listen else {
        if !args.peers.is_empty() || args.cluster_secret_file.is_some() || tls.is_some() {
            return Err(ConfigError(
                "--peer, --cluster-secret-file and --cluster-tls-cert need --cluster-listen".into(),
            ));
        }
        return Ok(None);
    };
    let secret = match (&args.cluster_secret_file, &tls) {
        (Some(secret_file), _) => ClusterConfig::read_secret(secret_file)?,
        // The certificates prove membership; the HMAC handshake runs with no secret.
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            return Err(ConfigError("--cluster-listen needs --cluster-secret-file or --cluster-tls-cert".into()))
        }
    };
    Ok(Some(ClusterConfig {
        listen,
        advertise: args.cluster_advertise.clone(),
        peers: args.peers.clone(),
        secret,
        node_id: args.node_id,
        tls,
    }))
}

/// Node-link TLS, if configured: all three files or none.
fn cluster_tls(args: &ServeArgs) -> Result<Option<ClusterTls>, ConfigError> {
    match (&args.cluster_tls_cert, &args.cluster_tls_key, &args.cluster_tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(ClusterTls::load(TlsFiles {
            cert: ("--cluster-tls-cert", cert.clone()),
            key: ("--cluster-tls-key", key.clone()),
            ca: Some(("--cluster-tls-ca", ca.clone())),
        })?)),
        _ => Err(ConfigError("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together".into())),
    }
}

/// Settings SIGHUP applies to the running server; any other change waits for a restart.
const RELOADABLE: [&str; 3] = ["token_file", "log_level", "log_format"];

/// What SIGHUP does: read the settings again exactly as at start (flags over file), then apply
/// the reloadable ones, all or nothing.
struct Reloader {
    argv: Vec<OsString>,
    /// The set every hub checks `HELLO` against, if the server started with a token file.
    tokens: Option<Tokens>,
    /// The client TLS listener's certificate, re-read from its files.
    listener_tls: Option<ListenerTls>,
    /// Node links' certificate, re-read from its files.
    cluster_tls: Option<ClusterTls>,
    /// The settings at start, to tell which changes need a restart.
    started_with: BTreeMap<String, Vec<String>>,
}

impl Reloader {
    fn reload(&self) {
        // Everything is read and checked before anything is applied: a bad file changes nothing.
        let loaded = match load(&self.argv) {
            Ok(loaded) => loaded,
            Err(e) => {
                let first = e.lines().next().unwrap_or_default().trim_start_matches("error: ");
                log::error!("reload failed, nothing changed: {first}");
                return;
            }
        };
        let fresh = match (&self.tokens, &loaded.args.token_file) {
            (Some(_), Some(path)) => match Tokens::read(path) {
                Ok(tokens) => Some((tokens, path)),
                Err(e) => {
                    log::error!("reload failed, nothing changed: {e}");
                    return;
                }
            },
            _ => None,
        };
        // Certificates are re-read from the files the server started with (a changed path takes
        // a restart, like any other setting); a renewal that does not load changes nothing.
        let listener_tls = match self.listener_tls.as_ref().map(ListenerTls::reread).transpose() {
            Ok(config) => config,
            Err(e) => {
                log::error!("reload failed, nothing changed (the TLS certificate in force stays): {}", e.0);
                return;
            }
        };
        let cluster_tls = match self.cluster_tls.as_ref().map(ClusterTls::reread).transpose() {
            Ok(configs) => configs,
            Err(e) => {
                log::error!("reload failed, nothing changed (the node-link certificate in force stays): {}", e.0);
                return;
            }
        };
        if let (Some(tls), Some(config)) = (&self.listener_tls, listener_tls) {
            tls.replace(config);
        }
        if let (Some(tls), Some(configs)) = (&self.cluster_tls, cluster_tls) {
            tls.replace(configs);
        }
        let (level, env_warning) = log_level(&loaded);
        if let Some(warning) = env_warning {
            log::warn!("{warning}");
        }
        if let (Some(tokens), Some((fresh, path))) = (&self.tokens, fresh) {
            let was = tokens.len();
            tokens.replace_with(&fresh);
            log::info!("reload: {} tokens from {} (were {was})", fresh.len(), path.display());
        }
        match (self.tokens.is_some(), loaded.args.token_file.is_some()) {
            (false, true) => log::warn!("reload: token_file is set now; checking tokens takes a restart"),
            (true, false) => log::warn!("reload: token_file is unset now; stopping checking tokens takes a restart"),
            _ => {}
        }
        let old = log::max_level();
        if level != old {
            let said = format!("reload: log level {} (was {})", level.as_str(), old.as_str()).to_lowercase();
            // Said at whichever of the two levels shows it.
            if level < old {
                log::info!("{said}");
            }
            logging::set_level(level);
            if level > old {
                log::info!("{said}");
            }
        }
        logging::set_format(loaded.args.log_format);
        for (key, value) in &loaded.values {
            let before = self.started_with.get(key).cloned().unwrap_or_default();
            if !RELOADABLE.contains(&key.as_str()) && *value != before {
                let show = |v: &[String]| if v.is_empty() { "unset".to_string() } else { v.join(", ") };
                log::warn!("reload: {key} is {} now (was {}): that takes a restart", show(value), show(&before));
            }
        }
        log::info!("reload done");
    }
}
