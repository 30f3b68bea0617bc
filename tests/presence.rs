//! Presence through the real binary: who is in a room, seen by binary clients (`JOIN` with the
//! `PRESENCE` flag, `WHO`, `ROOMS`) and line clients (`* bob joined`), across the cores of one
//! server and across the nodes of a cluster — including a node that dies and comes back.
//!
//! Every wait is a read with a timeout or a poll with a stated bound on tries and time.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout::client::{Client, Event};
use fanout::codec::{MemberInfo, Members, PresenceEvent, PresenceKind, RoomList};
use support::cluster::{secret_file, Node};
use support::{assert_nothing_before_pong, connect, guest_location, LineConn, Server, IO_TIMEOUT};

/// Most clients connected to find one on another core than the first (4 cores: the chance of
/// missing is 4^-32).
const OTHER_CORE_TRIES_MAX: usize = 32;

/// A node link is declared down 3.0–3.2 s after its last byte (`protocol.md`, failures); a
/// killed process usually resets its sockets at once, but the bound holds either way.
const FAILURE_DETECTION: Duration = Duration::from_millis(3200);
/// Slack on top of [`FAILURE_DETECTION`] for scheduling and the relay to the watching core.
const FAILURE_DETECTION_MARGIN: Duration = Duration::from_millis(1800);

/// `WHO` polls for a change that crosses nodes: at most this many tries…
const WHO_POLLS_MAX: usize = 100;
/// …this far apart…
const WHO_POLL_EVERY: Duration = Duration::from_millis(50);
/// …and within this time (a change crosses a link in one round trip; this is generous).
const WHO_POLL_WITHIN: Duration = Duration::from_secs(5);

fn member(client: &Client, name: &str) -> MemberInfo {
    MemberInfo { session_id: client.welcome().session_id, name: Bytes::copy_from_slice(name.as_bytes()) }
}

fn members(room: &str, list: &[&MemberInfo]) -> Members {
    let list: Vec<MemberInfo> = list.iter().map(|m| (*m).clone()).collect();
    Members { room: Bytes::copy_from_slice(room.as_bytes()), total: list.len() as u32, members: list }
}

fn room_list(rooms: &[(&str, u32)]) -> RoomList {
    RoomList {
        total: rooms.len() as u32,
        rooms: rooms.iter().map(|(r, n)| (Bytes::copy_from_slice(r.as_bytes()), *n)).collect(),
    }
}

fn presence(kind: PresenceKind, who: &MemberInfo, room: &str) -> PresenceEvent {
    PresenceEvent {
        kind,
        session_id: who.session_id,
        room: Bytes::copy_from_slice(room.as_bytes()),
        name: who.name.clone(),
    }
}

/// The next event of `client`, which must be a `PRESENCE`.
fn next_presence(client: &mut Client, what: &str) -> PresenceEvent {
    match client.next_event() {
        Ok(Event::Presence(p)) => p,
        other => panic!("{what}: expected a PRESENCE, got {other:?}"),
    }
}

/// Asks `client` `WHO room` until the answer is `wanted`, within the poll bounds above.
fn poll_who(client: &mut Client, room: &str, wanted: &Members, what: &str) {
    poll_who_until(client, room, wanted, what, |got| got == wanted);
}

/// As [`poll_who`], but the members may come in any order.
fn poll_who_any_order(client: &mut Client, room: &str, wanted: &Members, what: &str) {
    let sorted = |m: &Members| {
        let mut list: Vec<(u64, Bytes)> = m.members.iter().map(|e| (e.session_id, e.name.clone())).collect();
        list.sort();
        (m.room.clone(), m.total, list)
    };
    poll_who_until(client, room, wanted, what, |got| sorted(got) == sorted(wanted));
}

