//! A connection's bounded output queue, written out with vectored writes.
//!
//! Small frames are copied into a contiguous tail buffer (one `memcpy`, no reference count,
//! and many frames leave in one iovec); frames of [`SHARE_FRAME_BYTES_MIN`] bytes or more are
//! queued as shared `Bytes` (a reference-count increment instead of a copy). The threshold comes
//! from `benches/fanout.rs`. The queue itself never refuses bytes: the hub compares
//! [`Outbox::queued_bytes`] with the connection's limit and cuts a slow consumer.
//!
//! Queuing a frame is only that append: one publish lands in every recipient's outbox, so
//! nothing else is done per frame. The queue keeps no list of frame lengths; frames are
//! self-delimiting ([`Framing`]), and where a write stops inside a frame the outbox reads the
//! length prefixes of the frames that write took, once, to learn how much of the last one is
//! left. That rest is all a cut must keep and all a link must finish before a control frame.
//! A write that takes everything queued ends on a frame boundary and reads nothing.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

use crate::limits::{HEADER_BYTES, IOVECS_PER_WRITE_MAX, SHARE_FRAME_BYTES_MIN};

/// How the frames in an outbox delimit themselves, so that a frame boundary can be found
/// by reading the queued bytes instead of being recorded for every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Protocol frames, to clients and on peer links: a 4-byte big-endian body length and a
    /// type byte ([`HEADER_BYTES`] in all), then the body.
    #[default]
    Frames,
    /// Line mode: text lines, each ending with `\n`.
    Lines,
}

impl Framing {
    /// The first frame boundary at or after `target` in `buffer`, which holds whole frames
    /// from `from` (a boundary, at most `target`) to its end; `target` < `buffer.len()`.
    ///
    /// Bytes that do not parse (only a caller breaking [`Outbox::push`]'s contract queues
    /// them) are taken as one frame up to the end of `buffer`: a boundary is then missed,
    /// never invented inside a frame, and nothing panics or loops.
    fn boundary_at_or_after(self, buffer: &[u8], from: usize, target: usize) -> usize {
        let mut at = from;
        while at < target {
            let rest = &buffer[at..];
            let len = match self {
                Framing::Frames => match rest.first_chunk::<4>() {
                    Some(body_len) => HEADER_BYTES.saturating_add(u32::from_be_bytes(*body_len) as usize),
                    None => rest.len(),
                },
                Framing::Lines => memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1),
            };
            // Never 0: `at` < `target` < `buffer.len()`, and every frame has a byte.
            at += len.min(rest.len());
        }
        at
    }
}

/// Bytes queued for one connection, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frozen buffers, sent before `tail`; each holds whole frames (the first one may start
    /// with the rest of a frame the writer took part of).
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    chunk_bytes: usize,
    /// Copied small frames, sent last.
    tail: BytesMut,
    share_bytes_min: usize,
    framing: Framing,
    /// Bytes left of the oldest queued frame, whose start the writer already took (0 on a
    /// frame boundary). They are the first bytes of the first buffer: a frame never spans two.
    front_rest: usize,
    /// Bytes handed to the writer since the outbox was made (a link measures its lag by it).
    written_total: u64,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was handed to the kernel.
    Drained,
    /// The kernel buffer is full; wait for writability.
    Blocked,
}

impl Outbox {
    /// An empty outbox of protocol frames using the default copy/share threshold.
    pub fn new() -> Self {
        Self::with_share_threshold(SHARE_FRAME_BYTES_MIN)
    }

    /// An empty outbox of protocol frames that shares frames of `share_bytes_min` bytes or more
    /// (benchmarks use this to compare copying and sharing).
    pub fn with_share_threshold(share_bytes_min: usize) -> Self {
        Self { share_bytes_min, ..Self::default() }
    }

    /// Says how the queued frames delimit themselves (a connection that turned out to be a
    /// line-mode client queues lines). Set it before queuing anything of the new kind.
    pub fn set_framing(&mut self, framing: Framing) {
        debug_assert!(self.is_empty() || framing == self.framing, "framing changed under queued bytes");
        self.framing = framing;
    }

