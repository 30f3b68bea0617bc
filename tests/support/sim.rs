//! Building blocks of the deterministic simulations: an event queue on a virtual clock, and a
//! one-way byte pipe with a delay, an optional throttle, a bounded kernel buffer and stalls.
//! No threads, no sockets, no wall clock: a seed decides everything, so a run replays.

#![allow(dead_code)] // each test crate uses some of it

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};

/// Virtual time: milliseconds since the simulation started.
pub type Ms = u64;

/// Events due at virtual times. Events due at the same millisecond come out in the order of a
/// tie-break the caller draws at random, so that independent things interleave arbitrarily
/// (and, for one seed, always the same way).
pub struct EventQueue<E> {
    events: BTreeMap<(Ms, u64, u64), E>,
    pushed: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self { events: BTreeMap::new(), pushed: 0 }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `at`; `tie` orders it among events due at the same millisecond.
    pub fn push(&mut self, at: Ms, tie: u64, event: E) {
        self.pushed += 1;
        self.events.insert((at, tie, self.pushed), event);
    }

    /// The earliest event due at or before `until`, if any.
    pub fn pop_due(&mut self, until: Ms) -> Option<(Ms, E)> {
        let entry = self.events.first_entry()?;
        if entry.key().0 > until {
            return None;
        }
        let ((at, _, _), event) = entry.remove_entry();
        Some((at, event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What arrives at the far end of a pipe.
#[derive(Debug)]
pub enum Segment {
    /// Bytes, in order.
    Bytes(Vec<u8>),
    /// The sender closed its end (FIN or RST): the receiver reads end of stream.
    Eof,
}

/// Bytes a throttled pipe puts on the wire at once (a segment).
const SEGMENT_BYTES: usize = 256;

/// One direction of a connection: bytes written at one end arrive, in order, at the other.
///
/// A write is accepted only up to `capacity` bytes not yet delivered (the sender's kernel
/// buffer), so a slow or stalled pipe pushes its backlog back into the sender's own queues, as
/// TCP does. A throttled pipe puts `rate` bytes per second on the wire; every byte then takes
/// `delay` to cross. A stalled pipe (a blackhole) delivers nothing but keeps what it holds, as
/// TCP keeps retransmitting: when the stall ends the bytes arrive, unless the connection was
/// closed meanwhile.
#[derive(Debug)]
pub struct Pipe {
    /// One-way delay.
    pub delay: Ms,
    /// Bytes per second; `None` is as fast as the sender writes.
    pub rate: Option<u64>,
    /// Bytes accepted and not yet delivered, at most.
    pub capacity: usize,
    /// Nothing arrives while set.
    pub stalled: bool,
    /// When a pump of this pipe is already scheduled (the caller's bookkeeping).
    pub scheduled: Option<Ms>,
    unsent: VecDeque<u8>,
    /// When the throttled wire has finished sending what it took, in microseconds.
    busy_until_us: u64,
    wire: VecDeque<(Ms, Segment)>,
    wire_bytes: usize,
    last_arrival: Ms,
    /// The sender closed (or the connection was reset): nothing more is accepted.
    closed: bool,
    eof_queued: bool,
}

impl Pipe {
    /// An empty pipe.
    pub fn new(delay: Ms, capacity: usize) -> Self {
        Self {
            delay,
            rate: None,
            capacity,
            stalled: false,
            scheduled: None,
            unsent: VecDeque::new(),
            busy_until_us: 0,
            wire: VecDeque::new(),
            wire_bytes: 0,
            last_arrival: 0,
            closed: false,
            eof_queued: false,
        }
    }

    /// Bytes a write may add now.
    pub fn room(&self) -> usize {
        if self.closed {
            return 0;
        }
        self.capacity.saturating_sub(self.held())
    }

    /// Bytes accepted and not yet delivered.
    pub fn held(&self) -> usize {
        self.unsent.len() + self.wire_bytes
    }

    /// True once the sender closed its end.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Takes `bytes` from the sender at `now` (the caller keeps within [`Pipe::room`]).
    pub fn send(&mut self, now: Ms, bytes: &[u8]) {
        self.send_with_delay(now, self.delay, bytes);
    }

    /// As [`Pipe::send`], with this write's own delay (never overtaking an earlier write).
    pub fn send_with_delay(&mut self, now: Ms, delay: Ms, bytes: &[u8]) {
        if bytes.is_empty() || self.closed {
            return;
        }
        if self.rate.is_none() && self.unsent.is_empty() {
            self.put_on_wire(now + delay, Segment::Bytes(bytes.to_vec()));
            return;
        }
        self.unsent.extend(bytes);
        self.transmit(now);
    }

    /// Moves what the throttle allows by `now` onto the wire.
    pub fn transmit(&mut self, now: Ms) {
        let now_us = now * 1000;
        while !self.unsent.is_empty() {
            let Some(rate) = self.rate else {
                let bytes: Vec<u8> = self.unsent.drain(..).collect();
                self.put_on_wire(now + self.delay, Segment::Bytes(bytes));
                return;
            };
            if self.busy_until_us > now_us {
                return;
            }
            let n = self.unsent.len().min(SEGMENT_BYTES);
            let bytes: Vec<u8> = self.unsent.drain(..n).collect();
            self.busy_until_us = now_us + (n as u64 * 1_000_000).div_ceil(rate.max(1));
            let sent = self.busy_until_us.div_ceil(1000);
            self.put_on_wire(sent + self.delay, Segment::Bytes(bytes));
        }
    }

    fn put_on_wire(&mut self, at: Ms, segment: Segment) {
        let at = at.max(self.last_arrival);
        self.last_arrival = at;
        if let Segment::Bytes(bytes) = &segment {
            self.wire_bytes += bytes.len();
        }
        self.wire.push_back((at, segment));
    }

    /// Changes the throttle at `now` (what is already on the wire keeps its time).
    pub fn set_rate(&mut self, now: Ms, rate: Option<u64>) {
        self.transmit(now);
        self.rate = rate;
        self.busy_until_us = self.busy_until_us.max(now * 1000);
        self.transmit(now);
    }

    /// The sender closes its end at `now`: what it had not sent yet is dropped, what is on the
    /// wire still arrives, then end of stream.
    pub fn close(&mut self, now: Ms) {
        if self.closed {
            return;
        }
        self.unsent.clear();
        self.closed = true;
        self.queue_eof(now);
    }

    /// Drops everything at once (a reset, or a machine gone): nothing more arrives.
    pub fn reset(&mut self) {
        self.unsent.clear();
        self.wire.clear();
        self.wire_bytes = 0;
        self.closed = true;
    }

    /// A closed socket answers with a reset: end of stream for the far end, once, even after
    /// [`Pipe::reset`].
    pub fn send_reset(&mut self, now: Ms) {
        self.unsent.clear();
        self.closed = true;
        self.queue_eof(now);
    }

    fn queue_eof(&mut self, now: Ms) {
        if !self.eof_queued {
            self.eof_queued = true;
            self.put_on_wire(now + self.delay, Segment::Eof);
        }
    }

    /// What has arrived by `now` (nothing while stalled).
    pub fn take_arrived(&mut self, now: Ms) -> Vec<Segment> {
        let mut arrived = Vec::new();
        if self.stalled {
            return arrived;
        }
        while self.wire.front().is_some_and(|(at, _)| *at <= now) {
            let (_, segment) = self.wire.pop_front().expect("a front segment");
            if let Segment::Bytes(bytes) = &segment {
                self.wire_bytes -= bytes.len();
            }
            arrived.push(segment);
        }
        arrived
    }

    /// When something next happens in the pipe: an arrival, or the throttle freeing the wire.
    pub fn next_event(&self) -> Option<Ms> {
        let arrival = if self.stalled { None } else { self.wire.front().map(|(at, _)| *at) };
        let wire_free = if self.unsent.is_empty() { None } else { Some(self.busy_until_us.div_ceil(1000)) };
        match (arrival, wire_free) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A writer that takes at most `room` bytes, then says `WouldBlock`: a socket whose kernel
/// buffer has that much space.
pub struct Capped {
    /// What was written.
    pub out: Vec<u8>,
    /// Space left.
    pub room: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.out.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
