use super::*;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::error::ErrorCode;
use crate::limits::{ERROR_TEXT_BYTES_MAX, ROOM_NAME_BYTES_MAX, TOKEN_BYTES_MAX, USER_NAME_BYTES_MAX};

/// A frame with `body`, its header declaring `body.len()`.
fn frame(kind: u8, body: &[u8]) -> BytesMut {
    let mut buf = header(kind, body.len() as u32);
    buf.extend_from_slice(body);
    buf
}

/// A header alone, declaring `declared` body bytes.
fn header(kind: u8, declared: u32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(declared);
    buf.put_u8(kind);
    buf
}

/// Every whole frame in `buf`, in order.
fn decode_all(decoder: &FrameDecoder, buf: &mut BytesMut) -> Result<Vec<RawFrame>, DecodeError> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

fn parse_client(kind: u8, body: &[u8]) -> Result<ClientFrame, DecodeError> {
    ClientFrame::parse(RawFrame { kind, body: Bytes::copy_from_slice(body) })
}

fn parse_server(kind: u8, body: &[u8]) -> Result<ServerFrame, DecodeError> {
    ServerFrame::parse(RawFrame { kind, body: Bytes::copy_from_slice(body) })
}

fn hello_body(flags: u8, name: &[u8], token: &[u8]) -> Vec<u8> {
    let mut body = vec![PROTOCOL_VERSION, flags, name.len() as u8];
    body.extend_from_slice(name);
    body.push(token.len() as u8);
    body.extend_from_slice(token);
    body
}

fn encoded_client(frames: &[ClientFrame]) -> BytesMut {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

fn sample_client_frames() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Hello(Hello {
            version: 1,
            flags: HELLO_FLAG_ECHO,
            name: Bytes::from_static(b"alice"),
            token: Bytes::from_static(b"tok"),
        }),
        ClientFrame::Join { flags: JOIN_FLAG_SEND_ONLY, room: Bytes::from_static(b"lobby") },
        ClientFrame::Publish { room: Bytes::from_static(b"lobby"), payload: Bytes::from_static(b"hello world") },
        ClientFrame::Publish { room: Bytes::from_static(b"x"), payload: Bytes::new() },
        ClientFrame::Ping(0x0102_0304_0506_0708),
        ClientFrame::Leave { room: Bytes::from_static(b"lobby") },
        ClientFrame::Pong(u64::MAX),
    ]
}

fn parse_all_client(raw: Vec<RawFrame>) -> Vec<ClientFrame> {
    raw.into_iter().map(|r| ClientFrame::parse(r).unwrap()).collect()
}

/// The frame types `protocol.md` assigns, written out from its table rather than taken from
/// `is_assigned`, so the two are checked against each other.
fn spec_assigned(kind: u8) -> bool {
    (0x01..=0x08).contains(&kind) || (0x10..=0x17).contains(&kind) || (0x40..=0x7F).contains(&kind)
}

// ---------------------------------------------------------------------------------------------
// FrameDecoder boundaries
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_buffer_needs_more_bytes() {
    let mut buf = BytesMut::new();
    assert_eq!(FrameDecoder::default().decode(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn partial_header_needs_more_bytes_and_consumes_nothing() {
    let decoder = FrameDecoder::new(16);
    // A valid frame, a too-large one and an unknown type: none can be judged before 5 bytes.
    for whole in [frame(frame_type::PING, &[0; 8]), header(frame_type::PING, 17), header(0x00, 0)] {
        for len in 1..HEADER_BYTES {
            let mut buf = BytesMut::from(&whole[..len]);
            assert_eq!(decoder.decode(&mut buf), Ok(None), "{len} header bytes of {whole:?}");
            assert_eq!(&buf[..], &whole[..len], "nothing consumed");
        }
    }
}

#[test]
fn body_of_exactly_the_limit_is_accepted_once_complete() {
    for max in [0, 16, FRAME_BODY_BYTES_MAX] {
        let decoder = FrameDecoder::new(max);
        let body: Vec<u8> = (0..max).map(|i| i as u8).collect();
        let whole = frame(frame_type::LEAVE, &body);
        let mut buf = BytesMut::from(&whole[..HEADER_BYTES]);
        for have in 0..max {
            assert_eq!(decoder.decode(&mut buf), Ok(None), "max {max}, {have} body bytes");
            buf.extend_from_slice(&whole[HEADER_BYTES + have..HEADER_BYTES + have + 1]);
        }
        let got = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.kind, frame_type::LEAVE);
        assert_eq!(&got.body[..], &body[..], "max {max}");
        assert!(buf.is_empty());
    }
}

#[test]
fn one_byte_over_the_limit_is_refused_from_the_header_alone() {
    for max in [0, 16, FRAME_BODY_BYTES_MAX] {
        let decoder = FrameDecoder::new(max);
        let mut buf = header(frame_type::PUBLISH, max as u32 + 1);
        assert_eq!(decoder.decode(&mut buf), Err(DecodeError::FrameTooLarge { declared: max as u64 + 1, max }));
    }
    let mut buf = header(frame_type::PUBLISH, u32::MAX);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf),
        Err(DecodeError::FrameTooLarge { declared: u64::from(u32::MAX), max: FRAME_BODY_BYTES_MAX })
    );
}

