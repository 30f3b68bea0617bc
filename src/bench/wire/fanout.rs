//! fanout's binary protocol, through the crate's own codec: `HELLO` then `JOIN` (publishers with
//! `SEND_ONLY`, so they are not subscribers), ready on `JOINED`, payloads from `MESSAGE`.

use bytes::{Bytes, BytesMut};

use super::{lossy, Incoming};
use crate::codec::{
    encode_publish, ClientFrame, FrameDecoder, Hello, ServerFrame, JOIN_FLAG_SEND_ONLY, PROTOCOL_VERSION,
};
use crate::error::ErrorCode;

/// State of one fanout connection: the frame decoder (bounded by the protocol's max body).
#[derive(Debug, Default)]
pub struct FanoutWire {
    decoder: FrameDecoder,
}

impl FanoutWire {
    /// `HELLO` as `name`, then `JOIN room`.
    pub fn greet(&self, name: &str, room: &[u8], subscriber: bool, out: &mut BytesMut) {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            name: Bytes::copy_from_slice(name.as_bytes()),
            token: Bytes::new(),
        };
        ClientFrame::Hello(hello).encode(out);
        let flags = if subscriber { 0 } else { JOIN_FLAG_SEND_ONLY };
        ClientFrame::Join { flags, room: Bytes::copy_from_slice(room) }.encode(out);
    }

    /// Appends a `PUBLISH`.
    pub fn encode_publish(room: &[u8], payload: &[u8], out: &mut BytesMut) {
        encode_publish(out, room, payload);
    }

    /// Decodes whole frames off `input`.
    pub fn parse(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        sink: &mut dyn FnMut(Incoming<'_>),
    ) -> Result<(), String> {
        while let Some(raw) = self.decoder.decode(input).map_err(|e| format!("bad frame from server: {e}"))? {
            match ServerFrame::parse(raw).map_err(|e| format!("bad frame from server: {e}"))? {
                ServerFrame::Message(message) => sink(Incoming::Payload(&message.payload)),
                ServerFrame::Joined(_) => sink(Incoming::Ready),
                ServerFrame::Ping(nonce) => ClientFrame::Pong(nonce).encode(out),
                ServerFrame::Error { code, text } => {
                    let name = ErrorCode::from_u16(code).map_or_else(|| code.to_string(), |c| c.to_string());
                    return Err(format!("server error {name}: {}", lossy(&text)));
                }
                ServerFrame::Welcome(_) | ServerFrame::Pong(_) | ServerFrame::Left(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_message, encode_room_reply, frame_type};

    fn run(bytes: &[u8]) -> (Result<(), String>, Vec<Incoming<'static>>, usize) {
        let mut wire = FanoutWire::default();
        let mut input = BytesMut::from(bytes);
        let mut out = BytesMut::new();
        let mut events = Vec::new();
        let result = wire.parse(&mut input, &mut out, &mut |e| {
            events.push(match e {
                Incoming::Ready => Incoming::Ready,
                Incoming::Payload(p) => Incoming::Payload(p.to_vec().leak()),
            })
        });
        (result, events, out.len())
    }

    #[test]
    fn joined_message_and_ping() {
        let mut bytes = BytesMut::new();
        encode_room_reply(&mut bytes, frame_type::JOINED, b"r");
        encode_message(&mut bytes, 1, 1, b"r", b"pub0", b"payload");
        ClientFrame::Ping(9).encode(&mut bytes);
        let (result, events, pong) = run(&bytes);
        assert_eq!(result, Ok(()));
        assert_eq!(events, [Incoming::Ready, Incoming::Payload(b"payload")]);
        assert_eq!(pong, 13);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(run(&[0, 0, 0, 0, 0x3f]).0.is_err());
        assert!(run(&[0xff, 0xff, 0xff, 0xff, 0x11]).0.is_err());
        assert!(run(&[0, 0, 0, 1, 0x11, 0]).0.is_err(), "MESSAGE too short");
        assert_eq!(run(&[0, 0, 0, 9]).0, Ok(()), "a partial header waits");
    }
}
