//! Soak: a two-node cluster under mixed load for a bounded time.
//!
//! Setup: nodes A (id 1) and B (id 2), `--threads 2` each, every node link through a fault
//! proxy (`support::proxy`, the nodes advertise their proxies as in `tests/cluster_faults.rs`),
//! `--max-output-bytes 1 MiB`, `--handshake-timeout-ms 1000`, metrics on.
//!
//! Workload, all at once, every loop bounded by a deadline and a count:
//! - **good clients**: per node six chat clients, each a member of two of four chat rooms and
//!   publishing to both (alternately, every 5–20 ms), plus one "heavy" client publishing 2 KiB
//!   every 5 ms to the busy room (of which the first chat client of each node is also a member).
//!   Every payload carries `phase: u8` (0 before the first cut, `2k+1` during cut k, `2k+2` after
//!   it healed), the publisher's own `seq: u64` for that room (also the server's per-stream
//!   `seq`: each client joins each room once) and a fill byte derived from both. Every good client
//!   reads everything in a thread of its own and records, per (publisher, room), the stream id,
//!   the highest `seq` and the gaps below it; publishers record each message's publish interval
//!   (just before and just after the write);
//! - **churn**: per node two threads that connect, join a chat room, publish 3–10 messages,
//!   read for a little while (checking what they get for duplicates and reordering), prove the
//!   server handled their publishes (`PING`/`PONG`) and disconnect (drop, `LEAVE` first, or
//!   shutdown), over and over. Their messages are checked at the good receivers like everyone
//!   else's; the churn clients themselves need not receive everything;
//! - **hostile clients**, per node, each kind reconnecting in a loop: garbage (random bytes
//!   before `HELLO`, a peer-link `FORWARD` frame, a malformed `PUBLISH`, an unknown frame type,
//!   an over-long line in line mode), a 4 GiB frame declaration from a member of a chat room, a
//!   slowloris dripping its `HELLO`, a non-reader in the busy room (must be cut as a slow
//!   consumer; it waits for the node's slow-consumer counter, then checks it got
//!   `SLOW_CONSUMER`), a join flood of 200 distinct rooms (held to the rooms-per-connection
//!   limit). Each must get its documented fatal error (or refusals), then end of stream;
//! - **link cuts**: both proxies are partitioned at 20% of the soak (and at further evenly spread
//!   points, two cuts by default, more for long soaks), for 5 s, then healed; the controller waits
//!   until both nodes log the link up again and then until every cross-node route (good
//!   publisher, room, good receiver on the other node) has delivered a message published after
//!   the heal, with no link replaced meanwhile (the probe technique of `cluster_faults.rs`,
//!   with the good traffic itself as probes, so every publisher's core is covered).
//!
//! The windows, precisely. For cut k: `cut` is the instant just before the proxies were
//! partitioned, `cut_done` just after, `healed` just after they were healed, `confirmed` the
//! instant the controller saw every cross-node route deliver a message published after `healed`.
//! A message's publish interval is `[t0, t1]` (before/after its write).
//! - **Excused** (cross-node only): a message whose `[t0, t1]` meets `[cut - 1 s, confirmed]`
//!   for some k may be lost across nodes. Everything else must reach every good member of its
//!   room on the other node: lost = violation.
//! - **Same node**: every message must reach every good member on the publisher's node, for
//!   the whole run, cuts included.
//! - **Never late** (at most once): a cross-node message with `t0 >= cut_done` and
//!   `t1 <= healed - 1 s` must never arrive (protocol.md, Guarantees: lost in a partition, not
//!   even after the heal).
//! - **No duplicate, no reordering, ever**: per receiver and (publisher, room), each `seq` at
//!   most once and increasing; one stream id per (publisher, room); nothing from a room the
//!   receiver is not in; payload intact.
//!
//! End: side load (churn, hostile) stops first, then publishers; the controller waits until
//! every message that must arrive has arrived (bounded), then each good client sends a final
//! `PING` and its reader stops at the `PONG` (everything queued before it came first). Memory:
//! each node's RSS is read after warm-up (15% of the soak) and at the end, after every churn
//! and hostile connection is gone (the nodes' connection gauges show only the good clients);
//! the end must be within 32 MiB of the start. Totals are printed as `SOAK ...` lines.
//!
//! Duration: `FANOUT_SOAK_SECONDS` seconds of load (default 36, at least 20); the whole test is
//! bounded by that plus [`FIXED_MARGIN`] (60 s in all by default). `FANOUT_SOAK_SEED` fixes the
//! random choices (printed at the start).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout::client::{Client, ClientError, ClientOptions, Event, Sender};
use fanout::codec::{ClientFrame, Message, ServerFrame};
use fanout::error::ErrorCode;
use support::cluster::free_addr;
use support::proxy::Proxy;
use support::rng::Rng;
use support::{encode, hello, LineConn, RawConn, RawRead, Server};

// ----- knobs -----

/// Seconds of load, if set (at least [`SOAK_MIN`]).
const SOAK_SECONDS_VAR: &str = "FANOUT_SOAK_SECONDS";
/// Seed of the random choices, if set.
const SOAK_SEED_VAR: &str = "FANOUT_SOAK_SEED";
const SOAK_DEFAULT: Duration = Duration::from_secs(36);
const SOAK_MIN: Duration = Duration::from_secs(20);
/// Setup, the end (stop, drain, settle, checks) and a late heal together stay below this: the
/// whole test takes at most the soak plus this (asserted).
const FIXED_MARGIN: Duration = Duration::from_secs(24);

const CHAT_ROOMS: usize = 4;
const ROOMS: [&str; CHAT_ROOMS + 1] = ["soak-0", "soak-1", "soak-2", "soak-3", "soak-busy"];
const BUSY: usize = CHAT_ROOMS;
/// Chat clients per node (plus one heavy publisher).
const GOOD_PER_NODE: usize = 6;
const CHAT_PAUSE_MS: (u64, u64) = (5, 20);
const CHAT_PAYLOAD: usize = 32;
const HEAVY_PAYLOAD: usize = 2048;
const HEAVY_PAUSE: Duration = Duration::from_millis(5);
/// Most messages one publisher sends (the deadline normally ends it long before).
const PUBLISHES_MAX: u64 = 10_000_000;

const CHURN_PER_NODE: usize = 2;
const CHURN_CONNECTIONS_MAX: u64 = 100_000;
const HOSTILE_ROUNDS_MAX: u64 = 100_000;
const HOSTILE_PAUSE: Duration = Duration::from_millis(50);
const JOIN_FLOOD_PAUSE: Duration = Duration::from_millis(200);
const JOIN_FLOOD_ROOMS: usize = 200;

/// Output limit per connection: a reader of the busy room (about 700 KB/s) may stall for
/// seconds before it is near it (its kernel buffers come first), a non-reader passes it, and
/// the few MB of kernel send buffer before it, within seconds.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
/// A slowloris sends one byte this often (its `HELLO` would take seconds).
const DRIP_EVERY: Duration = Duration::from_millis(200);
/// Longest wait for a hostile client's verdict once it is due.
const VERDICT_WITHIN: Duration = Duration::from_secs(5);
/// Longest a non-reader may stay uncut while the busy room flows.
const NON_READER_CUT_WITHIN: Duration = Duration::from_secs(30);

