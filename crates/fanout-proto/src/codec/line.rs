//! Line mode: newline-terminated text for humans with `nc` (see `protocol.md`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::PresenceKind;
use crate::error::{DecodeError, ErrorCode};
use crate::limits::LINE_BYTES_MAX;

/// Whether a connection whose first byte is `first` speaks line mode.
pub fn is_line_mode(first: u8) -> bool {
    (0x20..=0x7E).contains(&first)
}

/// Cuts lines out of a byte stream, remembering how far it has already looked for a newline so
/// that a long line arriving byte by byte is scanned once, not once per byte.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    line_bytes_max: usize,
    scanned: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(LINE_BYTES_MAX)
    }
}

impl LineSplitter {
    /// A splitter that refuses lines longer than `line_bytes_max` (newline and `\r` excluded).
    pub fn new(line_bytes_max: usize) -> Self {
        Self { line_bytes_max, scanned: 0 }
    }

    /// Takes the next line (without `\n` or a `\r` before it) off the front of `buf`, or
    /// `Ok(None)` if no whole line is there yet.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        // Allow one extra byte for a `\r` before the newline.
        let window = buf.len().min(self.line_bytes_max + 2);
        let Some(found) = memchr::memchr(b'\n', &buf[self.scanned.min(window)..window]) else {
            if buf.len() > self.line_bytes_max + 1 {
                return Err(DecodeError::LineTooLong);
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        let newline = self.scanned.min(window) + found;
        self.scanned = 0;
        let mut line = buf.split_to(newline + 1).freeze();
        line.truncate(newline);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.line_bytes_max {
            return Err(DecodeError::LineTooLong);
        }
        Ok(Some(line))
    }
}

/// Appends `name: payload\n`, showing any `\n` or `\r` in the payload as a space.
pub fn encode_message_line(dst: &mut BytesMut, name: &[u8], payload: &[u8]) {
    dst.reserve(name.len() + 2 + payload.len() + 1);
    dst.put_slice(name);
    dst.put_slice(b": ");
    let mut rest = payload;
    while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
        dst.put_slice(&rest[..at]);
        dst.put_u8(b' ');
        rest = &rest[at + 1..];
    }
    dst.put_slice(rest);
    dst.put_u8(b'\n');
}

/// Appends the line that tells a line-mode member of a presence change: `* alice joined`,
/// `* alice left`, `* alice left (connection lost)`, `* alice is now alicia` (`old` is the
/// former name of a rename).
pub fn encode_presence_line(dst: &mut BytesMut, kind: PresenceKind, name: &[u8], old: Option<&[u8]>) {
    dst.put_slice(b"* ");
    match kind {
        PresenceKind::Joined => {
            dst.put_slice(name);
            dst.put_slice(b" joined");
        }
        PresenceKind::Left => {
            dst.put_slice(name);
            dst.put_slice(b" left");
        }
        PresenceKind::Lost => {
            dst.put_slice(name);
            dst.put_slice(b" left (connection lost)");
        }
        PresenceKind::Renamed => {
            dst.put_slice(old.unwrap_or(b"someone"));
            dst.put_slice(b" is now ");
            dst.put_slice(name);
        }
    }
    dst.put_u8(b'\n');
}

/// Appends a status line for a line-mode client: `* text`.
pub fn encode_status_line(dst: &mut BytesMut, text: &str) {
    dst.reserve(text.len() + 3);
    dst.put_slice(b"* ");
    dst.put_slice(text.as_bytes());
    dst.put_u8(b'\n');
}

/// Appends the error line a line-mode client gets for a refused request, or before it is
/// closed for a fatal one.
pub fn encode_error_line(dst: &mut BytesMut, code: ErrorCode, text: &str) {
    let line = format!("error {} {}: {}\n", code as u16, code.name(), text);
    dst.put_slice(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(splitter: &mut LineSplitter, buf: &mut BytesMut) -> Result<Vec<Bytes>, DecodeError> {
        let mut out = Vec::new();
        while let Some(line) = splitter.next_line(buf)? {
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_and_strips_carriage_return() {
        let mut s = LineSplitter::new(16);
        let mut buf = BytesMut::from(&b"hello\r\nworld\n\npartial"[..]);
        let got = lines(&mut s, &mut buf).unwrap();
        assert_eq!(got, vec![Bytes::from("hello"), Bytes::from("world"), Bytes::from("")]);
        assert_eq!(&buf[..], b"partial");
    }

    #[test]
    fn line_split_across_reads_at_every_offset() {
        let input = b"first line\r\nsecond\nthird one here\n";
        for cut in 0..=input.len() {
            let mut s = LineSplitter::new(64);
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = lines(&mut s, &mut buf).unwrap();
            buf.extend_from_slice(&input[cut..]);
            got.extend(lines(&mut s, &mut buf).unwrap());
            assert_eq!(
                got,
                vec![Bytes::from("first line"), Bytes::from("second"), Bytes::from("third one here")],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn exact_limit_is_accepted_and_one_more_is_refused() {
        let mut s = LineSplitter::new(8);
        let mut buf = BytesMut::from(&b"12345678\n12345678\r\n"[..]);
        assert_eq!(lines(&mut s, &mut buf).unwrap().len(), 2);

        let mut s = LineSplitter::new(8);
        let mut buf = BytesMut::from(&b"123456789\n"[..]);
        assert_eq!(s.next_line(&mut buf), Err(DecodeError::LineTooLong));

        // Without a newline yet: refused as soon as the buffer cannot hold a legal line.
        let mut s = LineSplitter::new(8);
        let mut buf = BytesMut::from(&b"123456789"[..]);
        assert_eq!(s.next_line(&mut buf), Ok(None), "9 bytes may still be 8 + \\r");
        buf.extend_from_slice(b"0");
        assert_eq!(s.next_line(&mut buf), Err(DecodeError::LineTooLong));
    }

    #[test]
    fn message_line_replaces_newlines() {
        let mut dst = BytesMut::new();
        encode_message_line(&mut dst, b"bob", b"a\nb\rc");
        assert_eq!(&dst[..], b"bob: a b c\n");
    }

    #[test]
    fn mode_is_chosen_by_first_byte() {
        assert!(is_line_mode(b'h'));
        assert!(is_line_mode(b' '));
        assert!(!is_line_mode(0x00));
        assert!(!is_line_mode(0x7F));
        assert!(!is_line_mode(b'\n'));
    }
}
