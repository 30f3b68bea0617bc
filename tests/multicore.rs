//! Issue 3 through the real binary: `fanout serve --threads N` spreads clients over N reactors
//! linked by peer links, and the delivery guarantees of `protocol.md` hold whichever cores the
//! publisher and the receivers sit on.
//!
//! Synchronisation is the protocol's own: `JOINED` (via [`Client::join`]) is sent only once every
//! sibling core has applied the room's interest, so a publish sent after it reaches the joiner;
//! `PING`/`PONG` (via [`Client::round_trip`]) proves that a connection's earlier frames were
//! handled. Every read has a timeout ([`support::IO_TIMEOUT`]) and every loop a bound.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use fanout::client::{Client, ClientOptions};
use support::{
    assert_nothing_before_pong, connect, connect_with, greeting, guest_location, LineConn, Progress, Server, IO_TIMEOUT,
};

use support::rng::Rng;

/// How many clients sit on each core.
fn per_core<'a>(clients: impl IntoIterator<Item = &'a Client>, cores: usize) -> Vec<usize> {
    let mut counts = vec![0; cores];
    for client in clients {
        let core = usize::from(client.welcome().core_id);
        assert!(core < cores, "WELCOME names core {core} on a server with {cores} cores");
        counts[core] += 1;
    }
    counts
}

/// Connects clients named `{prefix}{n}` until each core holds `want[core]` of them; clients
/// landing on a core that is already full are dropped. Bounded: the kernel spreads connections
/// by a hash of the 4-tuple, so a core is only ever short by bad luck.
fn clients_on_cores(
    addr: SocketAddr,
    want: &[usize],
    prefix: &str,
    options: &ClientOptions,
) -> Vec<Vec<(String, Client)>> {
    let mut by_core: Vec<Vec<(String, Client)>> = want.iter().map(|_| Vec::new()).collect();
    let total: usize = want.iter().sum();
    let attempts_max = 50 * total.max(1) * want.len();
    for attempt in 0..attempts_max {
        if by_core.iter().zip(want).all(|(got, &n)| got.len() >= n) {
            return by_core;
        }
        let name = format!("{prefix}{attempt}");
        let client = connect_with(addr, &name, options);
        let core = usize::from(client.welcome().core_id);
        assert!(core < want.len(), "WELCOME names core {core} on a server with {} cores", want.len());
        if by_core[core].len() < want[core] {
            by_core[core].push((name, client));
        }
    }
    let got: Vec<usize> = by_core.iter().map(Vec::len).collect();
    panic!("after {attempts_max} connections the cores hold {got:?} of the wanted {want:?} clients");
}

// ----- 1. one room, forty clients, four cores -----

const CROWD: usize = 40;
const CROWD_EXTRA_MAX: usize = 40;
const CROWD_MESSAGES: u64 = 200;

fn crowd_payload(name: &str, seq: u64) -> Vec<u8> {
    // Lengths vary with seq so that frames straddle read and write boundaries differently.
    format!("{name} says {seq:03} {}", "~".repeat((seq % 37) as usize)).into_bytes()
}

