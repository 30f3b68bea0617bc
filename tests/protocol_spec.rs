//! A client written only from `protocol.md`, as a stranger would write it.
//!
//! It uses no fanout code: only `std` and the bytes that `protocol.md` prints. It replays the
//! "Worked example" byte for byte against the real server binary, and checks the "Errors" table's
//! codes for the errors it can provoke without any knowledge of the implementation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Every read and write of these tests gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Frame header: `length: u32 BE`, `type: u8`.
const HEADER_BYTES: usize = 5;

const TYPE_HELLO: u8 = 0x01;
const TYPE_PING: u8 = 0x05;
const TYPE_PONG: u8 = 0x06;
const TYPE_JOIN: u8 = 0x02;
const TYPE_LEAVE: u8 = 0x03;
const TYPE_WHO: u8 = 0x07;
const TYPE_ROOMS: u8 = 0x08;
const TYPE_WELCOME: u8 = 0x10;
const TYPE_JOINED: u8 = 0x12;
const TYPE_LEFT: u8 = 0x13;
const TYPE_ERROR: u8 = 0x14;
const TYPE_MEMBERS: u8 = 0x15;
const TYPE_ROOM_LIST: u8 = 0x16;
const TYPE_PRESENCE: u8 = 0x17;
/// `JOIN.flags` bit 1.
const JOIN_FLAG_PRESENCE: u8 = 0b10;

/// Longest `ERROR` text, from the "Limits" table.
const ERROR_TEXT_BYTES_MAX: usize = 256;

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn parse_hex(text: &str, context: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'|').collect();
    let pairs = digits.chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "odd number of hex digits in {context:?}");
    pairs
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?} in {context:?}"))
        })
        .collect()
}

/// The lines of the section starting at the heading line `heading` (up to the next `## `).
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "protocol.md has no heading {heading:?}");
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// One step of the worked example.
#[derive(Debug)]
enum Step {
    /// Connection `conn` sends `bytes`.
    Send { conn: char, bytes: Vec<u8>, line: String },
    /// Connection `conn` receives exactly `bytes`.
    Expect { conn: char, bytes: Vec<u8>, line: String },
    /// Connection `conn` receives one `ERROR` frame with `code`, then end-of-stream.
    ExpectErrorThenEof { conn: char, code: u16, line: String },
}

fn worked_example(doc: &str) -> Vec<Step> {
    let body = section(doc, "## Worked example");
    let mut fenced = body.iter().skip_while(|l| !l.trim_start().starts_with("```"));
    assert!(fenced.next().is_some(), "no fenced code block under \"## Worked example\"");
    let mut steps = Vec::new();
    for raw in fenced.take_while(|l| !l.trim_start().starts_with("```")) {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut tokens = line.splitn(3, char::is_whitespace);
        let conn_token = tokens.next().unwrap_or_default();
        let direction = tokens.next().unwrap_or_default();
        let rest = tokens.next().unwrap_or_default().trim();
        let mut conn_chars = conn_token.chars();
        let (Some(conn), None) = (conn_chars.next(), conn_chars.next()) else {
            panic!("worked example line does not start with a one-letter connection: {raw:?}");
        };
        let line = raw.trim().to_string();
        let step = match direction {
            "C→S" => Step::Send { conn, bytes: parse_hex(rest, raw), line },
            "S→C" => match rest.strip_prefix("ERROR") {
                Some(code) => {
                    let code = parse_hex(code, raw);
                    assert_eq!(code.len(), 2, "ERROR shorthand needs a u16 code: {raw:?}");
                    Step::ExpectErrorThenEof { conn, code: u16::from_be_bytes([code[0], code[1]]), line }
                }
                None => Step::Expect { conn, bytes: parse_hex(rest, raw), line },
            },
            other => panic!("unknown direction {other:?} in worked example line {raw:?}"),
        };
        if let Step::Send { bytes, .. } | Step::Expect { bytes, .. } = &step {
            // The page must be consistent with itself: the header's length is the body's.
            assert!(bytes.len() >= HEADER_BYTES, "worked example line shorter than a header: {raw:?}");
            let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            assert_eq!(declared, bytes.len() - HEADER_BYTES, "header length != body length in {raw:?}");
        }
        steps.push(step);
    }
    assert!(!steps.is_empty(), "the worked example has no steps");
    steps
}

