//! Presence across a cluster of three two-core nodes, through the real binary:
//!
//! * after clients join, leave, hang up and rename on every core of every node (a seeded
//!   schedule), every client's `WHO` and every line client's `/who` lists exactly the room's
//!   true members;
//! * a node killed with SIGKILL has its members dropped from the other nodes' views within the
//!   failure-detection bound, and its restart (same addresses) brings its new members back;
//! * a node partitioned away through the fault proxy leaves each side listing the members it can
//!   reach, and after the heal every view converges with no ghost and no missing member;
//! * a node whose links go silent (blackholed: no close ever arrives) has its members dropped on
//!   both sides within the detection bound of the keepalive.
//!
//! A client that watches the room (`JOIN` with the `PRESENCE` flag) also keeps the view its
//! `MEMBERS` and `PRESENCE` frames imply, checking each frame against it (no join of a member it
//! lists, no leave or rename of one it does not); that view must equal the truth too.
//!
//! The tests run one at a time, so a measured time is not that of three clusters sharing the
//! machine; measured times are printed as `MEASURED ...` lines (`--nocapture` shows them). Every
//! wait is a read with a timeout or a bounded poll of `WHO` (nothing tells a client that another
//! node's change has arrived). `FANOUT_SEED=N` replays one schedule of the churn test.
//!
//! The ignored test at the end measures what presence costs for a room of 10,000 members
//! (memory, bytes on a relink, time to converge after a heal); see `benches/README-presence.md`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use fanout::client::{Client, Event};
use fanout::codec::{Members, PresenceEvent, PresenceKind};
use support::cluster::{free_addr, secret_file, start_behind, Node};
use support::proxy::Proxy;
use support::rng::Rng;
use support::{connect, LineConn, RawConn, Server};

/// The room of every test.
const ROOM: &str = "hall";

/// Documented: a node link is declared down 3.0–3.2 s after its last byte (`protocol.md`,
/// failures), so a crashed node's members are gone from every other view within this. A killed
/// process's sockets are usually reset at once, but the bound holds either way.
const FAILURE_DETECTION_BOUND: Duration = Duration::from_millis(3200);

/// Documented: after a partition heals, links re-form within the redial cap (2 s) plus a
/// handshake — under 3 s after a refused dial, and the proxy refuses dials while partitioned —
/// and presence converges one round trip after the link is up.
const HEAL_BOUND: Duration = Duration::from_secs(3);

/// Documented: with links up, every view is identical one link round trip after the last change
/// (milliseconds on loopback); this is the time a poll of every client's `WHO` may take.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(2);

/// Slack on top of every bound for a loaded machine (scheduling, the relay to the other core,
/// and the polls of `WHO` themselves).
const SLACK: Duration = Duration::from_secs(2);

/// How far apart the polls of one client's `WHO` are.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Most frames a watcher may have queued before the `PONG` it waits for.
const EVENTS_MAX: usize = 10_000;

/// Most lines a line client may have queued before the answer it waits for.
const LINES_MAX: usize = 10_000;

/// Runs the tests of this file one at a time (a poisoned lock from a failed test is fine).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who is in the room: session id → name.
type View = BTreeMap<u64, String>;

/// A binary client of a test and what the test knows of it.
struct Binary {
    name: String,
    /// Index of its node in the test's list.
    node: usize,
    client: Client,
    in_room: bool,
    /// For a client that watches the room: the members its `MEMBERS` and `PRESENCE` imply.
    watched: Option<View>,
}

impl Binary {
    /// Connects `name` to `addr` (node `node`) and joins the room, watching it if `watch`.
    fn join(addr: SocketAddr, node: usize, name: &str, watch: bool) -> Binary {
        let mut client = connect(addr, name);
        let watched = if watch {
            let members = client.join_with_presence(ROOM).unwrap_or_else(|e| panic!("{name} joins watching: {e}"));
            Some(view_of(&members, name))
        } else {
            client.join(ROOM).unwrap_or_else(|e| panic!("{name} joins: {e}"));
            None
        };
        Binary { name: name.to_string(), node, client, in_room: true, watched }
    }

    fn session_id(&self) -> u64 {
        self.client.welcome().session_id
    }

    /// Reads every frame queued before the answer to a fresh `PING` and applies the `PRESENCE`s
    /// to the watched view.
    fn catch_up(&mut self, nonce: u64) {
        let Some(view) = self.watched.as_mut() else {
            return;
        };
        self.client.sender().ping(nonce).unwrap_or_else(|e| panic!("{}: PING: {e}", self.name));
        for _ in 0..EVENTS_MAX {
            match self.client.next_event() {
                Ok(Event::Presence(p)) => apply(view, &p, &self.name),
                Ok(Event::Pong(n)) if n == nonce => return,
                other => panic!("{}: expected PRESENCE or PONG {nonce}, got {other:?}", self.name),
            }
        }
        panic!("{}: more than {EVENTS_MAX} frames before PONG {nonce}", self.name);
    }
}

/// A line-mode client (`nc`) in the room.
struct Line {
    name: String,
    node: usize,
    conn: LineConn,
    session_id: u64,
}