#[test]
fn forty_clients_on_four_cores_each_get_every_other_message_once_in_order() {
    let server = Server::start(&["--threads", "4"]);
    let addr = server.addr();
    let mut clients: Vec<Client> = (0..CROWD).map(|i| connect(addr, &format!("c{i:02}"))).collect();
    // SO_REUSEPORT spreads connections by a hash of their 4-tuple, not round robin: 40 land
    // unevenly, and a core could (very rarely) get none. Then connect up to 40 more, which all
    // take part like the first 40, until every core has a client.
    while per_core(&clients, 4).contains(&0) && clients.len() < CROWD + CROWD_EXTRA_MAX {
        let name = format!("c{:02}", clients.len());
        clients.push(connect(addr, &name));
    }
    let spread = per_core(&clients, 4);
    assert!(spread.iter().all(|&n| n > 0), "clients per core {spread:?}: some reactor got no client");
    eprintln!("{} clients per core: {spread:?}", clients.len());

    for (i, client) in clients.iter_mut().enumerate() {
        client.join("crowd").unwrap_or_else(|e| panic!("c{i:02} join: {e}"));
    }
    let n = clients.len();
    let names: Vec<String> = (0..n).map(|i| format!("c{i:02}")).collect();

    // Every client joined (and so every core applied every other core's interest) before the
    // first publish; each client now publishes and reads at once.
    let handles: Vec<_> = clients
        .into_iter()
        .zip(names.clone())
        .map(|(mut client, name)| {
            let names = names.clone();
            thread::spawn(move || {
                let sender = client.sender();
                let publisher = {
                    let name = name.clone();
                    thread::spawn(move || {
                        for seq in 1..=CROWD_MESSAGES {
                            sender.publish("crowd", &crowd_payload(&name, seq)).expect("publish");
                        }
                    })
                };
                // Per publisher: its stream and the next seq expected.
                let mut next: HashMap<Vec<u8>, (Option<u64>, u64)> =
                    names.iter().filter(|p| **p != name).map(|p| (p.as_bytes().to_vec(), (None, 1))).collect();
                let expected = (names.len() as u64 - 1) * CROWD_MESSAGES;
                for got in 0..expected {
                    let m = client.next_message().unwrap_or_else(|e| panic!("{name} after {got} messages: {e}"));
                    assert_eq!(&m.room[..], b"crowd", "{name}: room");
                    let publisher = String::from_utf8_lossy(&m.name).into_owned();
                    let Some((stream, seq)) = next.get_mut(&m.name[..]) else {
                        panic!("{name}: message from {publisher:?}, which is not another member")
                    };
                    assert_eq!(*stream.get_or_insert(m.stream), m.stream, "{name}: {publisher}'s stream changed");
                    assert_eq!(m.seq, *seq, "{name}: {publisher}'s seq (gap, duplicate or reorder)");
                    assert!(m.payload == crowd_payload(&publisher, m.seq), "{name}: {publisher}'s payload {}", m.seq);
                    *seq += 1;
                }
                publisher.join().expect("publisher thread");
                for (publisher, (_, seq)) in &next {
                    assert_eq!(*seq, CROWD_MESSAGES + 1, "{name}: {}", String::from_utf8_lossy(publisher));
                }
                let streams: BTreeSet<u64> = next.values().filter_map(|(s, _)| *s).collect();
                assert_eq!(streams.len(), names.len() - 1, "{name}: one distinct stream per publisher");
                client
            })
        })
        .collect();
    let mut clients: Vec<Client> = handles.into_iter().map(|h| h.join().expect("client thread panicked")).collect();
    // Every publish has reached every receiver; a duplicate would most likely be queued by now.
    for (i, client) in clients.iter_mut().enumerate() {
        assert_nothing_before_pong(client, i as u64);
    }
}

// ----- 2. many rooms, random join/leave between phases -----

const PHASE_CLIENTS: usize = 24;
const PHASE_ROOMS: usize = 6;
const PHASES: usize = 3;
const PHASE_MESSAGES: u64 = 25;
const PHASE_SEED: u64 = 0x5EED_0003;

fn room_name(r: usize) -> String {
    format!("room-{r}")
}

fn phase_payload(phase: usize, room: usize, publisher: usize, k: u64) -> Vec<u8> {
    format!("phase {phase} room {room} from p{publisher:02} #{k}").into_bytes()
}

/// One client's membership of one room, as the test tracks it to predict `stream`/`seq`.
#[derive(Debug, Clone, Copy)]
struct Membership {
    /// Unique per `JOIN` across the whole test (a new `JOIN` gets a new stream).
    epoch: usize,
    /// Publishes so far in this membership (the last `seq`).
    published: u64,
}

/// What one receiver must get in one phase: per (room, publisher), `(seq, payload)` in order.
type Expected = HashMap<(usize, usize), VecDeque<(u64, Vec<u8>)>>;