fn poll_who_until(client: &mut Client, room: &str, wanted: &Members, what: &str, done: impl Fn(&Members) -> bool) {
    let started = Instant::now();
    let mut last = None;
    for _ in 0..WHO_POLLS_MAX {
        let got = client.who(room).unwrap_or_else(|e| panic!("{what}: WHO {room}: {e}"));
        if done(&got) {
            return;
        }
        last = Some(got);
        if started.elapsed() >= WHO_POLL_WITHIN {
            break;
        }
        // A bounded poll: nothing tells this client when another node's change arrived.
        thread::sleep(WHO_POLL_EVERY);
    }
    panic!("{what}: after {:?}, WHO {room} still answers {last:?}, not {wanted:?}", started.elapsed());
}

// ----- one server, four cores -----

#[test]
fn binary_clients_with_presence_see_members_joins_leaves_losses_and_renames_across_cores() {
    let server = Server::start(&["--threads", "4"]);
    let addr = server.addr();
    let mut ann = connect(addr, "ann");
    // Bob on another core than ann, so every change crosses a core link.
    let mut bob = (0..OTHER_CORE_TRIES_MAX)
        .map(|_| connect(addr, "bob"))
        .find(|bob| bob.welcome().core_id != ann.welcome().core_id)
        .unwrap_or_else(|| panic!("{OTHER_CORE_TRIES_MAX} clients all landed on ann's core"));
    let (a, b) = (member(&ann, "ann"), member(&bob, "bob"));
    eprintln!("ann on core {}, bob on core {}", ann.welcome().core_id, bob.welcome().core_id);

    assert_eq!(ann.join_with_presence("den").unwrap(), members("den", &[&a]));
    assert_eq!(bob.join_with_presence("den").unwrap(), members("den", &[&a, &b]));
    assert_eq!(next_presence(&mut ann, "ann"), presence(PresenceKind::Joined, &b, "den"));
    // Nobody is told of their own change.
    assert_nothing_before_pong(&mut bob, 1);
    assert_eq!(ann.who("den").unwrap(), members("den", &[&a, &b]));
    assert_eq!(bob.who("den").unwrap(), members("den", &[&a, &b]));
    assert_eq!(ann.who("nowhere").unwrap(), members("nowhere", &[]));
    assert_eq!(ann.rooms().unwrap(), room_list(&[("den", 2)]));

    // LEAVE is a plain leave.
    bob.leave("den").unwrap();
    assert_eq!(next_presence(&mut ann, "ann"), presence(PresenceKind::Left, &b, "den"));
    assert_eq!(ann.who("den").unwrap(), members("den", &[&a]));
    assert_eq!(ann.rooms().unwrap(), room_list(&[("den", 1)]));

    // A hang-up is a loss; a plain JOIN (no presence flag) is announced all the same.
    bob.join("den").unwrap();
    assert_eq!(next_presence(&mut ann, "ann"), presence(PresenceKind::Joined, &b, "den"));
    assert_eq!(bob.rooms().unwrap(), room_list(&[("den", 2)]));
    drop(bob);
    assert_eq!(next_presence(&mut ann, "ann"), presence(PresenceKind::Lost, &b, "den"));
    assert_eq!(ann.who("den").unwrap(), members("den", &[&a]));

    // A line client walks in from the lobby and renames itself.
    let mut line = LineConn::connect(addr);
    line.send(b"/join den\n");
    let guest = line.expect_greeting(0);
    line.expect_exact("* you are in den with 1 other\n");
    let joined = next_presence(&mut ann, "ann");
    let g = MemberInfo { session_id: joined.session_id, name: Bytes::copy_from_slice(guest.as_bytes()) };
    assert_eq!(joined, presence(PresenceKind::Joined, &g, "den"));
    line.send(b"/nick carol\n");
    line.expect_exact("* you are now carol\n");
    let carol = MemberInfo { name: Bytes::from_static(b"carol"), ..g };
    assert_eq!(next_presence(&mut ann, "ann"), presence(PresenceKind::Renamed, &carol, "den"));
    assert_eq!(ann.who("den").unwrap(), members("den", &[&a, &carol]));
    assert_eq!(ann.rooms().unwrap(), room_list(&[("den", 2)]));
    line.send(b"/who\n");
    line.expect_who("den", &["ann", "carol"], Some(1));
    assert_nothing_before_pong(&mut ann, 2);
}

// ----- two nodes -----