/// The members `MEMBERS` lists, checking that it lists them all (`total`) and only once.
fn view_of(members: &Members, who: &str) -> View {
    assert_eq!(members.room, ROOM.as_bytes(), "{who}: MEMBERS of another room");
    let view: View =
        members.members.iter().map(|m| (m.session_id, String::from_utf8_lossy(&m.name).into_owned())).collect();
    assert_eq!(view.len(), members.members.len(), "{who}: a member listed twice: {members:?}");
    assert_eq!(members.total as usize, view.len(), "{who}: MEMBERS total disagrees with its list: {members:?}");
    view
}

/// Applies one `PRESENCE` to a watched view, checking that it makes sense there.
fn apply(view: &mut View, p: &PresenceEvent, who: &str) {
    assert_eq!(p.room, ROOM.as_bytes(), "{who}: PRESENCE of another room: {p:?}");
    let name = String::from_utf8_lossy(&p.name).into_owned();
    match p.kind {
        PresenceKind::Joined => {
            assert!(view.insert(p.session_id, name).is_none(), "{who}: told of a join of a listed member: {p:?}")
        }
        PresenceKind::Left | PresenceKind::Lost => {
            assert!(view.remove(&p.session_id).is_some(), "{who}: told of a leave of an unlisted member: {p:?}")
        }
        PresenceKind::Renamed => {
            assert!(view.insert(p.session_id, name).is_some(), "{who}: told of a rename of an unlisted member: {p:?}")
        }
    }
}

/// What `got` lacks and has too many compared with `want`, for failure messages.
fn diff(got: &View, want: &View) -> String {
    let missing: Vec<_> = want.iter().filter(|(id, name)| got.get(id) != Some(name)).collect();
    let ghosts: Vec<_> = got.iter().filter(|(id, name)| want.get(id) != Some(name)).collect();
    format!("missing {missing:?}, ghosts {ghosts:?}")
}

/// The true members: every binary and line client in the room, of the nodes in `nodes`.
fn truth(binaries: &[Binary], lines: &[Line], nodes: &[usize]) -> View {
    let binary =
        binaries.iter().filter(|b| b.in_room && nodes.contains(&b.node)).map(|b| (b.session_id(), b.name.clone()));
    let line = lines.iter().filter(|l| nodes.contains(&l.node)).map(|l| (l.session_id, l.name.clone()));
    binary.chain(line).collect()
}

/// Polls the `WHO` of every binary client of `nodes` until it lists exactly `want`, within
/// `within` of `since`; returns when the last one did. Then every watcher of those nodes must
/// have been told exactly as much.
fn await_views(
    what: &str,
    binaries: &mut [Binary],
    nodes: &[usize],
    want: &View,
    since: Instant,
    within: Duration,
) -> Duration {
    let deadline = since + within;
    let mut slowest = (Duration::ZERO, String::new());
    for b in binaries.iter_mut().filter(|b| nodes.contains(&b.node)) {
        loop {
            let members = b.client.who(ROOM).unwrap_or_else(|e| panic!("{what}: {} WHO: {e}", b.name));
            let got = view_of(&members, &b.name);
            if got == *want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} (node {}) still lists {} members {within:?} after the change, not {}: {}",
                b.name,
                b.node + 1,
                got.len(),
                want.len(),
                diff(&got, want)
            );
            // A bounded poll (by the deadline): nothing tells a client that a change arrived.
            thread::sleep(POLL_EVERY);
        }
        let at = since.elapsed();
        if at > slowest.0 {
            slowest = (at, b.name.clone());
        }
    }
    for (i, b) in binaries.iter_mut().enumerate().filter(|(_, b)| nodes.contains(&b.node)) {
        b.catch_up(i as u64);
        if let Some(view) = &b.watched {
            assert!(view == want, "{what}: watcher {} was told of {}", b.name, diff(view, want));
        }
    }
    eprintln!("{what}: every view matched {:?} after the change (last: {})", slowest.0, slowest.1);
    slowest.0
}

/// Reads lines of `line` until `wanted` matches one, skipping presence lines; returns it.
fn line_until(line: &mut Line, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    for _ in 0..LINES_MAX {
        let text = line.conn.read_line().unwrap_or_else(|e| panic!("{what}: {} reading: {e}", line.name));
        if wanted(&text) {
            return text;
        }
        let presence = text.ends_with(" joined\n") || text.contains(" left") || text.contains(" is now ");
        assert!(text.starts_with("* ") && presence, "{what}: {} got {text:?}", line.name);
    }
    panic!("{what}: {} got {LINES_MAX} lines without the one it waits for", line.name);
}

/// Asks every line client `/who` and checks that it names exactly the members of `want`, itself
/// marked `(you)`.
fn check_line_views(what: &str, lines: &mut [Line], want: &View) {
    let prefix = format!("* {} in {ROOM}: ", want.len());
    for line in lines.iter_mut() {
        line.conn.send(format!("/who {ROOM}\n").as_bytes());
        let answer = line_until(line, what, |t| t.contains(&format!(" in {ROOM}: ")));
        let listed = answer.strip_prefix(&prefix).unwrap_or_else(|| panic!("{what}: {} /who: {answer:?}", line.name));
        let mut names: Vec<String> = Vec::new();
        for entry in listed.trim_end().split(", ") {
            match entry.strip_suffix(" (you)") {
                Some(own) => {
                    assert_eq!(own, line.name, "{what}: {} /who marks another as itself: {answer:?}", line.name);
                    names.push(own.to_string());
                }
                None => names.push(entry.to_string()),
            }
        }
        names.sort();
        let mut wanted: Vec<String> = want.values().cloned().collect();
        wanted.sort();
        assert_eq!(names, wanted, "{what}: {} /who: {answer:?}", line.name);
        assert!(answer.contains(&format!("{} (you)", line.name)), "{what}: {} not marked (you): {answer:?}", line.name);
    }
}

