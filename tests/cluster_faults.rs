//! Network faults between cluster nodes, injected by the test proxy (`support::proxy`).
//!
//! Every node is reachable only through a proxy: the test picks a free port for the node's
//! cluster listener, starts a [`Proxy`] in front of it, and starts the node with
//! `--cluster-advertise <proxy>`, so gossip hands out proxy addresses and every node link
//! crosses a proxy that the test can partition, blackhole or slow down.
//!
//! Every client message carries `phase: u8` then `seq: u64`, the publisher's own count over the
//! whole run (which is also the server's per-stream `seq`: each client joins once). Across a whole
//! test every receiver must see each publisher's messages with strictly increasing `seq` (no
//! duplicate, no reordering, also across reconnects), and no message published while its
//! receiver's node was cut off from the publisher's may ever arrive (at most once: lost, never
//! replayed late).
//!
//! The tests run one at a time (they measure detection and heal times, and the machine may have
//! few cores). Measured times are printed as `MEASURED ...` lines (`--nocapture` shows them).
//! Waits on the servers' logs are bounded polls (the logs have no event to wait on); every
//! other wait is on a condition variable with a deadline, and every read has a timeout.

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fanout::client::{Client, ClientError, Event, Sender};
use fanout::cluster::{LINK_SILENCE_MAX, REDIAL_DELAY_MAX};
use support::cluster::free_addr;
use support::proxy::Proxy;
use support::{connect_joined, Server};

/// The room every client of these tests is in.
const ROOM: &str = "r";

/// Messages each publisher sends per phase.
const K: u64 = 200;

/// Phase byte of the probes that show cross-node delivery works again.
const PROBE: u8 = 9;

/// How long node links may take to form at start (dial, handshake, gossip, redial).
const MESH_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a batch of deliveries may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cut (end of stream on the link) may take to be noticed.
const CUT_DETECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Documented bound: after a partition heals, cross-node delivery resumes within this long. A
/// node redials a lost peer with backoff capped at `REDIAL_DELAY_MAX` (2 s, minus jitter), and
/// the handshake and interest re-sync take a few round trips on loopback.
const PARTITION_HEAL_BOUND: Duration = Duration::from_secs(10);

/// Slack over `LINK_SILENCE_MAX` for declaring a silent link down: the server checks its links
/// on its timer tick (125 ms on a node), so a link is declared down at the first tick after
/// `LINK_SILENCE_MAX` of silence.
const SILENCE_DETECTION_MARGIN: Duration = Duration::from_secs(2);

/// Documented bound after a blackhole lifts: connections opened while it was on stay silent, so
/// each pending handshake is dropped after `LINK_SILENCE_MAX` of silence (+ one tick), the
/// node redials after at most `REDIAL_DELAY_MAX`, and then the handshake takes milliseconds.
const BLACKHOLE_HEAL_BOUND: Duration = Duration::from_secs(12);

/// The latency the slow-link test adds on the proxy that carries the link.
const SLOW_LINK_DELAY: Duration = Duration::from_millis(300);

/// A local delivery (publisher and receiver on the same node) must stay below this even while
/// a node link is slow or dead; it is normally a millisecond or two.
const LOCAL_DELIVERY_MAX: Duration = Duration::from_secs(1);

/// How often a probe is repeated until it gets through.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Failed redials after which the backoff has reached `REDIAL_DELAY_MAX` (100 ms doubling).
const BACKOFF_CAPPED_AFTER: usize = 5;

/// What a node logs when a dial connected (at debug level, which the tests run at).
const DIALED: &str = "dialed node at ";

/// What a node logs when it accepted a node connection (at debug level).
const ACCEPTED: &str = "node connection from ";

/// How long a reader thread blocks in one read before it looks at its stop flag.
const READ_POLL: Duration = Duration::from_millis(100);

/// How often the servers' logs are polled.
const LOG_POLL: Duration = Duration::from_millis(10);

/// Runs the tests of this file one at a time (a poisoned lock from a failed test is fine).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn secret_file() -> PathBuf {
    support::cluster::secret_file("faults", "faults are a feature")
}

/// A node whose cluster listener is reachable only through `proxy`.
struct Node {
    id: u16,
    server: Server,
    proxy: Proxy,
}

impl Node {
    /// Starts a proxy in front of a free port, then node `id` listening on that port and
    /// advertising the proxy, dialing `peers`.
    fn start(secret: &std::path::Path, id: u16, peers: &[SocketAddr]) -> Node {
        let listen = free_addr();
        let proxy = Proxy::start(listen);
        Self::start_behind(proxy, secret, id, peers)
    }

