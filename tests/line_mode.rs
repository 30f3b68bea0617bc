//! Line mode (`nc` as a client) through the real binary, alone and mixed with binary clients.

mod support;

use fanout::client::Client;
use support::{assert_nothing_before_pong, connect_joined, LineConn, Server};

/// True for `guest<digits>`.
fn is_guest_name(name: &str) -> bool {
    name.strip_prefix("guest").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the next delivery on a binary observer and returns the publisher's name, checking
/// the room and payload.
fn observed(observer: &mut Client, payload: &str) -> String {
    let m = observer.next_message().unwrap_or_else(|e| panic!("observer waiting for {payload:?}: {e}"));
    assert_eq!(&m.room[..], b"lobby");
    assert_eq!(m.payload, payload.as_bytes(), "payload seen by the binary observer");
    String::from_utf8(m.name.to_vec()).expect("names are ASCII")
}

#[test]
fn two_line_clients_chat_and_never_hear_themselves() {
    let server = Server::start(&[]);
    let addr = server.addr();
    // A binary observer in the lobby tells us when each line client is in (its first line
    // arrived) and what its name is, since line mode announces neither.
    let mut observer = connect_joined(addr, "observer", "lobby");

    let mut b = LineConn::connect(addr);
    b.send(b"b is here\n");
    let b_name = observed(&mut observer, "b is here");

    let mut a = LineConn::connect(addr);
    a.send(b"hello there\n");
    let a_name = observed(&mut observer, "hello there");
    assert!(is_guest_name(&a_name) && is_guest_name(&b_name), "names {a_name:?} {b_name:?}");
    assert_ne!(a_name, b_name);

    let line = b.read_line().unwrap();
    let (name, rest) = line.split_once(": ").unwrap_or_else(|| panic!("not `name: payload`: {line:?}"));
    assert!(is_guest_name(name) && rest == "hello there\n", "line {line:?} is not guestN: hello there");
    assert_eq!(line, format!("{a_name}: hello there\n"));

    // A's own line was handled before B's reply, so had A been sent it, it would come first.
    b.send(b"hi a\n");
    a.expect_line(&format!("{b_name}: hi a\n"));
    assert_eq!(observed(&mut observer, "hi a"), b_name);
    assert_nothing_before_pong(&mut observer, 1);
}

#[test]
fn line_and_binary_clients_see_each_other() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut bob = connect_joined(addr, "bob", "lobby");
    let mut line = LineConn::connect(addr);

    line.send(b"hello there\n");
    let m = bob.next_message().unwrap();
    assert_eq!((&m.room[..], m.seq, &m.payload[..]), (&b"lobby"[..], 1, &b"hello there"[..]));
    let guest = String::from_utf8(m.name.to_vec()).unwrap();
    assert!(is_guest_name(&guest), "line client's name {guest:?}");

    bob.publish("lobby", b"hi guest").unwrap();
    line.expect_line("bob: hi guest\n");
    // Newlines in a binary payload become spaces, so one message stays one line.
    bob.publish("lobby", b"two\r\nlines\n").unwrap();
    line.expect_line("bob: two  lines \n");
    // Publishes to other rooms never reach the lobby.
    bob.join("elsewhere").unwrap();
    bob.publish("elsewhere", b"not for the lobby").unwrap();
    bob.publish("lobby", b"for the lobby").unwrap();
    line.expect_line("bob: for the lobby\n");

    // `\r\n` loses its `\r`; empty lines are not published and take no seq.
    line.send(b"crlf\r\n\n\r\nafter empty\n");
    let m = bob.next_message().unwrap();
    assert_eq!((m.seq, &m.payload[..]), (2, &b"crlf"[..]));
    let m = bob.next_message().unwrap();
    assert_eq!((m.seq, &m.payload[..], &m.name[..]), (3, &b"after empty"[..], guest.as_bytes()));
    assert_nothing_before_pong(&mut bob, 1);
}

#[test]
fn a_line_of_exactly_the_limit_is_published() {
    let server = Server::start(&[]);
    let mut observer = connect_joined(server.addr(), "observer", "lobby");
    let mut line = LineConn::connect(server.addr());
    let longest = "x".repeat(4096);
    line.send(format!("{longest}\n{longest}\r\n").as_bytes());
    observed(&mut observer, &longest);
    observed(&mut observer, &longest);
}

#[test]
fn a_line_over_the_limit_gets_line_too_long_then_eof() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut observer = connect_joined(addr, "observer", "lobby");
    for (i, too_long) in [format!("{}\n", "y".repeat(4097)), "z".repeat(5000), format!("{}\n", "w".repeat(100_000))]
        .into_iter()
        .enumerate()
    {
        let mut line = LineConn::connect(addr);
        line.send(format!("ok {i}\n").as_bytes());
        observed(&mut observer, &format!("ok {i}"));
        line.send(too_long.as_bytes());
        let error = line.read_line().unwrap();
        assert!(error.starts_with("error 12 LINE_TOO_LONG"), "case {i}: got {error:?}");
        assert!(error.ends_with('\n'));
        line.expect_eof();
    }
    // Nothing of the long lines was published, and the lobby still works.
    let mut fresh = LineConn::connect(addr);
    fresh.send(b"still fine\n");
    observed(&mut observer, "still fine");
    assert_nothing_before_pong(&mut observer, 1);
}