/// How long each cut lasts (pacing: the cut is the behaviour under test).
const CUT_FOR: Duration = Duration::from_secs(5);
/// Cross-node messages published from this long before a cut are excused (in flight at the cut).
const CUT_MARGIN: Duration = Duration::from_secs(1);
const CUT_DETECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// After a heal, every cross-node route delivers again within this (redial cap 2 s + handshake).
const HEAL_BOUND: Duration = Duration::from_secs(10);
const MESH_TIMEOUT: Duration = Duration::from_secs(15);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
const WARMUP_FRACTION: f64 = 0.15;

const RSS_GROWTH_KIB_MAX: u64 = 32 * 1024;
const RSS_EVERY: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(20);
const READ_POLL: Duration = Duration::from_millis(100);
const FINAL_NONCE: u64 = 0xf1a1_f1a1_f1a1_f1a1;

const FRAME_TOO_LARGE: u16 = ErrorCode::FrameTooLarge as u16;
const MALFORMED_FRAME: u16 = ErrorCode::MalformedFrame as u16;
const UNKNOWN_FRAME_TYPE: u16 = ErrorCode::UnknownFrameType as u16;
const UNEXPECTED_FRAME: u16 = ErrorCode::UnexpectedFrame as u16;
const SLOW_CONSUMER: u16 = ErrorCode::SlowConsumer as u16;
const TIMEOUT: u16 = ErrorCode::Timeout as u16;
const TOO_MANY_ROOMS: u16 = ErrorCode::TooManyRooms as u16;

/// Kinds of hostile client, for the counts.
const HOSTILE_KINDS: [&str; 5] = ["garbage", "oversize", "slowloris", "non-reader", "join-flood"];
const GARBAGE: usize = 0;
const OVERSIZE: usize = 1;
const SLOWLORIS: usize = 2;
const NON_READER: usize = 3;
const JOIN_FLOOD: usize = 4;

fn soak_duration() -> Duration {
    match std::env::var(SOAK_SECONDS_VAR) {
        Ok(v) => {
            let secs: u64 = v.trim().parse().unwrap_or_else(|_| panic!("{SOAK_SECONDS_VAR}={v:?} is not seconds"));
            Duration::from_secs(secs).max(SOAK_MIN)
        }
        Err(_) => SOAK_DEFAULT,
    }
}

fn seed() -> u64 {
    match std::env::var(SOAK_SEED_VAR) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{SOAK_SEED_VAR}={v:?} is not a number")),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    }
}

// ----- nodes -----

fn secret_file() -> PathBuf {
    support::cluster::secret_file("soak", "soak it up")
}

/// A node whose cluster listener is reachable only through `proxy`.
struct Node {
    id: u16,
    server: Server,
    proxy: Proxy,
    metrics: SocketAddr,
}

impl Node {
    fn start_behind(proxy: Proxy, secret: &std::path::Path, id: u16, peer: SocketAddr) -> Node {
        let (output, handshake) = (MAX_OUTPUT_BYTES.to_string(), HANDSHAKE_TIMEOUT.as_millis().to_string());
        let extra = ["--max-output-bytes", &output, "--handshake-timeout-ms", &handshake, "--metrics", "127.0.0.1:0"];
        let server = support::cluster::start_behind(&proxy, secret, id, &[peer], &extra);
        let line = server.wait_for_log("metrics on http://", MESH_TIMEOUT).expect("the node serves metrics");
        let at = line.find("http://").expect("an http address") + "http://".len();
        let metrics = line[at..at + line[at..].find('/').expect("a path")].parse().expect("a socket address");
        Node { id, server, proxy, metrics }
    }

    fn target(&self, node: usize) -> Target {
        Target { node, addr: self.server.addr(), metrics: self.metrics }
    }

    fn count(&self, needle: &str) -> usize {
        self.server.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    fn downs(&self, peer: u16) -> usize {
        self.count(&format!(" to node {peer} is down"))
    }

    fn ups(&self, peer: u16) -> usize {
        self.count(&format!(" up: node {peer} at "))
    }

    fn linked_to(&self, peer: u16) -> bool {
        self.ups(peer) > self.downs(peer)
    }
}

/// Polls (the logs) until `condition` holds; returns when it was first seen to hold.
fn poll_until(what: &str, timeout: Duration, nodes: &[&Node], condition: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            let mut text = String::new();
            for node in nodes {
                let _ = write!(text, "\n--- node {} log (tail) ---\n", node.id);
                let log = node.server.log_text();
                let lines: Vec<&str> = log.lines().collect();
                for line in &lines[lines.len().saturating_sub(80)..] {
                    let _ = writeln!(text, "{line}");
                }
            }
            panic!("{what}: not seen within {timeout:?}{text}");
        }
        // A bounded poll of the logs, not synchronisation: they have no event to wait on.
        thread::sleep(POLL);
    }
}

fn both_linked(a: &Node, b: &Node) -> bool {
    a.linked_to(b.id) && b.linked_to(a.id)
}

