//! The `client_frame` check: cuts client frames out of arbitrary bytes and parses them, as the
//! server does with a client's input. Every frame that parses must re-encode to exactly the bytes
//! it came from and decode and parse again to an equal frame.
//!
//! A decode error must be the one the header calls for (`FRAME_TOO_LARGE` for a declared body
//! over the limit, decided from the 5 header bytes alone, before any body byte arrives;
//! `UNKNOWN_FRAME_TYPE` for an unassigned type), and every error maps to a fatal code.
//!
//! Fixed finding (kept as `corpus/client_frame/regress_*`): `ClientFrame::parse` accepts a `HELLO`
//! name or a `PUBLISH` room of up to 255 bytes (the session refuses them later), and
//! `ClientFrame::encode` used to debug-assert the protocol limits on them, so re-encoding a parsed
//! frame panicked. The encoders now take what the parser takes.
//!
//! Shared by `fuzz_targets/client_frame.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`, which
//! replays every file of `corpus/client_frame/` through [`check`] as an ordinary test on stable.

use bytes::BytesMut;
use fanout::codec::{is_assigned, ClientFrame, FrameDecoder, RawFrame};
use fanout::error::DecodeError;
use fanout::limits::{FRAME_BODY_BYTES_MAX, HEADER_BYTES};

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(raw)) => {
                assert_eq!(before - buf.len(), HEADER_BYTES + raw.body.len(), "decode took the wrong byte count");
                match ClientFrame::parse(raw.clone()) {
                    Ok(frame) => round_trip(&decoder, &raw, &frame),
                    Err(e) => assert!(e.code().is_fatal(), "parse error {e:?} is not fatal"),
                }
                // A parse error is fatal for a connection, but the framing is intact: keep
                // going to exercise the following frames.
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "decode consumed bytes without a frame");
                if buf.len() >= HEADER_BYTES {
                    // Waiting for a body is only right for a header that will be accepted.
                    let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    assert!(
                        declared <= FRAME_BODY_BYTES_MAX,
                        "waits for a {declared}-byte body instead of refusing it"
                    );
                    assert!(is_assigned(buf[4]), "waits for the body of unassigned type 0x{:02x}", buf[4]);
                    assert!(buf.len() < HEADER_BYTES + declared, "a whole frame was left in the buffer");
                }
                break;
            }
            Err(e) => {
                check_refusal(&decoder, &buf, &e);
                break;
            }
        }
    }
}

/// A refused header is refused for the reason its 5 bytes give, and from those bytes alone.
fn check_refusal(decoder: &FrameDecoder, buf: &[u8], error: &DecodeError) {
    assert!(buf.len() >= HEADER_BYTES, "refused {error:?} with only {} bytes buffered", buf.len());
    let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = buf[4];
    match error {
        DecodeError::FrameTooLarge { declared: d, max } => {
            assert_eq!(*d as usize, declared, "FRAME_TOO_LARGE names the wrong length");
            assert_eq!(*max, FRAME_BODY_BYTES_MAX, "FRAME_TOO_LARGE names the wrong limit");
            assert!(declared > FRAME_BODY_BYTES_MAX, "a body of {declared} bytes is within the limit");
        }
        DecodeError::UnknownFrameType(t) => {
            assert_eq!(*t, kind, "UNKNOWN_FRAME_TYPE names the wrong type");
            assert!(declared <= FRAME_BODY_BYTES_MAX, "an oversize header must be FRAME_TOO_LARGE first");
            assert!(!is_assigned(kind), "type 0x{kind:02x} is assigned");
        }
        other => panic!("the frame decoder returned {other:?}; only header errors are its business"),
    }
    assert!(error.code().is_fatal(), "decode error {error:?} is not fatal");
    // The header alone is enough: the server never waits for (or buffers) the body it refuses.
    let mut header = BytesMut::from(&buf[..HEADER_BYTES]);
    assert_eq!(decoder.decode(&mut header).as_ref().err(), Some(error), "refusal needs more than the header");
}

fn round_trip(decoder: &FrameDecoder, raw: &RawFrame, frame: &ClientFrame) {
    let mut encoded = BytesMut::new();
    frame.encode(&mut encoded);
    let mut original = Vec::with_capacity(HEADER_BYTES + raw.body.len());
    original.extend_from_slice(&(raw.body.len() as u32).to_be_bytes());
    original.push(raw.kind);
    original.extend_from_slice(&raw.body);
    assert_eq!(&encoded[..], &original[..], "re-encoding {frame:?} changed its bytes");
    let again = decoder.decode(&mut encoded).expect("re-encoded frame decodes").expect("re-encoded frame is whole");
    assert!(encoded.is_empty(), "re-encoded frame left bytes behind");
    let reparsed = ClientFrame::parse(again).expect("re-encoded frame parses");
    assert_eq!(&reparsed, frame, "decode(encode(frame)) != frame");
}
