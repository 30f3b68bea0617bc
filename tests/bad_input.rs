//! Broken input against the real binary. Each attack closes only the attacker (with the
//! documented error code, then end of stream); a bystander pair exchanging a numbered stream
//! before, during and after the attack gets every message, complete and in order.

mod support;

use std::net::SocketAddr;

use fanout::codec::{ClientFrame, Hello, PROTOCOL_VERSION};
use support::{assert_fatal_error_then_eof, connect, connect_joined, Bystander, RawConn, Server};

/// Runs `attack` against a fresh server while a bystander pair talks, then checks the server
/// is still up, still accepting, and that the bystanders lost nothing.
fn with_bystander(attack: impl FnOnce(SocketAddr)) {
    let mut server = Server::start(&[]);
    let addr = server.addr();
    let bystander = Bystander::start(addr, "bystanders");
    attack(addr);
    bystander.wait_more(20);
    let delivered = bystander.finish();
    assert!(delivered >= 60, "bystander exchanged only {delivered} messages");
    assert!(server.is_running(), "server exited; log:\n{}", server.log_text());
    let mut late = connect_joined(addr, "latecomer", "after");
    late.round_trip(1).expect("server still answers new clients");
}

fn hello_frame(version: u8, flags: u8, name: &[u8]) -> Vec<u8> {
    let mut body = vec![version, flags, name.len() as u8];
    body.extend_from_slice(name);
    body.push(0);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.push(0x01);
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn frame_declaring_a_huge_body_gets_frame_too_large_then_eof() {
    with_bystander(|addr| {
        let mut mallory = connect(addr, "mallory");
        mallory.join("bystanders").unwrap();
        // 0x00100000 = 1 MiB declared, far over the 66,560-byte limit; no body follows.
        mallory.sender().send_raw(&[0x00, 0x10, 0x00, 0x00, 0x04]).unwrap();
        assert_fatal_error_then_eof(&mut mallory, 2);
    });
}

#[test]
fn frame_one_byte_over_the_limit_gets_frame_too_large() {
    with_bystander(|addr| {
        let mut mallory = connect(addr, "mallory");
        let declared = (66_560u32 + 1).to_be_bytes();
        mallory.sender().send_raw(&[declared[0], declared[1], declared[2], declared[3], 0x04]).unwrap();
        assert_fatal_error_then_eof(&mut mallory, 2);
    });
}

#[test]
fn unknown_frame_type_gets_unknown_frame_type_then_eof() {
    with_bystander(|addr| {
        let mut mallory = connect(addr, "mallory");
        mallory.join("bystanders").unwrap();
        mallory.sender().send_raw(&[0x00, 0x00, 0x00, 0x00, 0x3f]).unwrap();
        assert_fatal_error_then_eof(&mut mallory, 3);
    });
}

#[test]
fn truncated_body_then_disconnect_leaves_the_server_running() {
    with_bystander(|addr| {
        let mut mallory = RawConn::greeted(addr, "mallory");
        mallory.join("bystanders");
        // PUBLISH declaring 100 bytes of body, of which 11 arrive: room "bystanders", one byte.
        let mut partial = vec![0x00, 0x00, 0x00, 100, 0x04, 10];
        partial.extend_from_slice(b"bystandersX");
        mallory.send(&partial);
        // The server must still answer others while it waits for the rest of that frame.
        let mut probe = connect(addr, "probe");
        probe.round_trip(9).unwrap();
        drop(mallory);
        probe.round_trip(10).unwrap();
    });
}

#[test]
fn garbage_bytes_get_frame_too_large_then_eof() {
    with_bystander(|addr| {
        // 0xff is not printable ASCII, so this is the binary dialect; its header declares a
        // body of 0xffffffff bytes, which is FRAME_TOO_LARGE before anything else is read.
        let mut mallory = RawConn::connect(addr);
        mallory.send(&[0xff; 4096]);
        mallory.expect_fatal(2);
    });
}

#[test]
fn garbage_after_hello_gets_frame_too_large_then_eof() {
    with_bystander(|addr| {
        let mut mallory = RawConn::greeted(addr, "mallory");
        mallory.join("bystanders");
        mallory.send(&[0xff; 4096]);
        mallory.expect_fatal(2);
    });
}

#[test]
fn first_frame_other_than_hello_gets_unexpected_frame_then_eof() {
    with_bystander(|addr| {
        // JOIN "lobby" before HELLO.
        let mut mallory = RawConn::connect(addr);
        mallory.send(&[0x00, 0x00, 0x00, 0x06, 0x02, 0x00, b'l', b'o', b'b', b'b', b'y']);
        mallory.expect_fatal(4);
        // PING before HELLO.
        let mut mallory = RawConn::connect(addr);
        mallory.send_frame(&ClientFrame::Ping(42));
        mallory.expect_fatal(4);
    });
}

#[test]
fn other_fatal_errors_close_only_the_offender() {
    let cases: Vec<(&str, Vec<u8>, bool, u16)> = vec![
        // (what, bytes, say HELLO first, expected code)
        ("PING with a 7-byte body", vec![0, 0, 0, 7, 0x05, 1, 2, 3, 4, 5, 6, 7], true, 1),
        ("JOIN with a reserved flag", vec![0, 0, 0, 3, 0x02, 0x80, b'a', b'b'], true, 1),
        ("HELLO with trailing bytes", vec![0, 0, 0, 6, 0x01, 1, 0, 1, b'm', 0, 0xee], false, 1),
        ("second HELLO", hello_frame(PROTOCOL_VERSION, 0, b"again"), true, 4),
        ("server-only type WELCOME", vec![0, 0, 0, 0, 0x10], true, 4),
        ("peer-link type 0x40", vec![0, 0, 0, 0, 0x40], true, 4),
        ("HELLO version 2", hello_frame(2, 0, b"mallory"), false, 5),
        ("HELLO with an empty name", hello_frame(PROTOCOL_VERSION, 0, b""), false, 6),
        ("HELLO with a space in the name", hello_frame(PROTOCOL_VERSION, 0, b"mal lory"), false, 6),
        ("HELLO with a 33-byte name", hello_frame(PROTOCOL_VERSION, 0, &[b'm'; 33]), false, 6),
        (
            "PUBLISH of 65,537 bytes",
            {
                let body_len = 1 + 10 + 65_537u32;
                let mut f = body_len.to_be_bytes().to_vec();
                f.push(0x04);
                f.push(10);
                f.extend_from_slice(b"bystanders");
                f.extend(std::iter::repeat_n(b'p', 65_537));
                f
            },
            true,
            13,
        ),
    ];
    with_bystander(|addr| {
        for (what, bytes, greet, code) in cases {
            let mut mallory = if greet {
                let mut m = RawConn::greeted(addr, "mallory");
                m.join("bystanders");
                m
            } else {
                RawConn::connect(addr)
            };
            mallory.send(&bytes);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mallory.expect_fatal(code))) {
                Ok(()) => {}
                Err(_) => panic!("case {what:?}: see the panic above"),
            }
        }
        // A valid HELLO built by the crate still works after all that.
        let mut ok = RawConn::connect(addr);
        ok.send_frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            name: bytes::Bytes::from_static(b"honest"),
            token: bytes::Bytes::new(),
        }));
        assert!(matches!(ok.read(), Ok(support::RawRead::Frame(fanout::codec::ServerFrame::Welcome(_)))));
    });
}
