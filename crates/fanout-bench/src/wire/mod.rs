//! Protocol adapters: one per server protocol, all carrying the same payloads.
//!
//! An adapter is sans-IO: it writes a greeting and publishes into an output buffer, and turns
//! the bytes read from the server into [`Incoming`] events. Every parser is bounded (a control
//! line or a message over its limit is an error, never a bigger buffer) and never panics on what
//! the server sends.

mod fanout;
mod nats;
mod redis;

use bytes::BytesMut;

use super::args::{Protocol, PAYLOAD_BYTES_MAX};

/// Largest message any adapter accepts from a server, framing included: a full payload plus
/// room for headers, room and name fields.
pub const MESSAGE_BYTES_MAX: usize = PAYLOAD_BYTES_MAX + 1024;

/// What the server sent that the bench cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The connection is set up: joined, subscribed, or (publishers) answered.
    Ready,
    /// One delivered payload.
    Payload(&'a [u8]),
}

/// The protocol of one connection.
#[derive(Debug)]
pub enum Wire {
    /// fanout's binary frames.
    Fanout(fanout::FanoutWire),
    /// NATS core text protocol.
    Nats(nats::NatsWire),
    /// Redis RESP.
    Redis(redis::RedisWire),
}

impl Wire {
    /// A fresh adapter for `protocol`; `token` goes into fanout's `HELLO` (others have none).
    pub fn new(protocol: Protocol, token: &[u8]) -> Self {
        match protocol {
            Protocol::Fanout => Self::Fanout(fanout::FanoutWire::new(token)),
            Protocol::Nats => Self::Nats(nats::NatsWire),
            Protocol::Redis => Self::Redis(redis::RedisWire),
        }
    }

    /// Writes what a new connection sends first: `name` is a valid fanout user name, `room` a
    /// valid room name; a subscriber subscribes to it, a publisher only makes itself ready to
    /// publish there. The adapter reports [`Incoming::Ready`] once the server confirmed.
    pub fn greet(&self, name: &str, room: &[u8], subscriber: bool, out: &mut BytesMut) {
        match self {
            Self::Fanout(w) => w.greet(name, room, subscriber, out),
            Self::Nats(w) => w.greet(room, subscriber, out),
            Self::Redis(w) => w.greet(room, subscriber, out),
        }
    }

    /// Appends the publish of `payload` to `room`.
    pub fn encode_publish(&self, room: &[u8], payload: &[u8], out: &mut BytesMut) {
        match self {
            Self::Fanout(_) => fanout::FanoutWire::encode_publish(room, payload, out),
            Self::Nats(_) => nats::NatsWire::encode_publish(room, payload, out),
            Self::Redis(_) => redis::RedisWire::encode_publish(room, payload, out),
        }
    }

    /// Consumes every whole message at the front of `input`, reporting those that matter to
    /// `sink` and writing any reply the protocol requires (pongs) to `out`. An error means the
    /// connection is unusable (a server error, or bytes that break the protocol).
    pub fn parse(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        sink: &mut dyn FnMut(Incoming<'_>),
    ) -> Result<(), String> {
        match self {
            Self::Fanout(w) => w.parse(input, out, sink),
            Self::Nats(_) => nats::NatsWire::parse(input, out, sink),
            Self::Redis(_) => redis::RedisWire::parse(input, sink),
        }
    }
}

/// Reads the plain `INFO` line a NATS server sends before a TLS upgrade: `Ok(None)` until the
/// line is whole, then whether the server requires TLS. See the NATS adapter's docs.
pub fn take_nats_info(input: &mut BytesMut) -> Result<Option<bool>, String> {
    nats::take_info(input)
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Parses a decimal number of at most `max` (no sign, no spaces); `None` if it is not one.
fn parse_decimal(text: &[u8], max: u64) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    (n <= max).then_some(n)
}

/// Bytes as text for an error message, cut to a readable length.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 65_536, u64::MAX / 10] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
            assert_eq!(parse_decimal(&out, u64::MAX), Some(n));
        }
        assert_eq!(parse_decimal(b"", 10), None);
        assert_eq!(parse_decimal(b"11", 10), None);
        assert_eq!(parse_decimal(b"-1", 10), None);
        assert_eq!(parse_decimal(b"1 ", 10), None);
        assert_eq!(parse_decimal(b"99999999999999999999", u64::MAX), None);
    }
}
