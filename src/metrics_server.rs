//! The `--metrics` HTTP endpoint, served from reactor 0's own loop: accept, read one bounded
//! request head, answer, close. `GET` and `HEAD` (the same answer without its body) of:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text: per-server series, then per-core series labelled `core` |
//! | `/healthz` | 200 `ok` while serving; 503 before every reactor runs and while draining |
//! | `/readyz` | 200 while serving and — on a node given `--peer` — once it has had a node link |
//! | `/connz?offset=&limit=` | JSON: the connections, in session id order, a page at a time |
//! | `/roomz?offset=&limit=` | JSON: every known room, local and cluster-wide members, who wants it |
//! | `/routez` | JSON: the node links, their queues and how fresh they are |
//!
//! Anything else is 404, a malformed or oversize head 400. At most [`METRICS_CONNECTIONS_MAX`]
//! connections at once, each given [`METRICS_REQUEST_TIMEOUT`] for the whole exchange.
//!
//! **Where the numbers come from.** Counters are published by every reactor each turn (atomics,
//! see [`crate::metrics`]). What exists once per server — rooms, node links, readiness, and all
//! of `/routez` — is read from reactor 0's own hub, on this thread, when asked: core 0 is the
//! gateway that holds every node link, and every sibling announces its rooms to it.
//!
//! `/connz` and `/roomz` need every core's connections and room members. Each reactor *answers
//! an ask* rather than publishing a snapshot on a timer: the endpoint stores an
//! [`IntrospectionAsk`] in each reactor's [`ReactorMetrics`] and wakes it; the reactor sees the
//! new generation with one relaxed atomic load at the end of its turn, builds its
//! [`CoreReport`] there (off the message path: it reads its own tables, which no one else
//! touches), stores it behind a mutex only the endpoint and that one answer take, and wakes us.
//! Why asking: an idle operator costs nothing (a timer would copy 100,000 connections a few
//! times a second for nobody), the answer is as fresh as the request, and a page is bounded
//! (a core sends only the connections that can be on it). Requests arriving while an ask is
//! out wait for the next one, so scrapes never multiply the work; a core that does not answer
//! within [`INTROSPECTION_WAIT_MAX`] gets the request a 503.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token, Waker};
use slab::Slab;

use crate::error::bind_error;
use crate::hub::Hub;
pub use crate::limits::INTROSPECTIONS_WAITING_MAX;
pub use crate::limits::INTROSPECTION_LIMIT_DEFAULT;
pub use crate::limits::INTROSPECTION_LIMIT_MAX;
pub use crate::limits::INTROSPECTION_WAIT_MAX;
pub use crate::limits::METRICS_REQUEST_TIMEOUT;
use crate::link::LinkClass;
use crate::logging::push_json_string;
use crate::metrics::{
    parse_request, process_stats, query_value, render, request_query, response, ConnRow, CoreReport, HttpRequest,
    IntrospectionAsk, NodeLinkHeard, OpenFdCounter, ProcessStats, ReactorMetrics, ServerNumbers,
    HTTP_REQUEST_BYTES_MAX, METRICS_CONNECTIONS_MAX,
};
use crate::metrics::{Health, HealthState};
use crate::session::Mode;

/// Names the metrics listener in its bind errors.
const METRICS_LISTENER_NAME: &str = "metrics listener (--metrics)";
/// Token of the metrics listener.
pub const METRICS_LISTENER: Token = Token(usize::MAX - 4);
/// Metrics connections take tokens from here up (far above any client connection's key).
const METRICS_TOKEN_BASE: usize = usize::MAX - 4096;

const _: () = assert!(INTROSPECTION_WAIT_MAX.as_millis() < METRICS_REQUEST_TIMEOUT.as_millis());
const _: () = assert!(METRICS_CONNECTIONS_MAX <= 1024, "metrics tokens span 1024 keys");

/// What a waiting request needs from every core.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// A page of `/connz`.
    Conns { offset: usize, limit: usize },
    /// A page of `/roomz`: the room names on it (chosen when asked), out of `total` rooms.
    Rooms { offset: usize, limit: usize, total: usize, names: Vec<Bytes> },
}

