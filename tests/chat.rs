//! Fan-out through the real binary: one message byte for byte, echo, and 50 clients publishing
//! to each other at once with per-publisher order checked on every receiver.

mod support;

use std::sync::Arc;
use std::thread;

use fanout::client::ClientOptions;
use support::{
    assert_nothing_before_pong, connect_joined, connect_with, Progress, RawConn, Server, StreamCheck, IO_TIMEOUT,
};

/// A `MESSAGE` body as `protocol.md` lays it out.
fn message_body(stream: u64, seq: u64, room: &[u8], name: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&stream.to_be_bytes());
    body.extend_from_slice(&seq.to_be_bytes());
    body.push(room.len() as u8);
    body.extend_from_slice(room);
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    body
}

#[test]
fn message_reaches_the_other_client_byte_exact_and_never_its_publisher() {
    let server = Server::start(&[]);
    let mut alice = connect_joined(server.addr(), "alice", "lobby");
    let mut bob = RawConn::greeted(server.addr(), "bob");
    bob.join("lobby");

    let payload = b"hi bob \x00\x01\xff\n\r binary is fine";
    alice.publish("lobby", payload).unwrap();

    let (kind, body) = bob.read_raw().expect("bob reads the MESSAGE");
    assert_eq!(kind, 0x11, "frame type MESSAGE");
    assert!(body.len() >= 16, "MESSAGE body too short: {body:02x?}");
    let stream = u64::from_be_bytes(body[..8].try_into().unwrap());
    assert_ne!(stream, 0, "stream ids start at 1");
    assert_eq!(body, message_body(stream, 1, b"lobby", b"alice", payload));

    // Bob has it; alice's own publish was handled before her PING, so an echo would come first.
    assert_nothing_before_pong(&mut alice, 7);

    // A second publish continues the same stream.
    alice.publish("lobby", b"again").unwrap();
    let (_, body) = bob.read_raw().unwrap();
    assert_eq!(body, message_body(stream, 2, b"lobby", b"alice", b"again"));
    assert_nothing_before_pong(&mut alice, 8);
}

#[test]
fn echo_option_delivers_own_messages_too() {
    let server = Server::start(&[]);
    let mut alice = connect_with(server.addr(), "alice", &ClientOptions { echo: true, ..Default::default() });
    alice.join("lobby").unwrap();
    let mut bob = connect_joined(server.addr(), "bob", "lobby");

    alice.publish("lobby", b"to myself as well").unwrap();
    let own = alice.next_message().expect("alice gets her own message");
    let theirs = bob.next_message().expect("bob gets it");
    assert_eq!(own, theirs, "echo and delivery are the same MESSAGE");
    assert_eq!(
        (own.seq, &own.room[..], &own.name[..], &own.payload[..]),
        (1, &b"lobby"[..], &b"alice"[..], &b"to myself as well"[..])
    );

    // Without echo, bob does not get his own.
    bob.publish("lobby", b"from bob").unwrap();
    let m = alice.next_message().unwrap();
    assert_eq!((&m.name[..], &m.payload[..], m.seq), (&b"bob"[..], &b"from bob"[..], 1));
    assert_nothing_before_pong(&mut bob, 1);
    assert_nothing_before_pong(&mut alice, 2);
}

#[test]
fn payloads_from_empty_to_the_limit_arrive_exact() {
    let server = Server::start(&[]);
    let alice = connect_joined(server.addr(), "alice", "sizes");
    let mut bob = connect_joined(server.addr(), "bob", "sizes");
    let sizes = [0usize, 1, 1023, 1024, 1025, 4096, 65_535, 65_536];
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        alice.publish("sizes", &payload).unwrap();
        let m = bob.next_message().unwrap_or_else(|e| panic!("payload of {size} bytes: {e}"));
        assert_eq!(m.seq, i as u64 + 1);
        assert!(m.payload == payload, "payload of {size} bytes differs");
    }
}

const CROWD: usize = 50;
const MESSAGES_EACH: u64 = 100;

#[test]
fn fifty_clients_each_publishing_a_hundred_get_everyone_elses_in_order() {
    let server = Server::start(&[]);
    let addr = server.addr();
    // Slot i counts client i's arrival at each stage: 1 = joined, 2 = received everything.
    let stage = Progress::new(CROWD);
    let handles: Vec<_> = (0..CROWD)
        .map(|i| {
            let stage = Arc::clone(&stage);
            thread::spawn(move || {
                let name = format!("c{i:02}");
                let mut client = connect_joined(addr, &name, "crowd");
                stage.set(i, 1);
                // Nobody publishes before everyone is a member, or early messages would be missed.
                assert!(stage.wait_min(1, IO_TIMEOUT * 3), "{name}: not everyone joined");

                let sender = client.sender();
                let publisher = {
                    let name = name.clone();
                    thread::spawn(move || {
                        for seq in 1..=MESSAGES_EACH {
                            sender.publish("crowd", format!("{name} says {seq}").as_bytes()).expect("publish");
                        }
                    })
                };

                let mut check = StreamCheck::default();
                let expected = (CROWD as u64 - 1) * MESSAGES_EACH;
                for got in 0..expected {
                    let m = client.next_message().unwrap_or_else(|e| panic!("{name} after {got} messages: {e}"));
                    assert_eq!(&m.room[..], b"crowd");
                    assert_ne!(m.name, name.as_bytes(), "{name} got its own message");
                    let seq = check.record(m.stream, m.seq, &m.name);
                    let want = format!("{} says {seq}", String::from_utf8_lossy(&m.name));
                    assert_eq!(m.payload, want.as_bytes(), "{name}: payload of stream {}", m.stream);
                }
                publisher.join().expect("publisher thread");
                assert_eq!(check.stream_count(), CROWD - 1, "{name}: one stream per other client");
                assert!(
                    check.last_seq_by_name().values().all(|&last| last == MESSAGES_EACH),
                    "{name}: every stream complete"
                );
                stage.set(i, 2);
                // Every publish has now been delivered everywhere: nothing more may be queued.
                assert!(stage.wait_min(2, IO_TIMEOUT * 6), "{name}: the others did not finish");
                assert_nothing_before_pong(&mut client, i as u64);
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread panicked");
    }
}