/// The real server on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            // The worked example is "on a fresh single-core server": its WELCOME core_id,
            // session ids and MESSAGE stream id are those of one reactor (`--threads 1`, from
            // `fanout serve --help`; by default the server runs one reactor per core).
            .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the fanout binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Read stderr until the address is announced, then keep draining so the server never
        // blocks on a full pipe.
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[at + "listening on ".len()..].trim().to_string());
                    }
                }
                if tx.is_none() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = match rx.recv_timeout(IO_TIMEOUT) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not announce \"listening on ADDR\" in time: {e}");
            }
        };
        let addr = addr.parse().unwrap_or_else(|e| panic!("cannot parse listen address {addr:?}: {e}"));
        Self { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to the server");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_exactly(stream: &mut TcpStream, len: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("{what}: end-of-stream after {got} of {len} bytes: {}", hex(&buf[..got])),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: read failed after {got} of {len} bytes ({}): {e}", hex(&buf[..got])),
        }
    }
    buf
}

/// Reads one frame: its type and body.
fn read_frame(stream: &mut TcpStream, what: &str) -> (u8, Vec<u8>) {
    let header = read_exactly(stream, HEADER_BYTES, what);
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    assert!(len <= 1 << 24, "{what}: implausible frame length in header {}", hex(&header));
    (header[4], read_exactly(stream, len, what))
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).expect("body fits a u32 length").to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn hello(name: &str) -> Vec<u8> {
    let mut body = vec![1, 0, u8::try_from(name.len()).expect("name fits a u8 length")];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    frame(TYPE_HELLO, &body)
}

fn send(stream: &mut TcpStream, bytes: &[u8], what: &str) {
    stream.write_all(bytes).unwrap_or_else(|e| panic!("{what}: write of {} failed: {e}", hex(bytes)));
}

/// Reads one `ERROR` frame and returns its code, checking the text rules of the spec.
fn expect_error(stream: &mut TcpStream, what: &str) -> u16 {
    let (kind, body) = read_frame(stream, what);
    assert_eq!(kind, TYPE_ERROR, "{what}: expected an ERROR frame, got type 0x{kind:02x}, body {}", hex(&body));
    assert!(body.len() >= 2, "{what}: ERROR body too short: {}", hex(&body));
    let text = &body[2..];
    assert!(text.len() <= ERROR_TEXT_BYTES_MAX, "{what}: ERROR text is {} bytes", text.len());
    assert!(std::str::from_utf8(text).is_ok(), "{what}: ERROR text is not UTF-8: {}", hex(text));
    u16::from_be_bytes([body[0], body[1]])
}

/// Asserts the server closes the stream (a read returns 0) without sending anything else.
fn expect_eof(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("{what}: expected end-of-stream, got {}", hex(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: expected end-of-stream, read failed: {e}"),
        }
    }
}

#[test]
fn worked_example_replays_byte_for_byte() {
    let steps = worked_example(&protocol_md());
    let server = Server::start();
    let mut conns: BTreeMap<char, TcpStream> = BTreeMap::new();
    for step in &steps {
        match step {
            Step::Send { conn, bytes, line } => {
                let stream = conns.entry(*conn).or_insert_with(|| server.connect());
                send(stream, bytes, line);
            }
            Step::Expect { conn, bytes, line } => {
                let stream = conns.entry(*conn).or_insert_with(|| server.connect());
                let got = read_exactly(stream, bytes.len(), line);
                assert!(
                    got == *bytes,
                    "worked example line {line:?}\n  expected: {}\n  received: {}",
                    hex(bytes),
                    hex(&got)
                );
            }
            Step::ExpectErrorThenEof { conn, code, line } => {
                let stream = conns.entry(*conn).or_insert_with(|| server.connect());
                let got = expect_error(stream, line);
                assert_eq!(got, *code, "worked example line {line:?}: ERROR code 0x{got:04x}, expected 0x{code:04x}");
                expect_eof(stream, line);
            }
        }
    }

    // "alice never receives her own message, and receives nothing after her PONG": one more PING
    // must be answered by the very next frame.
    let alice = conns.get_mut(&'A').expect("the worked example uses connection A");
    let nonce = [0xfe, 0xed, 0xfa, 0xce, 0xca, 0xfe, 0xbe, 0xef];
    send(alice, &frame(TYPE_PING, &nonce), "A: extra PING");
    let (kind, body) = read_frame(alice, "A: reply to the extra PING");
    assert!(
        kind == TYPE_PONG && body == nonce,
        "A's next frame after the example must be the PONG of its new PING; got type 0x{kind:02x} body {}",
        hex(&body)
    );
}

