//! Limits at their boundaries, through the real binary: the connection limit refuses the next
//! connection cleanly and frees its slot on a disconnect; rooms per connection, frame body and
//! line length are accepted exactly at the limit and refused one past it.
//!
//! Boundaries already tested elsewhere are not repeated: `rooms.rs` (3 rooms with the flag),
//! `bad_input.rs` (a frame one byte over, a payload one byte over), `chat.rs` (a payload exactly
//! at the limit), `line_mode.rs` (a line of exactly 4,096 bytes in one write, and 4,097).

mod support;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout::client::{Client, ClientError};
use fanout::codec::{ClientFrame, ServerFrame};
use fanout::error::ErrorCode;
use fanout::limits::{FRAME_BODY_BYTES_MAX, LINE_BYTES_MAX, PAYLOAD_BYTES_MAX, ROOMS_PER_CONNECTION_MAX};
use support::{assert_nothing_before_pong, connect, connect_joined, hello, LineConn, RawConn, RawRead, Server};

const SERVER_FULL: u16 = ErrorCode::ServerFull as u16;
const TOO_MANY_ROOMS: u16 = ErrorCode::TooManyRooms as u16;
const ALREADY_A_MEMBER: u16 = ErrorCode::AlreadyAMember as u16;
const NOT_A_MEMBER: u16 = ErrorCode::NotAMember as u16;
const INVALID_ROOM: u16 = ErrorCode::InvalidRoom as u16;
const FRAME_TOO_LARGE: u16 = ErrorCode::FrameTooLarge as u16;
const PAYLOAD_TOO_LARGE: u16 = ErrorCode::PayloadTooLarge as u16;

/// How long a freed connection slot may take to be reusable (the server must first read the
/// closed connection's end of stream).
const SLOT_FREED_WITHIN: Duration = Duration::from_secs(5);

/// Pause between attempts while polling for a freed slot: a bounded poll, not synchronisation.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Connects, says `HELLO`, and returns the connection if the server welcomed it, or `None` if
/// it refused it with `SERVER_FULL` and closed it. Anything else fails the test.
fn try_greet(addr: SocketAddr, name: &str) -> Option<RawConn> {
    let mut conn = RawConn::connect(addr);
    conn.send_frame(&hello(name));
    match conn.read() {
        Ok(RawRead::Frame(ServerFrame::Welcome(_))) => Some(conn),
        Ok(RawRead::Frame(ServerFrame::Error { code: SERVER_FULL, .. })) => {
            // The refusal is the whole conversation: end of stream (or a reset, since the
            // server closed without reading our HELLO) follows.
            match conn.read() {
                Ok(RawRead::Eof) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("{name}: expected end of stream after SERVER_FULL, got {other:?}"),
            }
            None
        }
        other => panic!("{name}: expected WELCOME or SERVER_FULL, got {other:?}"),
    }
}

/// Each member of room `full` publishes once and every other member receives it: all of them work.
fn assert_all_work(clients: &mut [Client], round: u32) {
    let count = clients.len();
    for i in 0..count {
        let payload = format!("round {round} from {i}");
        clients[i].publish("full", payload.as_bytes()).unwrap();
        for (j, other) in clients.iter_mut().enumerate().filter(|(j, _)| *j != i) {
            let m = other.next_message().unwrap_or_else(|e| panic!("client {j}, {payload:?}: {e}"));
            assert_eq!(m.payload, payload.as_bytes(), "client {j}");
        }
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_nothing_before_pong(client, u64::from(round) * 100 + i as u64);
    }
}

