//! Live metrics: per-reactor counters published once per loop turn, the numbers that mean one
//! thing per server, rendered as Prometheus text; what reactors hand the introspection endpoints;
//! and a tiny bounded HTTP/1.x request parser.
//!
//! Each reactor owns one [`ReactorMetrics`] and stores its numbers into it with relaxed atomic
//! writes at the end of a turn (a dozen stores, nothing per message); the reactor that serves
//! `--metrics` reads every reactor's copy when a scrape arrives, and takes the per-server numbers
//! (rooms counted once, node links) from its own hub. Names follow the Prometheus naming guide:
//! counters end in `_total`, units are base units named last (`_bytes`, `_seconds`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mio::Waker;

use crate::error::ErrorCode;
pub use crate::limits::HTTP_REQUEST_BYTES_MAX;
pub use crate::limits::METRICS_CONNECTIONS_MAX;
use crate::session::Mode;

/// The version in `fanout_build_info`.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit in `fanout_build_info`: `git rev-parse --short HEAD` when built (by `build.rs`;
/// `FANOUT_COMMIT` in the build's environment overrides it), `unknown` outside a git checkout.
pub const BUILD_COMMIT: &str = env!("FANOUT_COMMIT");

/// One reactor's numbers at the end of a loop turn.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Client connections held (closing ones included).
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_opened: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Publishes accepted from local clients.
    pub messages_received: u64,
    /// Messages queued for local clients.
    pub messages_delivered: u64,
    /// Bytes read from clients.
    pub received_bytes: u64,
    /// Bytes written to clients.
    pub sent_bytes: u64,
    /// Clients cut as slow consumers.
    pub slow_consumers: u64,
    /// `ERROR` frames sent, by code, in [`ErrorCode::ALL`] order.
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Links to sibling cores up (said hello).
    pub core_links_up: u64,
    /// Peer links down.
    pub links_down: u64,
    /// Publishes forwarded to peers.
    pub forwards_sent: u64,
    /// Publishes received from peers.
    pub forwards_received: u64,
    /// Forwards dropped because a peer's queue was full.
    pub forwards_dropped: u64,
    /// Announcements a peer did not acknowledge in time.
    pub interest_ack_timeouts: u64,
    /// Event-loop turns.
    pub loop_turns: u64,
    /// Connections flushed in the last turn.
    pub flush_queue_depth: u64,
    /// Bytes queued on peer links at the end of the last turn.
    pub link_queued_bytes: u64,
}

/// One node link's freshness: a scrape shows the seconds since it last received bytes, so a
/// blackholed peer is visible before the silence limit cuts its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLinkHeard {
    /// The node at the other end.
    pub node_id: u16,
    /// How long ago the link last received bytes.
    pub silent_for: Duration,
}

/// What the process itself uses, read from `/proc/self` on Linux; `None` where unknown (other
/// systems), and then the series is left out rather than reported as 0.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Resident set size.
    pub resident_memory_bytes: Option<u64>,
    /// User and system CPU time.
    pub cpu_seconds: Option<f64>,
    /// File descriptors open.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

/// The numbers that mean one thing per server, not per core: reported once, without a `core`
/// label, so that `sum()` over a server is never double counting.
#[derive(Debug, Default, Clone)]
pub struct ServerNumbers {
    /// Rooms with at least one member on this server, each counted once.
    pub rooms: u64,
    /// Node links up (authenticated); node links live on core 0, the gateway.
    pub node_links_up: u64,
    /// Every authenticated node link's freshness.
    pub node_links: Vec<NodeLinkHeard>,
    /// Connections to the cluster port closed at accept: too many handshakes were pending.
    pub node_links_refused: u64,
    /// Node links cut because their oldest unsent data waited too long.
    pub node_links_too_slow: u64,
    /// When the server started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// The process's resources.
    pub process: ProcessStats,
}