#[test]
fn many_rooms_with_random_joins_and_leaves_between_phases() {
    let server = Server::start(&["--threads", "4"]);
    let addr = server.addr();
    let mut rng = Rng::new(PHASE_SEED);
    let mut clients: Vec<Option<Client>> =
        (0..PHASE_CLIENTS).map(|i| Some(connect(addr, &format!("p{i:02}")))).collect();
    let spread = per_core(clients.iter().flatten(), 4);
    eprintln!("phase clients per core: {spread:?} (seed {PHASE_SEED:#x})");
    let mut member: Vec<Vec<Option<Membership>>> = vec![vec![None; PHASE_ROOMS]; PHASE_CLIENTS];
    let mut epochs = 0;
    // (publisher, room, epoch) → the stream id receivers saw for it.
    let mut streams: HashMap<(usize, usize, usize), u64> = HashMap::new();
    let mut nonce = 0;

    for phase in 0..PHASES {
        // Joins and leaves in a random order across clients and rooms, each confirmed.
        let mut changes: Vec<(usize, usize)> =
            (0..PHASE_CLIENTS).flat_map(|c| (0..PHASE_ROOMS).map(move |r| (c, r))).collect();
        rng.shuffle(&mut changes);
        for (c, r) in changes {
            let want = rng.chance(1, 2);
            let client = clients[c].as_mut().expect("client present between phases");
            match (member[c][r].is_some(), want) {
                (false, true) => {
                    client.join(&room_name(r)).unwrap_or_else(|e| panic!("phase {phase}: p{c:02} join {r}: {e}"));
                    epochs += 1;
                    member[c][r] = Some(Membership { epoch: epochs, published: 0 });
                }
                (true, false) => {
                    client.leave(&room_name(r)).unwrap_or_else(|e| panic!("phase {phase}: p{c:02} leave {r}: {e}"));
                    member[c][r] = None;
                }
                _ => {}
            }
        }

        // What each client must receive this phase, from the membership alone.
        let mut expected: Vec<Expected> = vec![HashMap::new(); PHASE_CLIENTS];
        for (receiver, wants) in expected.iter_mut().enumerate() {
            for r in 0..PHASE_ROOMS {
                if member[receiver][r].is_none() {
                    continue;
                }
                for (publisher, rooms) in member.iter().enumerate() {
                    let Some(m) = rooms[r] else { continue };
                    if publisher == receiver {
                        continue;
                    }
                    let queue = (1..=PHASE_MESSAGES)
                        .map(|k| (m.published + k, phase_payload(phase, r, publisher, k)))
                        .collect();
                    wants.insert((r, publisher), queue);
                }
            }
        }
        let rooms_of: Vec<Vec<usize>> =
            member.iter().map(|rooms| (0..PHASE_ROOMS).filter(|r| rooms[*r].is_some()).collect()).collect();
        let epoch_of: Vec<Vec<usize>> =
            member.iter().map(|rooms| rooms.iter().map(|m| m.map_or(0, |m| m.epoch)).collect()).collect();
        let total: usize = expected.iter().map(|e| e.values().map(VecDeque::len).sum::<usize>()).sum();
        eprintln!("phase {phase}: rooms per client {:?}, {total} deliveries expected", {
            rooms_of.iter().map(Vec::len).collect::<Vec<_>>()
        });

        let handles: Vec<_> = expected
            .into_iter()
            .enumerate()
            .map(|(c, mut wants)| {
                let mut client = clients[c].take().expect("client present");
                let my_rooms = rooms_of[c].clone();
                let epoch_of = epoch_of.clone();
                thread::spawn(move || {
                    let sender = client.sender();
                    let publisher = {
                        let my_rooms = my_rooms.clone();
                        thread::spawn(move || {
                            for k in 1..=PHASE_MESSAGES {
                                for &r in &my_rooms {
                                    sender.publish(&room_name(r), &phase_payload(phase, r, c, k)).expect("publish");
                                }
                            }
                        })
                    };
                    let count: usize = wants.values().map(VecDeque::len).sum();
                    let mut seen_streams = Vec::new();
                    for got in 0..count {
                        let m = client
                            .next_message()
                            .unwrap_or_else(|e| panic!("phase {phase}: p{c:02} after {got} of {count}: {e}"));
                        let room = String::from_utf8_lossy(&m.room).into_owned();
                        let name = String::from_utf8_lossy(&m.name).into_owned();
                        let r: usize = room
                            .strip_prefix("room-")
                            .and_then(|r| r.parse().ok())
                            .unwrap_or_else(|| panic!("p{c:02}: message in unknown room {room:?}"));
                        let p: usize = name
                            .strip_prefix('p')
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("p{c:02}: message from unknown {name:?}"));
                        let Some(queue) = wants.get_mut(&(r, p)) else {
                            panic!("phase {phase}: p{c:02} got a message from {name} in {room}: not both members")
                        };
                        let Some((seq, payload)) = queue.pop_front() else {
                            panic!("phase {phase}: p{c:02} got more than {PHASE_MESSAGES} from {name} in {room}")
                        };
                        assert_eq!(m.seq, seq, "phase {phase}: p{c:02} from {name} in {room}: seq");
                        assert!(m.payload == payload, "phase {phase}: p{c:02} from {name} in {room}: payload");
                        seen_streams.push(((p, r, epoch_of[p][r]), m.stream));
                    }
                    publisher.join().expect("publisher thread");
                    // The server has handled all of this client's publishes.
                    client.round_trip(u64::MAX).unwrap_or_else(|e| panic!("p{c:02} round trip: {e}"));
                    (client, seen_streams)
                })
            })
            .collect();
        for (c, handle) in handles.into_iter().enumerate() {
            let (client, seen) = handle.join().expect("client thread panicked");
            clients[c] = Some(client);
            for (membership, stream) in seen {
                let first = *streams.entry(membership).or_insert(stream);
                assert_eq!(first, stream, "membership {membership:?} seen with two streams");
            }
        }
        // Nothing beyond the expected deliveries may be queued for anyone.
        for client in clients.iter_mut().flatten() {
            nonce += 1;
            assert_nothing_before_pong(client, nonce);
        }
        for rooms in &mut member {
            for m in rooms.iter_mut().flatten() {
                m.published += PHASE_MESSAGES;
            }
        }
    }
    let distinct: BTreeSet<u64> = streams.values().copied().collect();
    assert_eq!(distinct.len(), streams.len(), "two memberships shared a stream id");
}