    /// Starts node `id` on `proxy.target()`, advertising `proxy.addr()`.
    fn start_behind(proxy: Proxy, secret: &std::path::Path, id: u16, peers: &[SocketAddr]) -> Node {
        let server = support::cluster::start_behind(&proxy, secret, id, peers, &[]);
        Node { id, server, proxy }
    }

    fn count(&self, needle: &str) -> usize {
        self.server.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    /// How many times the node logged its link to `peer` going down.
    fn downs(&self, peer: u16) -> usize {
        self.count(&format!(" to node {peer} is down"))
    }

    /// How many times the node logged a link to `peer` coming up.
    fn ups(&self, peer: u16) -> usize {
        self.count(&format!(" up: node {peer} at "))
    }

    /// Every link that came up, to any node (a changed count means a link was replaced).
    fn ups_total(&self) -> usize {
        self.count(" up: node ")
    }

    /// How many dials to `other`'s advertised address connected (to its proxy, which may then
    /// close or swallow the connection).
    fn dials_to(&self, other: &Node) -> usize {
        self.count(&format!("{DIALED}{}", other.proxy.addr()))
    }

    /// Whether this node dials `other` (it was given or told `other`'s address).
    fn knows(&self, other: &Node) -> bool {
        self.count(&format!("will link to node at {}", other.proxy.addr())) > 0
    }

    /// Node links dropped for silence (handshakes included).
    fn silences(&self) -> usize {
        self.count("has been silent for")
    }

    fn linked_to(&self, peer: u16) -> bool {
        self.ups(peer) > self.downs(peer)
    }
}

/// Polls (the logs or the proxies) until `condition` holds; returns when it was first seen to
/// hold. `nodes` are the ones whose logs a failure shows.
fn poll_until(what: &str, timeout: Duration, nodes: &[&Node], condition: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            let mut text = String::new();
            for node in nodes {
                let _ = write!(text, "\n--- node {} log ---\n{}", node.id, node.server.log_text());
            }
            panic!("{what}: not seen within {timeout:?}{text}");
        }
        // A bounded poll of the logs, not synchronisation: they have no event to wait on.
        thread::sleep(LOG_POLL);
    }
}

/// Waits until each `(node, peers)` has a link up to every one of `peers`.
fn wait_linked(what: &str, timeout: Duration, want: &[(&Node, &[u16])]) -> Instant {
    let nodes: Vec<&Node> = want.iter().map(|(n, _)| *n).collect();
    poll_until(what, timeout, &nodes, || want.iter().all(|(node, peers)| peers.iter().all(|p| node.linked_to(*p))))
}

/// One delivery as a receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    phase: u8,
    seq: u64,
    stream: u64,
    wire_seq: u64,
    at: Instant,
}

#[derive(Default)]
struct Inboxes {
    by_receiver: HashMap<String, Vec<Received>>,
    failure: Option<String>,
}

impl Inboxes {
    fn count(&self, receiver: &str, from: &str, phase: u8) -> u64 {
        self.by_receiver[receiver].iter().filter(|r| r.from == from && r.phase == phase).count() as u64
    }
}

