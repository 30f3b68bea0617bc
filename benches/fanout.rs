//! The in-process fan-out path, and the copy-or-share decision behind
//! [`SHARE_FRAME_BYTES_MIN`](fanout::limits::SHARE_FRAME_BYTES_MIN).
//!
//! Run with `cargo bench --bench fanout` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick pass, or a filter such as `outbox/` to run one group). Every benchmark reports
//! throughput in delivered messages, so criterion's time per iteration divided by the element
//! count is the cost of one delivery.
//!
//! - `hub/publish/{64,4096}`: one `PUBLISH` (payload bytes in the id) decoded, routed, encoded
//!   once and queued on 1,000 binary members of one room through [`Hub::handle_input`]. Only the
//!   publish is timed; the outboxes are drained after each one, untimed, so queues never reach
//!   the slow-consumer limit. The hub uses the default threshold, so the ~100-byte frame of a
//!   64-byte payload is copied and the ~4 KiB one is shared.
//! - `hub/publish_flush/{64,4096}`: the same publish plus flushing the 1,000 outboxes into
//!   [`SocketModel`]s, timed together: the whole in-process cost of a delivery.
//! - `outbox/{copy,share}/burst{1,16}/{size}`: the decision itself. The same `size`-byte frame
//!   (a real `MESSAGE`, cut from a shared encode buffer as the hub does) is pushed into 1,000
//!   outboxes, `burst` frames each, and then every outbox is flushed into a [`SocketModel`].
//!   `copy` uses a threshold of `usize::MAX` (every frame copied into the contiguous tail),
//!   `share` a threshold of 0 (every frame queued as a refcounted `Bytes`). The flush is in the
//!   timing because sharing pays partly at write time: one iovec per frame instead of one
//!   contiguous buffer. A burst of 16 models a busy room, where several publishes land in an
//!   outbox between two flushes and copying coalesces them.
//! - `deliver/{push,push_flush}/{100,1000}`: the per-delivery cost alone. The ~100-byte
//!   `MESSAGE` of a 64-byte payload is pushed [`DELIVER_BURST`] times into each of 100 or 1,000
//!   default outboxes (copied, as the hub does at that size), as one busy turn queues it; `push`
//!   times only the pushes (the outboxes are drained untimed), `push_flush` adds one write per
//!   outbox into a socket that takes everything without copying ([`CountingSink`]).
//!
//! The crossover between the `copy` and `share` rows is the threshold the numbers support.
//!
//! On a shared or busy machine, criterion's ratios between variants measured seconds apart are
//! noisy. `FANOUT_BENCH_TABLE=1 cargo bench --bench fanout` skips criterion and prints one table
//! of the copy/share comparison (more frame sizes, ns per delivered message) from interleaved
//! rounds, so that both modes see the same load; see [`copy_share_table`].
//!
//! Wall-clock time on a shared machine is noisy; instruction counts are not.
//! `FANOUT_BENCH_COUNT=WORKLOAD:MEMBERS:BURST:ROUNDS` skips criterion and runs one fixed
//! workload once, for `valgrind --tool=callgrind` (see [`count_harness`]); run it at two round
//! counts and divide the difference in instructions by the difference in deliveries, so the
//! set-up cancels out. With `BIN` the path `cargo bench --bench fanout --no-run` prints:
//!
//! ```text
//! FANOUT_BENCH_COUNT=hub:100:16:20 valgrind --tool=callgrind --callgrind-out-file=/dev/null BIN
//! FANOUT_BENCH_COUNT=hub:100:16:40 valgrind --tool=callgrind --callgrind-out-file=/dev/null BIN
//! ```
//!
//! (the second run's `I refs` minus the first's, over 32,000 more deliveries).

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use fanout::codec::{encode_message, ClientFrame, Hello, PROTOCOL_VERSION};
use fanout::hub::{Hub, HubConfig};
use fanout::outbox::{Flush, Outbox};
use fanout::router::ConnKey;

/// Recipients of every publish.
const MEMBERS: usize = 1000;

