//! The NATS core text protocol: `CONNECT` (not verbose), subscribers `SUB room 1`, then `PING`;
//! the `PONG` proves the server handled everything before it, so the connection is ready.
//! Publishes are `PUB room n`, deliveries `MSG subject sid [reply] n`; the server's `PING`s
//! are answered with `PONG`.
//!
//! Over TLS the standard way, the server's `INFO` line comes first in plain text, saying
//! `"tls_required":true`; the client then starts the TLS handshake and greets over it
//! ([`take_info`] reads that line). nats-server 2.10's `handshake_first` skips the plain `INFO`.

use bytes::{Buf, BytesMut};
use memchr::{memchr, memchr2};

use super::{lossy, parse_decimal, put_decimal, Incoming, MESSAGE_BYTES_MAX};

/// Longest control line accepted (`INFO` is the long one; nats-server's own limit is 4 KiB).
const CONTROL_LINE_BYTES_MAX: usize = 16 * 1024;

/// Most words on a control line we parse (`MSG subject sid reply n` has five).
const WORDS_MAX: usize = 5;

/// Sent first: no `+OK` after every command, no pedantic checks.
const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";

/// NATS has no per-connection state the bench needs.
#[derive(Debug, Default)]
pub struct NatsWire;

/// One server operation.
#[derive(Debug, PartialEq, Eq)]
enum Op<'a> {
    Msg(&'a [u8]),
    Ping,
    Pong,
    Ignored,
}

impl NatsWire {
    /// `CONNECT`, `SUB` for subscribers, then `PING`.
    pub fn greet(&self, room: &[u8], subscriber: bool, out: &mut BytesMut) {
        out.extend_from_slice(CONNECT);
        if subscriber {
            out.extend_from_slice(b"SUB ");
            out.extend_from_slice(room);
            out.extend_from_slice(b" 1\r\n");
        }
        out.extend_from_slice(b"PING\r\n");
    }