/// The "## Errors" table: name → (code, fatal).
fn error_table(doc: &str) -> BTreeMap<String, (u16, bool)> {
    let mut table = BTreeMap::new();
    for line in section(doc, "## Errors") {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let Ok(code) = cells[0].parse::<u16>() else {
            continue; // header or separator row
        };
        let name = cells[1].trim_matches('`').to_string();
        let fatal = match cells[2] {
            "yes" => true,
            "no" => false,
            other => panic!("error table row {line:?}: fatal column is {other:?}"),
        };
        assert!(table.insert(name.clone(), (code, fatal)).is_none(), "error {name} listed twice");
    }
    assert!(!table.is_empty(), "no error table under \"## Errors\"");
    table
}

#[test]
fn error_table_codes_match_the_server() {
    let table = error_table(&protocol_md());
    let mut codes: Vec<u16> = table.values().map(|(code, _)| *code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), table.len(), "two names share a code in the error table: {table:?}");
    for (name, (code, fatal)) in &table {
        assert_eq!(*fatal, *code < 256, "{name} ({code}): the text says codes below 256, and only those, are fatal");
    }
    let lookup = |name: &str| table.get(name).copied().unwrap_or_else(|| panic!("error table has no {name}"));
    let server = Server::start();

    // FRAME_TOO_LARGE: a first frame declaring a 1 MiB body, no body sent.
    let (code, fatal) = lookup("FRAME_TOO_LARGE");
    let mut conn = server.connect();
    send(&mut conn, &[0x00, 0x10, 0x00, 0x00, 0x01], "oversized first header");
    assert_eq!(expect_error(&mut conn, "oversized first header"), code, "FRAME_TOO_LARGE for a 1 MiB header");
    assert!(fatal);
    expect_eof(&mut conn, "after FRAME_TOO_LARGE");

    // FRAME_TOO_LARGE at the boundary the server states: max_body + 1 after WELCOME.
    let mut conn = server.connect();
    send(&mut conn, &hello("carol"), "HELLO");
    let (kind, welcome) = read_frame(&mut conn, "WELCOME");
    assert_eq!(kind, TYPE_WELCOME, "reply to HELLO: body {}", hex(&welcome));
    assert!(welcome.len() >= 18, "WELCOME body too short: {}", hex(&welcome));
    let max_body = u32::from_be_bytes([welcome[14], welcome[15], welcome[16], welcome[17]]);
    let mut header = (max_body + 1).to_be_bytes().to_vec();
    header.push(TYPE_PING);
    send(&mut conn, &header, "header of max_body + 1");
    assert_eq!(expect_error(&mut conn, "header of max_body + 1"), code, "FRAME_TOO_LARGE for max_body + 1");
    expect_eof(&mut conn, "after FRAME_TOO_LARGE at max_body + 1");

    // UNKNOWN_FRAME_TYPE: types that the type-space table leaves unassigned, sent after HELLO.
    let (code, fatal) = lookup("UNKNOWN_FRAME_TYPE");
    assert!(fatal);
    for kind in [0x00u8, 0x09, 0x0f, 0x18, 0x20, 0x3f, 0x80, 0xff] {
        let what = format!("empty frame of unassigned type 0x{kind:02x}");
        let mut conn = server.connect();
        send(&mut conn, &hello("dave"), "HELLO");
        let (reply, body) = read_frame(&mut conn, "WELCOME");
        assert_eq!(reply, TYPE_WELCOME, "reply to HELLO: body {}", hex(&body));
        send(&mut conn, &frame(kind, &[]), &what);
        assert_eq!(expect_error(&mut conn, &what), code, "{what}: UNKNOWN_FRAME_TYPE");
        expect_eof(&mut conn, &what);
    }
}

/// Connects, says `HELLO` as `name` and returns the stream and the session id from `WELCOME`
/// (bytes 6..14 of its body: version, flags, node_id, core_id, then session_id).
fn greeted(server: &Server, name: &str) -> (TcpStream, u64) {
    let mut conn = server.connect();
    send(&mut conn, &hello(name), "HELLO");
    let (kind, body) = read_frame(&mut conn, "WELCOME");
    assert_eq!(kind, TYPE_WELCOME, "reply to HELLO: body {}", hex(&body));
    let session = u64::from_be_bytes(body[6..14].try_into().expect("8 bytes"));
    (conn, session)
}