    /// Queues a whole encoded frame (or line), copying or sharing it by size. The frame must
    /// delimit itself as the outbox's [`Framing`] says; nothing is recorded about it.
    #[inline]
    pub fn push(&mut self, frame: &Bytes) {
        if frame.len() >= self.share_bytes_min {
            self.push_shared(frame);
        } else {
            self.tail.extend_from_slice(frame);
        }
    }

    /// Queues whole frames (or lines) by copying them (replies built on the spot); like
    /// [`Outbox::push`], they must delimit themselves as the outbox's [`Framing`] says.
    pub fn push_slice(&mut self, frame: &[u8]) {
        self.tail.extend_from_slice(frame);
    }

    /// Bytes queued and not yet handed to the kernel.
    #[inline]
    pub fn queued_bytes(&self) -> usize {
        self.chunk_bytes + self.tail.len()
    }

    /// Bytes handed to a writer over the outbox's life; with [`Outbox::queued_bytes`], where
    /// the oldest unsent byte stands in everything ever queued.
    pub fn written_total(&self) -> u64 {
        self.written_total
    }

    /// Bytes left of a frame the writer has taken part of (0 on a frame boundary): nothing
    /// else may be written before them.
    #[cfg(any(test, feature = "testing"))]
    pub fn front_frame_rest(&self) -> usize {
        self.front_rest
    }

    /// Writes the rest of a half-written frame, and nothing after it, so that another queue
    /// may go next on a frame boundary; `Drained` once on a boundary.
    pub fn flush_front_frame_to<W: Write>(&mut self, writer: &mut W) -> io::Result<Flush> {
        loop {
            let rest = self.front_rest;
            if rest == 0 {
                return Ok(Flush::Drained);
            }
            // A frame never spans two buffers: its rest is at the start of the first one.
            let buf = self.chunks.front().map_or(&self.tail[..], |c| &c[..]);
            let n = match writer.write(&buf[..rest.min(buf.len())]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(n);
        }
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued_bytes() == 0
    }

    /// Drops everything queued (the connection is being cut).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.chunk_bytes = 0;
        self.tail = BytesMut::new();
        self.front_rest = 0;
    }

    /// Gives the buffers of an empty outbox back to the allocator. Called for idle connections
    /// from the hub's timer, not after every flush: a busy connection keeps reusing its buffer
    /// in place instead of growing a new one for every burst.
    pub fn release_idle_buffers(&mut self) {
        if self.is_empty() && self.tail.capacity() > 0 {
            self.clear();
        }
    }

    /// Drops every queued frame except the rest of one the kernel already has a part of, so
    /// that whatever is queued next (a last `ERROR`) starts on a frame boundary.
    pub fn cut_after_current_frame(&mut self) {
        let keep = self.front_rest;
        if keep == 0 {
            return self.clear();
        }
        let first = self.chunks.front().map_or(&self.tail[..], |c| &c[..]);
        let rest = BytesMut::from(&first[..keep]);
        self.clear();
        self.tail = rest;
        self.front_rest = keep;
        self.debug_assert_invariants();
    }