/// One connection as `/connz` lists it, gathered by its reactor on request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    /// The reactor that holds it.
    pub core: u16,
    /// Its key in that reactor (the number log lines give it).
    pub id: usize,
    /// Its session id, unique in the cluster.
    pub session_id: u64,
    /// The client's address, as the kernel reports it.
    pub remote: Option<SocketAddr>,
    /// The user name (empty before the handshake).
    pub name: Bytes,
    /// Binary, line or undecided.
    pub mode: Mode,
    /// The rooms it is in.
    pub rooms: Vec<Bytes>,
    /// Bytes read from it.
    pub received_bytes: u64,
    /// Bytes written to it.
    pub sent_bytes: u64,
    /// Bytes queued for it and not yet taken by the kernel.
    pub pending_bytes: usize,
    /// How long ago it connected.
    pub age: Duration,
    /// How long ago it last sent a byte.
    pub idle: Duration,
    /// Being closed.
    pub closing: bool,
}

/// What the introspection endpoints ask every reactor for. A reactor checks for a new ask with
/// one atomic load per turn and answers on that turn (see `metrics_server.rs` for why asking
/// beats publishing on a timer).
#[derive(Debug, Clone)]
pub struct IntrospectionAsk {
    /// Tells answers to this ask from late answers to an earlier one.
    pub generation: u64,
    /// Connections wanted: those with the lowest session ids, at most this many (0: none).
    pub conns_max: usize,
    /// Rooms whose local member counts are wanted.
    pub rooms: Vec<Bytes>,
    /// Woken when the answer is stored (the reactor that serves the endpoint).
    pub reply_to: Arc<Waker>,
}

/// One reactor's answer to an [`IntrospectionAsk`].
#[derive(Debug, Clone, Default)]
pub struct CoreReport {
    /// The ask answered.
    pub generation: u64,
    /// Connections the reactor holds.
    pub conns_total: usize,
    /// The connections asked for, in session id order.
    pub conns: Vec<ConnRow>,
    /// Local members of each room asked about, in the ask's order.
    pub room_members: Vec<usize>,
}

/// The ask and the answer, behind a lock that only introspection takes (never a client's turn).
#[derive(Debug, Default)]
struct Exchange {
    ask: Option<IntrospectionAsk>,
    report: Option<CoreReport>,
}

macro_rules! metric_fields {
    ($($field:ident),* $(,)?) => {
        /// One reactor's published numbers: written by its reactor, read by the scraper; and its
        /// introspection exchange with the endpoint.
        #[derive(Debug, Default)]
        pub struct ReactorMetrics {
            $($field: AtomicU64,)*
            errors: [AtomicU64; ErrorCode::ALL.len()],
            /// The generation of the latest ask: a reactor compares it with the last one it
            /// answered, one relaxed load per turn.
            asked: AtomicU64,
            exchange: Mutex<Exchange>,
        }

        impl ReactorMetrics {
            /// Stores a turn's numbers (relaxed: a scrape may mix two adjacent turns).
            pub fn publish(&self, s: &Snapshot) {
                $(self.$field.store(s.$field, Ordering::Relaxed);)*
                for (slot, value) in self.errors.iter().zip(s.errors) {
                    slot.store(value, Ordering::Relaxed);
                }
            }

            /// Reads the numbers back.
            pub fn read(&self) -> Snapshot {
                let mut s = Snapshot { $($field: self.$field.load(Ordering::Relaxed),)* ..Snapshot::default() };
                for (value, slot) in s.errors.iter_mut().zip(&self.errors) {
                    *value = slot.load(Ordering::Relaxed);
                }
                s
            }
        }
    };
}

metric_fields!(
    connections,
    connections_opened,
    connections_refused,
    messages_received,
    messages_delivered,
    received_bytes,
    sent_bytes,
    slow_consumers,
    core_links_up,
    links_down,
    forwards_sent,
    forwards_received,
    forwards_dropped,
    interest_ack_timeouts,
    loop_turns,
    flush_queue_depth,
    link_queued_bytes,
);