#[test]
fn default_decoder_limit_is_the_max_frame_body() {
    let decoder = FrameDecoder::default();
    let mut ok = header(frame_type::LEAVE, FRAME_BODY_BYTES_MAX as u32);
    assert_eq!(decoder.decode(&mut ok), Ok(None));
    let mut over = header(frame_type::LEAVE, FRAME_BODY_BYTES_MAX as u32 + 1);
    assert!(matches!(decoder.decode(&mut over), Err(DecodeError::FrameTooLarge { .. })));
}

#[test]
fn unknown_types_are_refused_from_the_header_alone() {
    let decoder = FrameDecoder::new(16);
    for kind in 0..=u8::MAX {
        assert_eq!(is_assigned(kind), spec_assigned(kind), "type 0x{kind:02x}");
        // The header declares a body that is not there: the type alone decides.
        let mut buf = header(kind, 10);
        let got = decoder.decode(&mut buf);
        if spec_assigned(kind) {
            assert_eq!(got, Ok(None), "type 0x{kind:02x}");
        } else {
            assert_eq!(got, Err(DecodeError::UnknownFrameType(kind)), "type 0x{kind:02x}");
        }
    }
}

#[test]
fn too_large_is_reported_before_unknown_type() {
    // Both are fatal; the size check protects memory, so it goes first.
    let mut buf = header(0x00, 17);
    assert!(matches!(FrameDecoder::new(16).decode(&mut buf), Err(DecodeError::FrameTooLarge { .. })));
}

#[test]
fn many_frames_in_one_buffer() {
    let frames = sample_client_frames();
    let mut buf = encoded_client(&frames);
    // A partial frame at the end stays in the buffer.
    buf.extend_from_slice(&frame(frame_type::PING, &[9; 8])[..7]);
    let raw = decode_all(&FrameDecoder::default(), &mut buf).unwrap();
    assert_eq!(parse_all_client(raw), frames);
    assert_eq!(buf.len(), 7);
}

#[test]
fn frames_split_across_two_reads_at_every_offset() {
    let frames = sample_client_frames();
    let input = encoded_client(&frames);
    let decoder = FrameDecoder::default();
    for cut in 0..=input.len() {
        let mut buf = BytesMut::from(&input[..cut]);
        let mut raw = decode_all(&decoder, &mut buf).unwrap();
        buf.extend_from_slice(&input[cut..]);
        raw.extend(decode_all(&decoder, &mut buf).unwrap());
        assert_eq!(parse_all_client(raw), frames, "cut at {cut}");
        assert!(buf.is_empty(), "cut at {cut}");
    }
}

#[test]
fn frames_fed_one_byte_at_a_time() {
    let frames = sample_client_frames();
    let input = encoded_client(&frames);
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut raw = Vec::new();
    for byte in input.iter() {
        buf.extend_from_slice(&[*byte]);
        raw.extend(decode_all(&decoder, &mut buf).unwrap());
    }
    assert_eq!(parse_all_client(raw), frames);
    assert!(buf.is_empty());
}