// ----- 3. echo across cores -----

const ECHO_MEMBERS: usize = 4;
const ECHO_MESSAGES: u64 = 30;

fn echo_payload(role: &str, seq: u64) -> Vec<u8> {
    format!("{role} echo {seq}").into_bytes()
}

/// Four echo clients and four plain ones in one room, spread over `threads` cores as evenly as
/// the kernel allows; each publishes. Returns, per (receiver role, publisher role), how many
/// messages arrived, each checked: exactly once, in order, payload exact.
fn echo_scenario(threads: usize) -> BTreeMap<(String, String), u64> {
    let server = Server::start(&["--threads", &threads.to_string()]);
    let addr = server.addr();
    let want: Vec<usize> =
        (0..threads).map(|core| ECHO_MEMBERS / threads + usize::from(core < ECHO_MEMBERS % threads)).collect();
    let echo = ClientOptions { echo: true, ..ClientOptions::default() };
    let mut members: Vec<(String, bool, String, Client)> = Vec::new();
    for (options, kind) in [(&echo, "echo"), (&ClientOptions::default(), "plain")] {
        for (core, clients) in clients_on_cores(addr, &want, kind, options).into_iter().enumerate() {
            for (name, client) in clients {
                let role = format!("{kind}-{}", members.iter().filter(|m| m.0.starts_with(kind)).count());
                assert_eq!(usize::from(client.welcome().core_id), core);
                members.push((role, options.echo, name, client));
            }
        }
    }
    let role_of: HashMap<Vec<u8>, String> =
        members.iter().map(|(role, _, name, _)| (name.as_bytes().to_vec(), role.clone())).collect();
    for (role, _, _, client) in &mut members {
        client.join("echo-room").unwrap_or_else(|e| panic!("{role} join: {e}"));
    }
    for seq in 1..=ECHO_MESSAGES {
        for (role, _, _, client) in &members {
            client.publish("echo-room", &echo_payload(role, seq)).expect("publish");
        }
    }
    let mut counts = BTreeMap::new();
    for (i, (role, echoes, _, client)) in members.iter_mut().enumerate() {
        let publishers = if *echoes { ECHO_MEMBERS * 2 } else { ECHO_MEMBERS * 2 - 1 };
        let mut next: HashMap<String, (u64, u64)> = HashMap::new();
        for got in 0..publishers as u64 * ECHO_MESSAGES {
            let m = client.next_message().unwrap_or_else(|e| panic!("{threads} threads: {role} after {got}: {e}"));
            let publisher = role_of.get(&m.name[..]).unwrap_or_else(|| panic!("unknown publisher {:?}", m.name));
            assert!(*echoes || publisher != role, "{threads} threads: {role} got its own message without ECHO");
            let (stream, seq) = next.entry(publisher.clone()).or_insert((m.stream, 1));
            assert_eq!((m.stream, m.seq), (*stream, *seq), "{threads} threads: {role} from {publisher}");
            assert!(m.payload == echo_payload(publisher, m.seq), "{threads} threads: {role} from {publisher}: payload");
            *seq += 1;
        }
        assert_nothing_before_pong(client, i as u64);
        for (publisher, (_, seq)) in next {
            counts.insert((role.clone(), publisher), seq - 1);
        }
    }
    counts
}