/// Connects a line client to node `node`, moves it to the room and learns its session id from
/// `asker`'s `WHO` (a binary client of the same node).
fn line_join(addr: SocketAddr, node: usize, asker: &mut Binary) -> Line {
    let mut conn = LineConn::connect(addr);
    conn.send(format!("/join {ROOM}\n").as_bytes());
    let greeting = conn.read_line().expect("a greeting");
    let name = greeting
        .strip_prefix("* welcome ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("expected a greeting, got {greeting:?}"));
    let mut line = Line { name, node, conn, session_id: 0 };
    let joined = format!("* you are in {ROOM} with ");
    line_until(&mut line, "line join", |t| t.starts_with(&joined));
    let deadline = Instant::now() + CONVERGENCE_BOUND + SLACK;
    line.session_id = loop {
        let members = asker.client.who(ROOM).expect("WHO");
        if let Some(m) = members.members.iter().find(|m| m.name == line.name.as_bytes()) {
            break m.session_id;
        }
        assert!(Instant::now() < deadline, "{} never listed {}: {members:?}", asker.name, line.name);
        // A bounded poll: the line client may sit on the other core.
        thread::sleep(POLL_EVERY);
    };
    line
}

/// `/nick` for a line client; waits for the confirmation.
fn rename(line: &mut Line, name: &str) {
    line.conn.send(format!("/nick {name}\n").as_bytes());
    let done = format!("* you are now {name}\n");
    line_until(line, "rename", |t| t == done);
    line.name = name.to_string();
}

/// Three two-core nodes on fixed client and cluster addresses, all linked.
fn three_nodes(secret: &Path) -> (Vec<Node>, Vec<(SocketAddr, SocketAddr)>) {
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..3).map(|_| (free_addr(), free_addr())).collect();
    let mut nodes = Vec::new();
    for (i, (listen, cluster)) in addrs.iter().enumerate() {
        let peers: Vec<SocketAddr> = addrs[..i].iter().map(|(_, c)| *c).collect();
        nodes.push(Node::start_on(2, *listen, *cluster, secret, i as u16 + 1, &peers));
    }
    for node in &nodes {
        node.wait_links_up(2);
    }
    (nodes, addrs)
}