/// A request waiting for the cores' answers.
#[derive(Debug)]
struct Wait {
    query: Query,
    with_body: bool,
    /// The ask it waits for; `None` until one goes out.
    generation: Option<u64>,
}

struct Scrape {
    stream: TcpStream,
    request: Vec<u8>,
    answer: Vec<u8>,
    written: usize,
    deadline: Instant,
    waiting: Option<Wait>,
}

/// An ask that is out: its answers so far, and the room names it asked about.
struct Gather {
    generation: u64,
    deadline: Instant,
    reports: Vec<Option<CoreReport>>,
    rooms: Vec<Bytes>,
}

/// What routing a request gives: an answer now, or a wait for the cores.
enum Reply {
    Now(Vec<u8>),
    Wait(Query),
}

/// A reactor as the endpoint reaches it: its published numbers and its waker.
pub type CoreHandle = (Arc<ReactorMetrics>, Arc<Waker>);

/// The endpoint: its listener, its open scrapes and every reactor's metrics.
pub struct MetricsEndpoint {
    listener: TcpListener,
    scrapes: Slab<Scrape>,
    /// Every reactor, by core id; the first is the one this endpoint runs on.
    cores: Vec<CoreHandle>,
    health: Arc<Health>,
    /// A node given `--peer` is ready only once it has had an authenticated node link.
    needs_node_link: bool,
    /// It has had one (latched: see the README on why a later partition does not unready it).
    linked_once: bool,
    start_time_seconds: f64,
    open_fds: OpenFdCounter,
    gather: Option<Gather>,
    generations: u64,
}

impl MetricsEndpoint {
    /// Binds `addr` and registers the listener. `cores` are every reactor, by core id, the first
    /// being the one this endpoint runs on; `health` is what `/healthz` reports.
    pub fn bind(
        addr: SocketAddr,
        registry: &Registry,
        cores: Vec<CoreHandle>,
        health: Arc<Health>,
        needs_node_link: bool,
    ) -> io::Result<Self> {
        assert!(!cores.is_empty(), "the endpoint runs on a reactor");
        let mut listener = TcpListener::bind(addr).map_err(|e| bind_error(METRICS_LISTENER_NAME, addr, e))?;
        registry.register(&mut listener, METRICS_LISTENER, Interest::READABLE)?;
        let start_time_seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Ok(Self {
            listener,
            scrapes: Slab::new(),
            cores,
            health,
            needs_node_link,
            linked_once: false,
            start_time_seconds,
            open_fds: OpenFdCounter::start(),
            gather: None,
            generations: 0,
        })
    }

    /// The address scrapers connect to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `token` belongs to this endpoint.
    pub fn owns(token: Token) -> bool {
        token == METRICS_LISTENER || token.0 >= METRICS_TOKEN_BASE && token.0 < METRICS_TOKEN_BASE + 1024
    }

    /// Handles readiness of one of this endpoint's tokens; `hub` is the hub of the reactor the
    /// endpoint runs on (core 0), read for the per-server numbers.
    pub fn handle<T, L>(&mut self, registry: &Registry, token: Token, now: Instant, hub: &mut Hub<T, L>) {
        if token == METRICS_LISTENER {
            return self.accept(registry, now);
        }
        let key = token.0 - METRICS_TOKEN_BASE;
        if self.scrapes.contains(key) && self.progress(registry, key, now, hub) {
            self.drop_scrape(registry, key);
        }
    }