#[test]
fn the_connection_after_the_limit_gets_server_full_and_a_freed_slot_is_reused() {
    let server = Server::start(&["--threads", "1", "--max-connections", "3"]);
    let addr = server.addr();
    let mut members: Vec<Client> = (0..3).map(|i| connect_joined(addr, &format!("member{i}"), "full")).collect();
    assert_all_work(&mut members, 1);

    // The 4th, silent: SERVER_FULL right after the accept, then end of stream.
    let mut fourth = RawConn::connect(addr);
    fourth.expect_fatal(SERVER_FULL);
    // The 4th, saying HELLO like any client: the client library reports the refusal.
    match Client::connect(addr, "fourth") {
        Err(ClientError::Server { code: SERVER_FULL, .. }) => {}
        other => panic!("expected SERVER_FULL from connect, got {other:?}"),
    }
    // Refusals take no slot, however many there are.
    for i in 0..20 {
        assert!(try_greet(addr, &format!("refused{i}")).is_none(), "connection {} over the limit was welcomed", i + 4);
    }
    assert_all_work(&mut members, 2);

    // One member leaves; its slot is free again once the server has seen it go.
    let gone = members.pop().unwrap();
    gone.sender().shutdown().unwrap();
    drop(gone);
    let deadline = Instant::now() + SLOT_FREED_WITHIN;
    let mut attempts = 0;
    let mut newcomer = loop {
        attempts += 1;
        if let Some(conn) = try_greet(addr, "newcomer") {
            break conn;
        }
        assert!(Instant::now() < deadline, "no slot free {SLOT_FREED_WITHIN:?} after a member left ({attempts} tries)");
        thread::sleep(RETRY_PAUSE);
    };
    eprintln!("a freed slot was reused after {attempts} attempts");

    // The newcomer works with the others, and the limit still holds with it.
    newcomer.join("full");
    members[0].publish("full", b"welcome").unwrap();
    match newcomer.read() {
        Ok(RawRead::Frame(ServerFrame::Message(m))) => assert_eq!(m.payload, &b"welcome"[..]),
        other => panic!("newcomer: expected the welcome message, got {other:?}"),
    }
    assert_eq!(members[1].next_message().unwrap().payload, &b"welcome"[..]);
    newcomer.send_frame(&ClientFrame::Publish {
        room: Bytes::from_static(b"full"),
        payload: Bytes::from_static(b"thanks"),
    });
    for member in &mut members {
        assert_eq!(member.next_message().unwrap().payload, &b"thanks"[..]);
    }
    assert!(try_greet(addr, "one-too-many").is_none(), "the limit no longer holds after a slot was reused");
    assert_all_work(&mut members, 3);
}

/// `--max-connections` is documented as the limit "per server": it must hold however many
/// reactors the connections are spread over.
#[test]
fn the_connection_limit_holds_for_the_whole_server_across_reactors() {
    let server = Server::start(&["--threads", "4", "--max-connections", "3"]);
    let addr = server.addr();
    let mut welcomed = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        match try_greet(addr, &format!("c{i}")) {
            Some(conn) => welcomed.push(conn),
            None => refused += 1,
        }
    }
    assert_eq!((welcomed.len(), refused), (3, 9), "4 reactors, limit 3: welcomed vs refused of 12");
}

/// Joins `count` rooms named `prefix-N` and expects every `JOINED`.
fn join_many(client: &mut Client, prefix: &str, count: usize) {
    for r in 0..count {
        client.join(&format!("{prefix}-{r}")).unwrap_or_else(|e| panic!("join {prefix}-{r} of {count}: {e}"));
    }
}

fn expect_too_many_rooms(client: &mut Client, room: &str) {
    match client.join(room) {
        Err(ClientError::Server { code: TOO_MANY_ROOMS, .. }) => {}
        other => panic!("join {room}: expected TOO_MANY_ROOMS, got {other:?}"),
    }
}

#[test]
fn rooms_per_connection_default_limit_is_exact() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut many = connect(addr, "many");
    join_many(&mut many, "r", ROOMS_PER_CONNECTION_MAX);
    expect_too_many_rooms(&mut many, "one-more");
    // Still the member of all 64: a publish to the last one reaches a listener there.
    let mut listener = connect_joined(addr, "listener", &format!("r-{}", ROOMS_PER_CONNECTION_MAX - 1));
    many.publish(&format!("r-{}", ROOMS_PER_CONNECTION_MAX - 1), b"in the 64th room").unwrap();
    assert_eq!(listener.next_message().unwrap().payload, &b"in the 64th room"[..]);
    // The refused room was not joined: publishing there is NOT_A_MEMBER.
    many.publish("one-more", b"x").unwrap();
    match many.next_event() {
        Ok(fanout::client::Event::Error { code: NOT_A_MEMBER, .. }) => {}
        other => panic!("expected NOT_A_MEMBER for the refused room, got {other:?}"),
    }
    // Leaving one makes room for exactly one more.
    many.leave("r-0").unwrap();
    many.join("one-more").unwrap();
    expect_too_many_rooms(&mut many, "two-more");
    assert_nothing_before_pong(&mut many, 1);
}