#[test]
fn echo_across_cores_behaves_as_on_one_core() {
    let one = echo_scenario(1);
    let four = echo_scenario(4);
    for role in ["echo-0", "echo-1", "echo-2", "echo-3"] {
        assert_eq!(four.get(&(role.to_string(), role.to_string())), Some(&ECHO_MESSAGES), "{role} hears itself");
    }
    for role in ["plain-0", "plain-1", "plain-2", "plain-3"] {
        assert_eq!(four.get(&(role.to_string(), role.to_string())), None, "{role} does not hear itself");
    }
    assert_eq!(one, four, "deliveries on one core and on four differ");
}

// ----- 4. a core whose clients never read -----

const SLOW_MESSAGES: u64 = 5_000;
const SLOW_PAYLOAD_BYTES: usize = 1024;
/// A publisher stays at most this many messages ahead of the slowest *good* reader (256 KiB,
/// far below the 1 MiB output limit), so good readers are never at risk of being cut.
const SLOW_WINDOW: u64 = 256;
const SLOW_NON_READERS: usize = 3;

fn slow_payload(publisher: usize, seq: u64) -> Vec<u8> {
    let mut payload = vec![0u8; SLOW_PAYLOAD_BYTES];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = (seq as usize * 31 + i * 7 + publisher * 101) as u8;
    }
    payload
}