impl ReactorMetrics {
    /// The endpoint asks this reactor for `ask` (replacing an unanswered earlier one); the
    /// caller then wakes the reactor.
    pub fn ask(&self, ask: IntrospectionAsk) {
        let generation = ask.generation;
        let mut exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        exchange.ask = Some(ask);
        exchange.report = None;
        drop(exchange);
        self.asked.store(generation, Ordering::Release);
    }

    /// The reactor, once per turn: a new ask since `answered`, if any (and notes it answered).
    /// Costs one atomic load when there is none.
    pub fn new_ask(&self, answered: &mut u64) -> Option<IntrospectionAsk> {
        let asked = self.asked.load(Ordering::Acquire);
        if asked == *answered {
            return None;
        }
        *answered = asked;
        self.exchange.lock().unwrap_or_else(|p| p.into_inner()).ask.clone()
    }

    /// The reactor stores its answer and wakes the endpoint's reactor.
    pub fn answer(&self, report: CoreReport) {
        let mut exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ask) = exchange.ask.as_ref().filter(|a| a.generation == report.generation) else {
            return; // Asked again meanwhile: the newer ask gets its own answer.
        };
        let reply_to = ask.reply_to.clone();
        exchange.report = Some(report);
        drop(exchange);
        if let Err(e) = reply_to.wake() {
            log::warn!("could not wake the metrics endpoint: {e}");
        }
    }

    /// The endpoint takes the answer to `generation`, once it is there.
    pub fn take_report(&self, generation: u64) -> Option<CoreReport> {
        let mut exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        if exchange.report.as_ref().is_some_and(|r| r.generation == generation) {
            return exchange.report.take();
        }
        None
    }
}