/// Payload sizes of the hub benches: a chat line and a large paste.
const PAYLOAD_SIZES: [usize; 2] = [64, 4096];

/// Whole-frame sizes of the copy/share benches, bracketing the crossover.
const FRAME_SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

/// Frames queued per outbox between two flushes.
const BURSTS: [usize; 2] = [1, 16];

/// A socket's send buffer, as far as one vectored write can fill it.
const SOCKET_SEND_BYTES: usize = 256 * 1024;

/// The hub's encode buffer reservation, reproduced so bench frames share allocations as its do.
const ENCODE_BUFFER_BYTES: usize = 64 * 1024;

const ROOM: &[u8] = b"general";
const NAME: &[u8] = b"alice";

/// A socket as the kernel runs `writev`: every slice is copied, in order, into the send buffer
/// until it holds [`SOCKET_SEND_BYTES`]; the call returns the bytes taken. Each call starts with
/// an empty buffer (the previous bytes went out), which is reused so no allocation is timed.
///
/// The fixed cost of the system call is left out: both modes make the same number of calls in
/// every bench here (never more than one per outbox), so it would add the same to both.
struct SocketModel {
    send_buffer: Vec<u8>,
}

impl SocketModel {
    fn new() -> Self {
        Self { send_buffer: Vec::with_capacity(SOCKET_SEND_BYTES) }
    }
}

impl Write for SocketModel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_buffer.clear();
        for buf in bufs {
            let room = SOCKET_SEND_BYTES - self.send_buffer.len();
            self.send_buffer.extend_from_slice(&buf[..buf.len().min(room)]);
            if self.send_buffer.len() == SOCKET_SEND_BYTES {
                break;
            }
        }
        black_box(&self.send_buffer);
        Ok(self.send_buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn flush(outbox: &mut Outbox, socket: &mut SocketModel) {
    let flushed = outbox.flush_to(socket).expect("the socket model never fails");
    debug_assert_eq!(flushed, Flush::Drained);
}

/// A hub with [`MEMBERS`] binary connections and one publisher in one room, all queues empty.
fn hub_with_room(socket: &mut SocketModel) -> (Hub<()>, ConnKey) {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default());
    let mut keys = Vec::with_capacity(MEMBERS + 1);
    for i in 0..=MEMBERS {
        let key = hub.open((), now).expect("the hub has room");
        let input = &mut hub.conn_mut(key).expect("just opened").input;
        let hello = Hello { version: PROTOCOL_VERSION, flags: 0, name: format!("user{i}").into(), token: Bytes::new() };
        ClientFrame::Hello(hello).encode(input);
        ClientFrame::Join { flags: 0, room: Bytes::from_static(ROOM) }.encode(input);
        hub.handle_input(key, now);
        keys.push(key);
    }
    drain(&mut hub, &mut Vec::new(), socket);
    assert_eq!(hub.room_count(), 1);
    (hub, keys[MEMBERS])
}

/// Flushes every connection the hub says has bytes queued, as the reactor does.
fn drain(hub: &mut Hub<()>, to_flush: &mut Vec<ConnKey>, socket: &mut SocketModel) {
    hub.take_to_flush(to_flush);
    for &key in to_flush.iter() {
        flush(hub.conn_mut(key).expect("live connection").outbox_mut(), socket);
    }
}

fn publish_frame(payload_len: usize) -> BytesMut {
    let payload = Bytes::from(vec![b'x'; payload_len]);
    let mut frame = BytesMut::new();
    ClientFrame::Publish { room: Bytes::from_static(ROOM), payload }.encode(&mut frame);
    frame
}