/// Two nodes, each dialing the other's proxy, linked, and cross-node delivery shown by probes
/// (repeated until no link came up meanwhile, so a twin link cannot swallow later traffic).
fn two_nodes() -> (Node, Node) {
    let secret = secret_file();
    let a_proxy = Proxy::start(free_addr());
    let b_proxy = Proxy::start(free_addr());
    let (a_proxy_addr, b_proxy_addr) = (a_proxy.addr(), b_proxy.addr());
    let a = Node::start_behind(a_proxy, &secret, 1, b_proxy_addr);
    let b = Node::start_behind(b_proxy, &secret, 2, a_proxy_addr);
    poll_until("A and B linked", MESH_TIMEOUT, &[&a, &b], || both_linked(&a, &b));
    let deadline = Instant::now() + MESH_TIMEOUT;
    let mut pa = support::connect_joined(a.server.addr(), "probe-a", "soak-probe");
    let mut pb = support::connect_joined(b.server.addr(), "probe-b", "soak-probe");
    loop {
        let ups = (a.ups(2), b.ups(1));
        probe(&pa, &mut pb, deadline);
        probe(&pb, &mut pa, deadline);
        if ups == (a.ups(2), b.ups(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the node links kept changing at start");
    }
    (a, b)
}

/// Publishes from `from` until `to` receives one of those messages, or fails at `deadline`.
fn probe(from: &Client, to: &mut Client, deadline: Instant) {
    to.set_read_timeout(Some(POLL)).expect("set read timeout");
    loop {
        from.publish("soak-probe", b"probe").expect("publish a probe");
        let until = Instant::now() + POLL * 5;
        while Instant::now() < until {
            match to.next_event() {
                Ok(Event::Message(_)) => return,
                Err(ClientError::Io(e)) if is_timeout(&e) => {}
                other => panic!("probe: unexpected {other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "no probe crossed between the nodes in time");
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Where the workload threads connect: node index (0 = A, 1 = B), client and metrics addresses.
#[derive(Clone, Copy, Debug)]
struct Target {
    node: usize,
    addr: SocketAddr,
    metrics: SocketAddr,
}

/// The sum over a node's cores of a metric family (`name{core="…"} value` lines), or the value
/// of a per-server one (`name value`).
fn metric_sum(addr: SocketAddr, family: &str) -> io::Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(VERDICT_WITHIN))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: fanout\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (labelled, unlabelled) = (format!("{family}{{"), format!("{family} "));
    let mut sum = 0;
    for line in response.lines().filter(|l| l.starts_with(&labelled) || l.starts_with(&unlabelled)) {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        sum += value.ok_or_else(|| io::Error::other(format!("bad metrics line {line:?}")))?;
    }
    Ok(sum)
}

// ----- what was sent and what was received -----

/// Anyone who publishes: good clients and churn clients.
struct Publisher {
    name: String,
    node: usize,
    good: bool,
    /// Rooms it publishes to.
    rooms: Vec<usize>,
}

/// One receiver's view of one (publisher, room): everything up to `last` except the gaps.
struct RxStream {
    stream: u64,
    last: u64,
    /// Inclusive ranges of `seq` not received (yet).
    gaps: Vec<(u64, u64)>,
}

enum Arrival {
    InOrder,
    Late,
    Again,
}

impl RxStream {
    fn accept(&mut self, seq: u64) -> Arrival {
        if seq > self.last {
            if seq > self.last + 1 {
                self.gaps.push((self.last + 1, seq - 1));
            }
            self.last = seq;
            Arrival::InOrder
        } else if let Some(i) = self.gaps.iter().position(|&(lo, hi)| lo <= seq && seq <= hi) {
            let (lo, hi) = self.gaps.swap_remove(i);
            if lo < seq {
                self.gaps.push((lo, seq - 1));
            }
            if seq < hi {
                self.gaps.push((seq + 1, hi));
            }
            Arrival::Late
        } else {
            Arrival::Again
        }
    }

    fn has(&self, seq: u64) -> bool {
        seq <= self.last && !self.gaps.iter().any(|&(lo, hi)| lo <= seq && seq <= hi)
    }
}

/// A good client as a receiver.
struct Receiver {
    publisher: usize,
    node: usize,
    core: u16,
    rooms: Vec<usize>,
    streams: HashMap<(usize, usize), RxStream>,
    received: u64,
    duplicated: u64,
    reordered: u64,
}

#[derive(Default)]
struct World {
    publishers: Vec<Publisher>,
    by_name: HashMap<Vec<u8>, usize>,
    /// Per (publisher, room): the publish interval of each message, `seq` - 1 as index.
    sent: HashMap<(usize, usize), Vec<(Instant, Instant)>>,
    receivers: Vec<Receiver>,
    failures: Vec<String>,
    failures_dropped: usize,
    sent_by_phase: BTreeMap<u8, u64>,
    received_by_phase: BTreeMap<u8, u64>,
    churn_received: u64,
    churn_duplicated: u64,
    churn_reordered: u64,
}

impl World {
    fn fail(&mut self, text: String) {
        if self.failures.len() < 50 {
            self.failures.push(text);
        } else {
            self.failures_dropped += 1;
        }
    }

    fn register(&mut self, name: &str, node: usize, good: bool, rooms: Vec<usize>) -> usize {
        let id = self.publishers.len();
        let fresh = self.by_name.insert(name.as_bytes().to_vec(), id).is_none();
        assert!(fresh, "publisher name {name} used twice");
        self.publishers.push(Publisher { name: name.to_string(), node, good, rooms });
        id
    }

    fn record(&mut self, rx: usize, m: &Message) {
        if let Err(e) = self.try_record(rx, m) {
            let who = self.publishers[self.receivers[rx].publisher].name.clone();
            self.fail(format!("{who}: {e}"));
        }
    }

    fn try_record(&mut self, rx: usize, m: &Message) -> Result<(), String> {
        let room = room_index(&m.room)
            .ok_or_else(|| format!("a message in a foreign room {:?}", String::from_utf8_lossy(&m.room)))?;
        let publisher = *self
            .by_name
            .get(&m.name[..])
            .ok_or_else(|| format!("a message from unknown {:?}", String::from_utf8_lossy(&m.name)))?;
        let receiver = &self.receivers[rx];
        if !receiver.rooms.contains(&room) {
            return Err(format!("a message in {}, a room it never joined", ROOMS[room]));
        }
        if publisher == receiver.publisher {
            return Err(format!("its own message {} in {}", m.seq, ROOMS[room]));
        }
        let name = &self.publishers[publisher].name;
        let (phase, seq) = parse_payload(&m.payload, publisher).map_err(|e| format!("{name}'s message: {e}"))?;
        if seq != m.seq {
            return Err(format!("{name}'s message {seq} in {} came with server seq {}", ROOMS[room], m.seq));
        }
        *self.received_by_phase.entry(phase).or_default() += 1;
        let receiver = &mut self.receivers[rx];
        receiver.received += 1;
        let s =
            receiver.streams.entry((publisher, room)).or_insert(RxStream { stream: m.stream, last: 0, gaps: vec![] });
        if s.stream != m.stream {
            return Err(format!("{name}'s stream in {} changed from {} to {}", ROOMS[room], s.stream, m.stream));
        }
        match s.accept(seq) {
            Arrival::InOrder => {}
            Arrival::Late => receiver.reordered += 1,
            Arrival::Again => receiver.duplicated += 1,
        }
        Ok(())
    }
}

fn room_index(room: &[u8]) -> Option<usize> {
    ROOMS.iter().position(|r| r.as_bytes() == room)
}

fn fill(seq: u64, publisher: usize) -> u8 {
    (seq as u8) ^ (publisher as u8) ^ 0x5a
}

fn payload(phase: u8, seq: u64, publisher: usize, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.push(phase);
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(len, fill(seq, publisher));
    p
}

fn parse_payload(p: &[u8], publisher: usize) -> Result<(u8, u64), String> {
    if p.len() < 9 {
        return Err(format!("payload of {} bytes", p.len()));
    }
    let seq = u64::from_be_bytes(p[1..9].try_into().expect("8 bytes"));
    if p[9..].iter().any(|&b| b != fill(seq, publisher)) {
        return Err(format!("payload of message {seq} corrupted"));
    }
    Ok((p[0], seq))
}

/// Everything the threads share.
struct Shared {
    world: Mutex<World>,
    phase: AtomicU8,
    stop_side: AtomicBool,
    stop_publish: AtomicBool,
    hard_deadline: Instant,
    churn_connections: AtomicU64,
    hostile: [AtomicU64; HOSTILE_KINDS.len()],
    slow_cuts: [AtomicU64; 2],
    slow_cut_after_ms_max: AtomicU64,
    slow_cut_after_ms_min: AtomicU64,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, text: String) {
        self.world().fail(text);
    }

    fn side_running(&self) -> bool {
        !self.stop_side.load(Ordering::Acquire) && Instant::now() < self.hard_deadline
    }
}

/// Publishes message `seq` of `publisher` in `room`, recording its publish interval.
fn publish_one(
    shared: &Shared,
    sender: &Sender,
    publisher: usize,
    room: usize,
    seq: u64,
    len: usize,
) -> io::Result<()> {
    let phase = shared.phase.load(Ordering::Acquire);
    let body = payload(phase, seq, publisher, len);
    let t0 = Instant::now();
    {
        let mut world = shared.world();
        let times = world.sent.entry((publisher, room)).or_default();
        assert_eq!(times.len() as u64 + 1, seq, "publish log out of step");
        times.push((t0, t0));
        *world.sent_by_phase.entry(phase).or_default() += 1;
    }
    let result = sender.publish(ROOMS[room], &body);
    let t1 = Instant::now();
    shared.world().sent.get_mut(&(publisher, room)).expect("just logged")[seq as usize - 1].1 = t1;
    result
}

// ----- good clients -----

struct Good {
    name: String,
    node: usize,
    client: Client,
    publisher: usize,
    publishes: Vec<usize>,
    heavy: bool,
}

fn connect_good(
    shared: &Shared,
    target: Target,
    name: &str,
    member: &[usize],
    publishes: &[usize],
    heavy: bool,
) -> Good {
    let options = ClientOptions { connect_timeout: Some(support::IO_TIMEOUT), ..ClientOptions::default() };
    let mut client = support::connect_with(target.addr, name, &options);
    for &room in member {
        client.join(ROOMS[room]).unwrap_or_else(|e| panic!("{name} joins {}: {e}", ROOMS[room]));
    }
    let core = client.welcome().core_id;
    let mut world = shared.world();
    let publisher = world.register(name, target.node, true, publishes.to_vec());
    world.receivers.push(Receiver {
        publisher,
        node: target.node,
        core,
        rooms: member.to_vec(),
        streams: HashMap::new(),
        received: 0,
        duplicated: 0,
        reordered: 0,
    });
    Good { name: name.to_string(), node: target.node, client, publisher, publishes: publishes.to_vec(), heavy }
}

/// A good client's reader: records every delivery until the final `PONG`; returns the client
/// (still connected) so the end can measure memory with the good clients still there.
fn read_good(mut client: Client, rx: usize, name: String, shared: Arc<Shared>) -> Option<Client> {
    client.set_read_timeout(Some(READ_POLL)).expect("set read timeout");
    loop {
        if Instant::now() >= shared.hard_deadline {
            shared.fail(format!("{name}: reader still running at the hard deadline"));
            return None;
        }
        match client.next_event() {
            Ok(Event::Message(m)) => shared.world().record(rx, &m),
            Ok(Event::Pong(FINAL_NONCE)) => return Some(client),
            Ok(other) => {
                shared.fail(format!("{name} got {other:?}"));
                return None;
            }
            Err(ClientError::Io(e)) if is_timeout(&e) => {}
            Err(e) => {
                shared.fail(format!("{name}: {e}"));
                return None;
            }
        }
    }
}

/// A good client's publisher: alternates between its rooms until told to stop.
fn publish_good(sender: Sender, good: (usize, Vec<usize>, bool), name: String, shared: Arc<Shared>, seed: u64) -> u64 {
    let (publisher, rooms, heavy) = good;
    let mut rng = Rng::stream(seed, publisher as u64);
    let mut seqs = vec![0u64; rooms.len()];
    let mut sent = 0;
    while !shared.stop_publish.load(Ordering::Acquire) && sent < PUBLISHES_MAX && Instant::now() < shared.hard_deadline
    {
        let k = (sent % rooms.len() as u64) as usize;
        seqs[k] += 1;
        let len = if heavy { HEAVY_PAYLOAD } else { CHAT_PAYLOAD };
        if let Err(e) = publish_one(&shared, &sender, publisher, rooms[k], seqs[k], len) {
            shared.fail(format!("{name} publishes: {e}"));
            return sent;
        }
        sent += 1;
        // Pacing: the publish rate is the workload.
        let pause =
            if heavy { HEAVY_PAUSE } else { Duration::from_millis(rng.between(CHAT_PAUSE_MS.0, CHAT_PAUSE_MS.1)) };
        thread::sleep(pause);
    }
    sent
}

// ----- churn -----

fn churn(target: Target, thread_no: usize, shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng::stream(seed, 1000 + (target.node * 10 + thread_no) as u64);
    let letter = node_letter(target.node);
    let mut n = 0u64;
    while shared.side_running() && n < CHURN_CONNECTIONS_MAX {
        n += 1;
        let name = format!("churn{letter}{thread_no}-{n}");
        if let Err(e) = churn_once(target, &name, n, &mut rng, &shared) {
            shared.fail(format!("{name}: {e}"));
            return;
        }
        shared.churn_connections.fetch_add(1, Ordering::AcqRel);
        // Pacing between connections.
        thread::sleep(Duration::from_millis(rng.between(10, 50)));
    }
}

fn churn_once(target: Target, name: &str, n: u64, rng: &mut Rng, shared: &Shared) -> Result<(), String> {
    let room = rng.below(CHAT_ROOMS);
    let publisher = shared.world().register(name, target.node, false, vec![room]);
    let options = ClientOptions { connect_timeout: Some(support::IO_TIMEOUT), ..ClientOptions::default() };
    let mut client = Client::connect_with(target.addr, name, &options).map_err(|e| format!("connect: {e}"))?;
    client.set_read_timeout(Some(support::IO_TIMEOUT)).map_err(|e| e.to_string())?;
    client.join(ROOMS[room]).map_err(|e| format!("join {}: {e}", ROOMS[room]))?;
    let sender = client.sender();
    for seq in 1..=rng.between(3, 10) {
        publish_one(shared, &sender, publisher, room, seq, CHAT_PAYLOAD).map_err(|e| format!("publish: {e}"))?;
        thread::sleep(Duration::from_millis(rng.between(2, 8)));
    }
    // Read for a little while: whatever arrives must be in order and never twice.
    client.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_millis(rng.between(50, 200));
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let (mut received, mut duplicated, mut reordered) = (0, 0, 0);
    while Instant::now() < until {
        match client.next_event() {
            Ok(Event::Message(m)) => {
                if m.room != ROOMS[room].as_bytes() {
                    return Err(format!("a message in {:?}, not its room", String::from_utf8_lossy(&m.room)));
                }
                received += 1;
                if !seen.insert((m.stream, m.seq)) {
                    duplicated += 1;
                } else if last.get(&m.stream).is_some_and(|&l| m.seq < l) {
                    reordered += 1;
                }
                let l = last.entry(m.stream).or_default();
                *l = (*l).max(m.seq);
            }
            Err(ClientError::Io(e)) if is_timeout(&e) => {}
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    {
        let mut world = shared.world();
        world.churn_received += received;
        world.churn_duplicated += duplicated;
        world.churn_reordered += reordered;
    }
    client.set_read_timeout(Some(support::IO_TIMEOUT)).map_err(|e| e.to_string())?;
    // The server has handled every publish before the connection goes.
    client.round_trip(n).map_err(|e| format!("round trip: {e}"))?;
    match n % 3 {
        0 => drop(client),
        1 => client.leave(ROOMS[room]).map_err(|e| format!("leave: {e}"))?,
        _ => sender.shutdown().map_err(|e| format!("shutdown: {e}"))?,
    }
    Ok(())
}

fn node_letter(node: usize) -> char {
    if node == 0 {
        'A'
    } else {
        'B'
    }
}

// ----- hostile clients -----

/// A frame with any type byte and body.
fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

/// Joins `room` on a raw connection, skipping deliveries that come before `JOINED`.
fn join_room(conn: &mut RawConn, room: &str) -> Result<(), String> {
    conn.send_frame(&ClientFrame::Join { flags: 0, room: Bytes::copy_from_slice(room.as_bytes()) });
    loop {
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Joined(r))) if r == room.as_bytes() => return Ok(()),
            Ok(RawRead::Frame(ServerFrame::Message(_))) => {}
            other => return Err(format!("expected JOINED {room}, got {other:?}")),
        }
    }
}

/// Reads until an `ERROR` whose code `accept`s (skipping deliveries and `PING`s), then expects
/// end of stream (or a reset: the server drops the socket after a short linger).
fn expect_fatal(conn: &mut RawConn, accept: impl Fn(u16) -> bool) -> Result<u16, String> {
    let started = Instant::now();
    conn.stream.set_read_timeout(Some(VERDICT_WITHIN)).map_err(|e| e.to_string())?;
    let code = loop {
        if started.elapsed() > VERDICT_WITHIN {
            return Err(format!("no fatal ERROR within {VERDICT_WITHIN:?}"));
        }
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Error { code, .. })) if accept(code) => break code,
            Ok(RawRead::Frame(ServerFrame::Message(_) | ServerFrame::Ping(_))) => {}
            other => return Err(format!("expected a fatal ERROR, got {other:?} after {:?}", started.elapsed())),
        }
    };
    match conn.read() {
        Ok(RawRead::Eof) => Ok(code),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(code),
        other => Err(format!("expected end of stream after ERROR {code}, got {other:?}")),
    }
}