#[test]
fn decoded_body_shares_the_input_buffer() {
    let mut buf = encoded_client(&sample_client_frames());
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let within = |b: &Bytes| {
        let p = b.as_ptr() as usize;
        b.is_empty() || (start <= p && p + b.len() <= end)
    };
    let raw = decode_all(&FrameDecoder::default(), &mut buf).unwrap();
    assert_eq!(raw.len(), sample_client_frames().len());
    for r in raw {
        assert!(within(&r.body), "body of 0x{:02x} was copied", r.kind);
        // Parsing keeps slicing the same memory.
        match ClientFrame::parse(r).unwrap() {
            ClientFrame::Publish { room, payload } => assert!(within(&room) && within(&payload)),
            ClientFrame::Join { room, .. } | ClientFrame::Leave { room } | ClientFrame::Who { room } => {
                assert!(within(&room))
            }
            ClientFrame::Hello(h) => assert!(within(&h.name) && within(&h.token)),
            ClientFrame::Ping(_) | ClientFrame::Pong(_) | ClientFrame::Rooms => {}
        }
    }
}

#[test]
fn declared_length_does_not_allocate() {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&header(frame_type::PUBLISH, 60_000));
    buf.extend_from_slice(&[7; 10]);
    let capacity = buf.capacity();
    assert_eq!(FrameDecoder::default().decode(&mut buf), Ok(None));
    assert_eq!(buf.capacity(), capacity);
    assert_eq!(buf.len(), HEADER_BYTES + 10);
}

// ---------------------------------------------------------------------------------------------
// ClientFrame::parse
// ---------------------------------------------------------------------------------------------

fn assert_malformed(kind: u8, body: &[u8]) {
    let got = parse_client(kind, body);
    assert!(matches!(got, Err(DecodeError::Malformed(_))), "0x{kind:02x} {body:?}: {got:?}");
}

#[test]
fn hello_parses_its_fields() {
    let body = hello_body(HELLO_FLAG_ECHO, b"alice", b"secret");
    let want = Hello {
        version: PROTOCOL_VERSION,
        flags: HELLO_FLAG_ECHO,
        name: Bytes::from_static(b"alice"),
        token: Bytes::from_static(b"secret"),
    };
    assert_eq!(parse_client(frame_type::HELLO, &body), Ok(ClientFrame::Hello(want)));
}

#[test]
fn hello_with_short_fields_is_malformed() {
    let whole = hello_body(0, b"alice", b"tok");
    // Every strict prefix is missing a field (or part of one).
    for len in 0..whole.len() {
        assert_malformed(frame_type::HELLO, &whole[..len]);
    }
}

#[test]
fn hello_with_trailing_bytes_is_malformed() {
    let mut body = hello_body(0, b"alice", b"");
    body.push(0);
    assert_malformed(frame_type::HELLO, &body);
}

#[test]
fn hello_with_a_reserved_flag_bit_is_malformed() {
    for bit in 1..8 {
        assert_malformed(frame_type::HELLO, &hello_body(1 << bit, b"alice", b""));
        assert_malformed(frame_type::HELLO, &hello_body(HELLO_FLAG_ECHO | 1 << bit, b"alice", b""));
    }
}

#[test]
fn join_parses_flags_and_room() {
    assert_eq!(
        parse_client(frame_type::JOIN, b"\x01news"),
        Ok(ClientFrame::Join { flags: JOIN_FLAG_SEND_ONLY, room: Bytes::from_static(b"news") })
    );
    assert_eq!(
        parse_client(frame_type::JOIN, b"\x00"),
        Ok(ClientFrame::Join { flags: 0, room: Bytes::new() }),
        "room rules are the session's job"
    );
}

#[test]
fn join_without_flags_or_with_a_reserved_flag_bit_is_malformed() {
    assert_malformed(frame_type::JOIN, b"");
    for bit in 2..8 {
        assert_malformed(frame_type::JOIN, &[1 << bit, b'r']);
        assert_malformed(frame_type::JOIN, &[JOIN_FLAG_SEND_ONLY | JOIN_FLAG_PRESENCE | 1 << bit, b'r']);
    }
}

#[test]
fn leave_takes_the_whole_body_as_room() {
    assert_eq!(parse_client(frame_type::LEAVE, b"a b"), Ok(ClientFrame::Leave { room: Bytes::from_static(b"a b") }));
    assert_eq!(parse_client(frame_type::LEAVE, b""), Ok(ClientFrame::Leave { room: Bytes::new() }));
}