#[test]
fn a_core_whose_clients_never_read_does_not_stop_the_other_cores() {
    let server = Server::start(&["--threads", "2", "--max-output-bytes", "1048576"]);
    let addr = server.addr();
    // Core 0: 2 good readers and a publisher. Core 1: 3 clients that never read, 2 good readers
    // and a publisher. Publisher 0's messages cross to core 1; publisher 1's start there.
    let mut cores = clients_on_cores(addr, &[3, 3 + SLOW_NON_READERS], "s", &ClientOptions::default());
    let mut core1 = cores.pop().expect("core 1");
    let mut core0 = cores.pop().expect("core 0");
    let mut publishers = [core0.pop().expect("publisher 0"), core1.pop().expect("publisher 1")];
    let mut non_readers: Vec<(String, Client)> = core1.drain(..SLOW_NON_READERS).collect();
    let mut readers: Vec<(String, Client)> = core0.into_iter().chain(core1).collect();
    // Publishers only publish (they never read either, so they must not receive).
    for (name, client) in &mut publishers {
        client.join_send_only("slow").unwrap_or_else(|e| panic!("{name} join: {e}"));
    }
    for (name, client) in non_readers.iter_mut().chain(&mut readers) {
        client.join("slow").unwrap_or_else(|e| panic!("{name} join: {e}"));
    }
    let publisher_names: Vec<String> = publishers.iter().map(|(name, _)| name.clone()).collect();
    // progress[p][r]: how many of publisher p's messages good reader r has.
    let progress: Vec<Arc<Progress>> = (0..publishers.len()).map(|_| Progress::new(readers.len())).collect();

    let reader_threads: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(r, (name, mut client))| {
            let progress = progress.clone();
            let publisher_names = publisher_names.clone();
            thread::spawn(move || {
                let mut next = vec![(None, 1u64); publisher_names.len()];
                for got in 0..SLOW_MESSAGES * publisher_names.len() as u64 {
                    let m = client.next_message().unwrap_or_else(|e| panic!("reader {name} after {got}: {e}"));
                    let p = publisher_names
                        .iter()
                        .position(|n| n.as_bytes() == &m.name[..])
                        .unwrap_or_else(|| panic!("reader {name}: message from {:?}", m.name));
                    let (stream, seq) = &mut next[p];
                    assert_eq!(*stream.get_or_insert(m.stream), m.stream, "reader {name}: stream of publisher {p}");
                    assert_eq!(m.seq, *seq, "reader {name}: seq of publisher {p}");
                    assert!(m.payload == slow_payload(p, m.seq), "reader {name}: payload {} of publisher {p}", m.seq);
                    progress[p].set(r, *seq);
                    *seq += 1;
                }
                client
            })
        })
        .collect();
    let publisher_threads: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, (name, client))| {
            let progress = progress[p].clone();
            thread::spawn(move || {
                for seq in 1..=SLOW_MESSAGES {
                    let behind = seq.saturating_sub(SLOW_WINDOW);
                    assert!(
                        progress.wait_min(behind, IO_TIMEOUT),
                        "publisher {name}: good readers stuck at {} of {seq}",
                        progress.min()
                    );
                    client.publish("slow", &slow_payload(p, seq)).expect("publish");
                }
                client
            })
        })
        .collect();
    for handle in publisher_threads {
        handle.join().expect("publisher thread panicked");
    }
    for (r, handle) in reader_threads.into_iter().enumerate() {
        let mut client = handle.join().expect("reader thread panicked");
        assert_nothing_before_pong(&mut client, r as u64);
    }
    // The non-readers either were cut as slow consumers or the kernel's socket buffers held
    // what the output limit did not; nothing else may have happened to them.
    let mut cut = 0;
    for (i, (name, mut client)) in non_readers.into_iter().enumerate() {
        match client.round_trip(1000 + i as u64) {
            Ok(()) => {}
            Err(fanout::client::ClientError::Server { code: 7, .. }) => cut += 1,
            Err(e) => panic!("non-reader {name}: {e}"),
        }
    }
    eprintln!("{cut} of {SLOW_NON_READERS} non-readers were cut as slow consumers");
}

// ----- 5. line mode across cores -----

const LINE_CLIENTS: usize = 8;

/// The core a line client sits on, from its guest name (`guest<N>` on core 0, `guest<N>-<core>`
/// on the others).
fn core_of_guest(name: &str) -> u16 {
    match guest_location(name) {
        Some((0, core)) => core,
        other => panic!("{name:?} is not a guest name of a single node ({other:?})"),
    }
}

/// The number of others a greeting for `name` in the lobby counts, checking the whole line.
fn parse_greeting_count(line: &str, name: &str) -> usize {
    let prefix = format!("* welcome {name}: you are in lobby with ");
    let counted = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once(';'))
        .map(|(counted, _)| counted)
        .unwrap_or_else(|| panic!("expected the greeting of {name}, got {line:?}"));
    let others = match counted {
        "nobody else" => 0,
        "1 other" => 1,
        n => n.strip_suffix(" others").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("greeting {line:?}")),
    };
    assert_eq!(line, greeting(name, "lobby", others), "greeting");
    others
}

