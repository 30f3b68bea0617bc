//! Codec throughput: encoding the frames of the hot path and decoding a stream of `PUBLISH`es.
//!
//! Run with `cargo bench --bench codec` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick pass). Throughput is in bytes of wire frames, header included.
//!
//! - `encode/message/{64,4096}`: [`encode_message`], the one encoding per publish.
//! - `encode/publish/{64,4096}`: [`ClientFrame::encode`] of a `PUBLISH` (the client side).
//! - `decode/publish/{64,4096}`: [`FrameDecoder::decode`] then [`ClientFrame::parse`] over a
//!   read buffer holding about 256 KiB of back-to-back `PUBLISH` frames, as a reactor sees after
//!   a large read. Filling the buffer is set-up, not timed.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use fanout::codec::{encode_message, ClientFrame, FrameDecoder};

/// Payload sizes: a typical chat line and a large paste.
const PAYLOAD_SIZES: [usize; 2] = [64, 4096];

/// Bytes of `PUBLISH` frames in the buffer the decode bench works through.
const DECODE_BUFFER_BYTES: usize = 256 * 1024;

const ROOM: &[u8] = b"general";
const NAME: &[u8] = b"alice";

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

fn publish(payload_len: usize) -> ClientFrame {
    ClientFrame::Publish { room: Bytes::from_static(ROOM), payload: payload(payload_len) }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in PAYLOAD_SIZES {
        let payload = payload(size);
        let mut dst = BytesMut::with_capacity(64 * 1024);
        encode_message(&mut dst, 1, 1, ROOM, NAME, &payload);
        group.throughput(Throughput::Bytes(dst.len() as u64));
        group.bench_with_input(BenchmarkId::new("message", size), &payload, |b, payload| {
            b.iter(|| {
                dst.clear();
                encode_message(&mut dst, black_box(7), black_box(42), ROOM, NAME, payload);
                black_box(dst.len())
            })
        });

        let frame = publish(size);
        dst.clear();
        frame.encode(&mut dst);
        group.throughput(Throughput::Bytes(dst.len() as u64));
        group.bench_with_input(BenchmarkId::new("publish", size), &frame, |b, frame| {
            b.iter(|| {
                dst.clear();
                black_box(frame).encode(&mut dst);
                black_box(dst.len())
            })
        });
    }
    group.finish();
}

/// A read buffer of back-to-back `PUBLISH` frames, and how many frames it holds.
fn publish_stream(payload_len: usize) -> (Bytes, usize) {
    let frame = publish(payload_len);
    let mut buf = BytesMut::new();
    let mut frames = 0;
    while buf.len() < DECODE_BUFFER_BYTES {
        frame.encode(&mut buf);
        frames += 1;
    }
    (buf.freeze(), frames)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let decoder = FrameDecoder::default();
    for size in PAYLOAD_SIZES {
        let (stream, frames) = publish_stream(size);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_with_input(BenchmarkId::new("publish", size), &stream, |b, stream| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    let mut payload_bytes = 0;
                    while let Some(raw) = decoder.decode(&mut buf).expect("valid stream") {
                        let Ok(ClientFrame::Publish { payload, .. }) = ClientFrame::parse(raw) else {
                            panic!("the stream holds only PUBLISH frames");
                        };
                        payload_bytes += payload.len();
                    }
                    assert_eq!(payload_bytes, frames * size);
                    buf
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
