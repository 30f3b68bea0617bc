//! `--token-file`: clients present a token in HELLO; a wrong or missing one is refused before
//! any room is touched, and no token ever shows up in the server's log or errors.

mod support;

use std::time::Duration;

use fanout::client::{Client, ClientError, ClientOptions};
use support::{LineConn, Server};

const TOKEN: &str = "s3cr3t-t0ken-value";

fn server() -> Server {
    let path = std::env::temp_dir().join(format!("fanout-auth-test-{}", std::process::id()));
    std::fs::write(&path, format!("{TOKEN}\nsecond-token\n")).unwrap();
    Server::start(&["--token-file", path.to_str().unwrap()])
}

fn with_token(token: &str) -> ClientOptions {
    ClientOptions {
        token: token.as_bytes().to_vec(),
        connect_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    }
}

fn refused(result: Result<Client, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Server { code, text }) => (code, text),
        Err(other) => panic!("expected an ERROR frame, got {other}"),
        Ok(_) => panic!("the server let the client in"),
    }
}

#[test]
fn the_right_token_gets_in_and_a_wrong_or_missing_one_is_refused_before_any_room() {
    let server = server();
    let mut alice = Client::connect_with(server.addr(), "alice", &with_token(TOKEN)).expect("alice gets in");
    alice.join("r").unwrap();
    let mut bob = Client::connect_with(server.addr(), "bob", &with_token("second-token")).expect("any listed token");
    bob.join("r").unwrap();

    let (code, text) = refused(Client::connect_with(server.addr(), "eve", &with_token("s3cr3t-t0ken-valuX")));
    assert_eq!(code, 11, "UNAUTHORIZED");
    assert!(!text.contains("s3cr3t"), "the error echoes a token: {text}");
    let (code, _) = refused(Client::connect_with(server.addr(), "eve", &with_token("")));
    assert_eq!(code, 11);

    // A refused client that goes on to send JOIN and PUBLISH anyway reaches nobody.
    let mut raw = support::RawConn::connect(server.addr());
    let hello = fanout::codec::ClientFrame::Hello(fanout::codec::Hello {
        version: 1,
        flags: 0,
        name: "mallory".into(),
        token: "wrong".into(),
    });
    raw.send_frame(&hello);
    raw.send_frame(&fanout::codec::ClientFrame::Join { flags: 0, room: "r".into() });
    raw.send_frame(&fanout::codec::ClientFrame::Publish { room: "r".into(), payload: "hi".into() });
    raw.expect_fatal(11);

    alice.publish("r", b"hello bob").unwrap();
    let m = bob.next_message().expect("bob gets alice's message");
    assert_eq!(&m.payload[..], b"hello bob");
    assert_eq!(&m.name[..], b"alice", "nothing from mallory came first");
    assert!(!server.log_text().contains(TOKEN), "the log shows a token");
    assert!(!server.log_text().contains("second-token"), "the log shows a token");
}

#[test]
fn line_mode_cannot_present_a_token_and_is_refused() {
    let server = server();
    let mut line = LineConn::connect(server.addr());
    line.send(b"hello\n");
    let got = line.read_line().expect("an error line");
    assert!(got.starts_with("error 11 UNAUTHORIZED"), "{got}");
    line.expect_eof();
}
