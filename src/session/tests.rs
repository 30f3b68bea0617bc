use super::*;

use bytes::BufMut;

use crate::codec::{frame_type, ClientFrame};
use crate::limits::{LINE_BYTES_MAX, ROOM_NAME_BYTES_MAX, USER_NAME_BYTES_MAX};

const SESSION_ID: u64 = 7;
const MS: Duration = Duration::from_millis(1);

/// Distinct values, so a timer that reads the wrong one is caught.
fn timeouts() -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(5),
    }
}

fn session(now: Instant) -> Session {
    Session::new(SESSION_ID, now, timeouts(), FrameDecoder::default(), LineSplitter::default())
}

/// Everything the session yields for `input` until it needs more bytes (faults included).
fn run(session: &mut Session, input: &mut BytesMut) -> Vec<Result<Request, Fault>> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match session.next_request(input) {
            Ok(Some(request)) => out.push(Ok(request)),
            Ok(None) => return out,
            Err(fault) => out.push(Err(fault)),
        }
    }
    panic!("the session never asked for more bytes: {out:?}");
}

fn feed(session: &mut Session, bytes: &[u8]) -> Vec<Result<Request, Fault>> {
    run(session, &mut BytesMut::from(bytes))
}

/// The codes of the faults in `results`, and `None` for each request.
fn codes(results: &[Result<Request, Fault>]) -> Vec<Option<ErrorCode>> {
    results.iter().map(|r| r.as_ref().err().map(|f| f.code)).collect()
}

fn encode(frame: ClientFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

fn hello_with(version: u8, flags: u8, name: &[u8]) -> Vec<u8> {
    // Built by hand: the encoder asserts the name limit, and these tests break it on purpose.
    let mut buf = BytesMut::new();
    buf.put_u32(4 + name.len() as u32);
    buf.put_u8(frame_type::HELLO);
    buf.put_slice(&[version, flags, name.len() as u8]);
    buf.put_slice(name);
    buf.put_u8(0);
    buf.to_vec()
}

fn hello(name: &str) -> Vec<u8> {
    hello_with(PROTOCOL_VERSION, 0, name.as_bytes())
}

fn join(flags: u8, room: &[u8]) -> Vec<u8> {
    encode(ClientFrame::Join { flags, room: Bytes::copy_from_slice(room) })
}

fn leave(room: &[u8]) -> Vec<u8> {
    encode(ClientFrame::Leave { room: Bytes::copy_from_slice(room) })
}

fn publish(room: &[u8], payload: &[u8]) -> Vec<u8> {
    // Built by hand: the encoder asserts the room limit, and these tests break it on purpose.
    let mut buf = BytesMut::new();
    buf.put_u32((1 + room.len() + payload.len()) as u32);
    buf.put_u8(frame_type::PUBLISH);
    buf.put_u8(room.len() as u8);
    buf.put_slice(room);
    buf.put_slice(payload);
    buf.to_vec()
}

/// A binary session that has completed its handshake as "alice".
fn greeted(now: Instant) -> Session {
    let mut s = session(now);
    assert_eq!(feed(&mut s, &hello("alice")), vec![Ok(Request::Hello { name: Bytes::from("alice"), echo: false })]);
    s
}

fn lobby_publish(payload: &str) -> Result<Request, Fault> {
    Ok(Request::Publish { room: Bytes::from_static(b"lobby"), payload: Bytes::copy_from_slice(payload.as_bytes()) })
}

// ---------------------------------------------------------------------------------------------
// Dialect
// ---------------------------------------------------------------------------------------------

#[test]
fn nothing_decided_before_the_first_byte() {
    let mut s = session(Instant::now());
    assert_eq!(feed(&mut s, b""), vec![]);
    assert_eq!(s.mode(), Mode::Undecided);
}

#[test]
fn first_byte_chooses_the_dialect() {
    for first in 0..=u8::MAX {
        let mut s = session(Instant::now());
        let got = feed(&mut s, &[first]);
        if (0x20..=0x7E).contains(&first) {
            assert_eq!(got, vec![Ok(Request::LineStart)], "byte 0x{first:02x}");
            assert_eq!(s.mode(), Mode::Line);
        } else {
            assert_eq!(s.mode(), Mode::Binary, "byte 0x{first:02x}");
        }
    }
}

#[test]
fn line_mode_publishes_each_non_empty_line_to_the_lobby() {
    let mut s = session(Instant::now());
    let got = feed(&mut s, b"hello\r\n\n\r\nworld\n  spaced \nno newline yet");
    assert_eq!(
        got,
        vec![Ok(Request::LineStart), lobby_publish("hello"), lobby_publish("world"), lobby_publish("  spaced ")]
    );
    assert_eq!(s.name(), &Bytes::from(format!("guest{SESSION_ID}")));
    assert!(!s.echo());
}

#[test]
fn line_mode_lines_split_across_reads() {
    let mut s = session(Instant::now());
    let mut input = BytesMut::from(&b"he"[..]);
    assert_eq!(run(&mut s, &mut input), vec![Ok(Request::LineStart)]);
    input.extend_from_slice(b"llo\r");
    assert_eq!(run(&mut s, &mut input), vec![]);
    input.extend_from_slice(b"\nbye\n");
    assert_eq!(run(&mut s, &mut input), vec![lobby_publish("hello"), lobby_publish("bye")]);
    assert!(input.is_empty());
}

#[test]
fn line_mode_takes_a_line_of_exactly_the_limit() {
    let mut s = session(Instant::now());
    let line = "x".repeat(LINE_BYTES_MAX);
    let got = feed(&mut s, format!("{line}\r\n").as_bytes());
    assert_eq!(got, vec![Ok(Request::LineStart), lobby_publish(&line)]);
}

#[test]
fn line_too_long_is_fatal() {
    let mut s = session(Instant::now());
    let mut input = BytesMut::from(format!("ok\n{}\n", "x".repeat(LINE_BYTES_MAX + 1)).as_bytes());
    let got = run(&mut s, &mut input);
    assert_eq!(codes(&got), vec![None, None, Some(ErrorCode::LineTooLong)]);
    assert_eq!(got[1], lobby_publish("ok"));
    input.extend_from_slice(b"more\n");
    assert_eq!(run(&mut s, &mut input), vec![], "nothing after a fatal fault");
}

// ---------------------------------------------------------------------------------------------
// Binary handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn hello_completes_the_handshake() {
    let mut s = session(Instant::now());
    let got = feed(&mut s, &hello_with(PROTOCOL_VERSION, HELLO_FLAG_ECHO, b"Bob_1.x-Y"));
    assert_eq!(got, vec![Ok(Request::Hello { name: Bytes::from("Bob_1.x-Y"), echo: true })]);
    assert_eq!(s.mode(), Mode::Binary);
    assert_eq!(s.name(), &Bytes::from("Bob_1.x-Y"));
    assert!(s.echo());
    assert_eq!(s.session_id(), SESSION_ID);
}