fn hub(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    let mut socket = SocketModel::new();
    for size in PAYLOAD_SIZES {
        let publish = publish_frame(size);

        let (mut hub, publisher) = hub_with_room(&mut socket);
        let mut to_flush = Vec::new();
        group.bench_function(BenchmarkId::new("publish", size), |b| {
            b.iter_custom(|iters| {
                let now = Instant::now();
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    hub.conn_mut(publisher).expect("publisher").input.extend_from_slice(&publish);
                    let start = Instant::now();
                    hub.handle_input(publisher, now);
                    timed += start.elapsed();
                    drain(&mut hub, &mut to_flush, &mut socket);
                }
                timed
            })
        });
        check_all_delivered(&hub);

        let (mut hub, publisher) = hub_with_room(&mut socket);
        group.bench_function(BenchmarkId::new("publish_flush", size), |b| {
            let now = Instant::now();
            b.iter(|| {
                hub.conn_mut(publisher).expect("publisher").input.extend_from_slice(&publish);
                hub.handle_input(publisher, now);
                drain(&mut hub, &mut to_flush, &mut socket);
            })
        });
        check_all_delivered(&hub);
    }
    group.finish();
}

fn check_all_delivered(hub: &Hub<()>) {
    let stats = hub.stats();
    assert_eq!(stats.slow_consumers, 0);
    assert_eq!(stats.fatal_errors, 0);
    assert_eq!(stats.deliveries, stats.publishes * MEMBERS as u64);
}

/// `count` `MESSAGE` frames of exactly `frame_bytes` bytes, cut from a shared encode buffer the
/// way the hub cuts them (so small frames share one allocation and one reference count).
fn message_frames(frame_bytes: usize, count: usize) -> Vec<Bytes> {
    let overhead = {
        let mut probe = BytesMut::new();
        encode_message(&mut probe, 0, 0, ROOM, NAME, &[]);
        probe.len()
    };
    let payload = vec![b'x'; frame_bytes.checked_sub(overhead).expect("frame holds its fields")];
    let mut encode = BytesMut::new();
    (1..=count as u64)
        .map(|seq| {
            encode.reserve(ENCODE_BUFFER_BYTES.max(frame_bytes));
            encode_message(&mut encode, 1, seq, ROOM, NAME, &payload);
            let frame = encode.split().freeze();
            assert_eq!(frame.len(), frame_bytes);
            frame
        })
        .collect()
}

/// Pushes every frame into every outbox, then flushes each outbox once: one fan-out round.
fn push_and_flush(frames: &[Bytes], outboxes: &mut [Outbox], socket: &mut SocketModel) {
    for frame in frames {
        for outbox in outboxes.iter_mut() {
            outbox.push(frame);
        }
    }
    for outbox in outboxes.iter_mut() {
        flush(outbox, socket);
    }
}

/// [`MEMBERS`] outboxes that copy every frame (`copy`) or share every frame (`share`).
fn outboxes(mode: &str) -> Vec<Outbox> {
    let threshold = if mode == "copy" { usize::MAX } else { 0 };
    (0..MEMBERS).map(|_| Outbox::with_share_threshold(threshold)).collect()
}

fn outbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    // Copying 16 x 4 KiB frames into 1,000 outboxes moves 64 MB per iteration: few, even samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(50);
    let mut socket = SocketModel::new();
    for burst in BURSTS {
        group.throughput(Throughput::Elements((MEMBERS * burst) as u64));
        for size in FRAME_SIZES {
            let frames = message_frames(size, burst);
            for mode in ["copy", "share"] {
                let mut outboxes = outboxes(mode);
                let id = BenchmarkId::new(format!("{mode}/burst{burst}"), size);
                group.bench_function(id, |b| b.iter(|| push_and_flush(&frames, &mut outboxes, &mut socket)));
            }
        }
    }
    group.finish();
}

/// Messages queued per recipient between two flushes in the `deliver` benches.
const DELIVER_BURST: usize = 16;

fn deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver");
    let frame = message_frames(100, 1).remove(0);
    let mut sink = CountingSink { taken: 0, budget: None };
    for recipients in [100, 1000] {
        group.throughput(Throughput::Elements((recipients * DELIVER_BURST) as u64));
        let mut outboxes: Vec<Outbox> = (0..recipients).map(|_| Outbox::new()).collect();
        let push_all = |outboxes: &mut [Outbox]| {
            for outbox in outboxes.iter_mut() {
                for _ in 0..DELIVER_BURST {
                    outbox.push(&frame);
                }
            }
        };
        group.bench_function(BenchmarkId::new("push", recipients), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    push_all(&mut outboxes);
                    timed += start.elapsed();
                    for outbox in outboxes.iter_mut() {
                        outbox.flush_to(&mut sink).expect("the sink never fails");
                    }
                }
                timed
            })
        });
        group.bench_function(BenchmarkId::new("push_flush", recipients), |b| {
            b.iter(|| {
                push_all(&mut outboxes);
                for outbox in outboxes.iter_mut() {
                    outbox.flush_to(&mut sink).expect("the sink never fails");
                }
            })
        });
    }
    group.finish();
}

