//! Client failover against real servers on loopback: a [`FailoverClient`] given two independent
//! servers A and B keeps chatting on B after A dies, with its rooms re-joined; an interrupted
//! publish is not redone; with every server down it gives up in bounded time.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fanout::client::{Client, ClientOptions, Event};
use fanout::codec::Message;
use fanout::failover::{FailoverClient, FailoverError, FailoverEvent, ReconnectPolicy};
use support::{assert_nothing_before_pong, connect_joined, Server, IO_TIMEOUT};

/// Most publishes a test makes while waiting for a dead connection to show up as a write error.
const DEAD_WRITES_MAX: usize = 1_000;

/// Fast retries, so that the tests stay short.
fn quick_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(400),
        attempt_timeout: Duration::from_secs(3),
    }
}

fn failover_client(addrs: &[SocketAddr], name: &str) -> FailoverClient {
    let mut client = FailoverClient::connect(addrs, name, &ClientOptions::default(), quick_policy())
        .unwrap_or_else(|e| panic!("connect {name}: {e}"));
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
    client
}

fn assert_message(m: &Message, room: &str, name: &str, payload: &[u8]) {
    assert_eq!(m.room, room.as_bytes(), "room");
    assert_eq!(m.name, name.as_bytes(), "publisher name");
    assert_eq!(m.payload, payload, "payload");
}

/// The failover client's next event must be exactly this message.
fn expect_message(client: &mut FailoverClient, room: &str, name: &str, payload: &[u8]) {
    match client.next_event() {
        Ok(FailoverEvent::Event(Event::Message(m))) => assert_message(&m, room, name, payload),
        other => panic!("expected {payload:?} from {name} in {room}, got {other:?}"),
    }
}

/// A plain client's next message must be exactly this one.
fn expect_plain_message(client: &mut Client, room: &str, name: &str, payload: &[u8]) {
    match client.next_message() {
        Ok(m) => assert_message(&m, room, name, payload),
        Err(e) => panic!("expected {payload:?} from {name} in {room}, got {e}"),
    }
}

#[test]
fn fails_over_to_the_next_server_and_rejoins_its_rooms() {
    let mut a = Server::start(&[]);
    let b = Server::start(&[]);
    let mut roamer = failover_client(&[a.addr(), b.addr()], "roamer");
    assert_eq!(roamer.current_addr(), Some(a.addr()), "starts on the first address");
    roamer.join("r").expect("join r");
    roamer.join_send_only("news").expect("join news send-only");
    let mut alice = connect_joined(a.addr(), "alice", "r");
    let mut bob = connect_joined(b.addr(), "bob", "r");
    bob.join("news").expect("bob joins news");

    // On A: both directions.
    roamer.publish("r", b"roamer to A").expect("publish on A");
    expect_plain_message(&mut alice, "r", "roamer", b"roamer to A");
    alice.publish("r", b"alice to roamer").expect("alice publish");
    expect_message(&mut roamer, "r", "alice", b"alice to roamer");
    // B is a separate server: nothing of that reached bob.
    assert_nothing_before_pong(&mut bob, 1);

    // A stops (SIGTERM: its clients get SHUTTING_DOWN, then the connection closes).
    a.sigterm();
    assert!(a.wait_exit(IO_TIMEOUT).is_some(), "server A did not exit after SIGTERM");

    // The next read notices, fails over to B and re-joins both rooms before returning.
    match roamer.next_event() {
        Ok(FailoverEvent::Reconnected(r)) => {
            assert_eq!(r.addr, b.addr(), "failed over to B");
            assert_eq!(roamer.welcome().map(|w| w.session_id), Some(r.session_id), "the new session");
            assert!(r.attempts >= 1, "attempts counted");
        }
        other => panic!("expected a failover to B, got {other:?}"),
    }
    assert_eq!(roamer.current_addr(), Some(b.addr()));
    let rooms: Vec<(&str, bool)> = roamer.rooms().collect();
    assert_eq!(rooms, [("r", false), ("news", true)], "remembered rooms");

    // On B: both directions, exact payloads.
    roamer.publish("r", b"roamer to B").expect("publish on B");
    expect_plain_message(&mut bob, "r", "roamer", b"roamer to B");
    bob.publish("r", b"bob to roamer").expect("bob publish");
    expect_message(&mut roamer, "r", "bob", b"bob to roamer");

    // The send-only room was re-joined send-only: roamer may publish there, receives nothing.
    roamer.publish("news", b"roamer news").expect("publish news on B");
    expect_plain_message(&mut bob, "news", "roamer", b"roamer news");
    bob.publish("news", b"bob news").expect("bob publish news");
    bob.publish("r", b"after news").expect("bob publish marker");
    expect_message(&mut roamer, "r", "bob", b"after news");
    roamer.round_trip(7).expect("round trip on B");
}