#[test]
fn the_kept_name_does_not_point_into_the_read_buffer() {
    let mut s = session(Instant::now());
    let mut input = BytesMut::from(&hello("alice")[..]);
    let start = input.as_ptr() as usize;
    let end = start + input.len();
    assert_eq!(run(&mut s, &mut input).len(), 1);
    let kept = s.name().as_ptr() as usize;
    assert_eq!(s.name(), &Bytes::from("alice"));
    assert!(kept < start || kept >= end, "the session pins its read buffer through the name");
}

#[test]
fn hello_split_across_reads_at_every_offset() {
    let bytes = hello("alice");
    for cut in 0..=bytes.len() {
        let mut s = session(Instant::now());
        let mut input = BytesMut::from(&bytes[..cut]);
        let mut got = run(&mut s, &mut input);
        input.extend_from_slice(&bytes[cut..]);
        got.extend(run(&mut s, &mut input));
        assert_eq!(got, vec![Ok(Request::Hello { name: Bytes::from("alice"), echo: false })], "cut at {cut}");
    }
}

#[test]
fn first_frame_other_than_hello_is_unexpected_and_fatal() {
    for first in [join(0, b"lobby"), leave(b"lobby"), publish(b"lobby", b"hi"), encode(ClientFrame::Ping(1))] {
        let mut s = session(Instant::now());
        let mut input = BytesMut::from(&first[..]);
        assert_eq!(codes(&run(&mut s, &mut input)), vec![Some(ErrorCode::UnexpectedFrame)], "{first:?}");
        input.extend_from_slice(&hello("alice"));
        assert_eq!(run(&mut s, &mut input), vec![], "a HELLO after the fault is ignored");
    }
}

#[test]
fn unsupported_version_is_fatal() {
    for version in [0, 2, u8::MAX] {
        let mut s = session(Instant::now());
        let got = feed(&mut s, &hello_with(version, 0, b"alice"));
        assert_eq!(codes(&got), vec![Some(ErrorCode::UnsupportedVersion)], "version {version}");
    }
}