/// Frame sizes of the interleaved table: finer around the crossover.
const TABLE_FRAME_SIZES: [usize; 10] = [64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 4096];

/// Timed rounds per mode and frame size in the interleaved table, at a burst of one.
const TABLE_ROUNDS: usize = 1000;

/// The copy/share decision as one table, measured so that a busy machine cannot bias it:
/// copy and share rounds alternate (in alternating order), and the minimum and the median of
/// each mode's rounds are compared. Criterion runs each variant in its own time slot, so load
/// that comes and goes between slots skews its ratios; here both modes see the same load.
fn copy_share_table() {
    let mut socket = SocketModel::new();
    println!(
        "| burst | frame B | copy min | share min | copy/share min | copy median | share median | copy/share median |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for burst in BURSTS {
        let rounds = (TABLE_ROUNDS / burst).max(50);
        for size in TABLE_FRAME_SIZES {
            let frames = message_frames(size, burst);
            let (mut copy, mut share) = (outboxes("copy"), outboxes("share"));
            let mut timed = |outboxes: &mut [Outbox]| {
                let start = Instant::now();
                push_and_flush(&frames, outboxes, &mut socket);
                start.elapsed()
            };
            for _ in 0..5 {
                timed(&mut copy);
                timed(&mut share);
            }
            let (mut copy_times, mut share_times) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
            for round in 0..rounds {
                if round % 2 == 0 {
                    copy_times.push(timed(&mut copy));
                    share_times.push(timed(&mut share));
                } else {
                    share_times.push(timed(&mut share));
                    copy_times.push(timed(&mut copy));
                }
            }
            copy_times.sort();
            share_times.sort();
            let per_message = |d: Duration| d.as_nanos() as f64 / (MEMBERS * burst) as f64;
            let (copy_min, share_min) = (per_message(copy_times[0]), per_message(share_times[0]));
            let (copy_median, share_median) =
                (per_message(copy_times[rounds / 2]), per_message(share_times[rounds / 2]));
            println!(
                "| {burst} | {size} | {copy_min:.1} | {share_min:.1} | {:.2} | {copy_median:.1} | {share_median:.1} | {:.2} |",
                copy_min / share_min,
                copy_median / share_median
            );
        }
    }
}