fn greeted_member(addr: SocketAddr, name: &str, room: usize) -> Result<RawConn, String> {
    let mut conn = RawConn::greeted(addr, name);
    join_room(&mut conn, ROOMS[room])?;
    Ok(conn)
}

/// One garbage client; the variant rotates with the round.
fn garbage(target: Target, round: u64, rng: &mut Rng) -> Result<(), String> {
    let name = format!("garbage{}-{round}", node_letter(target.node));
    match round % 5 {
        0 => {
            // Random bytes before any HELLO: a binary first byte, a random header (never HELLO's
            // type), random rest. Too large, unknown, unexpected, or a body that never completes
            // (then the handshake timeout): always a fatal error.
            let mut bytes = vec![0x00, rng.next() as u8, rng.next() as u8, rng.next() as u8];
            let mut kind = rng.next() as u8;
            if kind == 0x01 {
                kind = 0x02;
            }
            bytes.push(kind);
            let extra = rng.below(60);
            bytes.extend((0..extra).map(|_| rng.next() as u8));
            let mut conn = RawConn::connect(target.addr);
            conn.send(&bytes);
            expect_fatal(&mut conn, |c| c < 256).map(drop)
        }
        1 => {
            // A member of a chat room sends a peer-link FORWARD: never accepted from a client.
            let mut conn = greeted_member(target.addr, &name, rng.below(CHAT_ROOMS))?;
            let body: Vec<u8> = (0..40).map(|_| rng.next() as u8).collect();
            conn.send(&raw_frame(0x43, &body));
            expect_fatal(&mut conn, |c| c == UNEXPECTED_FRAME).map(drop)
        }
        2 => {
            // A PUBLISH whose room length runs past the body.
            let mut conn = greeted_member(target.addr, &name, rng.below(CHAT_ROOMS))?;
            conn.send(&raw_frame(0x04, &[200, b'x']));
            expect_fatal(&mut conn, |c| c == MALFORMED_FRAME).map(drop)
        }
        3 => {
            let mut conn = greeted_member(target.addr, &name, rng.below(CHAT_ROOMS))?;
            conn.send(&raw_frame(0x3f, &[]));
            expect_fatal(&mut conn, |c| c == UNKNOWN_FRAME_TYPE).map(drop)
        }
        _ => {
            // Line mode, one line past the line limit.
            let mut conn = LineConn::connect(target.addr);
            conn.send(&vec![b'x'; fanout::limits::LINE_BYTES_MAX + 100]);
            match conn.read_line() {
                Ok(line) if line.starts_with("error 12 ") => {}
                other => return Err(format!("line mode: expected error 12, got {other:?}")),
            }
            match conn.read_line() {
                Ok(line) if line.is_empty() => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
                other => Err(format!("line mode: expected end of stream, got {other:?}")),
            }
        }
    }
}