/// The seed of the churn schedule: `FANOUT_SEED`, or a fixed one.
fn seed() -> u64 {
    std::env::var("FANOUT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0013)
}

/// Binary clients connected at most at once in the churn test.
const CHURN_CLIENTS_MAX: usize = 24;

/// Steps of the churn schedule.
const CHURN_STEPS: usize = 60;

/// One step of the churn schedule.
#[derive(Debug, Clone, Copy)]
enum Step {
    Connect,
    Leave,
    Rejoin,
    HangUp,
    Rename,
}

#[test]
fn clients_joining_and_leaving_on_every_core_of_three_nodes_all_list_the_true_members() {
    let _serial = serial();
    let seed = seed();
    eprintln!("seed {seed} (FANOUT_SEED={seed} replays this schedule)");
    let mut rng = Rng::new(seed);
    let secret = secret_file("presence-churn", "presence churn secret");
    let (nodes, _) = three_nodes(&secret);
    let addr = |node: usize| nodes[node].server.addr();

    // A watcher and a line client on every node, there all along.
    let mut binaries: Vec<Binary> =
        (0..3).map(|node| Binary::join(addr(node), node, &format!("watcher{}", node + 1), true)).collect();
    let mut lines: Vec<Line> = (0..3).map(|node| line_join(addr(node), node, &mut binaries[node])).collect();

    let mut counter = 0;
    let mut renames = 0;
    let mut steps: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_change = Instant::now();
    for _ in 0..CHURN_STEPS {
        // Only the clients that do not watch come and go: the watchers' views are checked at the end.
        let movable = |b: &Binary, in_room: bool| b.watched.is_none() && b.in_room == in_room;
        let can_connect = binaries.len() < CHURN_CLIENTS_MAX;
        let step = match rng.below(10) {
            0..=3 if can_connect => Step::Connect,
            4 | 5 if binaries.iter().any(|b| movable(b, true)) => Step::Leave,
            6 if binaries.iter().any(|b| movable(b, false)) => Step::Rejoin,
            7 | 8 if binaries.iter().any(|b| b.watched.is_none()) => Step::HangUp,
            _ if can_connect => Step::Connect,
            _ => Step::Rename,
        };
        *steps.entry(format!("{step:?}")).or_default() += 1;
        match step {
            Step::Connect => {
                counter += 1;
                let node = rng.below(3);
                let watch = rng.chance(1, 5);
                let b = Binary::join(addr(node), node, &format!("m{counter}"), watch);
                binaries.push(b);
            }
            Step::Leave | Step::Rejoin => {
                let in_room = matches!(step, Step::Leave);
                let candidates: Vec<usize> = (0..binaries.len()).filter(|&i| movable(&binaries[i], in_room)).collect();
                let b = &mut binaries[candidates[rng.below(candidates.len())]];
                let result = if in_room { b.client.leave(ROOM) } else { b.client.join(ROOM) };
                result.unwrap_or_else(|e| panic!("{} {step:?}: {e}", b.name));
                b.in_room = !in_room;
            }
            Step::HangUp => {
                let candidates: Vec<usize> = (0..binaries.len()).filter(|&i| binaries[i].watched.is_none()).collect();
                drop(binaries.remove(candidates[rng.below(candidates.len())]));
            }
            Step::Rename => {
                renames += 1;
                let line = &mut lines[rng.below(3)];
                let name = format!("line{}r{renames}", line.node + 1);
                rename(line, &name);
            }
        }
        last_change = Instant::now();
    }
    let placed: Vec<(String, u16, u16)> =
        binaries.iter().map(|b| (b.name.clone(), b.client.welcome().node_id, b.client.welcome().core_id)).collect();
    eprintln!("steps {steps:?}; binary clients (name, node, core): {placed:?}");
    let cores: BTreeSet<(u16, u16)> = placed.iter().map(|(_, node, core)| (*node, *core)).collect();
    eprintln!("clients sit on {} of the 6 cores", cores.len());

    let want = truth(&binaries, &lines, &[0, 1, 2]);
    let took = await_views("after the churn", &mut binaries, &[0, 1, 2], &want, last_change, CONVERGENCE_BOUND + SLACK);
    check_line_views("after the churn", &mut lines, &want);
    println!(
        "MEASURED churn: {} members, {} binary and 3 line clients on 3 nodes × 2 cores: every WHO true {took:?} after the last change",
        want.len(),
        binaries.len()
    );
}

/// Binary members per node in the kill and partition tests (besides one watcher per node).
const MEMBERS_PER_NODE: usize = 3;

/// A watcher and [`MEMBERS_PER_NODE`] plain members on node `node`, names prefixed `prefix`.
fn members_on(addr: SocketAddr, node: usize, prefix: &str) -> Vec<Binary> {
    let mut out = vec![Binary::join(addr, node, &format!("{prefix}watch{}", node + 1), true)];
    out.extend((0..MEMBERS_PER_NODE).map(|i| Binary::join(addr, node, &format!("{prefix}n{}m{i}", node + 1), false)));
    out
}

/// Reads the watcher's frames until it has been told that every member of `gone` was lost.
fn await_lost(watcher: &mut Binary, gone: &View, deadline: Instant) {
    let started = Instant::now();
    let view = watcher.watched.as_mut().expect("a watcher");
    while gone.keys().any(|id| view.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        watcher.client.set_read_timeout(Some(left)).expect("set read timeout");
        match watcher.client.next_event() {
            Ok(Event::Presence(p)) => {
                assert_eq!(p.kind, PresenceKind::Lost, "{}: {p:?}", watcher.name);
                assert!(gone.contains_key(&p.session_id), "{}: lost a member that is still up: {p:?}", watcher.name);
                apply(view, &p, &watcher.name);
            }
            other => panic!(
                "{}: waiting for the loss of {}: got {other:?} after {:?}",
                watcher.name,
                diff(&View::new(), gone),
                started.elapsed()
            ),
        }
    }
    watcher.client.set_read_timeout(Some(support::IO_TIMEOUT)).expect("set read timeout");
}

#[test]
fn a_killed_node_s_members_vanish_within_the_detection_bound_and_its_restart_brings_new_ones_back() {
    let _serial = serial();
    let secret = secret_file("presence-kill", "presence kill secret");
    let (nodes, addrs) = three_nodes(&secret);
    let mut nodes: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let mut binaries: Vec<Binary> = (0..3).flat_map(|n| members_on(addrs[n].0, n, "")).collect();
    let all = truth(&binaries, &[], &[0, 1, 2]);
    await_views("before the kill", &mut binaries, &[0, 1, 2], &all, Instant::now(), CONVERGENCE_BOUND + SLACK);

    // SIGKILL node 3; its clients see their connections end.
    let gone = truth(&binaries, &[], &[2]);
    let killed = Instant::now();
    drop(nodes[2].take());
    binaries.retain(|b| b.node != 2);
    let deadline = killed + FAILURE_DETECTION_BOUND + SLACK;
    let mut detected = Vec::new();
    // Watchers are read one after the other, so the later ones' times are upper bounds.
    for w in binaries.iter_mut().filter(|b| b.watched.is_some()) {
        await_lost(w, &gone, deadline);
        detected.push((w.name.clone(), killed.elapsed()));
    }
    let survivors = truth(&binaries, &[], &[0, 1]);
    let listed =
        await_views("after the kill", &mut binaries, &[0, 1], &survivors, killed, FAILURE_DETECTION_BOUND + SLACK);
    println!(
        "MEASURED kill: watchers told of the loss after {detected:?}; every WHO true {listed:?} after SIGKILL \
         (bound {FAILURE_DETECTION_BOUND:?} + slack {SLACK:?})"
    );

    // Node 3 comes back on its addresses; its clients reconnect under their old names.
    let restarted = Instant::now();
    let peers = [addrs[0].1, addrs[1].1];
    let three = Node::start_on(2, addrs[2].0, addrs[2].1, &secret, 3, &peers);
    three.wait_links_up(2);
    let linked = restarted.elapsed();
    nodes[2] = Some(three);
    binaries.extend(members_on(addrs[2].0, 2, ""));
    let back = truth(&binaries, &[], &[0, 1, 2]);
    assert!(back.keys().all(|id| !gone.contains_key(id)), "a restarted node hands out new session ids");
    let took = await_views(
        "after the restart",
        &mut binaries,
        &[0, 1, 2],
        &back,
        restarted,
        linked + CONVERGENCE_BOUND + SLACK,
    );
    println!("MEASURED restart: node 3 linked {linked:?} after its start; every WHO true {took:?} after its start");
}

/// A node whose cluster listener is reachable only through its proxy.
struct ProxiedNode {
    server: Server,
    proxy: Proxy,
}

impl ProxiedNode {
    fn start(proxy: Proxy, secret: &Path, id: u16, peers: &[SocketAddr], extra: &[&str]) -> ProxiedNode {
        let server = start_behind(&proxy, secret, id, peers, extra);
        ProxiedNode { server, proxy }
    }

    /// Node links up minus down, from the log.
    fn links_up(&self) -> usize {
        let text = self.server.log_text();
        let ups = text.lines().filter(|l| l.contains("node link") && l.contains(" up: node ")).count();
        let downs = text.lines().filter(|l| l.contains("node link") && l.contains(" is down")).count();
        ups.saturating_sub(downs)
    }
}

/// Polls the logs of `nodes` until each has `want` node links up; returns when they had.
fn await_links(what: &str, nodes: &[&ProxiedNode], want: &[usize], within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if nodes.iter().zip(want).all(|(n, w)| n.links_up() == *w) {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            let mut logs = String::new();
            for (i, n) in nodes.iter().enumerate() {
                let _ = write!(logs, "\n--- node {} ---\n{}", i + 1, n.server.log_text());
            }
            panic!("{what}: links never {want:?}{logs}");
        }
        // A bounded poll of the logs: a link's state has no event a test can wait on.
        thread::sleep(POLL_EVERY);
    }
}

