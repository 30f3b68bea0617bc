//! A connection's bounded output queue, written out with vectored writes.
//!
//! Small frames are copied into a contiguous tail buffer (one `memcpy`, no reference count,
//! and many frames leave in one iovec); frames of [`SHARE_FRAME_BYTES_MIN`] bytes or more are
//! queued as shared `Bytes` (a reference-count increment instead of a copy). The threshold comes
//! from `benches/fanout.rs`. The queue itself never refuses bytes: the hub compares
//! [`Outbox::queued_bytes`] with the connection's limit and cuts a slow consumer.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

use crate::limits::IDLE_FRAME_LENS_MAX;
use crate::limits::{IOVECS_PER_WRITE_MAX, SHARE_FRAME_BYTES_MIN};

/// Bytes queued for one connection, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frozen buffers, sent before `tail`.
    chunks: VecDeque<Bytes>,
    /// Copied small frames, sent last.
    tail: BytesMut,
    queued_bytes: usize,
    share_bytes_min: usize,
    /// Length of every queued frame (or line), oldest first, so a cut can keep frames whole.
    frame_lens: VecDeque<u32>,
    /// Bytes of the oldest queued frame already handed to the kernel.
    front_written: usize,
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
    /// An empty outbox using the default copy/share threshold.
    pub fn new() -> Self {
        Self::with_share_threshold(SHARE_FRAME_BYTES_MIN)
    }

    /// An empty outbox that shares frames of `share_bytes_min` bytes or more (benchmarks use
    /// this to compare copying and sharing).
    pub fn with_share_threshold(share_bytes_min: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            queued_bytes: 0,
            share_bytes_min,
            frame_lens: VecDeque::new(),
            front_written: 0,
            written_total: 0,
        }
    }

    /// Queues a whole encoded frame, copying or sharing it by size.
    pub fn push(&mut self, frame: &Bytes) {
        if frame.len() >= self.share_bytes_min {
            self.seal_tail();
            self.chunks.push_back(frame.clone());
        } else {
            self.tail.extend_from_slice(frame);
        }
        self.queued_bytes += frame.len();
        self.frame_lens.push_back(frame.len() as u32);
    }

    /// Queues one whole frame (or line) by copying it (replies built on the spot).
    pub fn push_slice(&mut self, frame: &[u8]) {
        self.tail.extend_from_slice(frame);
        self.queued_bytes += frame.len();
        self.frame_lens.push_back(frame.len() as u32);
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes handed to a writer over the outbox's life; with [`Outbox::queued_bytes`], where
    /// the oldest unsent byte stands in everything ever queued.
    pub fn written_total(&self) -> u64 {
        self.written_total
    }

    /// Bytes left of a frame the writer has taken part of (0 on a frame boundary): nothing
    /// else may be written before them.
    pub fn front_frame_rest(&self) -> usize {
        match self.frame_lens.front() {
            Some(&len) if self.front_written > 0 => len as usize - self.front_written,
            _ => 0,
        }
    }

    /// Writes the rest of a half-written frame, and nothing after it, so that another queue
    /// may go next on a frame boundary; `Drained` once on a boundary.
    pub fn flush_front_frame_to<W: Write>(&mut self, writer: &mut W) -> io::Result<Flush> {
        loop {
            let rest = self.front_frame_rest();
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
        self.queued_bytes == 0
    }

    /// Drops everything queued (the connection is being cut).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.tail = BytesMut::new();
        self.queued_bytes = 0;
        self.frame_lens.clear();
        self.front_written = 0;
    }

    /// Gives the buffers of an empty outbox back to the allocator. Called for idle connections
    /// from the hub's timer, not after every flush: a busy connection keeps reusing its buffer
    /// in place instead of growing a new one for every burst.
    pub fn release_idle_buffers(&mut self) {
        if self.is_empty() && (self.tail.capacity() > 0 || self.frame_lens.capacity() > IDLE_FRAME_LENS_MAX) {
            self.clear();
            self.frame_lens = VecDeque::new();
        }
    }

    /// Drops every queued frame except the rest of one the kernel already has a part of, so
    /// that whatever is queued next (a last `ERROR`) starts on a frame boundary.
    pub fn cut_after_current_frame(&mut self) {
        if self.front_written == 0 {
            return self.clear();
        }
        let keep = self.frame_lens[0] as usize - self.front_written;
        let mut rest = BytesMut::with_capacity(keep);
        for chunk in self.chunks.iter().map(|c| &c[..]).chain(std::iter::once(&self.tail[..])) {
            let take = chunk.len().min(keep - rest.len());
            rest.extend_from_slice(&chunk[..take]);
        }
        debug_assert_eq!(rest.len(), keep);
        self.clear();
        self.tail = rest;
        self.queued_bytes = keep;
        self.frame_lens.push_back(keep as u32);
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

    fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.queued_bytes);
        self.queued_bytes -= n;
        self.written_total += n as u64;
        self.front_written += n;
        while let Some(&len) = self.frame_lens.front() {
            if self.front_written < len as usize {
                break;
            }
            self.front_written -= len as usize;
            self.frame_lens.pop_front();
        }
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(n);
                break;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn frames() -> Vec<Bytes> {
        (0..40u8).map(|i| Bytes::from(vec![i; (i as usize * 37) % 3000 + 1])).collect()
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
            outbox.push_slice(b"tail");
            expected.extend_from_slice(b"tail");
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
            let frame = Bytes::from(vec![i as u8; 3]);
            outbox.push(&frame);
            expected.extend_from_slice(&frame);
        }
        outbox.push_slice(b"copied");
        expected.extend_from_slice(b"copied");
        let mut out = Vec::new();
        assert_eq!(outbox.flush_to(&mut out).unwrap(), Flush::Drained);
        assert_eq!(out, expected);
    }

    #[test]
    fn the_rest_of_a_half_written_frame_goes_alone() {
        for share_min in [0, usize::MAX] {
            let mut outbox = Outbox::with_share_threshold(share_min);
            outbox.push(&Bytes::from_static(b"0123456789"));
            outbox.push(&Bytes::from_static(b"abcdef"));
            assert_eq!(outbox.front_frame_rest(), 0);
            let mut w = Trickle { got: Vec::new(), per_call: 4, calls_left: 1 };
            assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
            assert_eq!(outbox.front_frame_rest(), 6);
            w.calls_left = 100;
            assert_eq!(outbox.flush_front_frame_to(&mut w).unwrap(), Flush::Drained);
            assert_eq!(w.got, b"0123456789", "share_min {share_min}: only the first frame");
            assert_eq!((outbox.front_frame_rest(), outbox.queued_bytes(), outbox.written_total()), (0, 6, 10));
        }
    }

    #[test]
    fn clear_drops_everything() {
        let mut outbox = Outbox::new();
        outbox.push(&Bytes::from(vec![1; 5000]));
        outbox.push_slice(b"x");
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
            outbox.push_slice(b"ERR");
            w.calls_left = 100;
            assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Drained);
            let mut expected = frames[0].to_vec();
            expected.extend_from_slice(&frames[1]);
            expected.extend_from_slice(b"ERR");
            assert_eq!(w.got, expected, "share_min {share_min}");
        }
    }

    #[test]
    fn a_cut_on_a_frame_boundary_drops_everything() {
        let mut outbox = Outbox::new();
        outbox.push_slice(b"first");
        outbox.push_slice(b"second");
        let mut w = Trickle { got: Vec::new(), per_call: 5, calls_left: 1 };
        assert_eq!(outbox.flush_to(&mut w).unwrap(), Flush::Blocked);
        outbox.cut_after_current_frame();
        assert!(outbox.is_empty());
    }

    #[test]
    fn zero_write_is_an_error_not_a_spin() {
        let mut outbox = Outbox::new();
        outbox.push_slice(b"abc");
        let mut w = Trickle { got: Vec::new(), per_call: 0, calls_left: 10 };
        assert_eq!(outbox.flush_to(&mut w).unwrap_err().kind(), io::ErrorKind::WriteZero);
    }
}