/// A metric family of the per-core numbers: name, type, help text, and how to read it.
type Family = (&'static str, &'static str, &'static str, fn(&Snapshot) -> u64);

/// The per-core families, each with a `core` label.
const CORE_FAMILIES: [Family; 17] = [
    ("fanout_core_connections", "gauge", "Client connections held by a core.", |s| s.connections),
    ("fanout_connections_opened_total", "counter", "Client connections accepted.", |s| s.connections_opened),
    ("fanout_connections_refused_total", "counter", "Client connections refused at the connection limit.", |s| {
        s.connections_refused
    }),
    ("fanout_messages_received_total", "counter", "Publishes accepted from clients.", |s| s.messages_received),
    ("fanout_messages_delivered_total", "counter", "Messages queued for clients.", |s| s.messages_delivered),
    ("fanout_received_bytes_total", "counter", "Bytes read from clients.", |s| s.received_bytes),
    ("fanout_sent_bytes_total", "counter", "Bytes written to clients.", |s| s.sent_bytes),
    ("fanout_slow_consumers_total", "counter", "Clients cut as slow consumers.", |s| s.slow_consumers),
    ("fanout_core_links_up", "gauge", "Links to sibling cores up.", |s| s.core_links_up),
    ("fanout_peer_links_down", "gauge", "Peer links down and not yet removed.", |s| s.links_down),
    ("fanout_forwards_sent_total", "counter", "Publishes forwarded to peers.", |s| s.forwards_sent),
    ("fanout_forwards_received_total", "counter", "Publishes received from peers.", |s| s.forwards_received),
    ("fanout_forwards_dropped_total", "counter", "Forwards dropped at a full peer queue.", |s| s.forwards_dropped),
    ("fanout_interest_ack_timeouts_total", "counter", "Room announcements a peer did not acknowledge in time.", |s| {
        s.interest_ack_timeouts
    }),
    ("fanout_loop_turns_total", "counter", "Event-loop turns.", |s| s.loop_turns),
    ("fanout_flush_queue_depth", "gauge", "Connections flushed in the last turn.", |s| s.flush_queue_depth),
    ("fanout_link_queued_bytes", "gauge", "Bytes queued on peer links.", |s| s.link_queued_bytes),
];

/// Writes one family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the per-server numbers, then every reactor's numbers labelled by core, in the
/// Prometheus text format (version 0.0.4).
pub fn render(reactors: &[Snapshot], server: &ServerNumbers) -> String {
    let mut out = String::new();
    family(&mut out, "fanout_build_info", "gauge", "The running build: its version and commit (always 1).");
    let (version, commit) = (label_value(BUILD_VERSION), label_value(BUILD_COMMIT));
    let _ = writeln!(out, "fanout_build_info{{version=\"{version}\",commit=\"{commit}\"}} 1");
    family(&mut out, "fanout_start_time_seconds", "gauge", "When the server started, in seconds since the Unix epoch.");
    let _ = writeln!(out, "fanout_start_time_seconds {:.3}", server.start_time_seconds);
    render_process(&mut out, &server.process);

    let connections: u64 = reactors.iter().map(|s| s.connections).sum();
    let per_server: [(&str, &str, &str, u64); 5] = [
        ("fanout_connections", "gauge", "Client connections held by the server.", connections),
        ("fanout_rooms", "gauge", "Rooms with at least one member on this server.", server.rooms),
        ("fanout_node_links_up", "gauge", "Links to other nodes up (authenticated).", server.node_links_up),
        (
            "fanout_node_links_refused_total",
            "counter",
            "Connections to the cluster port closed at once: too many handshakes pending.",
            server.node_links_refused,
        ),
        (
            "fanout_node_links_too_slow_total",
            "counter",
            "Node links cut because their oldest unsent message waited too long.",
            server.node_links_too_slow,
        ),
    ];
    for (name, kind, help, value) in per_server {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "fanout_node_link_last_received_seconds";
    family(&mut out, name, "gauge", "Seconds since a node link last received bytes.");
    let mut links = server.node_links.clone();
    // One series per node: the freshest link, should two links to one node be up at once.
    links.sort_by_key(|l| (l.node_id, l.silent_for));
    links.dedup_by_key(|l| l.node_id);
    for link in links {
        let _ = writeln!(out, "{name}{{node=\"{}\"}} {:.3}", link.node_id, link.silent_for.as_secs_f64());
    }

    for (name, kind, help, get) in CORE_FAMILIES {
        family(&mut out, name, kind, help);
        for (core, s) in reactors.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(s));
        }
    }
    let name = "fanout_errors_total";
    family(&mut out, name, "counter", "ERROR frames sent to clients, by code.");
    for (core, s) in reactors.iter().enumerate() {
        for (code, count) in ErrorCode::ALL.iter().zip(s.errors) {
            let _ = writeln!(out, "{name}{{core=\"{core}\",code=\"{}\"}} {count}", code.name());
        }
    }
    out
}

/// The standard `process_*` series (the names every Prometheus client library uses), each only
/// when known.
fn render_process(out: &mut String, process: &ProcessStats) {
    if let Some(bytes) = process.resident_memory_bytes {
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    if let Some(seconds) = process.cpu_seconds {
        family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {seconds:.2}");
    }
    if let Some(fds) = process.open_fds {
        family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        let _ = writeln!(out, "process_open_fds {fds}");
    }
    if let Some(fds) = process.max_fds {
        family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        let _ = writeln!(out, "process_max_fds {fds}");
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Clock ticks per second of `/proc/self/stat`'s CPU times: `USER_HZ`, which Linux fixes at 100
/// for user space on every architecture (the Prometheus process collector assumes the same).
const USER_HZ: f64 = 100.0;

/// The process's resources, from `/proc/self` (Linux); all `None` elsewhere. Open descriptors
/// are left out: counting them is slow, see [`OpenFdCounter`].
pub fn process_stats() -> ProcessStats {
    if !cfg!(target_os = "linux") {
        return ProcessStats::default();
    }
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let resident_memory_bytes = status.as_deref().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let cpu_seconds = stat.as_deref().and_then(|stat| {
        // After the command name (in parentheses, and it may hold spaces): state is field 3,
        // utime and stime fields 14 and 15.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / USER_HZ)
    });
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let max_fds = limits.as_deref().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse().ok()
    });
    ProcessStats { resident_memory_bytes, cpu_seconds, open_fds: None, max_fds }
}

/// The process's open file descriptors, by listing `/proc/self/fd` (Linux; `None` elsewhere).
/// Slow: the kernel takes about 1.5 µs per descriptor (30 ms at 20,000), so a server calls it
/// through [`OpenFdCounter`], off its reactors.
pub fn count_open_fds() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    // The listing's own descriptor is among those it lists.
    std::fs::read_dir("/proc/self/fd").ok().map(|dir| (dir.count() as u64).saturating_sub(1))
}

