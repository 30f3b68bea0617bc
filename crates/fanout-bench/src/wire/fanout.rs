//! fanout's binary protocol, through the crate's own codec: `HELLO` then `JOIN` (publishers with
//! `SEND_ONLY`, so they are not subscribers), ready on `JOINED`, payloads from `MESSAGE`.

use bytes::{Buf, Bytes, BytesMut};

use super::{lossy, Incoming};
use fanout_proto::codec::{
    encode_publish, frame_type, ClientFrame, FrameDecoder, Hello, ServerFrame, JOIN_FLAG_SEND_ONLY, PROTOCOL_VERSION,
};
use fanout_proto::error::ErrorCode;
use fanout_proto::limits::{FRAME_BODY_BYTES_MAX, HEADER_BYTES};

/// State of one fanout connection: the frame decoder (bounded by the protocol's max body) and
/// the token its `HELLO` presents.
#[derive(Debug, Default)]
pub struct FanoutWire {
    decoder: FrameDecoder,
    token: Bytes,
}

impl FanoutWire {
    /// A connection that presents `token` (empty: none) in `HELLO`.
    pub fn new(token: &[u8]) -> Self {
        Self { decoder: FrameDecoder::default(), token: Bytes::copy_from_slice(token) }
    }

    /// `HELLO` as `name`, then `JOIN room`.
    pub fn greet(&self, name: &str, room: &[u8], subscriber: bool, out: &mut BytesMut) {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            name: Bytes::copy_from_slice(name.as_bytes()),
            token: self.token.clone(),
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
        loop {
            // Fast path for deliveries: read the payload in place, as the NATS and Redis parsers
            // do, instead of cutting reference-counted `Bytes` for every field.
            if let Some(frame_len) = message_in_place(input, sink)? {
                input.advance(frame_len);
                continue;
            }
            let Some(raw) = self.decoder.decode(input).map_err(|e| format!("bad frame from server: {e}"))? else {
                break;
            };
            match ServerFrame::parse(raw).map_err(|e| format!("bad frame from server: {e}"))? {
                ServerFrame::Message(message) => sink(Incoming::Payload(&message.payload)),
                ServerFrame::Joined(_) => sink(Incoming::Ready),
                ServerFrame::Ping(nonce) => ClientFrame::Pong(nonce).encode(out),
                ServerFrame::Error { code, text } => {
                    let name = ErrorCode::from_u16(code).map_or_else(|| code.to_string(), |c| c.to_string());
                    return Err(format!("server error {name}: {}", lossy(&text)));
                }
                // Replies and presence a load generator does not ask for.
                _ => {}
            }
        }
        Ok(())
    }
}

/// If `input` starts with a whole `MESSAGE` frame, hands its payload to `sink` and returns the
/// frame's length; `None` for anything else (left to the full decoder).
fn message_in_place(input: &[u8], sink: &mut dyn FnMut(Incoming<'_>)) -> Result<Option<usize>, String> {
    let Some(header) = input.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    if header[4] != frame_type::MESSAGE {
        return Ok(None);
    }
    let body_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if body_len > FRAME_BODY_BYTES_MAX {
        return Ok(None); // the decoder reports it
    }
    let Some(body) = input.get(HEADER_BYTES..HEADER_BYTES + body_len) else {
        return Ok(None);
    };
    let room_len = *body.get(16).ok_or("MESSAGE too short")? as usize;
    let name_len = *body.get(17 + room_len).ok_or("MESSAGE room overruns the body")? as usize;
    let payload = body.get(18 + room_len + name_len..).ok_or("MESSAGE name overruns the body")?;
    sink(Incoming::Payload(payload));
    Ok(Some(HEADER_BYTES + body_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_proto::codec::{encode_message, encode_room_reply, frame_type};

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