/// A socket that takes every byte offered without copying it: what is left to count is the
/// outbox's own work. With a `budget`, a write takes at most that many bytes and the next one
/// blocks, as a full send buffer does.
struct CountingSink {
    taken: u64,
    budget: Option<usize>,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let n = match self.budget.take() {
            Some(0) => {
                self.budget = Some(0);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Some(budget) => {
                self.budget = Some(0);
                offered.min(budget)
            }
            None => offered,
        };
        self.taken += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one fixed workload once, for counting instructions under callgrind. `spec` is
/// `WORKLOAD:MEMBERS:BURST:ROUNDS`; every round queues `BURST` messages for each of `MEMBERS`
/// recipients and then flushes each recipient once.
///
/// - `hub`: `BURST` `PUBLISH` frames (64-byte payloads) in one read, through
///   [`Hub::handle_input`], then every connection [`Hub::take_to_flush`] lists is flushed into
///   a [`CountingSink`]: the whole in-process path of a delivery.
/// - `outbox`: the same ~100-byte `MESSAGE` frame pushed `BURST` times into each of `MEMBERS`
///   outboxes, each drained by one write.
/// - `partial`: as `outbox`, but each write takes 37 bytes fewer than were queued that round,
///   so every write ends inside a frame (a full send buffer) and the queue stays the same length.
fn count_harness(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [workload, members, burst, rounds] = parts[..] else {
        panic!("FANOUT_BENCH_COUNT is WORKLOAD:MEMBERS:BURST:ROUNDS, not {spec}");
    };
    let number = |s: &str| s.parse::<usize>().expect("a number");
    let (members, burst, rounds) = (number(members), number(burst), number(rounds));
    let mut sink = CountingSink { taken: 0, budget: None };
    let deliveries = match workload {
        "hub" => count_hub(members, burst, rounds, &mut sink),
        "outbox" | "partial" => count_outbox(workload == "partial", members, burst, rounds, &mut sink),
        other => panic!("unknown workload {other}: hub, outbox or partial"),
    };
    println!("{spec}: {deliveries} deliveries, {} bytes written", sink.taken);
}

fn count_hub(members: usize, burst: usize, rounds: usize, sink: &mut CountingSink) -> u64 {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default());
    let mut keys = Vec::with_capacity(members + 1);
    for i in 0..=members {
        let key = hub.open((), now).expect("the hub has room");
        let input = &mut hub.conn_mut(key).expect("just opened").input;
        let hello = Hello { version: PROTOCOL_VERSION, flags: 0, name: format!("user{i}").into(), token: Bytes::new() };
        ClientFrame::Hello(hello).encode(input);
        ClientFrame::Join { flags: 0, room: Bytes::from_static(ROOM) }.encode(input);
        hub.handle_input(key, now);
        keys.push(key);
    }
    let publisher = keys[members];
    let mut to_flush = Vec::new();
    let mut flush_all = |hub: &mut Hub<()>, sink: &mut CountingSink| {
        hub.take_to_flush(&mut to_flush);
        for &key in &to_flush {
            let outbox = hub.conn_mut(key).expect("live connection").outbox_mut();
            assert_eq!(outbox.flush_to(sink).expect("the sink never fails"), Flush::Drained);
        }
    };
    flush_all(&mut hub, sink);
    let publish = publish_frame(64);
    let start = hub.stats().deliveries;
    for _ in 0..rounds {
        let input = &mut hub.conn_mut(publisher).expect("publisher").input;
        for _ in 0..burst {
            input.extend_from_slice(&publish);
        }
        hub.handle_input(publisher, now);
        flush_all(&mut hub, sink);
    }
    let stats = hub.stats();
    assert_eq!((stats.slow_consumers, stats.fatal_errors), (0, 0));
    stats.deliveries - start
}

fn count_outbox(partial: bool, members: usize, burst: usize, rounds: usize, sink: &mut CountingSink) -> u64 {
    let frame = message_frames(100, 1).remove(0);
    let mut outboxes: Vec<Outbox> = (0..members).map(|_| Outbox::new()).collect();
    let round_bytes = frame.len() * burst;
    for round in 0..rounds {
        for outbox in outboxes.iter_mut() {
            for _ in 0..burst {
                outbox.push(&frame);
            }
        }
        for outbox in outboxes.iter_mut() {
            if partial {
                // The first round leaves 37 bytes queued; later rounds take one round's worth.
                sink.budget = Some(if round == 0 { round_bytes - 37 } else { round_bytes });
                assert_eq!(outbox.flush_to(sink).expect("the sink never fails"), Flush::Blocked);
            } else {
                sink.budget = None;
                assert_eq!(outbox.flush_to(sink).expect("the sink never fails"), Flush::Drained);
            }
        }
    }
    (members * burst * rounds) as u64
}

criterion_group!(benches, hub, outbox, deliver);

/// Criterion's benches; with `FANOUT_BENCH_TABLE` set, only the interleaved copy/share table;
/// with `FANOUT_BENCH_COUNT` set, one fixed workload for callgrind.
fn main() {
    if std::env::var_os("FANOUT_BENCH_TABLE").is_some() {
        copy_share_table();
        return;
    }
    if let Ok(spec) = std::env::var("FANOUT_BENCH_COUNT") {
        count_harness(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