/// Counts open descriptors on a thread of its own, so a scrape never stalls the reactor that
/// serves it (30 ms to list 20,000 descriptors here, so ~150 ms at 100,000). Each
/// [`OpenFdCounter::read`] gives the count taken after the previous read asked for one (the
/// first: at start) and asks for the next, so `process_open_fds` is one scrape interval old.
/// The thread sleeps until asked and ends when the counter is dropped.
#[derive(Debug)]
pub struct OpenFdCounter {
    /// The latest count; `u64::MAX` while unknown.
    latest: Arc<AtomicU64>,
    ask: Option<std::sync::mpsc::SyncSender<()>>,
}

impl OpenFdCounter {
    /// Counts once now (start-up, few descriptors) and starts the counting thread.
    pub fn start() -> Self {
        let latest = Arc::new(AtomicU64::new(count_open_fds().unwrap_or(u64::MAX)));
        if !cfg!(target_os = "linux") {
            return Self { latest, ask: None };
        }
        // One pending ask at most: asks that come while one waits are the same ask.
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let counted = latest.clone();
        let spawned = std::thread::Builder::new().name("fanout-fd-count".into()).spawn(move || {
            while asked.recv().is_ok() {
                counted.store(count_open_fds().unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        });
        match spawned {
            Ok(_) => Self { latest, ask: Some(ask) },
            Err(e) => {
                log::warn!("process_open_fds will not be updated: cannot start its thread: {e}");
                Self { latest, ask: None }
            }
        }
    }

    /// The latest count, and a new one asked for.
    pub fn read(&self) -> Option<u64> {
        if let Some(ask) = &self.ask {
            let _ = ask.try_send(());
        }
        Some(self.latest.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }
}

/// What a buffered HTTP request head amounts to so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRequest {
    /// The head is not complete yet.
    Incomplete,
    /// A `GET` of this path (query string removed: see [`request_query`]).
    Get(String),
    /// A `HEAD` of this path: answered like the `GET`, without the body.
    Head(String),
    /// Not a request we answer: malformed, too long, or neither `GET` nor `HEAD`. Answer 400
    /// and close.
    Bad,
}

/// Parses the request head at the start of `buf` (HTTP/1.0 or 1.1, request line only).
pub fn parse_request(buf: &[u8]) -> HttpRequest {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() >= HTTP_REQUEST_BYTES_MAX { HttpRequest::Bad } else { HttpRequest::Incomplete };
    };
    if end + 4 > HTTP_REQUEST_BYTES_MAX {
        return HttpRequest::Bad;
    }
    let Some((method, target)) = request_line(&buf[..end]) else {
        return HttpRequest::Bad;
    };
    let path = target.split('?').next().unwrap_or(target).to_owned();
    match method {
        "GET" => HttpRequest::Get(path),
        "HEAD" => HttpRequest::Head(path),
        _ => HttpRequest::Bad,
    }
}

/// The method and target of a well-formed request line at the start of `head`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = memchr::memchr(b'\r', head).unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some("HTTP/1.0" | "HTTP/1.1"), None) if target.starts_with('/') => {
            Some((method, target))
        }
        _ => None,
    }
}

/// The query string of the request whose head starts `buf` (after `?`; empty if none). Call it
/// once [`parse_request`] gave `Get` or `Head`.
pub fn request_query(buf: &[u8]) -> &str {
    let end = memchr::memmem::find(buf, b"\r\n\r\n").unwrap_or(buf.len());
    request_line(&buf[..end]).and_then(|(_, target)| target.split_once('?')).map_or("", |(_, query)| query)
}

