//! The `line_splitter` check: feeds arbitrary bytes to the line-mode splitter whole, in two parts
//! (cut where the first input byte says) and byte by byte, and checks each against a naive oracle:
//! the same lines, none longer than the limit, the same `LINE_TOO_LONG` verdict, the same leftover
//! bytes.
//!
//! Shared by `fuzz_targets/line_splitter.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`, which
//! replays every file of `corpus/line_splitter/` through [`check`] as an ordinary test on stable.

use bytes::BytesMut;
use fanout::codec::line::LineSplitter;
use fanout::error::DecodeError;
use fanout::limits::LINE_BYTES_MAX;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<Vec<u8>>,
    too_long: bool,
    /// Bytes left over (only compared when the stream did not fail).
    rest: Vec<u8>,
}

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let cut = first as usize * (input.len() + 1) / 256;
    // The real limit, and a small one so that short inputs reach the limit logic too.
    for max in [LINE_BYTES_MAX, 1 + first as usize % 16] {
        let expected = oracle(max, input);
        let (head, tail) = input.split_at(cut);
        let whole = run(LineSplitter::new(max), max, [input]);
        assert_eq!(whole, expected, "whole input, max {max}");
        let split = run(LineSplitter::new(max), max, [head, tail]);
        assert_eq!(split, expected, "split at {cut}, max {max}");
        let bytewise = run(LineSplitter::new(max), max, input.chunks(1));
        assert_eq!(bytewise, expected, "byte by byte, max {max}");
    }
    // The default splitter is the server's.
    let default = run(LineSplitter::default(), LINE_BYTES_MAX, [input]);
    assert_eq!(default, oracle(LINE_BYTES_MAX, input), "default splitter");
}

fn run<'a>(mut splitter: LineSplitter, max: usize, parts: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match splitter.next_line(&mut buf) {
                Ok(Some(line)) => {
                    assert!(line.len() <= max, "line of {} bytes over the limit {max}", line.len());
                    assert!(!line.contains(&b'\n'), "line contains a newline");
                    lines.push(line.to_vec());
                }
                Ok(None) => break,
                Err(DecodeError::LineTooLong) => return Outcome { lines, too_long: true, rest: Vec::new() },
                Err(e) => panic!("unexpected error from the line splitter: {e:?}"),
            }
        }
    }
    Outcome { lines, too_long: false, rest: buf.to_vec() }
}

/// The spec, written the obvious way: split on `\n`, drop one `\r` before it, refuse a line over
/// `max`, and refuse an unfinished line that can no longer fit (`max` bytes plus a `\r`).
fn oracle(max: usize, input: &[u8]) -> Outcome {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..newline];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > max {
            return Outcome { lines, too_long: true, rest: Vec::new() };
        }
        lines.push(line.to_vec());
        rest = &rest[newline + 1..];
    }
    if rest.len() > max + 1 {
        return Outcome { lines, too_long: true, rest: Vec::new() };
    }
    Outcome { lines, too_long: false, rest: rest.to_vec() }
}
