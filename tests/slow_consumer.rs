//! A client that never reads is cut at the output limit; everyone else gets every message and
//! the server's memory stays bounded.

mod support;

use std::io;
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use fanout::codec::{encode_message, ServerFrame};
use support::{connect_joined, Progress, RawConn, RawRead, Server, IO_TIMEOUT};

const OUTPUT_BYTES_MAX: usize = 1024 * 1024;
const GOOD_CONSUMERS: usize = 2;
/// The publisher stays at most this many bytes of messages ahead of the slower good consumer,
/// so the good consumers are never near the limit however the threads are scheduled.
const WINDOW_BYTES: usize = 512 * 1024;
/// Growth of the server's resident memory we tolerate over the whole flood.
const RSS_GROWTH_KIB_MAX: u64 = 64 * 1024;

/// One flood: how many messages of what size.
#[derive(Debug, Clone, Copy)]
struct Flood {
    messages: u64,
    payload_bytes: usize,
}

impl Flood {
    /// Message `seq`'s payload: the number, then a pattern that depends on it.
    fn payload(&self, seq: u64) -> Vec<u8> {
        let mut p = seq.to_be_bytes().to_vec();
        p.extend((8..self.payload_bytes).map(|i| (i as u64 ^ seq) as u8));
        p
    }

    fn window(&self) -> u64 {
        (WINDOW_BYTES / self.payload_bytes).max(1) as u64
    }
}

/// What the never-reading client finds when it finally reads.
#[derive(Debug)]
struct Drained {
    /// Whole messages, in order from seq 1.
    messages: u64,
    /// The `ERROR` code after them, if one came.
    error_code: Option<u16>,
    /// Bytes of the next message that arrived before the end of stream (a frame cut in flight).
    truncated_bytes: usize,
}

/// Reads everything the server left for the non-reader: a gap-free prefix of the stream, then
/// either `ERROR` or the first bytes of the next message (in flight when the server cut the
/// connection), then end of stream or a reset. Anything else is a broken stream.
fn drain(flood: Flood, mut conn: RawConn) -> Drained {
    let mut messages = 0;
    let mut error_code = None;
    let mut stream = None;
    loop {
        let read = conn.read();
        let ended = match &read {
            Ok(RawRead::Frame(ServerFrame::Message(m))) if error_code.is_none() => {
                assert_eq!(*stream.get_or_insert(m.stream), m.stream, "non-reader: stream changed");
                assert_eq!(m.seq, messages + 1, "non-reader: gap in the stream");
                assert!(m.payload == flood.payload(m.seq), "non-reader: payload {} corrupted", m.seq);
                messages += 1;
                assert!(messages <= flood.messages);
                continue;
            }
            Ok(RawRead::Frame(ServerFrame::Error { code, .. })) if error_code.is_none() => {
                error_code = Some(*code);
                continue;
            }
            Ok(RawRead::Eof) => true,
            Err(e) => matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof),
            Ok(_) => false,
        };
        // What is left must be the head of the message that was next, and nothing else.
        let leftover = conn.leftover();
        let mut next = BytesMut::new();
        encode_message(
            &mut next,
            stream.unwrap_or(0),
            messages + 1,
            b"flood",
            b"firehose",
            &flood.payload(messages + 1),
        );
        let cut_in_flight = error_code.is_none() && next.starts_with(leftover);
        if ended && (leftover.is_empty() || cut_in_flight) {
            return Drained { messages, error_code, truncated_bytes: leftover.len() };
        }
        let glued_error = leftover.windows(7).position(|w| w == [0, 0, 0, 0x2a, 0x14, 0, 7]);
        let common = leftover.iter().zip(next.iter()).take_while(|(a, b)| a == b).count();
        panic!(
            "non-reader: after {messages} whole messages and error {error_code:?}, got {read:?}. \
             {} bytes left undecoded; the first {common} match the head of message {} ({} bytes), \
             then come {:02x?}; an ERROR 7 frame header starts at offset {glued_error:?}",
            leftover.len(),
            messages + 1,
            next.len(),
            &leftover[common..leftover.len().min(common + 48)],
        );
    }
}

