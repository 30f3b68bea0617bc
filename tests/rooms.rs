//! Rooms through the real binary: isolation, LEAVE, disconnect, empty rooms, send-only members,
//! and request errors that refuse one request but keep the connection.

mod support;

use fanout::client::{Client, ClientError, Event};
use fanout::codec::ClientFrame;
use support::{assert_nothing_before_pong, connect, connect_joined, Server};

fn expect_message(client: &mut Client, room: &str, name: &str, payload: &str) -> (u64, u64) {
    let m = client.next_message().unwrap_or_else(|e| panic!("expected {name}'s {payload:?} in {room}: {e}"));
    assert_eq!(
        (&m.room[..], &m.name[..], &m.payload[..]),
        (room.as_bytes(), name.as_bytes(), payload.as_bytes()),
        "unexpected MESSAGE"
    );
    (m.stream, m.seq)
}

fn expect_request_error(result: Result<(), ClientError>, code: u16) {
    match result {
        Err(ClientError::Server { code: got, .. }) if got == code => {}
        other => panic!("expected request error {code}, got {other:?}"),
    }
}

fn expect_error_event(client: &mut Client, code: u16) {
    match client.next_event() {
        Ok(Event::Error { code: got, .. }) if got == code => {}
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

#[test]
fn members_of_one_room_never_get_another_rooms_messages() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let x1 = connect_joined(addr, "x1", "room-x");
    let mut x2 = connect_joined(addr, "x2", "room-x");
    let y1 = connect_joined(addr, "y1", "room-y");
    let mut y2 = connect_joined(addr, "y2", "room-y");
    let mut both = connect_joined(addr, "both", "room-x");
    both.join("room-y").unwrap();

    for i in 0..10 {
        x1.publish("room-x", format!("x{i}").as_bytes()).unwrap();
        y1.publish("room-y", format!("y{i}").as_bytes()).unwrap();
    }
    for i in 0..10 {
        expect_message(&mut x2, "room-x", "x1", &format!("x{i}"));
        expect_message(&mut y2, "room-y", "y1", &format!("y{i}"));
    }
    // The member of both gets all twenty, each tagged with its room, each room in order.
    let (mut next_x, mut next_y) = (0, 0);
    for _ in 0..20 {
        let m = both.next_message().unwrap();
        match &m.room[..] {
            b"room-x" => {
                assert_eq!(m.payload, format!("x{next_x}").as_bytes());
                next_x += 1;
            }
            b"room-y" => {
                assert_eq!(m.payload, format!("y{next_y}").as_bytes());
                next_y += 1;
            }
            other => panic!("message from unexpected room {other:?}"),
        }
    }
    assert_eq!((next_x, next_y), (10, 10));
    // Everything was published before these PINGs: a cross-room leak would show up first.
    assert_nothing_before_pong(&mut x2, 1);
    assert_nothing_before_pong(&mut y2, 2);
    assert_nothing_before_pong(&mut both, 3);
}

#[test]
fn leave_stops_delivery_and_publishing() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut alice = connect_joined(addr, "alice", "lobby");
    let mut bob = connect_joined(addr, "bob", "lobby");
    let mut carol = connect_joined(addr, "carol", "lobby");

    alice.publish("lobby", b"one").unwrap();
    expect_message(&mut bob, "lobby", "alice", "one");
    expect_message(&mut carol, "lobby", "alice", "one");

    bob.leave("lobby").unwrap();
    alice.publish("lobby", b"two").unwrap();
    assert_eq!(expect_message(&mut carol, "lobby", "alice", "two").1, 2);
    assert_nothing_before_pong(&mut bob, 1);

    // After leaving, bob may not publish there; the refusal does not close him.
    bob.publish("lobby", b"ghost").unwrap();
    expect_error_event(&mut bob, 258);
    carol.publish("lobby", b"three").unwrap();
    expect_message(&mut alice, "lobby", "carol", "three");
    assert_nothing_before_pong(&mut carol, 2);
    assert_nothing_before_pong(&mut bob, 3);
    assert_nothing_before_pong(&mut alice, 4);
}

#[test]
fn disconnect_stops_delivery_and_the_rest_keep_talking() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut alice = connect_joined(addr, "alice", "lobby");
    let bob = connect_joined(addr, "bob", "lobby");
    let mut carol = connect_joined(addr, "carol", "lobby");
    let mut dave = connect_joined(addr, "dave", "lobby");

    bob.publish("lobby", b"bye").unwrap();
    for c in [&mut alice, &mut carol, &mut dave] {
        expect_message(c, "lobby", "bob", "bye");
    }
    bob.sender().shutdown().unwrap();
    drop(bob);

    // The hangup may or may not be handled before these publishes: both are legal, but every
    // remaining member must get every message, in order.
    for i in 1..=50 {
        alice.publish("lobby", format!("a{i}").as_bytes()).unwrap();
        carol.publish("lobby", format!("c{i}").as_bytes()).unwrap();
    }
    let (mut from_alice, mut from_carol) = (0, 0);
    for _ in 0..100 {
        let m = dave.next_message().unwrap();
        match &m.name[..] {
            b"alice" => {
                from_alice += 1;
                assert_eq!((m.seq, &m.payload[..]), (from_alice, format!("a{from_alice}").as_bytes()));
            }
            b"carol" => {
                from_carol += 1;
                assert_eq!((m.seq, &m.payload[..]), (from_carol, format!("c{from_carol}").as_bytes()));
            }
            other => panic!("unexpected publisher {other:?}"),
        }
    }
    for i in 1..=50 {
        expect_message(&mut alice, "lobby", "carol", &format!("c{i}"));
        expect_message(&mut carol, "lobby", "alice", &format!("a{i}"));
    }
    for (n, c) in [&mut alice, &mut carol, &mut dave].into_iter().enumerate() {
        assert_nothing_before_pong(c, n as u64);
    }
    // A newcomer gets a fresh stream; bob's publishes are gone for good.
    let mut erin = connect_joined(addr, "erin", "lobby");
    dave.publish("lobby", b"hello erin").unwrap();
    expect_message(&mut erin, "lobby", "dave", "hello erin");
}