#[derive(Default)]
struct Shared {
    inboxes: Mutex<Inboxes>,
    grew: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inboxes> {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Clients in [`ROOM`] that publish from the test thread and record every delivery in a reader
/// thread each.
struct Chat {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    senders: HashMap<String, Sender>,
    next_seq: HashMap<String, u64>,
    readers: Vec<JoinHandle<()>>,
}

impl Chat {
    /// Connects `name` to `node` (joined to [`ROOM`]) for every pair, and starts reading.
    fn connect(clients: &[(&str, &Node)]) -> Chat {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut chat = Chat { shared, stop, senders: HashMap::new(), next_seq: HashMap::new(), readers: Vec::new() };
        for (name, node) in clients {
            let client = connect_joined(node.server.addr(), name, ROOM);
            chat.senders.insert(name.to_string(), client.sender());
            chat.next_seq.insert(name.to_string(), 0);
            chat.shared.lock().by_receiver.insert(name.to_string(), Vec::new());
            let (shared, stop, name) = (chat.shared.clone(), chat.stop.clone(), name.to_string());
            chat.readers.push(thread::spawn(move || read_all(client, &name, &shared, &stop)));
        }
        chat
    }

    /// Publishes the next message of `from` in `phase`; returns its `seq`.
    fn publish(&mut self, from: &str, phase: u8) -> u64 {
        let seq = self.next_seq.get_mut(from).expect("a known publisher");
        *seq += 1;
        let mut payload = vec![phase];
        payload.extend_from_slice(&seq.to_be_bytes());
        self.senders[from].publish(ROOM, &payload).unwrap_or_else(|e| panic!("{from} publishes: {e}"));
        *seq
    }

    /// Every one of `publishers` publishes `count` messages in `phase`, interleaved.
    fn publish_each(&mut self, publishers: &[&str], phase: u8, count: u64) {
        for _ in 0..count {
            for from in publishers {
                self.publish(from, phase);
            }
        }
    }

    /// Waits until `condition` holds on the inboxes or `deadline` passes; true if it holds.
    fn wait_until(&self, deadline: Instant, condition: impl Fn(&Inboxes) -> bool) -> bool {
        let mut inboxes = self.shared.lock();
        loop {
            if let Some(failure) = &inboxes.failure {
                panic!("a reader failed: {failure}");
            }
            if condition(&inboxes) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            inboxes = self.shared.grew.wait_timeout(inboxes, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Waits until every `(receiver, publisher)` pair has all `count` messages of `phase`.
    fn expect_all(&self, phase: u8, pairs: &[(&str, &str)], count: u64) {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let done = self.wait_until(deadline, |inb| pairs.iter().all(|(rx, from)| inb.count(rx, from, phase) >= count));
        if !done {
            let inboxes = self.shared.lock();
            let counts: Vec<String> = pairs
                .iter()
                .map(|(rx, from)| format!("{rx} has {} of {from}'s", inboxes.count(rx, from, phase)))
                .collect();
            panic!("phase {phase}: expected {count} messages per pair within {DELIVERY_TIMEOUT:?}; {counts:?}");
        }
    }

    /// Publishes one message of `from` in `phase` and waits until `to` has it; returns the time
    /// from publish to delivery.
    fn deliver_one(&mut self, from: &str, to: &str, phase: u8) -> Duration {
        let sent = Instant::now();
        let seq = self.publish(from, phase);
        let deadline = sent + DELIVERY_TIMEOUT;
        let found = |inb: &Inboxes| inb.by_receiver[to].iter().find(|r| r.from == from && r.seq == seq).map(|r| r.at);
        assert!(self.wait_until(deadline, |inb| found(inb).is_some()), "{to} never got {from}'s message {seq}");
        found(&self.shared.lock()).expect("just seen").saturating_duration_since(sent)
    }

    /// Publishes probes from `from` until `to` receives one (or `deadline` passes); returns
    /// when the first one arrived.
    fn probe(&mut self, from: &str, to: &str, deadline: Instant) -> Instant {
        let first = self.next_seq[from] + 1;
        let arrived = |inb: &Inboxes| {
            inb.by_receiver[to].iter().find(|r| r.from == from && r.phase == PROBE && r.seq >= first).map(|r| r.at)
        };
        loop {
            self.publish(from, PROBE);
            let until = (Instant::now() + PROBE_EVERY).min(deadline);
            if self.wait_until(until, |inb| arrived(inb).is_some()) {
                return arrived(&self.shared.lock()).expect("just seen");
            }
            assert!(Instant::now() < deadline, "no probe from {from} reached {to} in time");
        }
    }

    /// After links (re)formed: probes along every `(from, to)` until each gets through, and
    /// repeats until no node logged a new link meanwhile (a link replaced by a twin dialed at
    /// the same time would otherwise swallow messages of the next phase). Returns when the
    /// first probe of the first round arrived.
    fn resync(&mut self, nodes: &[&Node], routes: &[(&str, &str)], deadline: Instant) -> Instant {
        let mut first: Option<Instant> = None;
        loop {
            let before: Vec<usize> = nodes.iter().map(|n| n.ups_total()).collect();
            for (from, to) in routes {
                let at = self.probe(from, to, deadline);
                first = Some(first.map_or(at, |f| f.min(at)));
            }
            let after: Vec<usize> = nodes.iter().map(|n| n.ups_total()).collect();
            if before == after {
                return first.expect("at least one route");
            }
            assert!(Instant::now() < deadline, "links kept changing");
        }
    }

    /// Checks everything every receiver got over the whole run: no own messages, one stream per
    /// publisher, the server's `seq` equal to the publisher's count, strictly increasing per
    /// publisher (no duplicates, no reordering), and nothing that `forbidden(receiver,
    /// publisher, phase)` says could not cross. Returns how many deliveries were checked.
    fn check(&self, forbidden: impl Fn(&str, &str, u8) -> bool) -> usize {
        let inboxes = self.shared.lock();
        if let Some(failure) = &inboxes.failure {
            panic!("a reader failed: {failure}");
        }
        let mut checked = 0;
        for (rx, got) in &inboxes.by_receiver {
            let mut last: HashMap<&str, (u64, u64)> = HashMap::new();
            for r in got {
                assert_ne!(&r.from, rx, "{rx} got its own message {}", r.seq);
                assert_eq!(r.wire_seq, r.seq, "{rx}: the server's seq for {}'s message {}", r.from, r.seq);
                assert!(!forbidden(rx, &r.from, r.phase), "{rx} got {}'s phase-{} message {}", r.from, r.phase, r.seq);
                if let Some((stream, seq)) = last.get(r.from.as_str()) {
                    assert_eq!(*stream, r.stream, "{rx}: {}'s stream changed", r.from);
                    assert!(
                        r.seq > *seq,
                        "{rx}: {}'s message {} after {} (duplicate or reordering)",
                        r.from,
                        r.seq,
                        seq
                    );
                }
                last.insert(&r.from, (r.stream, r.seq));
                checked += 1;
            }
        }
        checked
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// A reader thread: records every delivery until stopped; any other event is a failure.
fn read_all(mut client: Client, name: &str, shared: &Shared, stop: &AtomicBool) {
    client.set_read_timeout(Some(READ_POLL)).expect("set read timeout");
    let fail = |text: String| {
        shared.lock().failure.get_or_insert(text);
        shared.grew.notify_all();
    };
    while !stop.load(Ordering::Acquire) {
        let m = match client.next_event() {
            Ok(Event::Message(m)) => m,
            Err(ClientError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                continue
            }
            Ok(other) => return fail(format!("{name} got {other:?}")),
            Err(e) => return fail(format!("{name}: {e}")),
        };
        let at = Instant::now();
        if m.room != ROOM.as_bytes() || m.payload.len() != 9 {
            return fail(format!("{name} got a foreign message {m:?}"));
        }
        let received = Received {
            from: String::from_utf8_lossy(&m.name).into_owned(),
            phase: m.payload[0],
            seq: u64::from_be_bytes(m.payload[1..9].try_into().expect("8 bytes")),
            stream: m.stream,
            wire_seq: m.seq,
            at,
        };
        shared.lock().by_receiver.get_mut(name).expect("registered").push(received);
        shared.grew.notify_all();
    }
}

/// Every ordered pair `(receiver, publisher)` of distinct names.
fn all_pairs<'a>(names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    names.iter().flat_map(|rx| names.iter().filter(move |from| *from != rx).map(move |from| (*rx, *from))).collect()
}

/// Two nodes, each dialing the other's proxy, linked and with clients a1, a2 on A and b1, b2
/// on B, cross-node delivery checked by probes.
fn two_nodes() -> (Node, Node, Chat) {
    let secret = secret_file();
    let a_listen = free_addr();
    let b_listen = free_addr();
    let a_proxy = Proxy::start(a_listen);
    let b_proxy = Proxy::start(b_listen);
    let b_proxy_addr = b_proxy.addr();
    let a_proxy_addr = a_proxy.addr();
    let a = Node::start_behind(a_proxy, &secret, 1, &[b_proxy_addr]);
    let b = Node::start_behind(b_proxy, &secret, 2, &[a_proxy_addr]);
    wait_linked("A and B linked", MESH_TIMEOUT, &[(&a, &[2]), (&b, &[1])]);
    let mut chat = Chat::connect(&[("a1", &a), ("a2", &a), ("b1", &b), ("b2", &b)]);
    chat.resync(&[&a, &b], &[("a1", "b1"), ("b1", "a1")], Instant::now() + MESH_TIMEOUT);
    (a, b, chat)
}

fn on_a(name: &str) -> bool {
    name.starts_with('a')
}

#[test]
fn a_partition_keeps_each_side_serving_and_heals_without_loss_of_order_or_late_replays() {
    let _serial = serial();
    let started = Instant::now();
    let (a, b, mut chat) = two_nodes();
    let everyone = ["a1", "a2", "b1", "b2"];

    // Phase 1: everyone gets everyone else's messages.
    chat.publish_each(&everyone, 1, K);
    chat.expect_all(1, &all_pairs(&everyone), K);

    // Partition: both proxies cut every connection and refuse new ones.
    let (a_downs, b_downs) = (a.downs(2), b.downs(1));
    let cut_at = Instant::now();
    a.proxy.partition();
    b.proxy.partition();
    let detected = poll_until("both nodes see the link down", CUT_DETECTION_TIMEOUT, &[&a, &b], || {
        a.downs(2) > a_downs && b.downs(1) > b_downs
    });
    println!("MEASURED partition: both nodes logged the link down {:?} after the cut", detected - cut_at);

    // Phase 2: each side keeps serving itself; nothing crosses. The partition lasts until both
    // nodes' redial backoff has reached its cap, so the heal is not helped by a quick redial.
    chat.publish_each(&everyone, 2, K);
    let (a_dials, b_dials) = (a.dials_to(&b), b.dials_to(&a));
    poll_until("redials fail until the backoff is capped", 2 * MESH_TIMEOUT, &[&a, &b], || {
        a.dials_to(&b) >= a_dials + BACKOFF_CAPPED_AFTER && b.dials_to(&a) >= b_dials + BACKOFF_CAPPED_AFTER
    });
    chat.publish_each(&everyone, 2, K);
    chat.expect_all(2, &[("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")], 2 * K);

    // Heal: links re-form, interest is re-synchronised, probes get through both ways.
    let healed_at = Instant::now();
    a.proxy.heal();
    b.proxy.heal();
    let linked = wait_linked("the link re-forms after the heal", PARTITION_HEAL_BOUND, &[(&a, &[2]), (&b, &[1])]);
    let first = chat.resync(&[&a, &b], &[("a1", "b1"), ("b1", "a1")], healed_at + PARTITION_HEAL_BOUND);
    let heal_time = first.saturating_duration_since(healed_at);
    println!(
        "MEASURED partition heal: link up {:?}, first cross-node delivery {heal_time:?} after the heal (bound {:?})",
        linked - healed_at,
        PARTITION_HEAL_BOUND
    );
    assert!(heal_time < PARTITION_HEAL_BOUND, "cross-node delivery resumed only after {heal_time:?}");

    // Phase 3: everyone again gets everyone else's messages.
    chat.publish_each(&everyone, 3, K);
    chat.expect_all(3, &all_pairs(&everyone), K);

    // Across the whole run: no duplicates, no reordering, no phase-2 message across the cut.
    let checked = chat.check(|rx, from, phase| phase == 2 && on_a(rx) != on_a(from));
    println!("MEASURED partition test: {checked} deliveries checked in {:?}", started.elapsed());
}

#[test]
fn a_blackholed_link_is_declared_down_by_silence_and_redialed_when_it_clears() {
    let _serial = serial();
    let started = Instant::now();
    let (a, b, mut chat) = two_nodes();
    let everyone = ["a1", "a2", "b1", "b2"];
    chat.publish_each(&everyone, 1, K);
    chat.expect_all(1, &all_pairs(&everyone), K);

    // Blackhole: bytes vanish in both directions, no end of stream ever reaches a node.
    let (a_downs, b_downs) = (a.downs(2), b.downs(1));
    let (a_silent, b_silent) = (a.silences(), b.silences());
    let (a_dials, b_dials, a_accepts, b_accepts) =
        (a.dials_to(&b), b.dials_to(&a), a.count(ACCEPTED), b.count(ACCEPTED));
    let holed_at = Instant::now();
    a.proxy.set_blackhole(true);
    b.proxy.set_blackhole(true);
    // Meanwhile each side keeps delivering within itself, promptly.
    let bound = LINK_SILENCE_MAX + SILENCE_DETECTION_MARGIN;
    let (mut a_down_at, mut b_down_at) = (None, None);
    let mut local_max = Duration::ZERO;
    while a_down_at.is_none() || b_down_at.is_none() {
        for (from, to) in [("a1", "a2"), ("b1", "b2")] {
            let took = chat.deliver_one(from, to, 2);
            assert!(took < LOCAL_DELIVERY_MAX, "{from} -> {to} took {took:?} with the link blackholed");
            local_max = local_max.max(took);
        }
        if a_down_at.is_none() && a.downs(2) > a_downs {
            a_down_at = Some(Instant::now());
        }
        if b_down_at.is_none() && b.downs(1) > b_downs {
            b_down_at = Some(Instant::now());
        }
        let waited = holed_at.elapsed();
        assert!(
            waited < bound,
            "a blackholed link still up after {waited:?} (A down: {a_down_at:?}, B down: {b_down_at:?})"
        );
        // Paces the local probes; the loop is bounded by `bound` above.
        thread::sleep(PROBE_EVERY);
    }
    let (a_took, b_took) = (a_down_at.unwrap() - holed_at, b_down_at.unwrap() - holed_at);
    println!(
        "MEASURED blackhole detection: A {a_took:?}, B {b_took:?} (LINK_SILENCE_MAX {LINK_SILENCE_MAX:?}, bound {bound:?}); \
         slowest local delivery meanwhile {local_max:?}"
    );
    assert!(
        a.silences() > a_silent && b.silences() > b_silent,
        "both nodes found the link down by its silence, not by an end of stream"
    );
    // Local delivery keeps working once the link is down too.
    chat.publish_each(&everyone, 2, K);
    chat.expect_all(2, &[("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")], K);
    // Both nodes redial into the blackhole before it lifts, and the proxies hold those
    // connections (each node logs the dial, the proxy dials the other node, which logs the
    // accept): they stay silent for good, so each node has to give its handshake up first.
    poll_until("both nodes redial into the blackhole", MESH_TIMEOUT, &[&a, &b], || {
        a.dials_to(&b) > a_dials
            && b.dials_to(&a) > b_dials
            && a.count(ACCEPTED) > a_accepts
            && b.count(ACCEPTED) > b_accepts
            && a.proxy.connections() > 0
            && b.proxy.connections() > 0
    });
    let (a_silent, b_silent) = (a.silences(), b.silences());

    // Lift it: the silent connections stay silent, so the nodes must dial new ones.
    let cleared_at = Instant::now();
    a.proxy.set_blackhole(false);
    b.proxy.set_blackhole(false);
    let linked = wait_linked("the link re-forms after the blackhole", BLACKHOLE_HEAL_BOUND, &[(&a, &[2]), (&b, &[1])]);
    let first = chat.resync(&[&a, &b], &[("a1", "b1"), ("b1", "a1")], cleared_at + BLACKHOLE_HEAL_BOUND);
    let heal_time = first.saturating_duration_since(cleared_at);
    println!(
        "MEASURED blackhole heal: link up {:?}, first cross-node delivery {heal_time:?} after it cleared (bound {:?}, \
         REDIAL_DELAY_MAX {REDIAL_DELAY_MAX:?})",
        linked - cleared_at,
        BLACKHOLE_HEAL_BOUND
    );
    assert!(heal_time < BLACKHOLE_HEAL_BOUND, "cross-node delivery resumed only after {heal_time:?}");
    let dropped = (a.silences() - a_silent, b.silences() - b_silent);
    println!(
        "MEASURED blackhole heal: handshakes dropped for silence after the lift: A {}, B {}",
        dropped.0, dropped.1
    );
    assert!(dropped.0 + dropped.1 > 0, "the link re-formed without a blackholed handshake being given up");

    chat.publish_each(&everyone, 3, K);
    chat.expect_all(3, &all_pairs(&everyone), K);
    let checked = chat.check(|rx, from, phase| phase == 2 && on_a(rx) != on_a(from));
    println!("MEASURED blackhole test: {checked} deliveries checked in {:?}", started.elapsed());
}

#[test]
fn a_slow_link_delivers_in_order_and_never_slows_local_delivery() {
    let _serial = serial();
    let (a, b, mut chat) = two_nodes();
    // The link crosses exactly one of the two proxies (whichever side's dial won); slow that one.
    poll_until("exactly one proxy carries the link", MESH_TIMEOUT, &[&a, &b], || {
        a.proxy.connections() + b.proxy.connections() == 1
    });
    let slow = if a.proxy.connections() == 1 { &a.proxy } else { &b.proxy };
    slow.set_delay(SLOW_LINK_DELAY);

    // One message across shows the delay is in force.
    let across = chat.deliver_one("b1", "a1", 1);
    assert!(across >= SLOW_LINK_DELAY, "b1 -> a1 took {across:?}; the proxy delay is not on the link");
    let back = chat.deliver_one("a1", "b1", 1);
    assert!(back >= SLOW_LINK_DELAY, "a1 -> b1 took {back:?}; the proxy delay is not on the link");

    // A burst crosses while local round trips on both sides stay fast.
    let everyone = ["a1", "a2", "b1", "b2"];
    chat.publish_each(&everyone, 2, K);
    let mut local_max = Duration::ZERO;
    for _ in 0..10 {
        for (from, to) in [("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")] {
            let took = chat.deliver_one(from, to, 3);
            assert!(took < LOCAL_DELIVERY_MAX, "{from} -> {to} took {took:?} behind a slow link");
            local_max = local_max.max(took);
        }
    }
    chat.expect_all(2, &all_pairs(&everyone), K);
    let checked = chat.check(|_, _, _| false);
    println!(
        "MEASURED slow link ({SLOW_LINK_DELAY:?} each way): across {across:?} and {back:?}, slowest local delivery \
         {local_max:?}; {checked} deliveries checked"
    );
}

#[test]
fn a_node_cut_off_from_both_others_rejoins_after_the_heal_and_nothing_is_replayed() {
    let _serial = serial();
    let started = Instant::now();
    let secret = secret_file();
    // A and B are linked over a backbone proxy that only A dials and no node advertises: B
    // dials nobody, and A's link to B stays up all the time, so neither ever learns (or dials)
    // the other's advertised proxy. C knows only advertised proxies (its --peer and gossip),
    // and A and B reach C only through C's: partitioning the three advertised proxies cuts C
    // off from both while A and B keep their link.
    let b_proxy = Proxy::start(free_addr());
    let backbone = Proxy::start(b_proxy.target());
    let b = Node::start_behind(b_proxy, &secret, 2, &[]);
    let a = Node::start(&secret, 1, &[backbone.addr()]);
    wait_linked("A and B linked over the backbone", MESH_TIMEOUT, &[(&a, &[2]), (&b, &[1])]);
    let c = Node::start(&secret, 3, &[a.proxy.addr()]);
    wait_linked("a full mesh", MESH_TIMEOUT, &[(&a, &[2, 3]), (&b, &[1, 3]), (&c, &[1, 2])]);
    let nodes = [&a, &b, &c];
    let mut chat = Chat::connect(&[("a", &a), ("b", &b), ("c", &c)]);
    let routes = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")];
    chat.resync(&nodes, &routes, Instant::now() + MESH_TIMEOUT);
    let everyone = ["a", "b", "c"];
    chat.publish_each(&everyone, 1, K);
    chat.expect_all(1, &all_pairs(&everyone), K);

    // Cut C off: every connection to or from C crosses one of the advertised proxies.
    let (a_ab, b_ab) = (a.downs(2), b.downs(1));
    let (a_c, b_c, c_a, c_b) = (a.downs(3), b.downs(3), c.downs(1), c.downs(2));
    let cut_at = Instant::now();
    for node in nodes {
        node.proxy.partition();
    }
    let detected = poll_until("C cut off from A and B", CUT_DETECTION_TIMEOUT, &nodes, || {
        a.downs(3) > a_c && b.downs(3) > b_c && c.downs(1) > c_a && c.downs(2) > c_b
    });
    println!("MEASURED three nodes: C cut off on all sides {:?} after the partition", detected - cut_at);

    // A and B keep chatting; C is alone, and stays so until its redial backoff is capped.
    chat.publish_each(&everyone, 2, K);
    // (C always dials A, its --peer; it dials B only if gossip told it B's address before B's
    // own dial reached it.)
    let (c_to_a, c_to_b) = (c.dials_to(&a), c.dials_to(&b));
    poll_until("C's redials fail until its backoff is capped", 2 * MESH_TIMEOUT, &nodes, || {
        c.dials_to(&a) >= c_to_a + BACKOFF_CAPPED_AFTER
            && (!c.knows(&b) || c.dials_to(&b) >= c_to_b + BACKOFF_CAPPED_AFTER)
    });
    chat.publish_each(&everyone, 2, K);
    chat.expect_all(2, &[("a", "b"), ("b", "a")], 2 * K);
    assert_eq!((a.downs(2), b.downs(1)), (a_ab, b_ab), "the A-B link went down while only C was cut off");

    let healed_at = Instant::now();
    for node in nodes {
        node.proxy.heal();
    }
    let linked = wait_linked("C rejoins", PARTITION_HEAL_BOUND, &[(&a, &[2, 3]), (&b, &[1, 3]), (&c, &[1, 2])]);
    let first = chat.resync(&nodes, &routes, healed_at + PARTITION_HEAL_BOUND);
    let heal_time = first.saturating_duration_since(healed_at);
    println!(
        "MEASURED three nodes heal: C linked {:?}, first delivery across {heal_time:?} after the heal",
        linked - healed_at
    );
    assert!(heal_time < PARTITION_HEAL_BOUND, "cross-node delivery resumed only after {heal_time:?}");

    chat.publish_each(&everyone, 3, K);
    chat.expect_all(3, &all_pairs(&everyone), K);
    let checked = chat.check(|rx, from, phase| phase == 2 && (rx == "c") != (from == "c"));
    assert_eq!((a.downs(2), b.downs(1)), (a_ab, b_ab), "the A-B link went down during the test");
    println!("MEASURED three-node test: {checked} deliveries checked in {:?}", started.elapsed());
}

/// The bandwidth of the throttled node link in the slow-peer test, per direction.
const THROTTLED_BYTES_PER_SECOND: u64 = 50_000;

/// Messages per second the flooder publishes across the throttled link (1 KiB each: 40 times
/// what the link carries).
const FLOOD_PER_SECOND: u64 = 2_000;

/// Longest the flood runs.
const FLOOD_FOR: Duration = Duration::from_secs(12);

/// A `JOIN` must be answered within the ack-wait bound, one timer tick and this margin.
const JOIN_MARGIN: Duration = Duration::from_secs(2);

/// Publishes 1 KiB messages to `room` on `addr` at [`FLOOD_PER_SECOND`] until `stop` or
/// [`FLOOD_FOR`]; returns how many it published.
fn flood(addr: SocketAddr, room: &str, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let publisher = connect_joined(addr, "flooder", room);
    let room = room.to_string();
    thread::spawn(move || {
        let started = Instant::now();
        let payload = vec![b'f'; 1024];
        let mut sent = 0u64;
        while !stop.load(Ordering::Acquire) && started.elapsed() < FLOOD_FOR {
            let due = (started.elapsed().as_secs_f64() * FLOOD_PER_SECOND as f64) as u64;
            while sent < due {
                if publisher.publish(&room, &payload).is_err() {
                    return sent;
                }
                sent += 1;
            }
            thread::sleep(Duration::from_millis(5)); // Pacing, bounded by FLOOD_FOR above.
        }
        sent
    })
}

/// Reads and drops everything `client` receives until `stop`.
fn drain(mut client: Client, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    thread::spawn(move || {
        let _ = client.set_read_timeout(Some(READ_POLL));
        let mut got = 0;
        while !stop.load(Ordering::Acquire) {
            match client.next_event() {
                Ok(_) => got += 1,
                Err(ClientError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        got
    })
}

/// A node link that is slow but not cut (a grey failure): a `JOIN` on either side is answered
/// within the ack-wait bound and a `PING` behind it at once, and the sender cuts the link once
/// its oldest unsent byte is older than `NODE_LINK_LAG_MAX`, instead of letting deliveries grow
/// late without bound (before: 16–18 s for a `JOINED`, and no cut until 64 MiB were queued).
#[test]
fn a_slow_link_never_holds_a_join_and_is_cut_when_its_backlog_grows_old() {
    use fanout::limits::{INTEREST_ACK_WAIT_MAX, NODE_LINK_LAG_MAX};
    let _serial = serial();
    let (a, b, _chat) = two_nodes();
    poll_until("exactly one proxy carries the link", MESH_TIMEOUT, &[&a, &b], || {
        a.proxy.connections() + b.proxy.connections() == 1
    });
    let slow = if a.proxy.connections() == 1 { &a.proxy } else { &b.proxy };
    slow.set_rate(THROTTLED_BYTES_PER_SECOND);

    // A reader of the flood room on A, a publisher flooding it from B: B's link to A backs up.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = drain(connect_joined(a.server.addr(), "sink", "flood"), stop.clone());
    let flooder = flood(b.server.addr(), "flood", stop.clone());
    let flood_started = Instant::now();
    let (b_downs, b_too_slow) = (b.downs(1), b.count("behind; dropping it"));

    // Wait until the backlog is real: a second of flooding is 40 seconds of link.
    thread::sleep(Duration::from_secs(1)); // Lets the backlog build; not synchronisation.
    let bound = INTEREST_ACK_WAIT_MAX + JOIN_MARGIN;
    for (side, node) in [("A", &a), ("B", &b)] {
        let asked = Instant::now();
        let mut joiner = connect_joined(node.server.addr(), "joiner", &format!("fresh-{side}"));
        let joined = asked.elapsed();
        let pinged = Instant::now();
        joiner.round_trip(7).expect("a PING behind the JOIN");
        let ponged = pinged.elapsed();
        println!("MEASURED slow peer: JOINED on {side} after {joined:?}, PONG behind it {ponged:?}");
        assert!(joined < bound, "JOINED on {side} took {joined:?} behind a slow link (bound {bound:?})");
        assert!(ponged < JOIN_MARGIN, "PONG on {side} took {ponged:?}");
    }

    // B cuts the link for its lag, well before the flood ends.
    let cut_bound = NODE_LINK_LAG_MAX + Duration::from_secs(5);
    let cut_at = poll_until("B cuts its slow link to A", cut_bound + Duration::from_secs(2), &[&a, &b], || {
        b.count("behind; dropping it") > b_too_slow && b.downs(1) > b_downs
    });
    println!("MEASURED slow peer: B cut its link {:?} after the flood started", cut_at - flood_started);
    stop.store(true, Ordering::Release);
    let published = flooder.join().expect("the flooder");
    let received = reader.join().expect("the reader");
    println!("MEASURED slow peer: {published} published on B, {received} received on A");
    assert!(received < published, "a link 40 times too slow delivered everything");
}