#[test]
fn a_client_that_never_reads_is_cut_and_the_others_get_everything() {
    run(Flood { messages: 20_000, payload_bytes: 1024 });
}

/// The same with 60 KiB messages: the kernel then almost always holds part of a frame when the
/// cut comes, so this is the case where what the server writes after the cut matters most.
#[test]
fn a_cut_in_the_middle_of_a_large_frame_leaves_a_well_formed_stream() {
    run(Flood { messages: 600, payload_bytes: 60 * 1024 });
}

fn run(flood: Flood) {
    let output_limit = OUTPUT_BYTES_MAX.to_string();
    let server = Server::start(&["--max-output-bytes", &output_limit]);
    let addr = server.addr();

    let mut sleeper = RawConn::greeted(addr, "sleeper");
    sleeper.join("flood");
    let mut consumers: Vec<_> =
        (0..GOOD_CONSUMERS).map(|i| connect_joined(addr, &format!("good{i}"), "flood")).collect();
    let mut publisher = connect_joined(addr, "firehose", "flood");
    let rss_start = server.rss_kib();
    let progress = Progress::new(GOOD_CONSUMERS);

    let (rss_max, drained) = thread::scope(|scope| {
        for (i, mut consumer) in consumers.drain(..).enumerate() {
            let progress = &progress;
            scope.spawn(move || {
                let mut stream = None;
                for seq in 1..=flood.messages {
                    let m = consumer.next_message().unwrap_or_else(|e| panic!("good{i} at {seq}: {e}"));
                    assert_eq!(*stream.get_or_insert(m.stream), m.stream, "good{i}: stream changed");
                    assert_eq!(m.seq, seq, "good{i}: out of order");
                    assert!(m.payload == flood.payload(seq), "good{i}: payload {seq} differs");
                    progress.set(i, seq);
                }
            });
        }

        // The non-reader reads only once the server says it cut it (the hub's debug log line
        // `closing connection N: SLOW_CONSUMER (7): ...`), and then at once: the server keeps a
        // cut connection around briefly (2 s) to hand over its error.
        let server = &server;
        let drainer = scope.spawn(move || {
            let line = server.wait_for_log("SLOW_CONSUMER", Duration::from_secs(60));
            assert!(line.is_some(), "the non-reader was never cut as a slow consumer");
            drain(flood, sleeper)
        });

        let mut rss_max = rss_start;
        for seq in 1..=flood.messages {
            assert!(
                progress.wait_min(seq.saturating_sub(flood.window()), IO_TIMEOUT),
                "good consumers stalled at {} before message {seq}",
                progress.min()
            );
            publisher.publish("flood", &flood.payload(seq)).expect("publish");
            if seq % (1024 * 1024 / flood.payload_bytes as u64) == 0 {
                rss_max = rss_max.max(server.rss_kib());
            }
        }
        assert!(progress.wait_min(flood.messages, IO_TIMEOUT), "good consumers stopped at {}", progress.min());
        // A broken stream to the non-reader is reported last, after the other checks.
        (rss_max, drainer.join())
    });

    publisher.round_trip(1).expect("publisher still connected");
    let rss_end = server.rss_kib();
    eprintln!("RSS start {rss_start} KiB, max {rss_max} KiB, end {rss_end} KiB");
    assert!(rss_max < rss_start + RSS_GROWTH_KIB_MAX, "RSS grew from {rss_start} KiB to {rss_max} KiB");
    assert!(rss_end < rss_start + RSS_GROWTH_KIB_MAX, "RSS grew from {rss_start} KiB to {rss_end} KiB");
    let drained = drained.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    eprintln!("non-reader drained: {drained:?}");
    assert!(drained.messages < flood.messages, "the non-reader was cut, so it cannot have everything");
    assert!(matches!(drained.error_code, None | Some(7)), "non-reader error {:?}", drained.error_code);
    assert!(drained.truncated_bytes < flood.payload_bytes + 128, "at most one frame is cut in flight");
}
