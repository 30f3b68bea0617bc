//! Live metrics: per-reactor counters published once per loop turn, rendered as Prometheus
//! text, and a tiny bounded HTTP/1.x request parser for `GET /metrics`.
//!
//! Each reactor owns one [`ReactorMetrics`] and stores its numbers into it with relaxed atomic
//! writes at the end of a turn (a dozen stores, nothing per message); the reactor that serves
//! `--metrics` reads every reactor's copy when a scrape arrives.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ErrorCode;

/// Longest HTTP request head accepted; longer gets 400.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Metrics connections served at once; more are refused (closed at accept).
pub const METRICS_CONNECTIONS_MAX: usize = 64;

/// One reactor's numbers at the end of a loop turn.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Client connections held (closing ones included).
    pub connections: u64,
    /// Rooms with at least one local member.
    pub rooms: u64,
    /// Connections accepted since start.
    pub connections_opened: u64,
    /// Publishes accepted from local clients.
    pub messages_in: u64,
    /// Messages queued for local clients.
    pub messages_out: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Clients cut as slow consumers.
    pub slow_consumers: u64,
    /// `ERROR` frames sent, by code, in [`ErrorCode::ALL`] order.
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Links to sibling cores up (said hello).
    pub core_links_up: u64,
    /// Links to other nodes up (proved the cluster secret; links in their handshake not counted).
    pub node_links_up: u64,
    /// Peer links down.
    pub links_down: u64,
    /// Publishes forwarded to peers.
    pub forwards_sent: u64,
    /// Publishes received from peers.
    pub forwards_received: u64,
    /// Forwards dropped because a peer's queue was full.
    pub forwards_dropped: u64,
    /// Event-loop turns.
    pub loop_turns: u64,
    /// Connections flushed in the last turn.
    pub flush_queue_depth: u64,
    /// Bytes queued on peer links at the end of the last turn.
    pub link_queued_bytes: u64,
    /// Every authenticated node link: when it last received bytes (gateway only).
    pub node_links: Vec<NodeLinkHeard>,
}

/// One node link's freshness: a scrape shows the seconds since `last_heard`, so a blackholed
/// peer is visible before the silence limit cuts its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLinkHeard {
    /// The node at the other end.
    pub node_id: u16,
    /// When the link last received bytes.
    pub last_heard: Instant,
}

macro_rules! metric_fields {
    ($($field:ident),* $(,)?) => {
        /// One reactor's published numbers: written by its reactor, read by the scraper.
        #[derive(Debug, Default)]
        pub struct ReactorMetrics {
            $($field: AtomicU64,)*
            errors: [AtomicU64; ErrorCode::ALL.len()],
            /// A list, unlike the counters: one lock per turn, uncontended but for scrapes.
            node_links: Mutex<Vec<NodeLinkHeard>>,
        }

        impl ReactorMetrics {
            /// Stores a turn's numbers (relaxed: a scrape may mix two adjacent turns); the node
            /// links come from [`ReactorMetrics::publish_node_links`].
            pub fn publish(&self, s: &Snapshot) {
                $(self.$field.store(s.$field, Ordering::Relaxed);)*
                for (slot, value) in self.errors.iter().zip(s.errors) {
                    slot.store(value, Ordering::Relaxed);
                }
            }

            /// Stores a turn's node links in place (no allocation once the list has grown).
            pub fn publish_node_links(&self, links: impl Iterator<Item = NodeLinkHeard>) {
                let mut stored = self.node_links.lock().unwrap_or_else(|p| p.into_inner());
                stored.clear();
                stored.extend(links);
            }

            /// Reads the numbers back.
            pub fn read(&self) -> Snapshot {
                let mut s = Snapshot { $($field: self.$field.load(Ordering::Relaxed),)* ..Snapshot::default() };
                for (value, slot) in s.errors.iter_mut().zip(&self.errors) {
                    *value = slot.load(Ordering::Relaxed);
                }
                s.node_links = self.node_links.lock().unwrap_or_else(|p| p.into_inner()).clone();
                s
            }
        }
    };
}

metric_fields!(
    connections,
    rooms,
    connections_opened,
    messages_in,
    messages_out,
    bytes_in,
    bytes_out,
    slow_consumers,
    core_links_up,
    node_links_up,
    links_down,
    forwards_sent,
    forwards_received,
    forwards_dropped,
    loop_turns,
    flush_queue_depth,
    link_queued_bytes,
);