    /// Writes as much as `writer` takes, in vectored writes, until drained or `WouldBlock`.
    pub fn flush_to<W: Write>(&mut self, writer: &mut W) -> io::Result<Flush> {
        while !self.is_empty() {
            let written = if self.chunks.is_empty() {
                // The common case of small copied frames: one buffer, a plain write.
                match writer.write(&self.tail) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            } else {
                let mut iov = [IoSlice::new(&[]); IOVECS_PER_WRITE_MAX];
                let mut count = 0;
                for chunk in self.chunks.iter().take(IOVECS_PER_WRITE_MAX - 1) {
                    iov[count] = IoSlice::new(chunk);
                    count += 1;
                }
                // The tail goes after *every* chunk: with more chunks than iovecs it waits for a
                // later write, or its bytes would overtake the chunks left out (and `consume`,
                // which takes bytes from the front, would drop the wrong ones).
                if !self.tail.is_empty() && count == self.chunks.len() && count < IOVECS_PER_WRITE_MAX {
                    iov[count] = IoSlice::new(&self.tail);
                    count += 1;
                }
                match writer.write_vectored(&iov[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.consume(written);
        }
        Ok(Flush::Drained)
    }

    /// Queues a shared frame after everything copied so far.
    fn push_shared(&mut self, frame: &Bytes) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunk_bytes += sealed.len();
            self.chunks.push_back(sealed);
        }
        self.chunk_bytes += frame.len();
        self.chunks.push_back(frame.clone());
    }

    /// Drops the first `n` bytes, which the writer took.
    #[inline]
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.queued_bytes());
        self.written_total += n as u64;
        if n == self.queued_bytes() {
            // Drained, so on a frame boundary. The tail keeps its whole buffer for the next
            // burst (advancing it to its end would leave no room behind and cost a reclaim).
            if !self.chunks.is_empty() {
                self.chunks.clear();
                self.chunk_bytes = 0;
            }
            self.tail.clear();
            self.front_rest = 0;
        } else {
            self.consume_part(n);
        }
    }

    /// Drops the first `n` bytes, fewer than are queued: the writer stopped somewhere inside.
    #[inline(never)]
    fn consume_part(&mut self, mut n: usize) {
        // Before the bytes go: where the frame the writer stopped in ends, if it stopped in one.
        self.front_rest = self.frame_rest_after(n);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(n);
                break;
            };
            if n < front.len() {
                front.advance(n);
                self.chunk_bytes -= n;
                break;
            }
            n -= front.len();
            self.chunk_bytes -= front.len();
            self.chunks.pop_front();
        }
        self.debug_assert_invariants();
    }

    /// Bytes left of the frame that holds the `n`-th queued byte (0 if a frame starts there),
    /// for `n` < [`Outbox::queued_bytes`]. Reads the length prefixes between the last known
    /// boundary and `n`, in the one buffer that holds `n` (every buffer ends on a boundary).
    fn frame_rest_after(&self, n: usize) -> usize {
        debug_assert!(n < self.queued_bytes(), "frame_rest_after({n}) past the end of the queue");
        if n <= self.front_rest {
            return self.front_rest - n;
        }
        let mut buffer_start = 0;
        for buffer in self.chunks.iter().map(|c| &c[..]).chain(std::iter::once(&self.tail[..])) {
            if buffer_start + buffer.len() <= n {
                buffer_start += buffer.len();
                continue;
            }
            // A frame starts at `first`: the first buffer's first whole frame, or a buffer's start.
            let first = self.front_rest.saturating_sub(buffer_start);
            let target = n - buffer_start;
            return self.framing.boundary_at_or_after(buffer, first, target) - target;
        }
        0
    }

    /// Panics (in debug builds) if the byte counts disagree with the buffers.
    fn debug_assert_invariants(&self) {
        debug_assert_eq!(self.chunk_bytes, self.chunks.iter().map(Bytes::len).sum::<usize>());
        debug_assert!(self.front_rest <= self.chunks.front().map_or(self.tail.len(), Bytes::len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A writer that takes at most `budget` bytes per call and then blocks.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut room = self.per_call;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room);
                self.got.extend_from_slice(&b[..take]);
                room -= take;
                n += take;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A protocol frame (type 0x20) around `body`.
    fn frame(body: &[u8]) -> Bytes {
        let mut frame = BytesMut::with_capacity(HEADER_BYTES + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&[0x20]);
        frame.extend_from_slice(body);
        frame.freeze()
    }

    fn frames() -> Vec<Bytes> {
        (0..40u8).map(|i| frame(&vec![i; (i as usize * 37) % 3000 + 1])).collect()
    }

    #[test]
    fn bytes_leave_in_order_across_partial_writes_and_blocks() {
        for per_call in [1, 7, 100, 4096, 1 << 20] {
            let mut outbox = Outbox::with_share_threshold(1000);
            let mut expected = Vec::new();
            for f in frames() {
                outbox.push(&f);
                expected.extend_from_slice(&f);
            }
            outbox.push_slice(&frame(b"tail"));
            expected.extend_from_slice(&frame(b"tail"));
            assert_eq!(outbox.queued_bytes(), expected.len());
            let mut w = Trickle { got: Vec::new(), per_call, calls_left: 3 };
            while outbox.flush_to(&mut w).unwrap() == Flush::Blocked {
                assert_eq!(outbox.queued_bytes(), expected.len() - w.got.len());
                w.calls_left = 3;
            }
            assert_eq!(w.got, expected, "per_call {per_call}");
            assert!(outbox.is_empty());
        }
    }

    #[test]
    fn a_copied_frame_behind_more_shared_frames_than_iovecs_keeps_its_place() {
        let mut outbox = Outbox::with_share_threshold(0);
        let mut expected = Vec::new();
        for i in 0..IOVECS_PER_WRITE_MAX * 2 {
            let frame = frame(&[i as u8; 3]);
            outbox.push(&frame);
            expected.extend_from_slice(&frame);
        }
        outbox.push_slice(&frame(b"copied"));
        expected.extend_from_slice(&frame(b"copied"));
        let mut out = Vec::new();
        assert_eq!(outbox.flush_to(&mut out).unwrap(), Flush::Drained);
        assert_eq!(out, expected);
    }

    #[test]
    fn the_rest_of_a_half_written_frame_goes_alone() {
        for share_min in [0, usize::MAX] {
            let mut outbox = Outbox::with_share_threshold(share_min);
            let (first, second) = (frame(b"0123456789"), frame(b"abcdef"));
            outbox.push(&first);
            outbox.push(&second);
            assert_eq!(outbox.front_frame_rest(), 0);
            let mut w = Trickle { got: Vec::new(), per_call: 4, calls_left: 1 };
            assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
            assert_eq!(outbox.front_frame_rest(), 11);
            w.calls_left = 100;
            assert_eq!(outbox.flush_front_frame_to(&mut w).unwrap(), Flush::Drained);
            assert_eq!(w.got, first, "share_min {share_min}: only the first frame");
            assert_eq!((outbox.front_frame_rest(), outbox.queued_bytes(), outbox.written_total()), (0, 11, 15));
        }
    }

    #[test]
    fn clear_drops_everything() {
        let mut outbox = Outbox::new();
        outbox.push(&frame(&[1; 5000]));
        outbox.push_slice(&frame(b"x"));
        outbox.clear();
        assert!(outbox.is_empty());
        let mut w = Trickle { got: Vec::new(), per_call: 10, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
        assert!(w.got.is_empty());
    }

    #[test]
    fn a_cut_keeps_the_rest_of_a_half_written_frame_only() {
        for share_min in [0, usize::MAX] {
            let mut outbox = Outbox::with_share_threshold(share_min);
            let frames = frames();
            for f in &frames {
                outbox.push(f);
            }
            // Write the first frame whole and 3 bytes of the second.
            let mut w = Trickle { got: Vec::new(), per_call: frames[0].len() + 3, calls_left: 1 };
            assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
            outbox.cut_after_current_frame();
            outbox.push_slice(&frame(b"ERR"));
            w.calls_left = 100;
            assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
            let mut expected = frames[0].to_vec();
            expected.extend_from_slice(&frames[1]);
            expected.extend_from_slice(&frame(b"ERR"));
            assert_eq!(w.got, expected, "share_min {share_min}");
        }
    }

    #[test]
    fn a_cut_on_a_frame_boundary_drops_everything() {
        let mut outbox = Outbox::new();
        let first = frame(b"first");
        outbox.push_slice(&first);
        outbox.push_slice(&frame(b"second"));
        let mut w = Trickle { got: Vec::new(), per_call: first.len(), calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        outbox.cut_after_current_frame();
        assert!(outbox.is_empty());
    }

    #[test]
    fn zero_write_is_an_error_not_a_spin() {
        let mut outbox = Outbox::new();
        outbox.push_slice(&frame(b"abc"));
        let mut w = Trickle { got: Vec::new(), per_call: 0, calls_left: 10 };
        assert_eq!(outbox.flush_to(&mut w).unwrap_err().kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn a_write_ending_in_a_frame_header_leaves_the_rest_of_that_frame() {
        // Stops after 2 bytes of the second frame's 4-byte length: its length is still known.
        let mut outbox = Outbox::new();
        let (first, second) = (frame(b"one"), frame(&[7; 300]));
        outbox.push(&first);
        outbox.push(&second);
        let mut w = Trickle { got: Vec::new(), per_call: first.len() + 2, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(outbox.front_frame_rest(), second.len() - 2);
    }

    #[test]
    fn a_second_cut_still_keeps_the_rest_of_the_half_written_frame() {
        let mut outbox = Outbox::new();
        let long = frame(&[1; 100]);
        outbox.push(&long);
        outbox.push(&frame(b"dropped"));
        let mut w = Trickle { got: Vec::new(), per_call: 10, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        outbox.cut_after_current_frame();
        outbox.cut_after_current_frame();
        assert_eq!((outbox.queued_bytes(), outbox.front_frame_rest()), (long.len() - 10, long.len() - 10));
        w.calls_left = 100;
        w.per_call = 1000;
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
        assert_eq!(w.got, long);
    }

    #[test]
    fn line_mode_cuts_after_the_line_being_written() {
        let mut outbox = Outbox::new();
        outbox.set_framing(Framing::Lines);
        outbox.push(&Bytes::from_static(b"alice: hi\n"));
        outbox.push_slice(b"status one\nstatus two\n");
        outbox.push(&Bytes::from_static(b"bob: yo\n"));
        // Stops 3 bytes into "status two\n".
        let mut w = Trickle { got: Vec::new(), per_call: 10 + 11 + 3, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(outbox.front_frame_rest(), 8);
        outbox.cut_after_current_frame();
        outbox.push_slice(b"error 3 SLOW_CONSUMER\n");
        w.calls_left = 100;
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
        assert_eq!(w.got, b"alice: hi\nstatus one\nstatus two\nerror 3 SLOW_CONSUMER\n");
    }

    #[test]
    fn bytes_that_do_not_parse_are_one_frame_to_the_end_of_their_buffer() {
        // Not a contract anyone may rely on: only that a broken frame cannot panic or loop.
        let mut outbox = Outbox::with_share_threshold(8);
        outbox.push_slice(&[0xff; 7]); // claims a 4 GiB body
        outbox.push(&Bytes::from_static(&[0, 0])); // too short for a header; copied behind it
        outbox.push(&frame(&[3; 20])); // shared: a buffer of its own
        let mut w = Trickle { got: Vec::new(), per_call: 3, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(outbox.front_frame_rest(), 7 + 2 - 3);
        w.calls_left = 100;
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
        assert_eq!(w.got.len(), 7 + 2 + 25);
    }

    /// What an outbox must do, without its representation: frames in order, each with the
    /// bytes of it already written.
    #[derive(Default)]
    struct Oracle {
        frames: VecDeque<(Vec<u8>, usize)>,
        written: Vec<u8>,
    }

    impl Oracle {
        fn push(&mut self, frame: &[u8]) {
            self.frames.push_back((frame.to_vec(), 0));
        }

        fn queued_bytes(&self) -> usize {
            self.frames.iter().map(|(f, sent)| f.len() - sent).sum()
        }

        fn front_frame_rest(&self) -> usize {
            self.frames.front().map_or(0, |(f, sent)| if *sent > 0 { f.len() - sent } else { 0 })
        }

        /// Takes `n` bytes from the front, as a writer did.
        fn write(&mut self, mut n: usize) {
            while n > 0 {
                let (frame, sent) = self.frames.front_mut().expect("no more than queued");
                let take = n.min(frame.len() - *sent);
                self.written.extend_from_slice(&frame[*sent..*sent + take]);
                *sent += take;
                n -= take;
                if *sent == frame.len() {
                    self.frames.pop_front();
                }
            }
        }

        fn cut_after_current_frame(&mut self) {
            let keep = usize::from(self.front_frame_rest() > 0);
            self.frames.truncate(keep);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Frames (or lines) of these body sizes in one `push` each, or copied together in one
        /// `push_slice`.
        Push {
            bodies: Vec<usize>,
            together: bool,
        },
        Flush {
            per_call: usize,
            calls: usize,
        },
        FlushFront {
            per_call: usize,
            calls: usize,
        },
        Cut,
        Clear,
        ReleaseIdle,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (vec(0..700usize, 1..4), any::<bool>()).prop_map(|(bodies, together)| Op::Push { bodies, together }),
            3 => (1..900usize, 0..4usize).prop_map(|(per_call, calls)| Op::Flush { per_call, calls }),
            1 => (1..300usize, 0..3usize).prop_map(|(per_call, calls)| Op::FlushFront { per_call, calls }),
            1 => Just(Op::Cut),
            1 => Just(Op::Clear),
            1 => Just(Op::ReleaseIdle),
        ]
    }

    /// One frame or line of `body` bytes, numbered so that misplaced bytes show.
    fn unit(framing: Framing, body: usize, number: usize) -> Vec<u8> {
        let fill = b'a' + (number % 26) as u8;
        match framing {
            Framing::Frames => frame(&vec![fill; body]).to_vec(),
            Framing::Lines => {
                let mut line = vec![fill; body];
                line.push(b'\n');
                line
            }
        }
    }

    proptest! {
        #[test]
        fn outbox_matches_a_naive_oracle(
            lines in any::<bool>(),
            share_min in prop_oneof![Just(0usize), Just(200), Just(usize::MAX)],
            ops in vec(arb_op(), 1..60),
        ) {
            let framing = if lines { Framing::Lines } else { Framing::Frames };
            let mut outbox = Outbox::with_share_threshold(share_min);
            outbox.set_framing(framing);
            let mut oracle = Oracle::default();
            let mut w = Trickle { got: Vec::new(), per_call: 0, calls_left: 0 };
            let mut number = 0;
            for (step, op) in ops.iter().enumerate() {
                match op {
                    Op::Push { bodies, together } => {
                        let units: Vec<Vec<u8>> = bodies.iter().map(|&b| { number += 1; unit(framing, b, number) }).collect();
                        units.iter().for_each(|u| oracle.push(u));
                        if *together {
                            outbox.push_slice(&units.concat());
                        } else {
                            units.iter().for_each(|u| outbox.push(&Bytes::copy_from_slice(u)));
                        }
                    }
                    Op::Flush { per_call, calls } | Op::FlushFront { per_call, calls } => {
                        (w.per_call, w.calls_left) = (*per_call, *calls);
                        let before = w.got.len();
                        let front_only = matches!(op, Op::FlushFront { .. });
                        let limit = if front_only { oracle.front_frame_rest() } else { oracle.queued_bytes() };
                        let flushed = if front_only { outbox.flush_front_frame_to(&mut w) } else { outbox.flush_to(&mut w) };
                        let taken = w.got.len() - before;
                        prop_assert!(taken <= limit, "step {}: took {} of {}", step, taken, limit);
                        oracle.write(taken);
                        let expected = if taken == limit { Flush::Drained } else { Flush::Blocked };
                        prop_assert_eq!(flushed.unwrap(), expected, "step {} {:?}", step, op);
                    }
                    Op::Cut => {
                        outbox.cut_after_current_frame();
                        oracle.cut_after_current_frame();
                    }
                    Op::Clear => {
                        outbox.clear();
                        oracle.frames.clear();
                    }
                    Op::ReleaseIdle => outbox.release_idle_buffers(),
                }
                prop_assert_eq!(&w.got, &oracle.written, "step {} {:?}", step, op);
                prop_assert_eq!(outbox.queued_bytes(), oracle.queued_bytes(), "step {} {:?}", step, op);
                prop_assert_eq!(outbox.front_frame_rest(), oracle.front_frame_rest(), "step {} {:?}", step, op);
                prop_assert_eq!(outbox.written_total(), oracle.written.len() as u64, "step {} {:?}", step, op);
            }
        }
    }
}