/// A member of a chat room declares a 4 GiB frame and stalls: refused at once.
fn oversize(target: Target, round: u64, rng: &mut Rng) -> Result<(), String> {
    let name = format!("oversize{}-{round}", node_letter(target.node));
    let mut conn = greeted_member(target.addr, &name, rng.below(CHAT_ROOMS))?;
    conn.send(&[0xff, 0xff, 0xff, 0xff, 0x04]);
    expect_fatal(&mut conn, |c| c == FRAME_TOO_LARGE).map(drop)
}

/// Drips a `HELLO` (never finishing it) until the handshake timeout cuts the connection.
fn slowloris(target: Target, round: u64) -> Result<(), String> {
    let hello = encode(&hello(&format!("slowloris{}-{round}", node_letter(target.node))));
    let mut conn = RawConn::connect(target.addr);
    let started = Instant::now();
    // The read timeout paces the drip.
    conn.stream.set_read_timeout(Some(DRIP_EVERY)).map_err(|e| e.to_string())?;
    let mut sent = 0;
    loop {
        if sent + 1 < hello.len() && conn.stream.write_all(&hello[sent..sent + 1]).is_ok() {
            sent += 1;
        }
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Error { code: TIMEOUT, .. })) => break,
            Err(e) if is_timeout(&e) => {
                if started.elapsed() > HANDSHAKE_TIMEOUT + VERDICT_WITHIN {
                    return Err(format!("not cut after {:?} ({sent} bytes sent)", started.elapsed()));
                }
            }
            other => return Err(format!("expected ERROR TIMEOUT, got {other:?}")),
        }
    }
    let took = started.elapsed();
    if took + Duration::from_millis(100) < HANDSHAKE_TIMEOUT {
        return Err(format!("cut after {took:?}, before the handshake timeout"));
    }
    conn.stream.set_read_timeout(Some(VERDICT_WITHIN)).map_err(|e| e.to_string())?;
    match conn.read() {
        Ok(RawRead::Eof) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        other => Err(format!("expected end of stream after TIMEOUT, got {other:?}")),
    }
}