/// Expects exactly the frame `kind` with `body`.
fn expect_frame(stream: &mut TcpStream, kind: u8, body: &[u8], what: &str) {
    let (got_kind, got) = read_frame(stream, what);
    assert_eq!((got_kind, hex(&got)), (kind, hex(body)), "{what}");
}

/// A `MEMBERS` body: room, total, count, then (session id, name) each.
fn members_body(room: &str, members: &[(u64, &str)]) -> Vec<u8> {
    let mut body = vec![room.len() as u8];
    body.extend_from_slice(room.as_bytes());
    body.extend_from_slice(&(members.len() as u32).to_be_bytes());
    body.extend_from_slice(&(members.len() as u16).to_be_bytes());
    for (session, name) in members {
        body.extend_from_slice(&session.to_be_bytes());
        body.push(name.len() as u8);
        body.extend_from_slice(name.as_bytes());
    }
    body
}

/// A `PRESENCE` body: kind, session id, room, name.
fn presence_body(kind: u8, session: u64, room: &str, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(&session.to_be_bytes());
    body.push(room.len() as u8);
    body.extend_from_slice(room.as_bytes());
    body.push(name.len() as u8);
    body.extend_from_slice(name.as_bytes());
    body
}

/// `WHO`, `ROOMS`, the `PRESENCE` flag of `JOIN` and the line-mode greeting, exactly as the
/// tables of `protocol.md` lay them out.
#[test]
fn presence_frames_and_the_line_mode_greeting_as_written() {
    let server = Server::start();
    let (mut alice, alice_id) = greeted(&server, "alice");
    let mut join = vec![JOIN_FLAG_PRESENCE];
    join.extend_from_slice(b"lobby");
    send(&mut alice, &frame(TYPE_JOIN, &join), "JOIN with PRESENCE");
    expect_frame(&mut alice, TYPE_JOINED, b"lobby", "JOINED");
    expect_frame(&mut alice, TYPE_MEMBERS, &members_body("lobby", &[(alice_id, "alice")]), "MEMBERS after JOINED");

    let (mut bob, bob_id) = greeted(&server, "bob");
    send(&mut bob, &frame(TYPE_JOIN, b"\x00lobby"), "bob's JOIN");
    expect_frame(&mut bob, TYPE_JOINED, b"lobby", "bob's JOINED");
    expect_frame(&mut alice, TYPE_PRESENCE, &presence_body(1, bob_id, "lobby", "bob"), "bob joined");

    send(&mut alice, &frame(TYPE_WHO, b"lobby"), "WHO");
    let both = members_body("lobby", &[(alice_id, "alice"), (bob_id, "bob")]);
    expect_frame(&mut alice, TYPE_MEMBERS, &both, "MEMBERS, in join order");
    send(&mut alice, &frame(TYPE_ROOMS, &[]), "ROOMS");
    let mut list = 1u32.to_be_bytes().to_vec();
    list.extend_from_slice(&1u16.to_be_bytes());
    list.extend_from_slice(b"\x05lobby");
    list.extend_from_slice(&2u32.to_be_bytes());
    expect_frame(&mut alice, TYPE_ROOM_LIST, &list, "ROOM_LIST");

    send(&mut bob, &frame(TYPE_LEAVE, b"lobby"), "bob's LEAVE");
    expect_frame(&mut bob, TYPE_LEFT, b"lobby", "bob's LEFT");
    expect_frame(&mut alice, TYPE_PRESENCE, &presence_body(2, bob_id, "lobby", "bob"), "bob left");

    // A person with nc who types nothing: after the silence window, a text greeting.
    let listener = server.connect();
    let mut reader = BufReader::new(listener);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("a greeting line");
    let prefix = "* welcome guest";
    assert!(greeting.starts_with(prefix), "first bytes of a silent connection: {greeting:?}");
    assert!(greeting.ends_with("you are in lobby with 1 other; type to chat, /help for commands\n"), "{greeting:?}");
    let guest = greeting[prefix.len() - "guest".len()..].split(':').next().expect("a name").to_string();
    let (kind, body) = read_frame(&mut alice, "the guest joined");
    assert_eq!((kind, body[0], &body[body.len() - guest.len()..]), (TYPE_PRESENCE, 1, guest.as_bytes()));
}