#[test]
fn publish_with_short_room_is_malformed() {
    assert_malformed(frame_type::PUBLISH, b"");
    assert_malformed(frame_type::PUBLISH, b"\x05abc");
    assert_eq!(
        parse_client(frame_type::PUBLISH, b"\x03abc"),
        Ok(ClientFrame::Publish { room: Bytes::from_static(b"abc"), payload: Bytes::new() })
    );
}

#[test]
fn publish_payload_limit_is_exact() {
    let mut body = vec![1, b'r'];
    body.resize(2 + PAYLOAD_BYTES_MAX, 0xAB);
    match parse_client(frame_type::PUBLISH, &body) {
        Ok(ClientFrame::Publish { room, payload }) => {
            assert_eq!(&room[..], b"r");
            assert_eq!(payload.len(), PAYLOAD_BYTES_MAX);
        }
        other => panic!("full payload refused: {other:?}"),
    }
    body.push(0xAB);
    assert_eq!(parse_client(frame_type::PUBLISH, &body), Err(DecodeError::PayloadTooLarge(PAYLOAD_BYTES_MAX + 1)));
    assert_eq!(DecodeError::PayloadTooLarge(0).code(), ErrorCode::PayloadTooLarge);
}

#[test]
fn ping_and_pong_need_exactly_eight_bytes() {
    for kind in [frame_type::PING, frame_type::PONG] {
        for len in (0..8).chain([9, 16]) {
            assert_malformed(kind, &vec![1; len]);
        }
    }
    assert_eq!(parse_client(frame_type::PING, &[0, 0, 0, 0, 0, 0, 1, 2]), Ok(ClientFrame::Ping(0x0102)));
    assert_eq!(parse_client(frame_type::PONG, &[0xFF; 8]), Ok(ClientFrame::Pong(u64::MAX)));
}

#[test]
fn server_only_and_peer_types_are_unexpected_from_a_client() {
    let kinds = [frame_type::WELCOME, frame_type::MESSAGE, frame_type::JOINED, frame_type::LEFT, frame_type::ERROR];
    for kind in kinds.into_iter().chain(frame_type::PEER_FIRST..=frame_type::PEER_LAST) {
        // Through the decoder, as the server sees it: the header passes, the parse refuses.
        let mut buf = frame(kind, b"body");
        let raw = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(ClientFrame::parse(raw), Err(DecodeError::UnexpectedFrame(kind)));
        assert_eq!(DecodeError::UnexpectedFrame(kind).code(), ErrorCode::UnexpectedFrame);
    }
}

#[test]
fn unassigned_types_are_unknown_to_both_parsers() {
    for kind in (0..=u8::MAX).filter(|k| !spec_assigned(*k)) {
        assert_eq!(parse_client(kind, b""), Err(DecodeError::UnknownFrameType(kind)));
        assert_eq!(parse_server(kind, b""), Err(DecodeError::UnknownFrameType(kind)));
    }
}

// ---------------------------------------------------------------------------------------------
// ServerFrame::parse and the encoders
// ---------------------------------------------------------------------------------------------

#[test]
fn client_only_types_are_unexpected_from_a_server() {
    for kind in [frame_type::HELLO, frame_type::JOIN, frame_type::LEAVE, frame_type::PUBLISH, frame_type::PEER_FIRST] {
        assert_eq!(parse_server(kind, b"\x00\x00"), Err(DecodeError::UnexpectedFrame(kind)));
    }
}

#[test]
fn server_frames_with_short_fields_are_malformed() {
    let mut welcome = BytesMut::new();
    encode_welcome(&mut welcome, &Welcome { version: 1, node_id: 2, core_id: 3, session_id: 4, max_body: 5 });
    let mut message = BytesMut::new();
    encode_message(&mut message, 1, 2, b"room", b"name", b"");
    for whole in [welcome, message] {
        let body = &whole[HEADER_BYTES..];
        for len in 0..body.len() {
            let got = parse_server(whole[4], &body[..len]);
            assert!(matches!(got, Err(DecodeError::Malformed(_))), "0x{:02x} cut at {len}: {got:?}", whole[4]);
        }
    }
    assert!(matches!(parse_server(frame_type::ERROR, b"\x00"), Err(DecodeError::Malformed(_))));
    assert!(matches!(parse_server(frame_type::PING, &[0; 9]), Err(DecodeError::Malformed(_))));
}