#[test]
fn members_of_another_node_appear_are_lost_when_it_dies_and_come_back_with_it() {
    let secret = secret_file("two-nodes", "presence secret");
    let one = Node::start(&secret, 1, &[], &[]);
    let two = Node::start(&secret, 2, &[one.cluster], &[]);
    one.wait_links_up(1);
    two.wait_links_up(1);

    // On node 1: a binary watcher, a line client, and a binary asker that is in no room.
    let mut watcher = connect(one.server.addr(), "watcher");
    let w = member(&watcher, "watcher");
    assert_eq!(watcher.join_with_presence("lobby").unwrap(), members("lobby", &[&w]));
    let mut line = LineConn::connect(one.server.addr());
    line.send(b"/who\n");
    let guest = line.expect_greeting(1);
    assert_eq!(guest_location(&guest).map(|(node, _)| node), Some(1), "guest name {guest:?} on node 1");
    line.expect_who("lobby", &["watcher", &guest], Some(1));
    let joined = next_presence(&mut watcher, "watcher");
    let g = MemberInfo { session_id: joined.session_id, name: Bytes::copy_from_slice(guest.as_bytes()) };
    assert_eq!(joined, presence(PresenceKind::Joined, &g, "lobby"));
    let mut asker = connect(one.server.addr(), "asker");

    // Bob joins on node 2: node 1 lists him, and its members that watch are told.
    let mut bob = connect(two.server.addr(), "bob");
    bob.join("lobby").unwrap();
    let b = member(&bob, "bob");
    poll_who(&mut asker, "lobby", &members("lobby", &[&w, &g, &b]), "asker on node 1");
    poll_who(&mut bob, "lobby", &members("lobby", &[&w, &g, &b]), "bob on node 2");
    line.expect_exact("* bob joined\n");
    assert_eq!(next_presence(&mut watcher, "watcher"), presence(PresenceKind::Joined, &b, "lobby"));
    assert_eq!(asker.rooms().unwrap(), room_list(&[("lobby", 3)]));

    // Node 2 dies (SIGKILL; bob's connection stays open until then): bob is lost on node 1
    // within the failure detection.
    let two_cluster = two.cluster;
    let killed = Instant::now();
    drop(two);
    watcher.set_read_timeout(Some(FAILURE_DETECTION + FAILURE_DETECTION_MARGIN)).unwrap();
    assert_eq!(next_presence(&mut watcher, "watcher"), presence(PresenceKind::Lost, &b, "lobby"));
    let lost_after = killed.elapsed();
    eprintln!("bob lost on node 1 {lost_after:?} after node 2 was killed");
    assert!(lost_after < FAILURE_DETECTION + FAILURE_DETECTION_MARGIN, "bob lost only after {lost_after:?}");
    watcher.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    line.expect_exact("* bob left (connection lost)\n");
    assert_eq!(watcher.who("lobby").unwrap(), members("lobby", &[&w, &g]));
    poll_who(&mut asker, "lobby", &members("lobby", &[&w, &g]), "asker after the kill");

    // Node 2 comes back on its address and id; bob reconnects there and reappears.
    let two = Node::start_with(2, &two_cluster.to_string(), &secret, 2, &[one.cluster], &[]);
    two.wait_links_up(1);
    let mut bob_again = connect(two.server.addr(), "bob");
    bob_again.join("lobby").unwrap();
    let b = member(&bob_again, "bob");
    line.expect_exact("* bob joined\n");
    assert_eq!(next_presence(&mut watcher, "watcher"), presence(PresenceKind::Joined, &b, "lobby"));
    poll_who(&mut asker, "lobby", &members("lobby", &[&w, &g, &b]), "asker after the restart");
    // Node 2 learned node 1's members when the link formed, maybe after bob joined: any order.
    poll_who_any_order(&mut bob_again, "lobby", &members("lobby", &[&w, &g, &b]), "bob after the restart");
    line.send(b"/who\n");
    line.expect_who("lobby", &["watcher", &guest, "bob"], Some(1));
    assert_nothing_before_pong(&mut watcher, 1);
}