    /// Appends `PUB room n\r\n<payload>\r\n`.
    pub fn encode_publish(room: &[u8], payload: &[u8], out: &mut BytesMut) {
        out.reserve(room.len() + payload.len() + 16);
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(room);
        out.extend_from_slice(b" ");
        put_decimal(out, payload.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    /// Consumes whole operations off `input`.
    pub fn parse(input: &mut BytesMut, out: &mut BytesMut, sink: &mut dyn FnMut(Incoming<'_>)) -> Result<(), String> {
        let mut used = 0;
        let result = loop {
            match parse_op(&input[used..]) {
                Ok(Some((op, len))) => {
                    used += len;
                    match op {
                        Op::Msg(payload) => sink(Incoming::Payload(payload)),
                        Op::Pong => sink(Incoming::Ready),
                        Op::Ping => out.extend_from_slice(b"PONG\r\n"),
                        Op::Ignored => {}
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

/// Parses the operation at the front of `buf`: `Ok(None)` if it is not all there yet.
fn parse_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, String> {
    let window = &buf[..buf.len().min(CONTROL_LINE_BYTES_MAX)];
    let Some(newline) = memchr(b'\n', window) else {
        if buf.len() >= CONTROL_LINE_BYTES_MAX {
            return Err("NATS control line over the limit".into());
        }
        return Ok(None);
    };
    let line = buf[..newline].strip_suffix(b"\r").unwrap_or(&buf[..newline]);
    let op = &line[..memchr2(b' ', b'\t', line).unwrap_or(line.len())];
    let after_line = newline + 1;
    if op.eq_ignore_ascii_case(b"MSG") {
        let mut words = [&[][..]; WORDS_MAX];
        let count = split_words(line, &mut words).ok_or_else(|| format!("malformed NATS MSG line: {}", lossy(line)))?;
        if !(4..=5).contains(&count) {
            return Err(format!("malformed NATS MSG line: {}", lossy(line)));
        }
        let size = parse_decimal(words[count - 1], MESSAGE_BYTES_MAX as u64)
            .ok_or_else(|| format!("bad NATS MSG size: {}", lossy(line)))? as usize;
        let end = after_line + size;
        let Some(trailer) = buf.get(end..end + 2) else {
            return Ok(None);
        };
        if trailer != b"\r\n" {
            return Err("NATS MSG payload not followed by CRLF".into());
        }
        return Ok(Some((Op::Msg(&buf[after_line..end]), end + 2)));
    }
    let parsed = if op.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if op.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if op.eq_ignore_ascii_case(b"INFO") || op.eq_ignore_ascii_case(b"+OK") {
        Op::Ignored
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        return Err(format!("NATS server error: {}", lossy(line)));
    } else {
        return Err(format!("unexpected NATS operation: {}", lossy(line)));
    };
    Ok(Some((parsed, after_line)))
}

/// Takes the server's first operation, which must be `INFO {...}`, off `input`: `Ok(None)` if
/// the line is not all there yet, else whether the server requires TLS (`"tls_required":true`).
/// Anything after the line is left in `input`.
pub fn take_info(input: &mut BytesMut) -> Result<Option<bool>, String> {
    let window = &input[..input.len().min(CONTROL_LINE_BYTES_MAX)];
    let Some(newline) = memchr(b'\n', window) else {
        if input.len() >= CONTROL_LINE_BYTES_MAX {
            return Err("NATS INFO line over the limit".into());
        }
        return Ok(None);
    };
    let line = input[..newline].strip_suffix(b"\r").unwrap_or(&input[..newline]);
    let op = &line[..memchr2(b' ', b'\t', line).unwrap_or(line.len())];
    if !op.eq_ignore_ascii_case(b"INFO") {
        return Err(format!("expected the NATS INFO line first, got: {}", lossy(line)));
    }
    let tls_required = json_flag_is_true(&line[op.len()..], b"\"tls_required\"");
    input.advance(newline + 1);
    Ok(Some(tls_required))
}

/// Whether the JSON object text `json` has `key` (quoted) set to `true` at any level; the
/// bench reads one flag, so it needs no JSON parser.
fn json_flag_is_true(json: &[u8], key: &[u8]) -> bool {
    let mut rest = json;
    while let Some(at) = memchr::memmem::find(rest, key) {
        rest = &rest[at + key.len()..];
        let value = rest.trim_ascii_start();
        if let Some(value) = value.strip_prefix(b":") {
            if value.trim_ascii_start().starts_with(b"true") {
                return true;
            }
        }
    }
    false
}

/// Splits `line` on spaces and tabs into `words`; the number of words (at least one, possibly
/// empty), or `None` if there are more than fit.
fn split_words<'a>(line: &'a [u8], words: &mut [&'a [u8]; WORDS_MAX]) -> Option<usize> {
    let mut count = 0;
    let mut rest = line;
    loop {
        let end = memchr2(b' ', b'\t', rest).unwrap_or(rest.len());
        if end > 0 || (count == 0 && end == rest.len()) {
            *words.get_mut(count)? = &rest[..end];
            count += 1;
        }
        if end == rest.len() {
            return Some(count.max(1));
        }
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> (Result<(), String>, Vec<Vec<u8>>, usize, Vec<u8>) {
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        let mut payloads = Vec::new();
        let mut ready = 0;
        for chunk in chunks {
            input.extend_from_slice(chunk);
            let result = NatsWire::parse(&mut input, &mut out, &mut |e| match e {
                Incoming::Ready => ready += 1,
                Incoming::Payload(p) => payloads.push(p.to_vec()),
            });
            if result.is_err() {
                return (result, payloads, ready, out.to_vec());
            }
        }
        (Ok(()), payloads, ready, out.to_vec())
    }

    const STREAM: &[u8] =
        b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nPONG\r\nMSG bench.room0 1 5\r\nhello\r\n\
PING\r\nMSG bench.room0 1 _INBOX.x 3\r\na\r\n\r\nMSG  bench.room0\t1  0\r\n\r\n+OK\r\n";

    #[test]
    fn whole_stream() {
        let (result, payloads, ready, out) = feed(&[STREAM]);
        assert_eq!(result, Ok(()));
        assert_eq!(payloads, [b"hello".to_vec(), b"a\r\n".to_vec(), Vec::new()]);
        assert_eq!(ready, 1);
        assert_eq!(out, b"PONG\r\n");
    }

    #[test]
    fn one_byte_at_a_time() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (result, payloads, ready, out) = feed(&chunks);
        assert_eq!(result, Ok(()));
        assert_eq!(payloads.len(), 3);
        assert_eq!((ready, out.len()), (1, 6));
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        for bad in [
            &b"-ERR 'Authorization Violation'\r\n"[..],
            b"WHAT\r\n",
            b"MSG a 1\r\n",
            b"MSG a 1 b c d 2\r\n",
            b"MSG a 1 x\r\n",
            b"MSG a 1 99999999999\r\n",
            b"MSG a 1 2\r\nabXY",
            b"\r\n",
        ] {
            assert!(feed(&[bad]).0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(feed(&[&[b'x'; CONTROL_LINE_BYTES_MAX]]).0.is_err(), "endless line");
        let err = feed(&[b"-ERR 'Protocol error: unbalanced quotes in request'\r\n"]).0;
        assert!(err.is_err_and(|e| e.starts_with("NATS server error: -ERR 'Protocol")));
        assert_eq!(feed(&[b"MSG a 1 200\r\nabc"]).0, Ok(()), "a partial payload waits");
    }

    #[test]
    fn info_says_whether_tls_is_required() {
        let mut input =
            BytesMut::from(&b"INFO {\"server_id\":\"x\",\"tls_required\":true,\"max_payload\":1}\r\nrest"[..]);
        assert_eq!(take_info(&mut input), Ok(Some(true)));
        assert_eq!(&input[..], b"rest", "only the INFO line is taken");
        let mut input = BytesMut::from(&b"INFO {\"tls_required\" : true}\n"[..]);
        assert_eq!(take_info(&mut input), Ok(Some(true)));
        assert!(input.is_empty());
        for plain in [&b"INFO {\"server_id\":\"x\"}\r\n"[..], b"INFO {\"tls_required\":false}\r\n", b"INFO\r\n"] {
            let mut input = BytesMut::from(plain);
            assert_eq!(take_info(&mut input), Ok(Some(false)), "{:?}", String::from_utf8_lossy(plain));
        }
    }

    #[test]
    fn info_waits_for_the_whole_line_and_refuses_anything_else() {
        let mut input = BytesMut::from(&b"INFO {\"tls_required\":tr"[..]);
        assert_eq!(take_info(&mut input), Ok(None));
        assert_eq!(input.len(), 23, "nothing is taken from a partial line");
        let mut input = BytesMut::from(&b"-ERR 'Secure Connection - TLS Required'\r\n"[..]);
        assert!(take_info(&mut input)
            .is_err_and(|e| e == "expected the NATS INFO line first, got: -ERR 'Secure Connection - TLS Required'"));
        let mut input = BytesMut::from(&[b'x'; CONTROL_LINE_BYTES_MAX][..]);
        assert_eq!(take_info(&mut input), Err("NATS INFO line over the limit".into()));
    }

    #[test]
    fn publish_encoding() {
        let mut out = BytesMut::new();
        NatsWire::encode_publish(b"r", b"xyz", &mut out);
        assert_eq!(&out[..], b"PUB r 3\r\nxyz\r\n");
        let mut out = BytesMut::new();
        NatsWire.greet(b"r", true, &mut out);
        assert!(out.ends_with(b"SUB r 1\r\nPING\r\n"));
    }
}