#[test]
fn welcome_ignores_fields_appended_by_later_versions() {
    let w = Welcome { version: 1, node_id: 7, core_id: 9, session_id: 42, max_body: 66_560 };
    let mut buf = BytesMut::new();
    encode_welcome(&mut buf, &w);
    let mut body = buf[HEADER_BYTES..].to_vec();
    body.extend_from_slice(b"future");
    assert_eq!(parse_server(frame_type::WELCOME, &body), Ok(ServerFrame::Welcome(w)));
}

/// Bytes of a hex string, ignoring spaces and `|` (the notation of `protocol.md`).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

#[test]
fn encoders_match_the_worked_example_of_the_protocol() {
    let mut buf = BytesMut::new();
    ClientFrame::Hello(Hello { version: 1, flags: 0, name: Bytes::from_static(b"alice"), token: Bytes::new() })
        .encode(&mut buf);
    assert_eq!(&buf[..], hex("00000009 01 | 01 | 00 | 05 616c696365 | 00"));

    buf.clear();
    let w = Welcome { version: 1, node_id: 0, core_id: 0, session_id: 1, max_body: FRAME_BODY_BYTES_MAX as u32 };
    encode_welcome(&mut buf, &w);
    assert_eq!(&buf[..], hex("00000012 10 | 01 | 00 | 0000 | 0000 | 0000000000000001 | 00010400"));

    buf.clear();
    ClientFrame::Join { flags: 0, room: Bytes::from_static(b"lobby") }.encode(&mut buf);
    assert_eq!(&buf[..], hex("00000006 02 | 00 | 6c6f626279"));

    buf.clear();
    encode_room_reply(&mut buf, frame_type::JOINED, b"lobby");
    assert_eq!(&buf[..], hex("00000005 12 | 6c6f626279"));

    buf.clear();
    encode_publish(&mut buf, b"lobby", b"hi");
    assert_eq!(&buf[..], hex("00000008 04 | 05 6c6f626279 | 6869"));

    buf.clear();
    encode_message(&mut buf, 1, 1, b"lobby", b"alice", b"hi");
    let want = hex("0000001e 11 | 0000000000000001 | 0000000000000001 | 05 6c6f626279 | 05 616c696365 | 6869");
    assert_eq!(&buf[..], want);

    buf.clear();
    ClientFrame::Ping(0x0102_0304_0506_0708).encode(&mut buf);
    assert_eq!(&buf[..], hex("00000008 05 | 0102030405060708"));
    buf.clear();
    encode_nonce(&mut buf, frame_type::PONG, 0x0102_0304_0506_0708);
    assert_eq!(&buf[..], hex("00000008 06 | 0102030405060708"));
}

#[test]
fn error_text_is_cut_to_its_limit() {
    let mut buf = BytesMut::new();
    encode_error_raw(&mut buf, ErrorCode::Timeout as u16, &[b'x'; ERROR_TEXT_BYTES_MAX + 10]);
    let raw = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    match ServerFrame::parse(raw) {
        Ok(ServerFrame::Error { code, text }) => {
            assert_eq!(code, 8);
            assert_eq!(text.len(), ERROR_TEXT_BYTES_MAX);
        }
        other => panic!("not an ERROR: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn bytes_of(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), len).prop_map(Bytes::from)
}

fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<u8>(), 0..=HELLO_FLAG_ECHO, bytes_of(0..=USER_NAME_BYTES_MAX), bytes_of(0..=TOKEN_BYTES_MAX))
            .prop_map(|(version, flags, name, token)| ClientFrame::Hello(Hello { version, flags, name, token })),
        (0..=JOIN_FLAG_SEND_ONLY, bytes_of(0..=ROOM_NAME_BYTES_MAX))
            .prop_map(|(flags, room)| ClientFrame::Join { flags, room }),
        bytes_of(0..=ROOM_NAME_BYTES_MAX).prop_map(|room| ClientFrame::Leave { room }),
        (bytes_of(0..=ROOM_NAME_BYTES_MAX), bytes_of(0..=2048))
            .prop_map(|(room, payload)| ClientFrame::Publish { room, payload }),
        any::<u64>().prop_map(ClientFrame::Ping),
        any::<u64>().prop_map(ClientFrame::Pong),
    ]
}