#[test]
fn line_clients_on_different_cores_hear_each_other_exactly_once() {
    let server = Server::start(&["--threads", "4"]);
    let addr = server.addr();
    // A binary observer on every core joins the lobby first: then every core has the lobby and
    // has applied every other core's interest in it, so a line client's implicit join takes
    // effect on its core at once, and a line client's first line seen by an observer proves
    // that it is in.
    let mut observers: Vec<(String, Client)> =
        clients_on_cores(addr, &[1, 1, 1, 1], "observer", &ClientOptions::default()).into_iter().flatten().collect();
    for (name, observer) in &mut observers {
        observer.join("lobby").unwrap_or_else(|e| panic!("{name} join: {e}"));
    }
    let mut lines: Vec<LineConn> = (0..LINE_CLIENTS).map(|_| LineConn::connect(addr)).collect();
    for (i, line) in lines.iter_mut().enumerate() {
        line.send(format!("hello {i}\n").as_bytes());
    }
    let mut name_of = vec![String::new(); LINE_CLIENTS];
    for _ in 0..LINE_CLIENTS {
        let m = observers[0].1.next_message().expect("observer: a hello");
        let payload = String::from_utf8_lossy(&m.payload).into_owned();
        let i: usize = payload.strip_prefix("hello ").and_then(|i| i.parse().ok()).expect("a hello payload");
        assert!(name_of[i].is_empty(), "hello {i} twice");
        name_of[i] = String::from_utf8_lossy(&m.name).into_owned();
    }
    let cores: BTreeSet<u16> = name_of.iter().map(|n| core_of_guest(n)).collect();
    assert!(cores.len() >= 2, "all {LINE_CLIENTS} line clients landed on core {cores:?}");
    eprintln!("line clients on cores {cores:?}");

    // Everyone is in; now each line published is owed to every other line client.
    for (i, line) in lines.iter_mut().enumerate() {
        line.send(format!("line {i}\nbye {i}\n").as_bytes());
    }
    for (i, line) in lines.iter_mut().enumerate() {
        // The greeting first: the observers and the line clients whose join this core learned
        // of before this one's took effect. Every later one is announced by a `joined` line
        // before its first message, so the greeting's count and the `joined` lines add up to
        // everyone else, exactly.
        let others = parse_greeting_count(&line.read_line().unwrap(), &name_of[i]);
        let mut announced = [false; LINE_CLIENTS];
        // Per other client: 0 = nothing yet (a hello is optional), 1 = hello, 2 = line, 3 = bye.
        let mut stage = vec![0u8; LINE_CLIENTS];
        let mut byes = 0;
        for _ in 0..4 * LINE_CLIENTS {
            if byes == LINE_CLIENTS - 1 {
                break;
            }
            let text = line.read_line().unwrap_or_else(|e| panic!("line client {i}: {e}"));
            if let Some(joined) = text.strip_prefix("* ").and_then(|t| t.strip_suffix(" joined\n")) {
                let j = name_of.iter().position(|n| n == joined).unwrap_or_else(|| panic!("line client {i}: {text:?}"));
                assert!(i != j && !announced[j], "line client {i}: {text:?} about itself or twice");
                assert_eq!(stage[j], 0, "line client {i}: {text:?} after its messages");
                announced[j] = true;
                continue;
            }
            let (name, payload) = text
                .strip_suffix('\n')
                .and_then(|t| t.split_once(": "))
                .unwrap_or_else(|| panic!("line client {i}: not `name: payload`: {text:?}"));
            let j = name_of.iter().position(|n| n == name).unwrap_or_else(|| panic!("line client {i}: from {name}"));
            assert_ne!(i, j, "line client {i} heard its own line {text:?}");
            let (kind, number) = payload.split_once(' ').unwrap_or_else(|| panic!("payload {payload:?}"));
            assert_eq!(number, j.to_string(), "line client {i}: {text:?} from the wrong publisher");
            let (before, after) = match kind {
                "hello" => (0, 1),
                // A client announced after this one joined was heard from its hello on.
                "line" if announced[j] => (1, 2),
                "line" => (stage[j].min(1), 2),
                "bye" => (2, 3),
                other => panic!("line client {i}: unexpected {other:?}"),
            };
            assert_eq!(stage[j], before, "line client {i}: {text:?} out of order, twice or after a gap");
            stage[j] = after;
            if after == 3 {
                byes += 1;
            }
        }
        assert_eq!(byes, LINE_CLIENTS - 1, "line client {i}: stages {stage:?}");
        let announced = announced.iter().filter(|a| **a).count();
        assert_eq!(
            others + announced,
            observers.len() + LINE_CLIENTS - 1,
            "line client {i}: greeted with {others} others"
        );
    }
    // The observers were in before anyone spoke: each hears every line client's three lines.
    for (o, (name, observer)) in observers.iter_mut().enumerate() {
        let mut next: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
        let expected = if o == 0 { 2 * LINE_CLIENTS } else { 3 * LINE_CLIENTS };
        for got in 0..expected {
            let m = observer.next_message().unwrap_or_else(|e| panic!("{name} after {got}: {e}"));
            let j = name_of.iter().position(|n| n.as_bytes() == &m.name[..]).expect("a line client's message");
            let first = if o == 0 { 2 } else { 1 };
            let (stream, seq) = next.entry(m.name.to_vec()).or_insert((m.stream, first));
            assert_eq!((m.stream, m.seq), (*stream, *seq), "{name}: line client {j}'s stream");
            let want = match m.seq {
                1 => format!("hello {j}"),
                2 => format!("line {j}"),
                _ => format!("bye {j}"),
            };
            assert_eq!(m.payload, want.as_bytes(), "{name}: line client {j}'s payload {}", m.seq);
            *seq += 1;
        }
        assert_nothing_before_pong(observer, o as u64);
    }
}