#[test]
fn an_interrupted_publish_is_reported_and_not_redone() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let a_addr = a.addr();
    let mut roamer = failover_client(&[a_addr, b.addr()], "roamer");
    roamer.join("r").expect("join r");
    let mut bob = connect_joined(b.addr(), "bob", "r");

    // Kill A outright (dropping the handle kills the process and reaps it).
    drop(a);

    // Publishing notices the dead connection (the first writes may still be accepted by the
    // kernel); the failing publish is reported, not repeated on B.
    let mut interrupted = None;
    for n in 0..DEAD_WRITES_MAX {
        match roamer.publish("r", format!("lost {n}").as_bytes()) {
            Ok(()) => {}
            Err(FailoverError::Interrupted { reconnected, .. }) => {
                interrupted = Some(reconnected);
                break;
            }
            Err(e) => panic!("publish {n} after A died: {e}"),
        }
    }
    let reconnected = interrupted.expect("no publish noticed that A died");
    assert_eq!(reconnected.addr, b.addr(), "failed over to B");
    assert_eq!(roamer.current_addr(), Some(b.addr()));

    // The reader side sees the same failover as an event.
    match roamer.next_event() {
        Ok(FailoverEvent::Reconnected(r)) => assert_eq!(r, reconnected, "same failover"),
        other => panic!("expected the failover event, got {other:?}"),
    }

    // Bob's first message is the one published after the failover: nothing was replayed.
    roamer.publish("r", b"after failover").expect("publish on B");
    expect_plain_message(&mut bob, "r", "roamer", b"after failover");
    assert_nothing_before_pong(&mut bob, 2);
    bob.publish("r", b"hello again").expect("bob publish");
    expect_message(&mut roamer, "r", "bob", b"hello again");
}

#[test]
fn gives_up_in_bounded_time_when_every_server_is_down() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let addrs = [a.addr(), b.addr()];
    let mut roamer = failover_client(&addrs, "roamer");
    roamer.join("r").expect("join r");
    drop(a);
    drop(b);

    let started = Instant::now();
    match roamer.next_event() {
        Err(FailoverError::GaveUp { attempts, .. }) => assert_eq!(attempts, quick_policy().max_attempts),
        other => panic!("expected to give up, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "giving up took {took:?}");
    assert_eq!(roamer.current_addr(), None, "disconnected after giving up");

    // Operations start a new bounded round, which also gives up.
    let started = Instant::now();
    assert!(matches!(roamer.publish("r", b"nobody"), Err(FailoverError::GaveUp { .. })), "publish while down");
    assert!(started.elapsed() < Duration::from_secs(5), "second round took {:?}", started.elapsed());

    // So does connecting to servers that are all down.
    let started = Instant::now();
    let result = FailoverClient::connect(&addrs, "late", &ClientOptions::default(), quick_policy());
    assert!(matches!(result, Err(FailoverError::GaveUp { .. })), "connect with every server down");
    assert!(started.elapsed() < Duration::from_secs(5), "connect took {:?}", started.elapsed());
}

#[test]
fn a_read_timeout_is_not_a_failover() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let mut roamer = failover_client(&[a.addr(), b.addr()], "roamer");
    roamer.join("r").expect("join r");
    roamer.set_read_timeout(Some(Duration::from_millis(50))).expect("short read timeout");
    match roamer.next_event() {
        Err(e) if e.is_timeout() => {}
        other => panic!("expected a read timeout, got {other:?}"),
    }
    assert_eq!(roamer.current_addr(), Some(a.addr()), "still on A");
    roamer.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    let alice = connect_joined(a.addr(), "alice", "r");
    alice.publish("r", b"still here").expect("alice publish");
    expect_message(&mut roamer, "r", "alice", b"still here");
    // A request error leaves the connection (and the server) as it is.
    match roamer.leave("not-joined") {
        Err(FailoverError::Client(fanout::client::ClientError::Server { code: 258, .. })) => {}
        other => panic!("expected NOT_A_MEMBER, got {other:?}"),
    }
    assert_eq!(roamer.current_addr(), Some(a.addr()), "still on A");
}