fn arb_server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (any::<u8>(), any::<u16>(), any::<u16>(), any::<u64>(), any::<u32>()).prop_map(
            |(version, node_id, core_id, session_id, max_body)| {
                ServerFrame::Welcome(Welcome { version, node_id, core_id, session_id, max_body })
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            bytes_of(0..=ROOM_NAME_BYTES_MAX),
            bytes_of(0..=USER_NAME_BYTES_MAX),
            bytes_of(0..=2048)
        )
            .prop_map(|(stream, seq, room, name, payload)| {
                ServerFrame::Message(Message { stream, seq, room, name, payload })
            }),
        bytes_of(0..=ROOM_NAME_BYTES_MAX).prop_map(ServerFrame::Joined),
        bytes_of(0..=ROOM_NAME_BYTES_MAX).prop_map(ServerFrame::Left),
        (any::<u16>(), bytes_of(0..=ERROR_TEXT_BYTES_MAX)).prop_map(|(code, text)| ServerFrame::Error { code, text }),
        any::<u64>().prop_map(ServerFrame::Ping),
        any::<u64>().prop_map(ServerFrame::Pong),
    ]
}

/// Byte soup with a fair share of plausible headers: random pieces, each either raw noise or
/// a header (with a random type and a length near the truth) followed by a body.
fn arb_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        vec(any::<u8>(), 0..32),
        (any::<u8>(), vec(any::<u8>(), 0..48), -2i64..=2).prop_map(|(kind, body, skew)| {
            let declared = (body.len() as i64 + skew).max(0) as u32;
            let mut out = declared.to_be_bytes().to_vec();
            out.push(kind);
            out.extend_from_slice(&body);
            out
        }),
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn client_frames_round_trip(frames in vec(arb_client_frame(), 1..6), cut in any::<prop::sample::Index>()) {
        let bytes = encoded_client(&frames);
        let cut = cut.index(bytes.len() + 1);
        let decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut raw = decode_all(&decoder, &mut buf).unwrap();
        buf.extend_from_slice(&bytes[cut..]);
        raw.extend(decode_all(&decoder, &mut buf).unwrap());
        prop_assert!(buf.is_empty());
        let parsed = parse_all_client(raw);
        prop_assert_eq!(&parsed, &frames);
        // Re-encoding what was parsed gives the same bytes.
        prop_assert_eq!(&encoded_client(&parsed)[..], &bytes[..]);
    }

    #[test]
    fn server_frames_round_trip(frame in arb_server_frame()) {
        let mut bytes = BytesMut::new();
        frame.encode(&mut bytes);
        let mut buf = bytes.clone();
        let raw = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        let parsed = ServerFrame::parse(raw).unwrap();
        prop_assert_eq!(&parsed, &frame);
        let mut again = BytesMut::new();
        parsed.encode(&mut again);
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn byte_soup_never_panics_and_every_error_is_fatal(soup in arb_soup(), max in 0usize..64) {
        for (decoder, limit) in [(FrameDecoder::new(max), max), (FrameDecoder::default(), FRAME_BODY_BYTES_MAX)] {
            let mut buf = BytesMut::from(&soup[..]);
            let error = loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(raw)) => {
                        prop_assert!(raw.body.len() <= limit);
                        for e in [ClientFrame::parse(raw.clone()).err(), ServerFrame::parse(raw).err()].into_iter().flatten() {
                            prop_assert!(e.code().is_fatal(), "{:?} maps to {}", e, e.code());
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match error {
                Some(e) => prop_assert!(e.code().is_fatal(), "{:?} maps to {}", e, e.code()),
                // Waiting for more is only right for a partial header or a partial body.
                None => prop_assert!(
                    buf.len() < HEADER_BYTES
                        || buf.len() < HEADER_BYTES + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                ),
            }
        }
    }
}