/// The value of `key` in a query string (`a=1&b=2`), the first if repeated; no percent-decoding
/// (the parameters we take are numbers).
pub fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// A complete HTTP/1.1 response that closes the connection; with `with_body` false (a `HEAD`),
/// the head alone, whose `Content-Length` still gives the body's length.
pub fn response(status: &str, content_type: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

/// Where a server is in its life, as `/healthz` and `/readyz` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Bound, but not every reactor runs yet: 503.
    Starting,
    /// Every reactor runs: 200.
    Serving,
    /// Taken out of service (lame duck) and about to stop: 503, so load balancers move on.
    Draining,
}

/// The server's health, one small atomic shared by the server (which sets it) and the metrics
/// endpoint (which reports it): an operator's load balancer asks it, so it must never wait.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
}

impl Health {
    /// A server that is starting.
    pub(crate) fn new() -> Self {
        Self { state: AtomicU8::new(HealthState::Starting as u8) }
    }

    /// True once the server is being taken out of service.
    pub fn is_draining(&self) -> bool {
        self.state() == HealthState::Draining
    }

    /// What `/healthz` reports now.
    pub fn state(&self) -> HealthState {
        match self.state.load(Ordering::Acquire) {
            0 => HealthState::Starting,
            1 => HealthState::Serving,
            _ => HealthState::Draining,
        }
    }

    /// Every reactor runs: serving, unless draining began first (draining never goes back).
    pub(crate) fn set_serving(&self) {
        let (starting, serving) = (HealthState::Starting as u8, HealthState::Serving as u8);
        let _ = self.state.compare_exchange(starting, serving, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Takes the server out of service: `/healthz` and `/readyz` answer 503 from now on. For the
    /// lame-duck drain, which stops accepting and moves clients away before the process exits.
    pub(crate) fn set_draining(&self) {
        self.state.store(HealthState::Draining as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_get_and_refuses_the_rest() {
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), HttpRequest::Get("/metrics".into()));
        assert_eq!(parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), HttpRequest::Get("/metrics".into()));
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost"), HttpRequest::Incomplete);
        assert_eq!(parse_request(b""), HttpRequest::Incomplete);
        for bad in [
            &b"POST /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), HttpRequest::Bad, "{bad:?}");
        }
    }

    #[test]
    fn an_oversize_head_is_bad_at_the_limit() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(HTTP_REQUEST_BYTES_MAX - 1, b'a');
        assert_eq!(parse_request(&head), HttpRequest::Incomplete);
        head.push(b'a');
        assert_eq!(parse_request(&head), HttpRequest::Bad);
    }

    #[test]
    fn head_is_answered_and_queries_are_read() {
        let head = b"HEAD /connz?offset=2&limit=10&offset=5 HTTP/1.1\r\n\r\n";
        assert_eq!(parse_request(head), HttpRequest::Head("/connz".into()));
        assert_eq!(request_query(head), "offset=2&limit=10&offset=5");
        assert_eq!(query_value(request_query(head), "offset"), Some("2"));
        assert_eq!(query_value(request_query(head), "limit"), Some("10"));
        assert_eq!(query_value(request_query(head), "lim"), None);
        assert_eq!(request_query(b"GET /connz HTTP/1.1\r\n\r\n"), "");
        let answer = response("200 OK", "text/plain", b"ok\n", false);
        assert!(answer.ends_with(b"Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"));
        assert!(response("200 OK", "text/plain", b"ok\n", true).ends_with(b"\r\n\r\nok\n"));
    }