#[test]
fn invalid_names_are_fatal() {
    let too_long = [b'a'; USER_NAME_BYTES_MAX + 1];
    let bad: [&[u8]; 7] = [b"", &too_long, b"al ice", b"al:ice", b"al\x7fice", b"\xc3\xa9", b"a/b"];
    for name in bad {
        let mut s = session(Instant::now());
        let mut input = BytesMut::from(&hello_with(PROTOCOL_VERSION, 0, name)[..]);
        assert_eq!(codes(&run(&mut s, &mut input)), vec![Some(ErrorCode::InvalidName)], "name {name:?}");
        input.extend_from_slice(&join(0, b"lobby"));
        assert_eq!(run(&mut s, &mut input), vec![]);
    }
}

#[test]
fn name_of_exactly_the_limit_is_valid() {
    let name = "n".repeat(USER_NAME_BYTES_MAX);
    let mut s = session(Instant::now());
    assert_eq!(feed(&mut s, &hello(&name)), vec![Ok(Request::Hello { name: Bytes::from(name), echo: false })]);
}

#[test]
fn second_hello_is_unexpected_and_fatal() {
    let mut s = greeted(Instant::now());
    let mut input = BytesMut::from(&hello("alice")[..]);
    input.extend_from_slice(&join(0, b"lobby"));
    assert_eq!(codes(&run(&mut s, &mut input)), vec![Some(ErrorCode::UnexpectedFrame)]);
}

// ---------------------------------------------------------------------------------------------
// Requests after the handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn frames_become_requests() {
    let mut s = greeted(Instant::now());
    let mut input = BytesMut::new();
    for bytes in [
        join(JOIN_FLAG_SEND_ONLY, b"news"),
        join(0, b"chat"),
        publish(b"chat", b"hi\nthere"),
        leave(b"news"),
        encode(ClientFrame::Ping(11)),
        encode(ClientFrame::Pong(12)),
    ] {
        input.extend_from_slice(&bytes);
    }
    let want = vec![
        Ok(Request::Join { room: Bytes::from("news"), send_only: true, presence: false }),
        Ok(Request::Join { room: Bytes::from("chat"), send_only: false, presence: false }),
        Ok(Request::Publish { room: Bytes::from("chat"), payload: Bytes::from("hi\nthere") }),
        Ok(Request::Leave { room: Bytes::from("news") }),
        Ok(Request::Ping(11)),
        Ok(Request::Pong(12)),
    ];
    assert_eq!(run(&mut s, &mut input), want);
    assert!(input.is_empty());
}

#[test]
fn invalid_rooms_are_refused_and_the_session_goes_on() {
    let too_long = [b'r'; ROOM_NAME_BYTES_MAX + 1];
    let bad: [&[u8]; 6] = [b"", &too_long, b"a room", b"room\x7f", b"\x80", b"tab\t"];
    for room in bad {
        let mut s = greeted(Instant::now());
        let mut input = BytesMut::new();
        input.extend_from_slice(&join(0, room));
        input.extend_from_slice(&leave(room));
        input.extend_from_slice(&publish(room, b"x"));
        input.extend_from_slice(&join(0, b"ok"));
        let got = run(&mut s, &mut input);
        let refused = Some(ErrorCode::InvalidRoom);
        assert_eq!(codes(&got), vec![refused, refused, refused, None], "room {room:?}");
        assert!(!ErrorCode::InvalidRoom.is_fatal());
        assert_eq!(got[3], Ok(Request::Join { room: Bytes::from("ok"), send_only: false, presence: false }));
    }
}

#[test]
fn room_names_at_the_edges_are_valid() {
    let longest = [b'~'; ROOM_NAME_BYTES_MAX];
    for room in [&b"!"[..], &longest[..], b"a:b/c#d"] {
        let mut s = greeted(Instant::now());
        let got = feed(&mut s, &join(0, room));
        assert_eq!(
            got,
            vec![Ok(Request::Join { room: Bytes::copy_from_slice(room), send_only: false, presence: false })]
        );
    }
}