    /// Drops scrapes that ran out of time.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self.scrapes.iter().filter(|(_, s)| now >= s.deadline).map(|(k, _)| k).collect();
        for key in late {
            self.drop_scrape(registry, key);
        }
    }

    /// Runs at the end of every turn of the endpoint's reactor: notes a node link for
    /// readiness, answers requests whose cores all answered (or gave up on those whose cores
    /// did not in time), and sends the next ask. Nothing to do costs a few comparisons.
    pub fn after_turn<T, L>(&mut self, registry: &Registry, hub: &mut Hub<T, L>) {
        self.note_node_links(hub);
        if self.scrapes.is_empty() && self.gather.is_none() {
            return;
        }
        let now = Instant::now();
        self.collect_answers(registry, now, hub);
        self.send_ask(now);
    }

    fn note_node_links<T, L>(&mut self, hub: &Hub<T, L>) {
        if self.needs_node_link && !self.linked_once && hub.links_up(LinkClass::Node) > 0 {
            self.linked_once = true;
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("metrics accept: {e}");
                    return;
                }
            };
            if self.scrapes.len() >= METRICS_CONNECTIONS_MAX {
                log::warn!("refusing a metrics connection: {METRICS_CONNECTIONS_MAX} already open");
                continue;
            }
            let deadline = now + METRICS_REQUEST_TIMEOUT;
            let scrape =
                Scrape { stream, request: Vec::new(), answer: Vec::new(), written: 0, deadline, waiting: None };
            let key = self.scrapes.insert(scrape);
            let token = Token(METRICS_TOKEN_BASE + key);
            if registry.register(&mut self.scrapes[key].stream, token, Interest::READABLE).is_err() {
                self.scrapes.remove(key);
            }
        }
    }

    /// Reads the request or writes the answer; true when the scrape is done.
    fn progress<T, L>(&mut self, registry: &Registry, key: usize, now: Instant, hub: &mut Hub<T, L>) -> bool {
        let scrape = &mut self.scrapes[key];
        if scrape.waiting.is_some() {
            return false; // The answer comes when the cores have given theirs.
        }
        if scrape.answer.is_empty() {
            let mut chunk = [0u8; 1024];
            loop {
                match scrape.stream.read(&mut chunk) {
                    Ok(0) => return true,
                    Ok(n) => {
                        let room = HTTP_REQUEST_BYTES_MAX + 1 - scrape.request.len().min(HTTP_REQUEST_BYTES_MAX + 1);
                        scrape.request.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return true,
                }
            }
            let (path, with_body) = match parse_request(&scrape.request) {
                HttpRequest::Incomplete => return false,
                HttpRequest::Get(path) => (path, true),
                HttpRequest::Head(path) => (path, false),
                HttpRequest::Bad => (String::new(), true),
            };
            let request = std::mem::take(&mut scrape.request);
            let reply = if path.is_empty() {
                Reply::Now(response("400 Bad Request", "text/plain", b"bad request\n", true))
            } else {
                self.route(&path, request_query(&request), with_body, now, hub)
            };
            let scrape = &mut self.scrapes[key];
            match reply {
                Reply::Now(answer) => scrape.answer = answer,
                Reply::Wait(query) => {
                    scrape.waiting = Some(Wait { query, with_body, generation: None });
                    return false;
                }
            }
        }
        self.write(registry, key)
    }

    /// The answer to `GET path?query` (without its body for `HEAD`), or what to wait for.
    fn route<T, L>(&mut self, path: &str, query: &str, with_body: bool, now: Instant, hub: &mut Hub<T, L>) -> Reply {
        let text = |status: &str, body: &str| response(status, "text/plain", body.as_bytes(), with_body);
        let json = |body: String| response("200 OK", "application/json", body.as_bytes(), with_body);
        self.note_node_links(hub);
        match path {
            "/metrics" => {
                let snapshots: Vec<_> = self.cores.iter().map(|(core, _)| core.read()).collect();
                let body = render(&snapshots, &self.server_numbers(hub, now));
                Reply::Now(response("200 OK", "text/plain; version=0.0.4", body.as_bytes(), with_body))
            }
            "/healthz" => Reply::Now(match self.health.state() {
                HealthState::Serving => text("200 OK", "ok\n"),
                HealthState::Starting => text("503 Service Unavailable", "starting\n"),
                HealthState::Draining => text("503 Service Unavailable", "draining\n"),
            }),
            "/readyz" => Reply::Now(match self.health.state() {
                HealthState::Serving if self.needs_node_link && !self.linked_once => {
                    text("503 Service Unavailable", "no node link yet\n")
                }
                HealthState::Serving => text("200 OK", "ready\n"),
                HealthState::Starting => text("503 Service Unavailable", "starting\n"),
                HealthState::Draining => text("503 Service Unavailable", "draining\n"),
            }),
            "/routez" => Reply::Now(json(routez_json(hub, now))),
            "/connz" | "/roomz" => {
                let Some((offset, limit)) = page(query) else {
                    return Reply::Now(text("400 Bad Request", "offset and limit must be whole numbers\n"));
                };
                let waiting = self.scrapes.iter().filter(|(_, s)| s.waiting.is_some()).count();
                if waiting >= INTROSPECTIONS_WAITING_MAX {
                    return Reply::Now(text("503 Service Unavailable", "too many introspection requests; retry\n"));
                }
                if path == "/connz" {
                    return Reply::Wait(Query::Conns { offset, limit });
                }
                let rooms = hub.known_rooms();
                let total = rooms.len();
                let names = rooms.into_iter().skip(offset).take(limit).collect();
                Reply::Wait(Query::Rooms { offset, limit, total, names })
            }
            _ => Reply::Now(response(
                "404 Not Found",
                "text/plain",
                b"not found; try /metrics /healthz /readyz /connz /roomz /routez\n",
                with_body,
            )),
        }
    }

    fn server_numbers<T, L>(&self, hub: &Hub<T, L>, now: Instant) -> ServerNumbers {
        let node_links = hub
            .node_links_last_heard()
            .map(|(node_id, heard)| NodeLinkHeard { node_id, silent_for: now.saturating_duration_since(heard) })
            .collect();
        ServerNumbers {
            rooms: hub.server_room_count() as u64,
            node_links_up: hub.links_up(LinkClass::Node) as u64,
            node_links,
            node_links_refused: hub.stats().node_links_refused,
            node_links_too_slow: hub.stats().node_links_too_slow,
            start_time_seconds: self.start_time_seconds,
            process: ProcessStats { open_fds: self.open_fds.read(), ..process_stats() },
        }
    }

    /// Takes the cores' answers to the ask that is out; when all are in (or time is up),
    /// answers every request that waited for it.
    fn collect_answers<T, L>(&mut self, registry: &Registry, now: Instant, hub: &mut Hub<T, L>) {
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        for ((core, _), slot) in self.cores.iter().zip(&mut gather.reports) {
            if slot.is_none() {
                *slot = core.take_report(gather.generation);
            }
        }
        let complete = gather.reports.iter().all(Option::is_some);
        if !complete && now < gather.deadline {
            return;
        }
        let Some(gather) = self.gather.take() else {
            return;
        };
        if !complete {
            let late: Vec<usize> =
                gather.reports.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(c, _)| c).collect();
            log::warn!("introspection: cores {late:?} did not answer within {INTROSPECTION_WAIT_MAX:?}");
        }
        let reports: Vec<CoreReport> = gather.reports.into_iter().flatten().collect();
        let keys: Vec<usize> = self
            .scrapes
            .iter()
            .filter(|(_, s)| s.waiting.as_ref().is_some_and(|w| w.generation == Some(gather.generation)))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let Some(wait) = self.scrapes[key].waiting.take() else {
                continue;
            };
            let answer = if complete {
                let body = match &wait.query {
                    Query::Conns { offset, limit } => connz_json(&reports, *offset, *limit),
                    Query::Rooms { offset, limit, total, names } => {
                        roomz_json(&reports, &gather.rooms, hub, (*offset, *limit, *total), names)
                    }
                };
                response("200 OK", "application/json", body.as_bytes(), wait.with_body)
            } else {
                let body = b"a core did not answer in time; retry\n";
                response("503 Service Unavailable", "text/plain", body, wait.with_body)
            };
            self.scrapes[key].answer = answer;
            if self.write(registry, key) {
                self.drop_scrape(registry, key);
            }
        }
    }

    /// Sends one ask covering every request that waits for none yet.
    fn send_ask(&mut self, now: Instant) {
        if self.gather.is_some() {
            return;
        }
        let mut conns_max = 0;
        let mut rooms: Vec<Bytes> = Vec::new();
        let mut any = false;
        for (_, scrape) in &self.scrapes {
            let Some(wait) = scrape.waiting.as_ref().filter(|w| w.generation.is_none()) else {
                continue;
            };
            any = true;
            match &wait.query {
                // The page's rows are among each core's first offset + limit (session ids put
                // core 0's connections first, then core 1's, and so on).
                Query::Conns { offset, limit } => conns_max = conns_max.max(offset.saturating_add(*limit)),
                Query::Rooms { names, .. } => rooms.extend(names.iter().cloned()),
            }
        }
        if !any {
            return;
        }
        rooms.sort_unstable();
        rooms.dedup();
        self.generations += 1;
        let generation = self.generations;
        for (_, scrape) in &mut self.scrapes {
            if let Some(wait) = scrape.waiting.as_mut().filter(|w| w.generation.is_none()) {
                wait.generation = Some(generation);
            }
        }
        let reply_to = self.cores[0].1.clone();
        for (core, waker) in &self.cores {
            core.ask(IntrospectionAsk { generation, conns_max, rooms: rooms.clone(), reply_to: reply_to.clone() });
            if let Err(e) = waker.wake() {
                log::warn!("could not wake a reactor for introspection: {e}");
            }
        }
        let reports = vec![None; self.cores.len()];
        self.gather = Some(Gather { generation, deadline: now + INTROSPECTION_WAIT_MAX, reports, rooms });
    }

    /// Writes what is left of the answer; true when the scrape is done.
    fn write(&mut self, registry: &Registry, key: usize) -> bool {
        let scrape = &mut self.scrapes[key];
        while scrape.written < scrape.answer.len() {
            match scrape.stream.write(&scrape.answer[scrape.written..]) {
                Ok(0) => return true,
                Ok(n) => scrape.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(METRICS_TOKEN_BASE + key);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    return registry.reregister(&mut scrape.stream, token, interest).is_err();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        let _ = scrape.stream.shutdown(Shutdown::Write);
        true
    }

    fn drop_scrape(&mut self, registry: &Registry, key: usize) {
        if let Some(mut scrape) = self.scrapes.try_remove(key) {
            let _ = registry.deregister(&mut scrape.stream);
        }
    }
}

/// `offset` and `limit` of a page (defaults 0 and [`INTROSPECTION_LIMIT_DEFAULT`], `limit` cut
/// to [`INTROSPECTION_LIMIT_MAX`]); `None` if either is not a whole number.
fn page(query: &str) -> Option<(usize, usize)> {
    let number = |key: &str, default: usize| query_value(query, key).map_or(Some(default), |v| v.parse().ok());
    let offset = number("offset", 0)?;
    let limit = number("limit", INTROSPECTION_LIMIT_DEFAULT)?;
    Some((offset, limit.min(INTROSPECTION_LIMIT_MAX)))
}

/// The `/connz` answer: a page of every core's connections in session id order.
fn connz_json(reports: &[CoreReport], offset: usize, limit: usize) -> String {
    let total: usize = reports.iter().map(|r| r.conns_total).sum();
    let mut rows: Vec<&ConnRow> = reports.iter().flat_map(|r| &r.conns).collect();
    rows.sort_unstable_by_key(|row| row.session_id);
    let mut out = format!("{{\"total\":{total},\"offset\":{offset},\"limit\":{limit},\"connections\":[");
    for (i, row) in rows.into_iter().skip(offset).take(limit).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mode = match row.mode {
            Mode::Undecided => "undecided",
            Mode::Binary => "binary",
            Mode::Line => "line",
        };
        // Session ids are strings: ids above 2^53 do not survive a JavaScript number.
        let _ =
            write!(out, "{{\"id\":{},\"session_id\":\"{}\",\"core\":{},\"remote\":", row.id, row.session_id, row.core);
        json_option(&mut out, row.remote.map(|a| a.to_string()).as_deref());
        out.push_str(",\"name\":");
        push_json_string(&mut out, &String::from_utf8_lossy(&row.name));
        let _ = write!(out, ",\"mode\":\"{mode}\",\"rooms\":");
        json_list(&mut out, row.rooms.iter().map(|r| String::from_utf8_lossy(r)));
        let _ = write!(
            out,
            ",\"bytes_in\":{},\"bytes_out\":{},\"pending_bytes\":{},\"age_seconds\":{},\
             \"idle_seconds\":{},\"closing\":{}}}",
            row.received_bytes,
            row.sent_bytes,
            row.pending_bytes,
            row.age.as_secs(),
            row.idle.as_secs(),
            row.closing
        );
    }
    out.push_str("]}");
    out
}