#[test]
fn a_room_emptied_and_joined_again_starts_afresh() {
    // Nothing on the wire says whether a room exists. What is observable: after everyone left,
    // re-joining gives fresh streams (ids never reused, seq from 1) and nothing published before
    // the re-join is delivered.
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut alice = connect_joined(addr, "alice", "ephemeral");
    let mut bob = connect_joined(addr, "bob", "ephemeral");
    for i in 1..=3 {
        alice.publish("ephemeral", format!("old {i}").as_bytes()).unwrap();
    }
    let mut old_streams = Vec::new();
    for i in 1..=3 {
        let (stream, seq) = expect_message(&mut bob, "ephemeral", "alice", &format!("old {i}"));
        assert_eq!(seq, i);
        old_streams.push(stream);
    }
    bob.leave("ephemeral").unwrap();
    alice.leave("ephemeral").unwrap();
    // Alice is no longer a member: the room is gone, and so is her right to publish there.
    alice.publish("ephemeral", b"into the void").unwrap();
    expect_error_event(&mut alice, 258);

    bob.join("ephemeral").unwrap();
    alice.join("ephemeral").unwrap();
    alice.publish("ephemeral", b"new 1").unwrap();
    let (stream, seq) = expect_message(&mut bob, "ephemeral", "alice", "new 1");
    assert_eq!(seq, 1, "a new membership numbers from 1");
    assert!(!old_streams.contains(&stream), "stream id {stream} was reused");
    assert_nothing_before_pong(&mut bob, 1);

    // A disconnect empties the room the same way.
    drop(bob);
    drop(alice);
    let mut carol = connect_joined(addr, "carol", "ephemeral");
    let dave = connect_joined(addr, "dave", "ephemeral");
    dave.publish("ephemeral", b"fresh").unwrap();
    let (dave_stream, seq) = expect_message(&mut carol, "ephemeral", "dave", "fresh");
    assert_eq!(seq, 1);
    assert!(dave_stream != stream && !old_streams.contains(&dave_stream));
    assert_nothing_before_pong(&mut carol, 2);
}

#[test]
fn send_only_members_publish_but_receive_nothing() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut feeder = connect(addr, "feeder");
    feeder.join_send_only("news").unwrap();
    let mut reader = connect_joined(addr, "reader", "news");
    feeder.publish("news", b"headline").unwrap();
    expect_message(&mut reader, "news", "feeder", "headline");
    reader.publish("news", b"letter to the editor").unwrap();
    assert_nothing_before_pong(&mut feeder, 1);
}

#[test]
fn request_errors_refuse_the_request_and_keep_the_connection() {
    let server = Server::start(&["--max-rooms-per-connection", "3"]);
    let addr = server.addr();
    let mut alice = connect(addr, "alice");
    let mut bob = connect_joined(addr, "bob", "r1");

    // NOT_A_MEMBER: publish to, and leave, a room not joined (existing or not).
    alice.publish("r1", b"not yet").unwrap();
    expect_error_event(&mut alice, 258);
    alice.publish("nowhere", b"x").unwrap();
    expect_error_event(&mut alice, 258);
    expect_request_error(alice.leave("nowhere"), 258);

    // INVALID_ROOM: empty, with a space, with a control byte, 65 bytes.
    for bad in ["", "has space", "tab\there", &"r".repeat(65)] {
        expect_request_error(alice.join(bad), 256);
    }
    let mut frame = bytes::BytesMut::new();
    ClientFrame::Publish { room: bytes::Bytes::from_static(b"bad room"), payload: bytes::Bytes::from_static(b"x") }
        .encode(&mut frame);
    alice.sender().send_raw(&frame).unwrap();
    expect_error_event(&mut alice, 256);
    // 64 bytes is still a valid room.
    let longest = "r".repeat(64);
    alice.join(&longest).unwrap();
    alice.leave(&longest).unwrap();

    // TOO_MANY_ROOMS at 3: three joins succeed, the fourth is refused.
    alice.join("r1").unwrap();
    alice.join("r2").unwrap();
    alice.join("r3").unwrap();
    expect_request_error(alice.join("r4"), 257);
    // ALREADY_A_MEMBER.
    expect_request_error(alice.join("r1"), 259);

    // Still connected and fully working: publish, receive, leave and join again.
    alice.round_trip(1).unwrap();
    alice.publish("r1", b"still here").unwrap();
    expect_message(&mut bob, "r1", "alice", "still here");
    bob.publish("r1", b"welcome back").unwrap();
    expect_message(&mut alice, "r1", "bob", "welcome back");
    alice.leave("r3").unwrap();
    alice.join("r4").unwrap();
    assert_nothing_before_pong(&mut alice, 2);
    assert_nothing_before_pong(&mut bob, 3);
}
