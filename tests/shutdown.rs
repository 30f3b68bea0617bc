//! SIGTERM stops the real binary cleanly: exit status 0, every client told or closed.

mod support;

use std::time::Duration;

use fanout::client::{ClientError, Event};
use support::{connect_joined, LineConn, Server};

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn sigterm_closes_every_client_and_exits_zero() {
    let mut server = Server::start(&[]);
    let addr = server.addr();
    let mut alice = connect_joined(addr, "alice", "lobby");
    let mut bob = connect_joined(addr, "bob", "lobby");
    let mut line = LineConn::connect(addr);
    line.send(b"before the end\n");
    for client in [&mut alice, &mut bob] {
        let m = client.next_message().unwrap();
        assert_eq!(&m.payload[..], b"before the end");
    }
    alice.publish("lobby", b"last words").unwrap();
    line.expect_line("alice: last words\n");
    let m = bob.next_message().unwrap();
    assert_eq!(&m.payload[..], b"last words");
    // The PONG proves the event loop runs, and so has installed its signal handler.
    alice.round_trip(1).unwrap();
    bob.round_trip(2).unwrap();

    server.sigterm();
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(status.is_some(), "the server did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
    let status = status.unwrap();
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log_text());

    for (name, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        match client.next_event() {
            Ok(Event::Error { code: 10, .. }) => match client.next_event() {
                Err(ClientError::Closed) => {}
                other => panic!("{name}: expected end of stream after SHUTTING_DOWN, got {other:?}"),
            },
            Err(ClientError::Closed) => {}
            other => panic!("{name}: expected ERROR 10 SHUTTING_DOWN or end of stream, got {other:?}"),
        }
    }
    // Presence lines of others being closed may come first (`* alice left (connection lost)`).
    let mut last = line.read_line().unwrap();
    while last.starts_with("* ") {
        last = line.read_line().unwrap();
    }
    assert!(last.is_empty() || last.starts_with("error 10 SHUTTING_DOWN"), "line client got {last:?}");
    if !last.is_empty() {
        line.expect_eof();
    }
    // The log pipe is read by another thread: wait for the line rather than race it.
    assert!(server.wait_for_log("shutting down", EXIT_TIMEOUT).is_some(), "log:\n{}", server.log_text());
}

#[test]
fn sigterm_with_no_clients_exits_zero() {
    let mut server = Server::start(&[]);
    // A round trip proves the loop (and its signal handler) is up before the signal.
    let mut probe = connect_joined(server.addr(), "probe", "lobby");
    probe.round_trip(1).unwrap();
    drop(probe);
    server.sigterm();
    let status = server.wait_exit(EXIT_TIMEOUT).expect("exit within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
