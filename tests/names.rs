//! Names unique per room on one node, through the real binary: a second holder of a name is
//! refused with `NAME_TAKEN` (the connection stays), and a client that reconnects under its name
//! gets it back within a bound — after its old connection closed, and after its old connection
//! went silent without closing (a half-open connection, made by the fault proxy), which the
//! server probes and closes.
//!
//! Every wait is a read with a timeout, or a client's bounded `join_retrying`.

mod support;

use std::time::{Duration, Instant};

use fanout::client::{Client, ClientError};
use fanout::limits::{NAME_TAKEN_RETRY_MAX, TICK_MAX};
use support::proxy::Proxy;
use support::{connect, LineConn, Server};

/// `NAME_TAKEN` on the wire.
const NAME_TAKEN: u16 = 260;

/// The server closes a silent holder 2 s after it was first asked for its name (plus a tick):
/// a retrying client has its name back within that, plus scheduling slack.
const TAKEOVER_WITHIN: Duration =
    Duration::from_secs(2).saturating_add(TICK_MAX).saturating_add(Duration::from_secs(1));

fn expect_name_taken(result: Result<(), ClientError>, room: &str) {
    match result {
        Err(ClientError::Server { code: NAME_TAKEN, text }) => {
            assert_eq!(text, format!("the name alice is taken in {room} on this node"));
        }
        other => panic!("a second alice in {room}: {other:?}"),
    }
}

/// Two binary clients on one node cannot both be `alice` in one room, whatever core each is
/// on; another room is fine, the refused one is not listed, and the name is free again once its
/// holder left. A line-mode `/nick alice` in that room prints an error and changes nothing.
#[test]
fn two_clients_on_one_node_cannot_both_be_alice_in_one_room() {
    let server = Server::start(&["--threads", "2"]);
    let mut first = connect(server.addr(), "alice");
    first.join("den").expect("the first alice joins");
    // Several tries: each lands on one of the two cores, so both kinds of holder are met.
    for _ in 0..4 {
        let mut second = connect(server.addr(), "alice");
        expect_name_taken(second.join("den"), "den");
        second.join("attic").expect("another room is fine");
        let who = second.who("den").expect("WHO den");
        assert_eq!((who.total, who.members.len()), (1, 1), "the refused alice is not a member");
        first.round_trip(1).expect("the holder answers its probe and stays");
    }
    first.leave("den").expect("the first alice leaves");
    let mut third = connect(server.addr(), "alice");
    third.join_retrying("den", 0).expect("the name is free again (once the leave reached every core)");

    let mut line = LineConn::connect(server.addr());
    line.send(b"/join den\n/nick alice\n/who\n");
    let greeting = line.read_line().expect("greeting");
    assert!(greeting.starts_with("* welcome guest"), "{greeting}");
    let joined = line.read_line().expect("join line");
    assert_eq!(joined, "* you are in den with 1 other\n");
    let refused = line.read_line().expect("nick line");
    assert_eq!(refused, "error 260 NAME_TAKEN: the name alice is taken in den on this node (your name is unchanged)\n");
    let who = line.read_line().expect("who line");
    assert!(who.starts_with("* 2 in den: alice, guest") && who.ends_with(" (you)\n"), "{who}");
}

/// A client whose connection was closed reconnects under its name at once, on whatever core:
/// `join_retrying` gets the room within its bound even if the new core has not yet heard the
/// old session leave.
#[test]
fn a_client_reconnecting_after_its_connection_closed_gets_its_name_back() {
    let server = Server::start(&["--threads", "2"]);
    for round in 0..8 {
        let mut old = connect(server.addr(), "alice");
        // The last round's alice left on one core; another may not have heard it yet.
        old.join_retrying("den", 0).unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(old);
        let started = Instant::now();
        let mut new = connect(server.addr(), "alice");
        new.join_retrying("den", 0).unwrap_or_else(|e| panic!("round {round}: the name back: {e}"));
        assert!(started.elapsed() <= NAME_TAKEN_RETRY_MAX, "round {round}: within the retry bound");
        let who = new.who("den").expect("WHO den");
        assert_eq!(who.members.len(), 1, "round {round}: one alice");
        new.leave("den").expect("leave");
    }
}

/// The old connection went silent without closing (the proxy swallows everything): the new
/// one is refused, the server probes the holder with a `PING` (from the holder's own core,
/// asked over the sibling link if the newcomer landed on another), nothing answers, the holder
/// is closed, and the new connection's retried `JOIN` succeeds within the stated bound.
#[test]
fn a_client_reconnecting_while_its_old_connection_is_half_open_takes_its_name_over() {
    let server = Server::start(&["--threads", "2"]);
    for round in 0..2 {
        let proxy = Proxy::start(server.addr());
        let mut old = connect(proxy.addr(), "alice");
        // The last round's alice was closed on one core; another may not have heard it yet.
        old.join_retrying("den", 0).unwrap_or_else(|e| panic!("round {round}: the old alice joins: {e}"));
        proxy.set_blackhole(true);

        let started = Instant::now();
        let mut new = connect(server.addr(), "alice");
        expect_name_taken(new.join("den"), "den");
        new.join_retrying("den", 0).unwrap_or_else(|e| panic!("round {round}: no takeover: {e}"));
        let took = started.elapsed();
        assert!(took <= TAKEOVER_WITHIN, "round {round}: took {took:?}");
        let who = new.who("den").expect("WHO den");
        assert_eq!(who.members.len(), 1, "round {round}");
        assert_eq!(who.members[0].session_id, new.welcome().session_id, "round {round}: the new session holds it");
        drop(old);
    }
}

/// `Client::join_retrying` gives up with `NAME_TAKEN` after its bound when the holder is alive.
#[test]
fn retrying_a_name_a_live_member_holds_gives_up_after_the_bound() {
    let server = Server::start(&["--threads", "1"]);
    let mut holder = connect(server.addr(), "alice");
    holder.join("den").expect("join");
    // The holder answers the server's probes from its own thread.
    let answering = std::thread::spawn(move || {
        holder.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let until = Instant::now() + NAME_TAKEN_RETRY_MAX + Duration::from_secs(2);
        while Instant::now() < until {
            let _ = holder.next_event();
        }
        holder
    });
    let started = Instant::now();
    let mut other: Client = connect(server.addr(), "alice");
    expect_name_taken(other.join_retrying("den", 0), "den");
    assert!(started.elapsed() >= NAME_TAKEN_RETRY_MAX / 2, "it did retry");
    let _holder = answering.join().expect("the holder thread");
}