#[test]
fn rooms_per_connection_flag_of_one_allows_exactly_one() {
    let server = Server::start(&["--max-rooms-per-connection", "1"]);
    let mut solo = connect(server.addr(), "solo");
    solo.join("only").unwrap();
    expect_too_many_rooms(&mut solo, "second");
    // A failed join leaves the membership as it was; rejoining is ALREADY_A_MEMBER, not a second room.
    match solo.join("only") {
        Err(ClientError::Server { code: ALREADY_A_MEMBER, .. }) => {}
        other => panic!("expected ALREADY_A_MEMBER, got {other:?}"),
    }
    solo.leave("only").unwrap();
    solo.join("second").unwrap();
    assert_nothing_before_pong(&mut solo, 1);
}

/// A frame header and body, any type.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

#[test]
fn a_frame_body_of_exactly_the_limit_is_read_and_one_byte_more_is_refused_from_its_header() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let longest_name = "n".repeat(32);
    let longest_room = "r".repeat(64);

    // Exactly the limit: a JOIN whose room fills the 66,560-byte body is framed, read whole and
    // refused as a request (INVALID_ROOM), and the connection goes on.
    let mut at_limit = RawConn::greeted(addr, &longest_name);
    let mut body = vec![0u8];
    body.resize(FRAME_BODY_BYTES_MAX, b'j');
    at_limit.send(&frame(0x02, &body));
    match at_limit.read() {
        Ok(RawRead::Frame(ServerFrame::Error { code: INVALID_ROOM, .. })) => {}
        other => panic!("a JOIN of exactly the max body: expected INVALID_ROOM, got {other:?}"),
    }
    at_limit.send_frame(&ClientFrame::Ping(7));
    assert!(matches!(at_limit.read(), Ok(RawRead::Frame(ServerFrame::Pong(7)))), "no PONG after the max-size frame");

    // The largest message the server ever sends: 64-byte room, 32-byte name, 65,536-byte
    // payload, delivered byte for byte.
    at_limit.join(&longest_room);
    let mut receiver = connect_joined(addr, "receiver", &longest_room);
    let payload: Vec<u8> = (0..PAYLOAD_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    at_limit.send_frame(&ClientFrame::Publish {
        room: Bytes::copy_from_slice(longest_room.as_bytes()),
        payload: Bytes::from(payload.clone()),
    });
    let m = receiver.next_message().unwrap();
    assert_eq!((&m.room[..], &m.name[..]), (longest_room.as_bytes(), longest_name.as_bytes()));
    assert!(m.payload == payload, "the largest message arrived changed");

    // A PUBLISH of exactly the max body is framed too, and refused by the payload limit
    // (PAYLOAD_TOO_LARGE), not by the frame limit.
    let mut body = vec![1u8, b'r'];
    body.resize(FRAME_BODY_BYTES_MAX, b'p');
    let mut big = RawConn::greeted(addr, "big");
    big.join("r");
    big.send(&frame(0x04, &body));
    big.expect_fatal(PAYLOAD_TOO_LARGE);

    // One byte over: FRAME_TOO_LARGE from the header alone (no body is ever sent), then EOF.
    let mut over = RawConn::greeted(addr, "over");
    over.send(&((FRAME_BODY_BYTES_MAX + 1) as u32).to_be_bytes());
    over.send(&[0x04]);
    over.expect_fatal(FRAME_TOO_LARGE);

    // The connection that sent the max-size frames still works.
    at_limit.send_frame(&ClientFrame::Ping(8));
    assert!(matches!(at_limit.read(), Ok(RawRead::Frame(ServerFrame::Pong(8)))));
}

#[test]
fn a_line_of_exactly_the_limit_arriving_in_pieces_is_published_whole() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut observer = connect_joined(addr, "observer", "lobby");
    let mut line = LineConn::connect(addr);
    let longest: Vec<u8> = (0..LINE_BYTES_MAX).map(|i| b'a' + (i % 26) as u8).collect();
    // Pieces with pauses between them, so the server most likely sees a partial line of the
    // full length, then its `\r`, then its `\n` (if it sees them together the test still holds).
    let (head, tail) = longest.split_at(LINE_BYTES_MAX / 2);
    for piece in [head, tail, &b"\r"[..], &b"\n"[..]] {
        line.send(piece);
        thread::sleep(Duration::from_millis(50));
    }
    line.send(b"after\n");
    for expected in [&longest[..], b"after"] {
        let m = observer.next_message().unwrap();
        assert!(m.payload == expected, "expected a {}-byte line, got {} bytes", expected.len(), m.payload.len());
    }
    assert_nothing_before_pong(&mut observer, 1);
}