    #[test]
    fn renders_per_server_numbers_once_and_per_core_numbers_by_core() {
        let a = ReactorMetrics::default();
        let mut s = Snapshot { connections: 3, messages_delivered: 42, ..Snapshot::default() };
        s.errors[0] = 2;
        a.publish(&s);
        let b = Snapshot { connections: 2, ..Snapshot::default() };
        let server = ServerNumbers {
            rooms: 7,
            node_links_up: 1,
            node_links: vec![
                NodeLinkHeard { node_id: 2, silent_for: Duration::from_millis(1500) },
                NodeLinkHeard { node_id: 2, silent_for: Duration::from_millis(2500) },
            ],
            process: ProcessStats { open_fds: Some(9), ..ProcessStats::default() },
            ..ServerNumbers::default()
        };
        let text = render(&[a.read(), b], &server);
        for line in [
            "fanout_connections 5\n",
            "fanout_core_connections{core=\"0\"} 3\n",
            "fanout_core_connections{core=\"1\"} 2\n",
            "fanout_rooms 7\n",
            "fanout_node_links_up 1\n",
            "fanout_node_link_last_received_seconds{node=\"2\"} 1.500\n",
            "fanout_messages_delivered_total{core=\"0\"} 42\n",
            "fanout_errors_total{core=\"0\",code=\"MALFORMED_FRAME\"} 2\n",
            "# TYPE fanout_messages_received_total counter\n",
            "process_open_fds 9\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert_eq!(text.matches("fanout_node_link_last_received_seconds{").count(), 1, "one series per node");
        assert!(!text.contains("process_resident_memory_bytes"), "unknown process numbers are left out");
        let build = format!("fanout_build_info{{version=\"{BUILD_VERSION}\",commit=\"{BUILD_COMMIT}\"}} 1\n");
        assert!(text.contains(&build), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn process_stats_are_read_on_linux() {
        let stats = process_stats();
        if cfg!(target_os = "linux") {
            assert!(stats.resident_memory_bytes.is_some_and(|b| b > 0), "{stats:?}");
            assert!(stats.cpu_seconds.is_some() && stats.max_fds.is_some_and(|m| m > 0), "{stats:?}");
            assert!(count_open_fds().is_some_and(|n| n >= 3), "stdin, stdout, stderr at least");
        } else {
            assert_eq!(stats, ProcessStats::default());
            assert_eq!(count_open_fds(), None);
        }
    }

    #[test]
    fn open_descriptors_are_counted_off_the_caller_and_a_read_asks_for_the_next_count() {
        let counter = OpenFdCounter::start();
        let Some(before) = counter.read() else {
            assert_eq!(count_open_fds(), None, "counted at start where it can be");
            return;
        };
        // Many, so that descriptors other tests close meanwhile cannot hide them.
        let opened: Vec<std::fs::File> = (0..300).map(|_| std::fs::File::open("/dev/null").expect("open")).collect();
        // The count asked for by the read above, taken on the counter's thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut now = before;
        while now < before + 250 {
            assert!(std::time::Instant::now() < deadline, "still {now} descriptors counted, {before} before");
            std::thread::sleep(Duration::from_millis(5));
            now = counter.read().expect("a count");
        }
        drop(opened);
    }

    #[test]
    fn an_answer_reaches_only_its_own_ask() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let core = ReactorMetrics::default();
        let mut answered = 0;
        assert!(core.new_ask(&mut answered).is_none(), "nothing asked yet");
        let ask =
            |generation| IntrospectionAsk { generation, conns_max: 1, rooms: Vec::new(), reply_to: waker.clone() };
        core.ask(ask(1));
        core.ask(ask(2));
        let got = core.new_ask(&mut answered).expect("asked");
        assert_eq!((got.generation, answered), (2, 2));
        assert!(core.new_ask(&mut answered).is_none(), "answered already");
        core.answer(CoreReport { generation: 1, ..CoreReport::default() });
        assert!(core.take_report(1).is_none() && core.take_report(2).is_none(), "a late answer is dropped");
        core.answer(CoreReport { generation: 2, conns_total: 4, ..CoreReport::default() });
        assert_eq!(core.take_report(2).map(|r| r.conns_total), Some(4));
        assert!(core.take_report(2).is_none(), "taken once");
    }
}
