//! Redis pub/sub over RESP2. Subscribers send `SUBSCRIBE room` and are ready on the
//! `subscribe` confirmation; publishers send `PING` and are ready on `+PONG`, then send
//! `PUBLISH room payload` and read (and drop) its integer reply. Deliveries are the pushes
//! `*3 $7 message $n room $m payload`.

use bytes::{Buf, BytesMut};
use memchr::memchr;

use super::{lossy, parse_decimal, put_decimal, Incoming, MESSAGE_BYTES_MAX};

/// Longest simple line accepted (`+…`, `-…`, `:…`, and length lines).
const LINE_BYTES_MAX: usize = 4096;

/// Most elements of an array reply we accept: pub/sub pushes have three or four.
const ARRAY_ELEMENTS_MAX: usize = 4;

/// Redis has no per-connection state the bench needs.
#[derive(Debug, Default)]
pub struct RedisWire;

/// One non-array RESP value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer,
    Bulk(&'a [u8]),
    Nil,
}

/// One RESP reply: a scalar, or a flat array of at most [`ARRAY_ELEMENTS_MAX`] scalars.
#[derive(Debug, PartialEq, Eq)]
enum Reply<'a> {
    Scalar(Scalar<'a>),
    Array([Scalar<'a>; ARRAY_ELEMENTS_MAX], usize),
}

impl RedisWire {
    /// `SUBSCRIBE room` for subscribers, `PING` for publishers.
    pub fn greet(&self, room: &[u8], subscriber: bool, out: &mut BytesMut) {
        if subscriber {
            put_command(out, &[b"SUBSCRIBE", room]);
        } else {
            put_command(out, &[b"PING"]);
        }
    }

    /// Appends `PUBLISH room payload`.
    pub fn encode_publish(room: &[u8], payload: &[u8], out: &mut BytesMut) {
        put_command(out, &[b"PUBLISH", room, payload]);
    }

    /// Consumes whole replies off `input`.
    pub fn parse(input: &mut BytesMut, sink: &mut dyn FnMut(Incoming<'_>)) -> Result<(), String> {
        let mut used = 0;
        let result = loop {
            match parse_reply(&input[used..]) {
                Ok(Some((reply, len))) => {
                    used += len;
                    if let Err(e) = handle(reply, sink) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        input.advance(used);
        result
    }
}

/// Reports what a reply means to the bench.
fn handle(reply: Reply<'_>, sink: &mut dyn FnMut(Incoming<'_>)) -> Result<(), String> {
    match reply {
        Reply::Array(items, len) => match (items[0], len) {
            (Scalar::Bulk(kind), 3) if kind.eq_ignore_ascii_case(b"message") => match items[2] {
                Scalar::Bulk(payload) => sink(Incoming::Payload(payload)),
                _ => return Err("Redis message push without a bulk payload".into()),
            },
            (Scalar::Bulk(kind), 3) if kind.eq_ignore_ascii_case(b"subscribe") => sink(Incoming::Ready),
            _ => {}
        },
        Reply::Scalar(Scalar::Simple(text)) if text.eq_ignore_ascii_case(b"PONG") => sink(Incoming::Ready),
        Reply::Scalar(Scalar::Error(text)) => return Err(format!("Redis error: {}", lossy(text))),
        // PUBLISH's receiver counts, and anything else a publisher does not need.
        Reply::Scalar(_) => {}
    }
    Ok(())
}

/// Appends a command as a RESP array of bulk strings.
fn put_command(out: &mut BytesMut, parts: &[&[u8]]) {
    out.reserve(parts.iter().map(|p| p.len() + 16).sum::<usize>() + 16);
    out.extend_from_slice(b"*");
    put_decimal(out, parts.len() as u64);
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.extend_from_slice(b"$");
        put_decimal(out, part.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the reply at the front of `buf`: `Ok(None)` if it is not all there yet.
fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if kind != b'*' && kind != b'>' {
        return Ok(parse_scalar(buf)?.map(|(scalar, len)| (Reply::Scalar(scalar), len)));
    }
    let Some((line, mut at)) = line(buf)? else {
        return Ok(None);
    };
    let count = match &line[1..] {
        b"-1" => return Ok(Some((Reply::Scalar(Scalar::Nil), at))),
        digits => parse_decimal(digits, ARRAY_ELEMENTS_MAX as u64)
            .ok_or_else(|| format!("Redis array too long or malformed: {}", lossy(line)))? as usize,
    };
    let mut items = [Scalar::Nil; ARRAY_ELEMENTS_MAX];
    for item in items.iter_mut().take(count) {
        let Some((scalar, len)) = parse_scalar(&buf[at..])? else {
            return Ok(None);
        };
        *item = scalar;
        at += len;
    }
    Ok(Some((Reply::Array(items, count), at)))
}

/// Parses one non-array value at the front of `buf`.
fn parse_scalar(buf: &[u8]) -> Result<Option<(Scalar<'_>, usize)>, String> {
    let Some((line, after)) = line(buf)? else {
        return Ok(None);
    };
    let text = &line[1..];
    let scalar = match line[0] {
        b'+' => Scalar::Simple(text),
        b'-' => Scalar::Error(text),
        b':' => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            parse_decimal(digits, u64::MAX).ok_or_else(|| format!("bad Redis integer: {}", lossy(line)))?;
            Scalar::Integer
        }
        b'$' if text == b"-1" => Scalar::Nil,
        b'$' => {
            let size = parse_decimal(text, MESSAGE_BYTES_MAX as u64)
                .ok_or_else(|| format!("Redis bulk string too long or malformed: {}", lossy(line)))?
                as usize;
            let end = after + size;
            let Some(trailer) = buf.get(end..end + 2) else {
                return Ok(None);
            };
            if trailer != b"\r\n" {
                return Err("Redis bulk string not followed by CRLF".into());
            }
            return Ok(Some((Scalar::Bulk(&buf[after..end]), end + 2)));
        }
        _ => return Err(format!("unexpected Redis reply: {}", lossy(line))),
    };
    Ok(Some((scalar, after)))
}

/// The CRLF-terminated line at the front of `buf` (without the CRLF, at least one byte) and
/// the offset after it.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let window = &buf[..buf.len().min(LINE_BYTES_MAX)];
    let Some(newline) = memchr(b'\n', window) else {
        if buf.len() >= LINE_BYTES_MAX {
            return Err("Redis line over the limit".into());
        }
        return Ok(None);
    };
    match buf[..newline].strip_suffix(b"\r") {
        Some(line) if !line.is_empty() => Ok(Some((line, newline + 1))),
        _ => Err("malformed Redis line (no CR, or empty)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> (Result<(), String>, Vec<Vec<u8>>, usize) {
        let mut input = BytesMut::new();
        let mut payloads = Vec::new();
        let mut ready = 0;
        for chunk in chunks {
            input.extend_from_slice(chunk);
            let result = RedisWire::parse(&mut input, &mut |e| match e {
                Incoming::Ready => ready += 1,
                Incoming::Payload(p) => payloads.push(p.to_vec()),
            });
            if result.is_err() {
                return (result, payloads, ready);
            }
        }
        (Ok(()), payloads, ready)
    }

    const STREAM: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$4\r\nab\r\n\r\n\
:42\r\n:-1\r\n+PONG\r\n$-1\r\n*-1\r\n*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nr\r\n$0\r\n\r\n*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$0\r\n\r\n";

    #[test]
    fn whole_stream() {
        let (result, payloads, ready) = feed(&[STREAM]);
        assert_eq!(result, Ok(()));
        assert_eq!(payloads, [b"ab\r\n".to_vec(), Vec::new()]);
        assert_eq!(ready, 2);
    }

    #[test]
    fn one_byte_at_a_time() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (result, payloads, ready) = feed(&chunks);
        assert_eq!(result, Ok(()));
        assert_eq!((payloads.len(), ready), (2, 2));
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        for bad in [
            &b"-ERR unknown command\r\n"[..],
            b"?\r\n",
            b"\r\n",
            b"+OK\n",
            b"*5\r\n",
            b"*2\r\n*1\r\n",
            b"$3\r\nabcXY",
            b"$99999999\r\n",
            b":x\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n:5\r\n",
        ] {
            assert!(feed(&[bad]).0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(feed(&[&[b'+'; LINE_BYTES_MAX]]).0.is_err(), "endless line");
        assert_eq!(feed(&[b"$10\r\nabc"]).0, Ok(()), "a partial bulk string waits");
    }

    #[test]
    fn command_encoding() {
        let mut out = BytesMut::new();
        RedisWire::encode_publish(b"room", b"xy", &mut out);
        assert_eq!(&out[..], b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nxy\r\n");
    }
}