// ----- 6. presence of line clients across cores -----

/// Line clients wanted on each of the four cores, at least.
const WHO_PER_CORE: usize = 2;
/// Most line clients connected to get [`WHO_PER_CORE`] on every core; the kernel spreads
/// connections by a hash, so a core is only short by bad luck (about 1 in 10^6 at this bound).
const WHO_CONNECTS_MAX: usize = 64;

#[test]
fn line_clients_on_four_cores_see_each_other_join_and_who_lists_all_from_every_core() {
    let server = Server::start(&["--threads", "4"]);
    let addr = server.addr();
    // Kept clients in join order, with their names; each new one is checked by everyone kept.
    let mut kept: Vec<(String, LineConn)> = Vec::new();
    let mut per_core = [0usize; 4];
    for attempt in 0.. {
        if per_core.iter().all(|&n| n >= WHO_PER_CORE) {
            break;
        }
        assert!(attempt < WHO_CONNECTS_MAX, "after {WHO_CONNECTS_MAX} line clients the cores hold {per_core:?}");
        let mut conn = LineConn::connect(addr);
        // A typed first line makes it a line client at once; its answer follows the greeting.
        conn.send(b"/who\n");
        let name = conn.expect_greeting(kept.len());
        let mut names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        names.push(&name);
        conn.expect_who("lobby", &names, Some(kept.len()));
        for (_, earlier) in &mut kept {
            earlier.expect_exact(&format!("* {name} joined\n"));
        }
        // Every client stays (one that left would be news still travelling between cores when
        // the next one is greeted, and the counts here are exact).
        per_core[usize::from(core_of_guest(&name))] += 1;
        kept.push((name, conn));
    }
    eprintln!("{} line clients kept, at least {WHO_PER_CORE} per core: {per_core:?}", kept.len());

    // Every client, so every core, lists the same names in join order.
    let names: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for (i, (_, conn)) in kept.iter_mut().enumerate() {
        conn.send(b"/who\n/rooms\n");
        conn.expect_who("lobby", &names, Some(i));
        conn.expect_exact(&format!("* 1 room: lobby ({})\n", names.len()));
    }
}