/// A metric family: name, type, help text, and how to read it from a snapshot.
type Family = (&'static str, &'static str, &'static str, fn(&Snapshot) -> u64);

/// Renders every reactor's numbers in the Prometheus text format, labelled by core; node links'
/// ages are taken at `now`.
pub fn render(reactors: &[Snapshot], now: Instant) -> String {
    let mut out = String::new();
    let families: [Family; 17] = [
        ("fanout_connections", "gauge", "Client connections held.", |s| s.connections),
        ("fanout_rooms", "gauge", "Rooms with at least one local member.", |s| s.rooms),
        ("fanout_connections_opened_total", "counter", "Client connections accepted.", |s| s.connections_opened),
        ("fanout_messages_in_total", "counter", "Publishes accepted from clients.", |s| s.messages_in),
        ("fanout_messages_out_total", "counter", "Messages queued for clients.", |s| s.messages_out),
        ("fanout_bytes_in_total", "counter", "Bytes read from clients.", |s| s.bytes_in),
        ("fanout_bytes_out_total", "counter", "Bytes written to clients.", |s| s.bytes_out),
        ("fanout_slow_consumers_total", "counter", "Clients cut as slow consumers.", |s| s.slow_consumers),
        ("fanout_core_links_up", "gauge", "Links to sibling cores up.", |s| s.core_links_up),
        ("fanout_node_links_up", "gauge", "Links to other nodes up (authenticated).", |s| s.node_links_up),
        ("fanout_peer_links_down", "gauge", "Peer links down.", |s| s.links_down),
        ("fanout_forwards_sent_total", "counter", "Publishes forwarded to peers.", |s| s.forwards_sent),
        ("fanout_forwards_received_total", "counter", "Publishes received from peers.", |s| s.forwards_received),
        ("fanout_forwards_dropped_total", "counter", "Forwards dropped at a full peer queue.", |s| s.forwards_dropped),
        ("fanout_loop_turns_total", "counter", "Event-loop turns.", |s| s.loop_turns),
        ("fanout_flush_queue_depth", "gauge", "Connections flushed in the last turn.", |s| s.flush_queue_depth),
        ("fanout_link_queued_bytes", "gauge", "Bytes queued on peer links.", |s| s.link_queued_bytes),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, s) in reactors.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(s));
        }
    }
    let name = "fanout_errors_total";
    let _ = writeln!(out, "# HELP {name} ERROR frames sent to clients, by code.\n# TYPE {name} counter");
    for (core, s) in reactors.iter().enumerate() {
        for (code, count) in ErrorCode::ALL.iter().zip(s.errors) {
            let _ = writeln!(out, "{name}{{core=\"{core}\",code=\"{}\"}} {count}", code.name());
        }
    }
    let name = "fanout_node_link_last_received_seconds";
    let _ = writeln!(out, "# HELP {name} Seconds since a node link last received bytes.\n# TYPE {name} gauge");
    for (core, s) in reactors.iter().enumerate() {
        let mut links = s.node_links.clone();
        // One series per node: the freshest link, should two links to one node be up at once.
        links.sort_by_key(|l| (l.node_id, std::cmp::Reverse(l.last_heard)));
        links.dedup_by_key(|l| l.node_id);
        for link in links {
            let age = now.saturating_duration_since(link.last_heard).as_secs_f64();
            let _ = writeln!(out, "{name}{{core=\"{core}\",node=\"{}\"}} {age:.3}", link.node_id);
        }
    }
    out
}

/// What a buffered HTTP request head amounts to so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRequest {
    /// The head is not complete yet.
    Incomplete,
    /// A `GET` of this path (query string removed).
    Get(String),
    /// Not a request we answer: malformed, too long, or not `GET`. Answer 400 and close.
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
    let line_end = memchr::memchr(b'\r', buf).unwrap_or(end);
    let Ok(line) = std::str::from_utf8(&buf[..line_end]) else {
        return HttpRequest::Bad;
    };
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some("HTTP/1.0" | "HTTP/1.1"), None) if target.starts_with('/') => {
            let path = target.split('?').next().unwrap_or(target);
            HttpRequest::Get(path.to_owned())
        }
        _ => HttpRequest::Bad,
    }
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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
    fn renders_every_family_per_core() {
        let a = ReactorMetrics::default();
        let mut s = Snapshot { connections: 3, messages_out: 42, ..Snapshot::default() };
        s.errors[0] = 2;
        a.publish(&s);
        let now = Instant::now();
        a.publish_node_links([NodeLinkHeard { node_id: 2, last_heard: now }].into_iter());
        let text = render(&[a.read(), Snapshot::default()], now + std::time::Duration::from_millis(1500));
        assert!(text.contains("fanout_connections{core=\"0\"} 3\n"));
        assert!(text.contains("fanout_node_link_last_received_seconds{core=\"0\",node=\"2\"} 1.500\n"), "{text}");
        assert!(text.contains("fanout_node_links_up{core=\"1\"} 0\n"));
        assert!(text.contains("fanout_connections{core=\"1\"} 0\n"));
        assert!(text.contains("fanout_messages_out_total{core=\"0\"} 42\n"));
        assert!(text.contains("fanout_errors_total{core=\"0\",code=\"MALFORMED_FRAME\"} 2\n"));
        assert!(text.contains("# TYPE fanout_messages_in_total counter\n"));
    }
}