/// Joins the busy room and never reads until the node has cut a slow consumer (one non-reader
/// per node at a time, so that is this one), then expects the backlog, `SLOW_CONSUMER`, the end.
/// Returns whether it was cut (false: the soak stopped first).
fn non_reader(target: Target, round: u64, shared: &Shared) -> Result<bool, String> {
    let name = format!("nonreader{}-{round}", node_letter(target.node));
    let counter = "fanout_slow_consumers_total";
    let before = metric_sum(target.metrics, counter).map_err(|e| format!("metrics: {e}"))?;
    let mut conn = greeted_member(target.addr, &name, BUSY)?;
    let started = Instant::now();
    loop {
        if metric_sum(target.metrics, counter).map_err(|e| format!("metrics: {e}"))? > before {
            break;
        }
        if !shared.side_running() {
            return Ok(false);
        }
        if started.elapsed() > NON_READER_CUT_WITHIN {
            return Err(format!("not cut as a slow consumer within {NON_READER_CUT_WITHIN:?}"));
        }
        // A bounded poll of a counter that has no event to wait on.
        thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    shared.slow_cut_after_ms_max.fetch_max(took.as_millis() as u64, Ordering::AcqRel);
    shared.slow_cut_after_ms_min.fetch_min(took.as_millis() as u64, Ordering::AcqRel);
    expect_fatal(&mut conn, |c| c == SLOW_CONSUMER)?;
    Ok(true)
}

/// Joins 200 distinct rooms in one write: held to the rooms-per-connection limit.
fn join_flood(target: Target, round: u64) -> Result<(), String> {
    let name = format!("flood{}-{round}", node_letter(target.node));
    let options = ClientOptions { connect_timeout: Some(support::IO_TIMEOUT), ..ClientOptions::default() };
    let mut client = Client::connect_with(target.addr, &name, &options).map_err(|e| format!("connect: {e}"))?;
    client.set_read_timeout(Some(support::IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut batch = Vec::new();
    for k in 0..JOIN_FLOOD_ROOMS {
        let room = format!("flood{}-{round}-{k}", node_letter(target.node));
        batch.extend(encode(&ClientFrame::Join { flags: 0, room: Bytes::from(room.into_bytes()) }));
    }
    client.sender().send_raw(&batch).map_err(|e| format!("send the JOINs: {e}"))?;
    let (mut joined, mut refused) = (0, 0);
    while joined + refused < JOIN_FLOOD_ROOMS {
        match client.next_event() {
            Ok(Event::Joined(_)) => joined += 1,
            Ok(Event::Error { code: TOO_MANY_ROOMS, .. }) => refused += 1,
            other => return Err(format!("after {joined} JOINED and {refused} refusals: {other:?}")),
        }
    }
    let limit = fanout::limits::ROOMS_PER_CONNECTION_MAX;
    if joined != limit {
        return Err(format!("{joined} rooms joined, {refused} refused; the limit is {limit}"));
    }
    Ok(())
}

/// Runs one kind of hostile client against `target` in a loop until the side load stops.
fn hostile(kind: usize, target: Target, shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng::stream(seed, 2000 + (target.node * 10 + kind) as u64);
    let mut round = 0;
    while shared.side_running() && round < HOSTILE_ROUNDS_MAX {
        round += 1;
        shared.hostile[kind].fetch_add(1, Ordering::AcqRel);
        let result = match kind {
            GARBAGE => garbage(target, round, &mut rng),
            OVERSIZE => oversize(target, round, &mut rng),
            SLOWLORIS => slowloris(target, round),
            NON_READER => non_reader(target, round, &shared).map(|cut| {
                if cut {
                    shared.slow_cuts[target.node].fetch_add(1, Ordering::AcqRel);
                }
            }),
            _ => join_flood(target, round),
        };
        if let Err(e) = result {
            shared.fail(format!("{} client {round} on node {}: {e}", HOSTILE_KINDS[kind], node_letter(target.node)));
            return;
        }
        // Pacing between attacks.
        thread::sleep(if kind == JOIN_FLOOD { JOIN_FLOOD_PAUSE } else { HOSTILE_PAUSE });
    }
}

// ----- cuts, checks, memory -----

/// One cut of the node link, as the controller timed it.
struct Window {
    cut: Instant,
    cut_done: Instant,
    detected: Duration,
    healed: Instant,
    linked: Duration,
    confirmed: Instant,
}

impl Window {
    /// May a cross-node message published over `[t0, t1]` be lost because of this cut?
    fn excuses(&self, t0: Instant, t1: Instant) -> bool {
        t1 + CUT_MARGIN >= self.cut && t0 <= self.confirmed
    }

    /// Must a cross-node message published over `[t0, t1]` never arrive?
    fn forbids(&self, t0: Instant, t1: Instant) -> bool {
        t0 >= self.cut_done && t1 + CUT_MARGIN <= self.healed
    }
}

/// How many cross-node routes (good publisher, room, good receiver on the other node) have
/// delivered a message published at or after `since`, of how many.
fn routes_confirmed(world: &World, since: Instant) -> (usize, usize) {
    let (mut confirmed, mut total) = (0, 0);
    for rx in &world.receivers {
        for &room in &rx.rooms {
            for (id, p) in world.publishers.iter().enumerate() {
                if !p.good || id == rx.publisher || p.node == rx.node || !p.rooms.contains(&room) {
                    continue;
                }
                total += 1;
                let last = rx.streams.get(&(id, room)).map_or(0, |s| s.last);
                let times = world.sent.get(&(id, room));
                if last > 0 && times.is_some_and(|t| t[last as usize - 1].0 >= since) {
                    confirmed += 1;
                }
            }
        }
    }
    (confirmed, total)
}

#[derive(Debug, Default)]
struct Tally {
    /// Deliveries owed to good receivers (every message to every other good member).
    expected: u64,
    delivered: u64,
    /// Owed and missing: violations.
    lost: u64,
    lost_same_node: u64,
    /// Cross-node, published in a cut's excused window, missing.
    excused: u64,
    /// Cross-node, published well inside a cut, yet delivered.
    late: u64,
    examples: Vec<String>,
}

fn tally(world: &World, windows: &[Window], with_late: bool) -> Tally {
    let mut t = Tally::default();
    for rx in &world.receivers {
        let rx_name = &world.publishers[rx.publisher].name;
        for (&(id, room), times) in &world.sent {
            if id == rx.publisher || !rx.rooms.contains(&room) {
                continue;
            }
            let p = &world.publishers[id];
            let cross = p.node != rx.node;
            let n = times.len() as u64;
            t.expected += n;
            let got = rx.streams.get(&(id, room));
            let last = got.map_or(0, |s| s.last);
            let gaps = got.map(|s| s.gaps.clone()).unwrap_or_default();
            let missing = gaps.iter().flat_map(|&(lo, hi)| lo..=hi).chain(last + 1..=n);
            let mut missed = 0;
            for seq in missing {
                missed += 1;
                let (t0, t1) = times[seq as usize - 1];
                if cross && windows.iter().any(|w| w.excuses(t0, t1)) {
                    t.excused += 1;
                    continue;
                }
                t.lost += 1;
                if !cross {
                    t.lost_same_node += 1;
                }
                if t.examples.len() < 10 {
                    t.examples.push(format!("{rx_name} lacks {}'s message {seq} in {}", p.name, ROOMS[room]));
                }
            }
            t.delivered += n - missed;
            if with_late && cross {
                if let Some(s) = got {
                    for seq in 1..=last.min(n) {
                        let (t0, t1) = times[seq as usize - 1];
                        if s.has(seq) && windows.iter().any(|w| w.forbids(t0, t1)) {
                            t.late += 1;
                            if t.examples.len() < 10 {
                                t.examples.push(format!(
                                    "{rx_name} got {}'s message {seq} in {}, published during a cut",
                                    p.name, ROOMS[room]
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    t
}

/// Each node's RSS: after warm-up, the highest seen, and at the end.
#[derive(Default)]
struct Rss {
    start: [u64; 2],
    peak: [u64; 2],
    end: [u64; 2],
}

impl Rss {
    fn sample(&mut self, nodes: [&Node; 2]) -> [u64; 2] {
        let now = [nodes[0].server.rss_kib(), nodes[1].server.rss_kib()];
        for (peak, now) in self.peak.iter_mut().zip(now) {
            *peak = (*peak).max(now);
        }
        now
    }

    /// Keeps sampling until `until` (the load runs meanwhile; this only paces the controller).
    fn run_until(&mut self, until: Instant, nodes: [&Node; 2]) {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.sample(nodes);
            thread::sleep(left.min(RSS_EVERY));
        }
    }
}

/// Cuts both proxies, keeps them cut for `cut_for`, heals, and waits until every cross-node
/// route delivers again (and no link came up meanwhile).
fn cut_and_heal(a: &Node, b: &Node, k: usize, cut_for: Duration, shared: &Shared, rss: &mut Rss) -> Window {
    let nodes = [a, b];
    let downs = (a.downs(2), b.downs(1));
    shared.phase.store((2 * k + 1) as u8, Ordering::Release);
    let cut = Instant::now();
    a.proxy.partition();
    b.proxy.partition();
    let cut_done = Instant::now();
    let seen = poll_until("both nodes see the link down", CUT_DETECTION_TIMEOUT, &nodes, || {
        a.downs(2) > downs.0 && b.downs(1) > downs.1
    });
    rss.run_until(cut + cut_for, nodes);
    a.proxy.heal();
    b.proxy.heal();
    let healed = Instant::now();
    let deadline = healed + HEAL_BOUND;
    let linked = poll_until("the link re-forms after the heal", HEAL_BOUND, &nodes, || both_linked(a, b));
    let mut since = healed;
    let confirmed = loop {
        let ups = (a.ups(2), b.ups(1));
        let (mut done, mut total) = (0, 0);
        while Instant::now() < deadline {
            (done, total) = routes_confirmed(&shared.world(), since);
            if done == total {
                break;
            }
            // A bounded poll of the receivers' records.
            thread::sleep(POLL);
        }
        assert_eq!(done, total, "cut {k}: only {done} of {total} cross-node routes delivered within {HEAL_BOUND:?}");
        let at = Instant::now();
        if ups == (a.ups(2), b.ups(1)) {
            break at;
        }
        // A link came up while we looked: look again with messages published from now on.
        since = at;
    };
    shared.phase.store((2 * k + 2) as u8, Ordering::Release);
    Window { cut, cut_done, detected: seen - cut, healed, linked: linked - healed, confirmed }
}

fn join_threads<T>(handles: Vec<(String, JoinHandle<T>)>, shared: &Shared) -> Vec<Option<T>> {
    handles
        .into_iter()
        .map(|(name, h)| match h.join() {
            Ok(v) => Some(v),
            Err(p) => {
                let text = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                shared.fail(format!("thread {name} panicked: {text}"));
                None
            }
        })
        .collect()
}

#[test]
fn soak_two_nodes_with_churn_hostile_clients_and_link_cuts() {
    let test_started = Instant::now();
    let soak = soak_duration();
    let bound = soak + FIXED_MARGIN;
    let seed = seed();
    eprintln!("SOAK {soak:?} of load, {bound:?} at most in all; {SOAK_SEED_VAR}={seed}");
    let (a, b) = two_nodes();
    let nodes = [&a, &b];
    let targets = [a.target(0), b.target(1)];
    let shared = Arc::new(Shared {
        world: Mutex::new(World::default()),
        phase: AtomicU8::new(0),
        stop_side: AtomicBool::new(false),
        stop_publish: AtomicBool::new(false),
        hard_deadline: test_started + bound,
        churn_connections: AtomicU64::new(0),
        hostile: Default::default(),
        slow_cuts: Default::default(),
        slow_cut_after_ms_max: AtomicU64::new(0),
        slow_cut_after_ms_min: AtomicU64::new(u64::MAX),
    });

    // Good clients: all joined before anyone publishes.
    let mut goods = Vec::new();
    for target in targets {
        let letter = node_letter(target.node);
        for i in 0..GOOD_PER_NODE {
            let chat = [i % CHAT_ROOMS, (i + 1) % CHAT_ROOMS];
            let mut member = chat.to_vec();
            if i == 0 {
                member.push(BUSY);
            }
            goods.push(connect_good(&shared, target, &format!("good{letter}{i}"), &member, &chat, false));
        }
        goods.push(connect_good(&shared, target, &format!("heavy{letter}"), &[BUSY], &[BUSY], true));
    }
    {
        let world = shared.world();
        let cores: Vec<String> = world
            .receivers
            .iter()
            .map(|r| format!("{}@{}/{}", world.publishers[r.publisher].name, node_letter(r.node), r.core))
            .collect();
        eprintln!("SOAK good clients (name@node/core): {}", cores.join(" "));
    }
    let good_per_node = [0, 1].map(|n| goods.iter().filter(|g| g.node == n).count() as u64);

    let load_started = Instant::now();
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    let mut final_senders = Vec::new();
    for (rx, g) in goods.into_iter().enumerate() {
        let sender = g.client.sender();
        final_senders.push((g.name.clone(), sender.clone()));
        let (s, name) = (shared.clone(), g.name.clone());
        publishers.push((
            g.name.clone(),
            thread::spawn(move || publish_good(sender, (g.publisher, g.publishes, g.heavy), name, s, seed)),
        ));
        let (s, name) = (shared.clone(), g.name.clone());
        readers.push((g.name, thread::spawn(move || read_good(g.client, rx, name, s))));
    }
    let mut side = Vec::new();
    for target in targets {
        for t in 0..CHURN_PER_NODE {
            let s = shared.clone();
            side.push((
                format!("churn{}{t}", node_letter(target.node)),
                thread::spawn(move || churn(target, t, s, seed)),
            ));
        }
        for (kind, kind_name) in HOSTILE_KINDS.iter().enumerate() {
            let s = shared.clone();
            let name = format!("{kind_name}{}", node_letter(target.node));
            side.push((name, thread::spawn(move || hostile(kind, target, s, seed))));
        }
    }

    // The schedule: warm-up, then the cuts spread over 20%..80% of the soak.
    let mut rss = Rss::default();
    rss.run_until(load_started + soak.mul_f64(WARMUP_FRACTION), nodes);
    rss.start = rss.sample(nodes);
    let cuts = (soak.as_secs() / 60).clamp(2, 20) as usize;
    let cut_for = CUT_FOR.min(soak / 6);
    let mut windows = Vec::new();
    for k in 0..cuts {
        rss.run_until(load_started + soak.mul_f64(0.2 + 0.6 * k as f64 / cuts as f64), nodes);
        windows.push(cut_and_heal(&a, &b, k, cut_for, &shared, &mut rss));
    }
    rss.run_until(load_started + soak, nodes);

    // Stop the side load, then the publishers.
    shared.stop_side.store(true, Ordering::Release);
    join_threads(side, &shared);
    shared.stop_publish.store(true, Ordering::Release);
    let sent_by_good: u64 = join_threads(publishers, &shared).into_iter().flatten().sum();
    let load_time = load_started.elapsed();

    // Drain: wait until everything owed has arrived (bounded), then a final PING per client.
    let drain_started = Instant::now();
    let mut owed = tally(&shared.world(), &windows, false).lost;
    while owed > 0 && drain_started.elapsed() < DRAIN_TIMEOUT && Instant::now() < shared.hard_deadline {
        // A bounded poll of the receivers' records.
        thread::sleep(POLL);
        owed = tally(&shared.world(), &windows, false).lost;
    }
    let drain_time = drain_started.elapsed();
    for (name, sender) in &final_senders {
        if let Err(e) = sender.ping(FINAL_NONCE) {
            shared.fail(format!("{name}: final PING: {e}"));
        }
    }
    let clients: Vec<Client> = join_threads(readers, &shared).into_iter().flatten().flatten().collect();

    // Memory: once only the good clients are connected.
    let settle_started = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        let wanted = good_per_node[i];
        let mut held = u64::MAX;
        while settle_started.elapsed() < SETTLE_TIMEOUT && Instant::now() < shared.hard_deadline {
            held = metric_sum(node.metrics, "fanout_connections").expect("scrape metrics");
            if held == wanted {
                break;
            }
            // A bounded poll of a gauge the server updates on its own schedule.
            thread::sleep(POLL);
        }
        assert_eq!(held, wanted, "node {}: connections after the side load stopped", node_letter(i));
    }
    rss.end = rss.sample(nodes);
    let settle_time = settle_started.elapsed();
    let metrics: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| {
            let slow = metric_sum(n.metrics, "fanout_slow_consumers_total").expect("scrape metrics");
            let dropped = metric_sum(n.metrics, "fanout_forwards_dropped_total").expect("scrape metrics");
            (slow, dropped)
        })
        .collect();
    drop(clients);

    // The verdict.
    let world = shared.world();
    let t = tally(&world, &windows, true);
    let duplicated: u64 = world.receivers.iter().map(|r| r.duplicated).sum();
    let reordered: u64 = world.receivers.iter().map(|r| r.reordered).sum();
    let received: u64 = world.receivers.iter().map(|r| r.received).sum();
    let sent_total: u64 = world.sent.values().map(|v| v.len() as u64).sum();
    let sent_by_churn = sent_total - sent_by_good;
    let hostile: Vec<u64> = shared.hostile.iter().map(|c| c.load(Ordering::Acquire)).collect();
    let slow_cuts = [0, 1].map(|n| shared.slow_cuts[n].load(Ordering::Acquire));
    let churn_connections = shared.churn_connections.load(Ordering::Acquire);
    let elapsed = test_started.elapsed();

    eprintln!(
        "SOAK load {load_time:?}, drain {drain_time:?}, settle {settle_time:?}, test {elapsed:?} (bound {bound:?})"
    );
    eprintln!(
        "SOAK messages sent {sent_total} (good {sent_by_good}, churn {sent_by_churn}); deliveries to good clients: \
         received {received}, owed {}, delivered {}, lost {} (same node {}), excused in cut windows {}, \
         duplicated {duplicated}, reordered {reordered}, late across a cut {}",
        t.expected, t.delivered, t.lost, t.lost_same_node, t.excused, t.late
    );
    eprintln!(
        "SOAK churn clients: {churn_connections} connections, received {} (duplicated {}, reordered {})",
        world.churn_received, world.churn_duplicated, world.churn_reordered
    );
    let kinds: Vec<String> = HOSTILE_KINDS.iter().zip(&hostile).map(|(k, n)| format!("{k} {n}")).collect();
    let cut_after = match shared.slow_cut_after_ms_min.load(Ordering::Acquire) {
        u64::MAX => "never".to_string(),
        min => format!("{min}..{} ms after joining", shared.slow_cut_after_ms_max.load(Ordering::Acquire)),
    };
    eprintln!(
        "SOAK hostile connections: {} ({}); non-readers cut: A {}, B {} ({cut_after})",
        hostile.iter().sum::<u64>(),
        kinds.join(", "),
        slow_cuts[0],
        slow_cuts[1],
    );
    for (k, w) in windows.iter().enumerate() {
        eprintln!(
            "SOAK cut {k}: at {:?}, down seen after {:?}, healed at {:?}, linked {:?} after the heal, every route \
             delivering {:?} after the heal",
            w.cut - load_started,
            w.detected,
            w.healed - load_started,
            w.linked,
            w.confirmed - w.healed
        );
    }
    eprintln!("SOAK cuts: {}", windows.len());
    for (i, (slow, dropped)) in metrics.iter().enumerate() {
        eprintln!(
            "SOAK node {} RSS: start {} KiB, peak {} KiB, end {} KiB ({:+} KiB); slow consumers cut {slow}, forwards dropped {dropped}",
            node_letter(i),
            rss.start[i],
            rss.peak[i],
            rss.end[i],
            rss.end[i] as i64 - rss.start[i] as i64,
        );
    }
    eprintln!("SOAK sent by phase {:?}; received by phase {:?}", world.sent_by_phase, world.received_by_phase);

    let mut problems = world.failures.clone();
    if world.failures_dropped > 0 {
        problems.push(format!("... and {} more failures", world.failures_dropped));
    }
    problems.extend(t.examples.iter().cloned());
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!((t.lost, t.late, duplicated, reordered), (0, 0, 0, 0), "lost, late, duplicated, reordered");
    assert_eq!((world.churn_duplicated, world.churn_reordered), (0, 0), "churn clients: duplicated, reordered");
    assert!(t.delivered > 0 && sent_by_churn > 0 && churn_connections > 0, "the load ran");
    for (kind, n) in HOSTILE_KINDS.iter().zip(&hostile) {
        assert!(*n > 0, "no {kind} client ran");
    }
    assert!(slow_cuts[0] > 0 && slow_cuts[1] > 0, "a non-reader was cut on each node: {slow_cuts:?}");
    assert_eq!(windows.len(), cuts, "every cut healed");
    for i in 0..2 {
        assert!(
            rss.end[i] <= rss.start[i] + RSS_GROWTH_KIB_MAX,
            "node {} RSS went from {} KiB to {} KiB (bound +{RSS_GROWTH_KIB_MAX} KiB)",
            node_letter(i),
            rss.start[i],
            rss.end[i]
        );
    }
    assert!(elapsed <= bound, "the soak took {elapsed:?}, over its bound {bound:?}");
}