/// The `/roomz` answer: the page's rooms with local members summed over the cores' answers
/// (`asked` are the names the ask carried, in the order of each report's counts), and
/// cluster-wide members and interested peers from core 0's hub.
fn roomz_json<T, L>(
    reports: &[CoreReport],
    asked: &[Bytes],
    hub: &Hub<T, L>,
    (offset, limit, total): (usize, usize, usize),
    names: &[Bytes],
) -> String {
    let index: HashMap<&Bytes, usize> = asked.iter().enumerate().map(|(i, name)| (name, i)).collect();
    let mut out = format!("{{\"total\":{total},\"offset\":{offset},\"limit\":{limit},\"rooms\":[");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let at = index.get(name).copied();
        let local: usize = reports.iter().map(|r| at.and_then(|at| r.room_members.get(at)).copied().unwrap_or(0)).sum();
        out.push_str("{\"name\":");
        push_json_string(&mut out, &String::from_utf8_lossy(name));
        let _ = write!(out, ",\"local_members\":{local},\"cluster_members\":{},", hub.cluster_room_members(name));
        out.push_str("\"interested_peers\":");
        json_list(&mut out, hub.interested_peers(name).iter().map(ToString::to_string));
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// The `/routez` answer: this node's id and every node link.
fn routez_json<T, L>(hub: &mut Hub<T, L>, now: Instant) -> String {
    let mut out = format!("{{\"node_id\":{},\"routes\":[", hub.node_id());
    for (i, link) in hub.node_link_views(now).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"peer\":{},\"node_id\":", link.peer);
        match link.node_id {
            Some(node) => {
                let _ = write!(out, "{node}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"remote\":");
        json_option(&mut out, link.remote.map(|a| a.to_string()).as_deref());
        out.push_str(",\"cluster_addr\":");
        json_option(&mut out, link.cluster_addr.as_deref());
        let direction = if link.dialed { "out" } else { "in" };
        let _ = write!(
            out,
            ",\"state\":\"{}\",\"direction\":\"{direction}\",\"age_seconds\":{:.3},\"queued_bytes\":{},\
             \"oldest_queued_seconds\":{:.3},\"last_received_seconds\":{:.3},\"forwards_dropped\":{},\"rooms\":{}}}",
            link.state,
            link.age.as_secs_f64(),
            link.queued_bytes,
            link.oldest_queued_age.as_secs_f64(),
            link.last_received_age.as_secs_f64(),
            link.forwards_dropped,
            link.rooms
        );
    }
    out.push_str("]}");
    out
}

fn json_option(out: &mut String, value: Option<&str>) {
    match value {
        Some(value) => push_json_string(out, value),
        None => out.push_str("null"),
    }
}

fn json_list<S: AsRef<str>>(out: &mut String, items: impl Iterator<Item = S>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, item.as_ref());
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::HubConfig;
    use mio::{Events, Poll};

    /// An endpoint on a real loopback socket, driven by hand, with fake cores that answer asks
    /// as the test says.
    struct Rig {
        poll: Poll,
        endpoint: MetricsEndpoint,
        hub: Hub<(), ()>,
        cores: Vec<Arc<ReactorMetrics>>,
        health: Arc<Health>,
    }

    impl Rig {
        fn new(cores: usize, needs_node_link: bool) -> Self {
            let poll = Poll::new().expect("a poll");
            let waker = Arc::new(Waker::new(poll.registry(), Token(usize::MAX - 2)).expect("a waker"));
            let cores: Vec<Arc<ReactorMetrics>> = (0..cores).map(|_| Arc::default()).collect();
            let handles = cores.iter().map(|core| (core.clone(), waker.clone())).collect();
            let health = Arc::new(Health::new());
            let addr = "127.0.0.1:0".parse().expect("an address");
            let endpoint = MetricsEndpoint::bind(addr, poll.registry(), handles, health.clone(), needs_node_link)
                .expect("bind the endpoint");
            Self { poll, endpoint, hub: Hub::new(HubConfig::default()), cores, health }
        }

        /// Sends `request` from another thread and runs the endpoint's turns (the fake cores
        /// answering each ask with `answer`) until the whole response is read.
        fn ask(&mut self, request: &str, answer: impl Fn(usize, &IntrospectionAsk) -> Option<CoreReport>) -> String {
            let addr = self.endpoint.local_addr().expect("the endpoint's address");
            let sent = request.to_owned();
            let client = std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
                stream.write_all(sent.as_bytes()).expect("send the request");
                let mut response = String::new();
                stream.read_to_string(&mut response).expect("read the response");
                response
            });
            let mut events = Events::with_capacity(64);
            let mut answered = vec![0; self.cores.len()];
            let deadline = Instant::now() + Duration::from_secs(10);
            while !client.is_finished() {
                assert!(Instant::now() < deadline, "no response to {request:?}");
                self.poll.poll(&mut events, Some(Duration::from_millis(5))).expect("poll");
                let now = Instant::now();
                for event in &events {
                    if MetricsEndpoint::owns(event.token()) {
                        self.endpoint.handle(self.poll.registry(), event.token(), now, &mut self.hub);
                    }
                }
                for (core, metrics) in self.cores.iter().enumerate() {
                    if let Some(report) = metrics.new_ask(&mut answered[core]).and_then(|ask| answer(core, &ask)) {
                        metrics.answer(report);
                    }
                }
                self.endpoint.after_turn(self.poll.registry(), &mut self.hub);
                self.endpoint.tick(self.poll.registry(), now);
            }
            client.join().expect("the client thread")
        }

        fn get(&mut self, path: &str) -> String {
            self.ask(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"), |_, _| None)
        }
    }

    fn status_and_body(response: &str) -> (&str, &str) {
        let (head, body) = response.split_once("\r\n\r\n").expect("a head");
        (head.lines().next().expect("a status line"), body)
    }

    #[test]
    fn health_and_readiness_follow_the_server_through_its_life() {
        let mut rig = Rig::new(1, false);
        for path in ["/healthz", "/readyz"] {
            assert_eq!(status_and_body(&rig.get(path)), ("HTTP/1.1 503 Service Unavailable", "starting\n"));
        }
        rig.health.set_serving();
        assert_eq!(status_and_body(&rig.get("/healthz")), ("HTTP/1.1 200 OK", "ok\n"));
        assert_eq!(status_and_body(&rig.get("/readyz")), ("HTTP/1.1 200 OK", "ready\n"));
        let head = rig.ask("HEAD /healthz HTTP/1.1\r\n\r\n", |_, _| None);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD gets no body: {head:?}");
        rig.health.set_draining();
        for path in ["/healthz", "/readyz"] {
            assert_eq!(status_and_body(&rig.get(path)), ("HTTP/1.1 503 Service Unavailable", "draining\n"));
        }
        rig.health.set_serving();
        assert!(rig.get("/healthz").starts_with("HTTP/1.1 503 "), "draining never goes back");
        assert!(rig.get("/varz").starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(rig.ask("DELETE /healthz HTTP/1.1\r\n\r\n", |_, _| None).starts_with("HTTP/1.1 400 "));
        assert!(rig.get("/connz?limit=ten").starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn a_node_with_peers_is_not_ready_before_its_first_node_link() {
        let mut rig = Rig::new(1, true);
        rig.health.set_serving();
        assert_eq!(status_and_body(&rig.get("/healthz")), ("HTTP/1.1 200 OK", "ok\n"));
        assert_eq!(status_and_body(&rig.get("/readyz")), ("HTTP/1.1 503 Service Unavailable", "no node link yet\n"));
    }

    fn row(core: u16, counter: u64, name: &str) -> ConnRow {
        ConnRow {
            core,
            id: counter as usize,
            session_id: (u64::from(core) << 40) | counter,
            remote: Some("127.0.0.1:5000".parse().expect("an address")),
            name: Bytes::copy_from_slice(name.as_bytes()),
            mode: Mode::Binary,
            rooms: vec![Bytes::from_static(b"r")],
            received_bytes: 10,
            sent_bytes: 20,
            pending_bytes: 0,
            age: Duration::from_secs(3),
            idle: Duration::from_secs(1),
            closing: false,
        }
    }

    #[test]
    fn connz_pages_every_core_in_session_id_order() {
        let mut rig = Rig::new(2, false);
        let response = rig.ask("GET /connz?offset=1&limit=2 HTTP/1.1\r\n\r\n", |core, ask| {
            assert_eq!(ask.conns_max, 3, "a core sends only what can be on the page");
            let conns = match core {
                0 => vec![row(0, 1, "a"), row(0, 2, "b")],
                _ => vec![row(1, 1, "c")],
            };
            Some(CoreReport {
                generation: ask.generation,
                conns_total: conns.len() + 5,
                conns,
                room_members: Vec::new(),
            })
        });
        let (status, body) = status_and_body(&response);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.starts_with("{\"total\":13,\"offset\":1,\"limit\":2,\"connections\":[{\"id\":2,"), "{body}");
        let (b, c) = (body.find("\"name\":\"b\"").expect("b"), body.find("\"name\":\"c\"").expect("c"));
        assert!(b < c && !body.contains("\"name\":\"a\""), "{body}");
        assert!(body.contains("\"session_id\":\"1099511627777\",\"core\":1,\"remote\":\"127.0.0.1:5000\""), "{body}");
        assert!(body.contains("\"mode\":\"binary\",\"rooms\":[\"r\"],\"bytes_in\":10,\"bytes_out\":20,"), "{body}");
        assert!(body.ends_with("\"age_seconds\":3,\"idle_seconds\":1,\"closing\":false}]}"), "{body}");
    }

    #[test]
    fn a_core_that_does_not_answer_in_time_gets_the_request_a_503() {
        let mut rig = Rig::new(2, false);
        let started = Instant::now();
        let response = rig.ask("GET /connz HTTP/1.1\r\n\r\n", |core, ask| {
            (core == 0).then(|| CoreReport { generation: ask.generation, ..CoreReport::default() })
        });
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{response}");
        assert!(started.elapsed() >= INTROSPECTION_WAIT_MAX, "gave up after {:?}", started.elapsed());
        // The next request gets a fresh ask, answered by both.
        let response = rig.ask("GET /connz HTTP/1.1\r\n\r\n", |_, ask| {
            Some(CoreReport { generation: ask.generation, ..CoreReport::default() })
        });
        assert!(response.ends_with("{\"total\":0,\"offset\":0,\"limit\":256,\"connections\":[]}"), "{response}");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\te\r\u{1}\u{1f}é\u{7f}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\te\\r\\u0001\\u001fé\u{7f}\"");
        let mut out = String::new();
        push_json_string(&mut out, &String::from_utf8_lossy(b"bad \xff byte"));
        assert_eq!(out, "\"bad \u{fffd} byte\"", "invalid UTF-8 shows as U+FFFD");
        let mut out = String::new();
        json_list(&mut out, ["x", "[1]"].iter());
        json_option(&mut out, None);
        assert_eq!(out, "[\"x\",\"[1]\"]null");
    }
}
