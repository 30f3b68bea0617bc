//! The `peer_frame` check: cuts peer-link frames out of arbitrary bytes, as a gateway does with
//! what a (possibly hostile) node sends before and after authenticating. Every frame that parses
//! must re-encode to exactly the bytes it came from; errors must be fatal codes; nothing panics.
//!
//! Shared by `fuzz_targets/peer_frame.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`.

use bytes::BytesMut;
use fanout::codec::peer::PeerFrame;
use fanout::codec::FrameDecoder;
use fanout::limits::HEADER_BYTES;

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(data);
    loop {
        let start = data.len() - buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(raw)) => {
                let frame_bytes = &data[start..start + HEADER_BYTES + raw.body.len()];
                match PeerFrame::parse(raw) {
                    Ok(frame) => {
                        let mut again = BytesMut::new();
                        frame.encode(&mut again);
                        assert_eq!(&again[..], frame_bytes, "a parsed peer frame re-encodes differently");
                    }
                    Err(e) => assert!(e.code().is_fatal(), "peer decode error {e:?} is not fatal"),
                }
            }
            Ok(None) => return,
            Err(e) => {
                assert!(e.code().is_fatal(), "decode error {e:?} is not fatal");
                return;
            }
        }
    }
}