#[test]
fn decode_errors_after_the_handshake_are_fatal() {
    let mut unknown = vec![0, 0, 0, 0, 0x09];
    unknown.extend_from_slice(&join(0, b"late"));
    let too_large = vec![0, 0xFF, 0xFF, 0xFF, frame_type::PUBLISH];
    let mut reserved_flag = join(0b100, b"room");
    reserved_flag.extend_from_slice(&join(0, b"late"));
    let payload = vec![0; crate::limits::PAYLOAD_BYTES_MAX + 1];
    let cases = [
        (unknown, ErrorCode::UnknownFrameType),
        (too_large, ErrorCode::FrameTooLarge),
        (reserved_flag, ErrorCode::MalformedFrame),
        (publish(b"r", &payload), ErrorCode::PayloadTooLarge),
        (hello("bob"), ErrorCode::UnexpectedFrame),
    ];
    for (bytes, code) in cases {
        let mut s = greeted(Instant::now());
        assert_eq!(codes(&feed(&mut s, &bytes)), vec![Some(code)], "{code}");
        assert!(code.is_fatal());
    }
}

#[test]
fn after_a_fatal_fault_nothing_more_comes_out() {
    let now = Instant::now();
    let mut s = session(now);
    let mut input = BytesMut::from(&join(0, b"lobby")[..]);
    assert_eq!(codes(&run(&mut s, &mut input)), vec![Some(ErrorCode::UnexpectedFrame)]);
    for _ in 0..3 {
        input.extend_from_slice(&hello("alice"));
        assert_eq!(s.next_request(&mut input), Ok(None));
    }
    // Nor does the clock: the hub is already closing the connection.
    assert_eq!(s.poll_timer(now + Duration::from_secs(3600)), None);
}

// ---------------------------------------------------------------------------------------------
// Timers on an injected clock
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_times_out() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let handshake = timeouts().handshake;
    assert_eq!(s.poll_timer(t0), None);
    assert_eq!(s.poll_timer(t0 + handshake - MS), None);
    assert_eq!(s.poll_timer(t0 + handshake), Some(TimerEvent::Expired));
}

#[test]
fn bytes_without_a_hello_do_not_extend_the_handshake() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let bytes = hello("alice");
    let mut input = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert_eq!(run(&mut s, &mut input), vec![]);
    s.heard_from(t0 + Duration::from_secs(9));
    assert_eq!(s.poll_timer(t0 + timeouts().handshake), Some(TimerEvent::Expired));
}

#[test]
fn silence_brings_a_ping_then_expiry() {
    let t0 = Instant::now();
    let mut s = greeted(t0);
    let t1 = t0 + Duration::from_secs(2);
    s.heard_from(t1);
    let Timeouts { ping_interval, ping_timeout, .. } = timeouts();
    assert_eq!(s.poll_timer(t1 + ping_interval - MS), None);
    let pinged_at = t1 + ping_interval;
    assert_eq!(s.poll_timer(pinged_at), Some(TimerEvent::SendPing(1)));
    assert_eq!(s.poll_timer(pinged_at), None, "one ping per silence");
    assert_eq!(s.poll_timer(pinged_at + ping_timeout - MS), None);
    assert_eq!(s.poll_timer(pinged_at + ping_timeout), Some(TimerEvent::Expired));
}

#[test]
fn heard_from_resets_the_keepalive() {
    let t0 = Instant::now();
    let mut s = greeted(t0);
    let Timeouts { ping_interval, ping_timeout, .. } = timeouts();
    // Before any ping: life pushes the ping back.
    s.heard_from(t0 + ping_interval - MS);
    assert_eq!(s.poll_timer(t0 + ping_interval), None);
    let pinged_at = t0 + ping_interval - MS + ping_interval;
    assert_eq!(s.poll_timer(pinged_at), Some(TimerEvent::SendPing(1)));
    // After a ping: life cancels the expiry, and the next silence brings a fresh nonce.
    let answered = pinged_at + ping_timeout - MS;
    s.heard_from(answered);
    assert_eq!(s.poll_timer(pinged_at + ping_timeout), None);
    assert_eq!(s.poll_timer(answered + ping_interval - MS), None);
    assert_eq!(s.poll_timer(answered + ping_interval), Some(TimerEvent::SendPing(2)));
}

#[test]
fn line_mode_is_never_pinged_nor_timed_out() {
    let t0 = Instant::now();
    let mut s = session(t0);
    assert_eq!(feed(&mut s, b"hi\n"), vec![Ok(Request::LineStart), lobby_publish("hi")]);
    for later in [timeouts().handshake, timeouts().ping_interval, Duration::from_secs(24 * 3600)] {
        assert_eq!(s.poll_timer(t0 + later), None);
    }
}

#[test]
fn a_line_client_beats_the_handshake_timer_with_its_first_byte() {
    let t0 = Instant::now();
    let mut s = session(t0);
    assert_eq!(feed(&mut s, b"h"), vec![Ok(Request::LineStart)]);
    assert_eq!(s.poll_timer(t0 + timeouts().handshake), None);
}