/// Failed redials after which a node's backoff (100 ms doubling) has reached its 2 s cap.
const BACKOFF_CAPPED_AFTER: usize = 5;

/// Waits until node 3 (cut off) has failed to redial node 1 often enough for its backoff to be at
/// its cap: the worst case of the heal bound. A bounded poll of its log.
fn await_backoff_capped(nodes: &[ProxiedNode]) {
    let dialed = format!("dialed node at {}", nodes[0].proxy.addr());
    let before = nodes[2].server.log_count(&dialed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[2].server.log_count(&dialed) < before + BACKOFF_CAPPED_AFTER {
        assert!(Instant::now() < deadline, "node 3 stopped redialing node 1:\n{}", nodes[2].server.log_text());
        // A bounded poll of the log: a dial has no event a test can wait on.
        thread::sleep(POLL_EVERY);
    }
}

/// Three proxied nodes where partitioning the three proxies cuts node 3 off from both others,
/// while nodes 1 and 2 stay linked over a backbone proxy that no node advertises (so neither
/// ever dials the other's advertised proxy). Returns the nodes and the backbone.
fn three_nodes_one_cuttable(secret: &Path, extra: &[&str]) -> (Vec<ProxiedNode>, Proxy) {
    let b_proxy = Proxy::start(free_addr());
    let backbone = Proxy::start(b_proxy.target());
    let b = ProxiedNode::start(b_proxy, secret, 2, &[], extra);
    let a = ProxiedNode::start(Proxy::start(free_addr()), secret, 1, &[backbone.addr()], extra);
    await_links("nodes 1 and 2 linked", &[&a, &b], &[1, 1], support::cluster::MESH_TIMEOUT);
    let c = ProxiedNode::start(Proxy::start(free_addr()), secret, 3, &[a.proxy.addr()], extra);
    await_links("a full mesh", &[&a, &b, &c], &[2, 2, 2], support::cluster::MESH_TIMEOUT);
    (vec![a, b, c], backbone)
}

#[test]
fn each_side_of_a_partition_lists_what_it_reaches_and_the_heal_converges_with_no_ghost_and_none_missing() {
    let _serial = serial();
    let secret = secret_file("presence-partition", "presence partition secret");
    let (nodes, _backbone) = three_nodes_one_cuttable(&secret, &[]);
    let addr = |node: usize| nodes[node].server.addr();
    let mut binaries: Vec<Binary> = (0..3).flat_map(|n| members_on(addr(n), n, "")).collect();
    let all = truth(&binaries, &[], &[0, 1, 2]);
    await_views("before the partition", &mut binaries, &[0, 1, 2], &all, Instant::now(), CONVERGENCE_BOUND + SLACK);

    let cut = Instant::now();
    for node in &nodes {
        node.proxy.partition();
    }
    let (ab, c) = (truth(&binaries, &[], &[0, 1]), truth(&binaries, &[], &[2]));
    let side_ab =
        await_views("nodes 1+2 in the partition", &mut binaries, &[0, 1], &ab, cut, FAILURE_DETECTION_BOUND + SLACK);
    let side_c = await_views("node 3 in the partition", &mut binaries, &[2], &c, cut, FAILURE_DETECTION_BOUND + SLACK);
    println!("MEASURED partition: nodes 1+2 list their side {side_ab:?}, node 3 its own {side_c:?} after the cut");

    // Changes on both sides while apart: one leaves on node 1, one hangs up on node 2, one joins
    // and one leaves on node 3.
    let leaver = binaries.iter().position(|b| b.name == "n1m0").expect("n1m0");
    binaries[leaver].client.leave(ROOM).expect("n1m0 leaves");
    binaries[leaver].in_room = false;
    binaries.retain(|b| b.name != "n2m1");
    binaries.push(Binary::join(addr(2), 2, "n3late", false));
    let leaver = binaries.iter().position(|b| b.name == "n3m2").expect("n3m2");
    binaries[leaver].client.leave(ROOM).expect("n3m2 leaves");
    binaries[leaver].in_room = false;
    let changed = Instant::now();
    let (ab, c) = (truth(&binaries, &[], &[0, 1]), truth(&binaries, &[], &[2]));
    await_views("nodes 1+2 after changes apart", &mut binaries, &[0, 1], &ab, changed, CONVERGENCE_BOUND + SLACK);
    await_views("node 3 after changes apart", &mut binaries, &[2], &c, changed, CONVERGENCE_BOUND + SLACK);
    await_backoff_capped(&nodes);

    let healed = Instant::now();
    for node in &nodes {
        node.proxy.heal();
    }
    // Members come and go on every node while the links re-form, so that some changes race a
    // link's first frames, and a few more right after.
    let mut changes = 0;
    let mut linked = None;
    let mut after_link = 0;
    while after_link < RACING_AFTER_LINK {
        assert!(healed.elapsed() < HEAL_BOUND + SLACK, "links not up again:\n{}", nodes[2].server.log_text());
        if linked.is_none() && nodes.iter().all(|n| n.links_up() == 2) {
            linked = Some(healed.elapsed());
        }
        after_link += usize::from(linked.is_some());
        changes += 1;
        race_change(&mut binaries, changes, addr);
        // Paces the changes (a bounded loop: the assertion above ends it).
        thread::sleep(POLL_EVERY);
    }
    let last_change = Instant::now();
    let linked = linked.expect("the loop ends only after the links are up");
    let everyone = truth(&binaries, &[], &[0, 1, 2]);
    let took =
        await_views("after the heal", &mut binaries, &[0, 1, 2], &everyone, last_change, CONVERGENCE_BOUND + SLACK);
    println!(
        "MEASURED heal: links up {linked:?} after the heal, {changes} changes racing it; every WHO true {:?} after the \
         heal ({took:?} after the last change; bound {HEAL_BOUND:?} + slack {SLACK:?})",
        last_change - healed + took,
    );
}

/// Changes made after the links are up again (they race its first frames).
const RACING_AFTER_LINK: usize = 5;

/// The `n`th change while links re-form: odd ones join a new member on node `n % 3`, even
/// ones hang up the oldest such member still connected.
fn race_change(binaries: &mut Vec<Binary>, n: usize, addr: impl Fn(usize) -> SocketAddr) {
    if n % 2 == 1 {
        let node = n % 3;
        binaries.push(Binary::join(addr(node), node, &format!("race{n}"), false));
    } else if let Some(oldest) = binaries.iter().position(|b| b.name.starts_with("race")) {
        drop(binaries.remove(oldest));
    }
}

#[test]
fn a_node_gone_silent_has_its_members_dropped_on_both_sides_within_the_detection_bound() {
    let _serial = serial();
    let secret = secret_file("presence-silence", "presence silence secret");
    let (nodes, _backbone) = three_nodes_one_cuttable(&secret, &[]);
    let addr = |node: usize| nodes[node].server.addr();
    let mut binaries: Vec<Binary> = (0..3).flat_map(|n| members_on(addr(n), n, "")).collect();
    let all = truth(&binaries, &[], &[0, 1, 2]);
    await_views("before the silence", &mut binaries, &[0, 1, 2], &all, Instant::now(), CONVERGENCE_BOUND + SLACK);

    // Node 3's links go silent, as when its machine dies or a firewall drops everything: no close
    // reaches anyone, only the keepalive silence tells.
    let (ab, c) = (truth(&binaries, &[], &[0, 1]), truth(&binaries, &[], &[2]));
    let silent = Instant::now();
    for node in &nodes {
        node.proxy.set_blackhole(true);
    }
    let deadline = silent + FAILURE_DETECTION_BOUND + SLACK;
    let mut detected = Vec::new();
    // Watchers are read one after the other, so the later ones' times are upper bounds.
    for w in binaries.iter_mut().filter(|b| b.watched.is_some()) {
        let gone = if w.node == 2 { &ab } else { &c };
        await_lost(w, gone, deadline);
        detected.push((w.name.clone(), silent.elapsed()));
    }
    let side_ab = await_views("nodes 1+2, node 3 silent", &mut binaries, &[0, 1], &ab, silent, deadline - silent);
    let side_c = await_views("node 3, silent to the others", &mut binaries, &[2], &c, silent, deadline - silent);
    println!(
        "MEASURED silence: watchers told of the loss after {detected:?}; every WHO true {side_ab:?} (nodes 1+2) and \
         {side_c:?} (node 3) after the links went silent (bound {FAILURE_DETECTION_BOUND:?} + slack {SLACK:?})"
    );
}

// ----- the cost of a large room (a measurement, run by hand) -----

/// Members of the measured room (`FANOUT_PRESENCE_MEMBERS` overrides).
const COST_MEMBERS: usize = 10_000;

/// Partition–heal cycles measured (`FANOUT_PRESENCE_CYCLES` overrides).
const COST_CYCLES: usize = 3;

/// `fanout bench` runs with and without the large room (`FANOUT_PRESENCE_BENCH_RUNS`; 0: none).
const COST_BENCH_RUNS: usize = 3;

/// The measured room.
const BIG_ROOM: &str = "big";

/// How long the measured room may take to converge (10,000 joins, relinks) before the run fails.
const COST_TIMEOUT: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The name of member `i` of node `node` in the measured room.
fn big_name(node: usize, i: usize) -> String {
    format!("p{}-{i:05}", node + 1)
}

/// Bytes of one `PRESENCE` peer frame (header included) for `name` in the measured room.
fn presence_frame_bytes(name: &str) -> usize {
    // header 5, kind 1, session id 8, room length 1 + room, name length 1 + name
    5 + 1 + 8 + 1 + BIG_ROOM.len() + 1 + name.len()
}

/// Connects `count` members of the measured room to `addr`, from one thread: raw connections,
/// one descriptor each (a `Client` holds two).
fn big_members(addr: SocketAddr, node: usize, count: usize) -> thread::JoinHandle<Vec<RawConn>> {
    thread::spawn(move || {
        (0..count)
            .map(|i| {
                let mut member = RawConn::greeted(addr, &big_name(node, i));
                member.join(BIG_ROOM);
                member
            })
            .collect()
    })
}

/// Polls each probe's `WHO` of the measured room until its total is the wanted one; returns when
/// the last one was.
fn await_totals(what: &str, probes: &mut [Client], want: &[usize]) -> Instant {
    let deadline = Instant::now() + COST_TIMEOUT;
    for (i, (probe, want)) in probes.iter_mut().zip(want).enumerate() {
        loop {
            let total = probe.who(BIG_ROOM).unwrap_or_else(|e| panic!("{what}: probe {} WHO: {e}", i + 1)).total;
            if total as usize == *want {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: node {} lists {total}, not {want}", i + 1);
            // A bounded poll: nothing tells a client that a change arrived.
            thread::sleep(Duration::from_millis(5));
        }
    }
    Instant::now()
}

/// Partitions every proxy and waits until node 3 is alone and every view shows it.
fn cut_node_three(nodes: &[ProxiedNode], probes: &mut [Client], counts: &[usize]) {
    for node in nodes {
        node.proxy.partition();
    }
    await_links("node 3 cut off", &[&nodes[0], &nodes[1], &nodes[2]], &[1, 1, 0], COST_TIMEOUT);
    let side = counts[0] + counts[1];
    await_totals("apart", probes, &[side, side, counts[2]]);
    await_backoff_capped(nodes);
}

/// Median of `values` (the middle one, or the lower middle).
fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    sorted[(sorted.len() - 1) / 2]
}

/// One `fanout bench` run: messages delivered per second, and the server's CPU time per delivery.
#[derive(Debug, Clone, Copy)]
struct BenchRun {
    delivered_per_second: f64,
    server_cpu_ns_per_delivery: f64,
}

/// Runs `fanout bench` (100 subscribers, 1 publisher, 64 B, unbounded) against `addr`, whose
/// process is `pid`.
fn bench_run(addr: SocketAddr, pid: u32) -> BenchRun {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--addr", &addr.to_string(), "--subscribers", "100", "--publishers", "1", "--size", "64"])
        .args(["--duration", "3", "--warmup", "1", "--json", "--server-pid", &pid.to_string()])
        .output()
        .expect("run fanout bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = support::json::Json::parse(stdout.lines().last().expect("a JSON line"));
    assert_eq!(report.int("lost"), 0, "the bench lost messages: {stdout}");
    let delivered = report.int("delivered").max(1) as f64;
    BenchRun {
        delivered_per_second: report.num("delivered_per_sec"),
        server_cpu_ns_per_delivery: report.num("server_cpu_s") * 1e9 / delivered,
    }
}

/// The medians of several bench runs, for printing.
fn bench_medians(runs: &[BenchRun]) -> String {
    let rates: Vec<f64> = runs.iter().map(|r| r.delivered_per_second).collect();
    let cpu: Vec<f64> = runs.iter().map(|r| r.server_cpu_ns_per_delivery).collect();
    format!(
        "{rates:.0?} delivered/s (median {:.0}), {cpu:.1?} ns of server CPU per delivery (median {:.1})",
        median(&rates),
        median(&cpu)
    )
}

#[test]
#[ignore = "a measurement with 10,000 connections (about 40 s): cargo test --release --test presence_cluster -- --ignored --nocapture"]
fn cost_of_a_room_of_ten_thousand_members_across_three_nodes() {
    let _serial = serial();
    let members = env_or("FANOUT_PRESENCE_MEMBERS", COST_MEMBERS);
    let cycles = env_or("FANOUT_PRESENCE_CYCLES", COST_CYCLES).max(1);
    let bench_runs = env_or("FANOUT_PRESENCE_BENCH_RUNS", COST_BENCH_RUNS);
    // Each member is a connection: this process holds `members` sockets (each node raises its own
    // limit to the hard limit at start).
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(limit as usize > members + 1_000, "{members} members need more descriptors than {limit}: ulimit -n");
    let secret = secret_file("presence-cost", "presence cost secret");
    // The members never answer a PING: the server must not time them out during the run.
    let (nodes, _backbone) = three_nodes_one_cuttable(&secret, &["--ping-interval-ms", "3600000"]);
    let rss = |nodes: &[ProxiedNode]| -> Vec<u64> { nodes.iter().map(|n| n.server.rss_kib()).collect() };
    let proxied_bytes = |nodes: &[ProxiedNode]| -> u64 { nodes.iter().map(|n| n.proxy.bytes_relayed()).sum() };
    let mut probes: Vec<Client> = (0..3).map(|n| connect(nodes[n].server.addr(), &format!("probe{}", n + 1))).collect();
    let idle = rss(&nodes);

    // Node 3 is apart while the members join, so the heal is the first time each side learns the
    // other's members: the memory it adds is presence alone.
    cut_node_three(&nodes, &mut probes, &[0, 0, 0]);
    let counts: Vec<usize> = (0..3).map(|n| members / 3 + usize::from(n < members % 3)).collect();
    let joining = Instant::now();
    let threads: Vec<_> = (0..3).map(|n| big_members(nodes[n].server.addr(), n, counts[n])).collect();
    let clients: Vec<Vec<RawConn>> = threads.into_iter().map(|t| t.join().expect("a joining thread")).collect();
    let side = counts[0] + counts[1];
    let joined = await_totals("joined apart", &mut probes, &[side, side, counts[2]]);
    println!("MEASURED cost: {members} members joined {counts:?} in {:?}", joined - joining);
    let apart = rss(&nodes);

    // What a relink must carry: each side's own entries, once per node link of node 3.
    let frame_bytes =
        |node: usize| -> usize { (0..counts[node]).map(|i| presence_frame_bytes(&big_name(node, i))).sum() };
    let expected_bytes = 2 * frame_bytes(2) + frame_bytes(0) + frame_bytes(1);
    let mut heals = Vec::new();
    let mut after_first_heal = Vec::new();
    for cycle in 0..cycles {
        if cycle > 0 {
            cut_node_three(&nodes, &mut probes, &counts);
        }
        let bytes_before = proxied_bytes(&nodes);
        let healed = Instant::now();
        for node in &nodes {
            node.proxy.heal();
        }
        let linked = await_links("healed", &[&nodes[0], &nodes[1], &nodes[2]], &[2, 2, 2], COST_TIMEOUT);
        let converged = await_totals("healed", &mut probes, &[members, members, members]);
        let bytes = proxied_bytes(&nodes) - bytes_before;
        println!(
            "MEASURED cost: heal {}: links up {:?}, all {members} listed on every node {:?} after the heal \
             ({:?} after the links), {bytes} bytes crossed the proxies (presence frames alone: {expected_bytes})",
            cycle + 1,
            linked - healed,
            converged - healed,
            converged - linked,
        );
        heals.push((converged - healed, converged - linked, bytes));
        if cycle == 0 {
            after_first_heal = rss(&nodes);
        }
    }
    // While apart, nodes 1 and 2 also hold each other's entries; node 3 holds only its own.
    let remote_apart = [counts[1], counts[0], 0];
    let learned = [counts[2], counts[2], counts[0] + counts[1]];
    for n in 0..3 {
        let per_local = (apart[n] - idle[n]) as f64 * 1024.0 / counts[n].max(1) as f64;
        let per_learned = (after_first_heal[n] as f64 - apart[n] as f64) * 1024.0 / learned[n].max(1) as f64;
        println!(
            "MEASURED cost: node {} RSS idle {} KiB; with {} local members (and {} remote) {} KiB: {per_local:.0} B per \
             local member (its connection and entry{}); after learning {} remote members at the heal {} KiB: \
             {per_learned:.0} B per remote member (an entry in both cores' tables)",
            n + 1,
            idle[n],
            counts[n],
            remote_apart[n],
            apart[n],
            if remote_apart[n] > 0 { ", and one remote entry" } else { "" },
            learned[n],
            after_first_heal[n],
        );
    }
    let times: Vec<Duration> = heals.iter().map(|h| h.0).collect();
    let after_link: Vec<Duration> = heals.iter().map(|h| h.1).collect();
    let bytes: Vec<u64> = heals.iter().map(|h| h.2).collect();
    println!(
        "MEASURED cost: median of {cycles} heals: converged {:?} after the heal, {:?} after the links were up, {} bytes \
         on the relink ({:.1} per entry sent; {} entries sent)",
        median(&times),
        median(&after_link),
        median(&bytes),
        median(&bytes) as f64 / (2 * counts[2] + counts[0] + counts[1]) as f64,
        2 * counts[2] + counts[0] + counts[1],
    );

    // Presence is not on the message path: a publish to another room of node 1 costs the same with
    // the large room present as without it.
    if bench_runs > 0 {
        let (addr, pid) = (nodes[0].server.addr(), nodes[0].server.pid());
        let with: Vec<BenchRun> = (0..bench_runs).map(|_| bench_run(addr, pid)).collect();
        drop(clients);
        await_totals("members gone", &mut probes, &[0, 0, 0]);
        let without: Vec<BenchRun> = (0..bench_runs).map(|_| bench_run(addr, pid)).collect();
        println!(
            "MEASURED cost: fanout bench on node 1 (100 subscribers, 1 publisher, 64 B) with the {members}-member \
             room: {}",
            bench_medians(&with)
        );
        println!("MEASURED cost: the same without it: {}", bench_medians(&without));
    }
}
