//! One client thread: its own mio `Poll` driving a share of the connections, all non-blocking.
//!
//! Each loop turn: open more connections (set-up only), let the publishers send what the rate
//! and the in-flight window allow, wait for readiness, read and account deliveries, then hand
//! per-publisher delivery counts to the shared counters (so the publishers' windows move).

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use fanout_timer::FineTimer;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::args::Plan;
use super::histogram::Histogram;
use super::payload::{blank, Stamp};
use super::shared::{Phase, Shared};
use super::track::{Arrival, SeqTracker};
use super::wire::{take_nats_info, Incoming, Wire, MESSAGE_BYTES_MAX};
use fanout_proto::tls::TlsLayer;

/// Connections of one thread in TCP connect or protocol set-up at once, so a thousand
/// subscribers do not overflow the server's accept backlog in one burst.
const OPENING_MAX: usize = 64;

/// Bytes asked of the kernel per `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Input a connection may hold: one partial message plus one read. Parsers refuse messages
/// over [`MESSAGE_BYTES_MAX`], so this is never reached unless a parser is wrong.
const INPUT_BYTES_MAX: usize = MESSAGE_BYTES_MAX + READ_CHUNK_BYTES;

/// A publisher does not queue more than this before the kernel takes some.
const OUTPUT_BYTES_HIGH: usize = 256 * 1024;

/// Most messages one publisher encodes per turn, so one publisher cannot starve the others.
const BATCH_MESSAGES_MAX: u64 = 256;

/// The token of the pacing timer; connections are numbered by their slot from 0.
const TIMER: Token = Token(usize::MAX);

/// Poll timeout with nothing to do (bounds how late a thread sees a phase change).
const IDLE_WAIT: Duration = Duration::from_millis(10);

/// Poll timeout while a publisher waits for its window to open.
const WINDOW_WAIT: Duration = Duration::from_millis(1);

/// A window that has not moved for this long is reset: its messages were lost (a cut
/// subscriber), and the publisher would otherwise wait for them forever.
const WINDOW_STALL: Duration = Duration::from_secs(2);

/// A publisher behind its rate schedule catches up by at most this much of it.
const RATE_BACKLOG: Duration = Duration::from_millis(100);

/// One connection to open: who it is.
#[derive(Debug, Clone, Copy)]
pub struct ConnSpec {
    /// Publisher or subscriber.
    pub publisher: bool,
    /// Index among the publishers or among the subscribers.
    pub index: usize,
}

/// Counts of one thread, merged by addition.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Deliveries of measured messages, duplicates included.
    pub delivered: u64,
    /// Measured messages delivered for the first time to their subscriber.
    pub unique: u64,
    /// Measured deliveries seen before by the same subscriber.
    pub duplicated: u64,
    /// Measured deliveries with a sequence number lower than one already seen.
    pub reordered: u64,
    /// Deliveries of messages published during warm-up.
    pub unmeasured: u64,
    /// Deliveries from a publisher that is not in the subscriber's room.
    pub misrouted: u64,
    /// Deliveries whose payload is not a bench payload.
    pub malformed: u64,
    /// Connections lost after set-up.
    pub disconnects: u64,
    /// Times a publisher's stuck window was reset.
    pub window_stalls: u64,
    /// Successful `read` calls on all connections (deliveries per read show how well the
    /// server batches its writes, which drives the bench's own CPU use).
    pub reads: u64,
}

impl Counters {
    /// Adds `other` to these.
    pub fn add(&mut self, other: &Self) {
        self.delivered += other.delivered;
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unmeasured += other.unmeasured;
        self.misrouted += other.misrouted;
        self.malformed += other.malformed;
        self.disconnects += other.disconnects;
        self.window_stalls += other.window_stalls;
        self.reads += other.reads;
    }
}

/// What a thread hands back when the run stops.
#[derive(Debug)]
pub struct ThreadReport {
    /// End-to-end latency of measured deliveries, in ns.
    pub latency: Histogram,
    /// Counts.
    pub counters: Counters,
    /// The first connection failure after set-up, if any.
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotOpened,
    Connecting,
    SettingUp,
    Ready,
    Closed,
}

/// A subscriber's per-publisher sequence state, indexed by `publisher / rooms`.
#[derive(Debug)]
struct Subscriber {
    tracks: Vec<SeqTracker>,
}

#[derive(Debug)]
struct Publisher {
    /// The payload, re-stamped for each message.
    payload: Vec<u8>,
    /// Last sequence number sent.
    seq: u64,
    /// Messages sent against the rate schedule.
    scheduled: u64,
    /// Subscribers in the room (the window's divisor).
    audience: u64,
    /// Delivered count last seen, and when it last moved.
    delivered_seen: u64,
    moved_at: Instant,
    /// Messages written off by window resets.
    forgiven: u64,
    /// Where in its rate period this publisher sends, as a fraction: publisher `p` of `n` is
    /// offset by `p / n`, so that together they offer an even stream at `--rate`, not `n`
    /// messages at once every period.
    phase: f64,
}

#[derive(Debug)]
enum Role {
    Subscriber(Subscriber),
    Publisher(Publisher),
}

#[derive(Debug)]
struct Conn {
    spec: ConnSpec,
    room: usize,
    room_name: Vec<u8>,
    state: State,
    stream: Option<TcpStream>,
    wire: Wire,
    input: BytesMut,
    output: BytesMut,
    write_blocked: bool,
    /// TLS between the socket and the buffers, when the run is over TLS.
    tls: Option<Box<TlsLayer>>,
    role: Role,
}

impl Conn {
    fn name(&self) -> String {
        format!("{}{}", if self.spec.publisher { "pub" } else { "sub" }, self.spec.index)
    }
}

/// What a delivery is checked and counted against.
struct Receipt<'a> {
    plan: &'a Plan,
    latency: &'a mut Histogram,
    counters: &'a mut Counters,
    delivered_local: &'a mut [u64],
    touched: &'a mut Vec<usize>,
}

/// One client thread.
#[derive(Debug)]
pub struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    /// Wakes the poll on time for a publisher's next message under a millisecond away.
    timer: FineTimer,
    conns: Vec<Conn>,
    publishers: Vec<usize>,
    next_to_open: usize,
    opening: usize,
    scratch: Vec<u8>,
    latency: Histogram,
    counters: Counters,
    first_error: Option<String>,
    /// Deliveries per publisher not yet added to the shared counters.
    delivered_local: Vec<u64>,
    touched: Vec<usize>,
    unique_flushed: u64,
    saw_drain: bool,
}

impl Worker {
    /// A thread's worth of connections, not yet opened.
    pub fn new(plan: Arc<Plan>, shared: Arc<Shared>, specs: &[ConnSpec]) -> io::Result<Self> {
        let now = Instant::now();
        let mut conns = Vec::with_capacity(specs.len());
        let mut publishers = Vec::new();
        for (slot, &spec) in specs.iter().enumerate() {
            let room = if spec.publisher { plan.pub_room(spec.index) } else { plan.sub_room(spec.index) };
            let role = if spec.publisher {
                publishers.push(slot);
                Role::Publisher(Publisher {
                    payload: blank(plan.size),
                    seq: 0,
                    scheduled: 0,
                    audience: plan.subs_in_room(room) as u64,
                    delivered_seen: 0,
                    moved_at: now,
                    forgiven: 0,
                    phase: spec.index as f64 / plan.publishers as f64,
                })
            } else {
                Role::Subscriber(Subscriber { tracks: vec![SeqTracker::default(); plan.pubs_in_room(room)] })
            };
            conns.push(Conn {
                spec,
                room,
                room_name: plan.room_name(room),
                state: State::NotOpened,
                stream: None,
                wire: Wire::new(plan.protocol, &plan.token),
                input: BytesMut::new(),
                output: BytesMut::new(),
                write_blocked: false,
                tls: None,
                role,
            });
        }
        let poll = Poll::new()?;
        let timer = FineTimer::new(poll.registry(), TIMER)?;
        Ok(Self {
            poll,
            timer,
            delivered_local: vec![0; plan.publishers],
            plan,
            shared,
            conns,
            publishers,
            next_to_open: 0,
            opening: 0,
            scratch: vec![0; READ_CHUNK_BYTES],
            latency: Histogram::default(),
            counters: Counters::default(),
            first_error: None,
            touched: Vec::new(),
            unique_flushed: 0,
            saw_drain: false,
        })
    }

    /// Runs until the phase is `Stop`.
    pub fn run(mut self) -> ThreadReport {
        let mut events = Events::with_capacity(1024);
        loop {
            let phase = self.shared.phase();
            if phase == Phase::Stop {
                break;
            }
            if phase >= Phase::Drain && !self.saw_drain {
                self.saw_drain = true;
                self.shared.stopped_publishing.fetch_add(1, Ordering::AcqRel);
            }
            if let Err(e) = self.open_more() {
                self.shared.fail(format!("cannot connect to {}: {e}", self.plan.addr));
                break;
            }
            let wait = self.publish(phase);
            let now = Instant::now();
            let timeout = self.timer.timeout(now, now + wait).unwrap_or(wait);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared.fail(format!("poll failed: {e}"));
                    break;
                }
            }
            for event in events.iter() {
                self.on_event(event, phase);
            }
            self.flush_counters();
        }
        ThreadReport { latency: self.latency, counters: self.counters, first_error: self.first_error }
    }

    /// Starts TCP connects until [`OPENING_MAX`] are in progress.
    fn open_more(&mut self) -> io::Result<()> {
        while self.opening < OPENING_MAX && self.next_to_open < self.conns.len() {
            let slot = self.next_to_open;
            self.next_to_open += 1;
            let conn = &mut self.conns[slot];
            let mut stream = TcpStream::connect(self.plan.addr)?;
            // Latency matters more than packet count; the bench batches its own writes.
            stream.set_nodelay(true)?;
            self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)?;
            conn.stream = Some(stream);
            conn.state = State::Connecting;
            // NATS' standard TLS starts after its plain INFO line: read_all greets then.
            if !self.plan.tls_after_info {
                start_tls_and_greet(conn, &self.plan).map_err(io::Error::other)?;
            }
            self.opening += 1;
        }
        Ok(())
    }

    fn on_event(&mut self, event: &Event, phase: Phase) {
        let slot = event.token().0;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.state == State::Connecting {
            match connected(conn) {
                Ok(false) => return,
                Ok(true) => conn.state = State::SettingUp,
                Err(e) => return self.close(slot, phase, format!("connect failed: {e}")),
            }
        }
        if !matches!(conn.state, State::SettingUp | State::Ready) {
            return;
        }
        if event.is_writable() {
            conn.write_blocked = false;
        }
        let mut receipt = Receipt {
            plan: &self.plan,
            latency: &mut self.latency,
            counters: &mut self.counters,
            delivered_local: &mut self.delivered_local,
            touched: &mut self.touched,
        };
        let read = if event.is_readable() || event.is_read_closed() || event.is_error() {
            read_all(conn, &mut self.scratch, &self.shared, &mut receipt)
        } else {
            Ok(false)
        };
        let result = read.and_then(|became_ready| flush(conn).map(|()| became_ready));
        match result {
            Ok(true) if conn.state == State::SettingUp => {
                conn.state = State::Ready;
                self.opening -= 1;
                self.shared.ready.fetch_add(1, Ordering::AcqRel);
            }
            Ok(_) => {}
            Err(e) => self.close(slot, phase, e),
        }
    }

    /// Closes a connection: during set-up that fails the run, afterwards it is counted.
    fn close(&mut self, slot: usize, phase: Phase, reason: String) {
        let conn = &mut self.conns[slot];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if matches!(conn.state, State::Connecting | State::SettingUp) {
            self.opening -= 1;
        }
        conn.state = State::Closed;
        let reason = format!("{}: {reason}", conn.name());
        if phase == Phase::Setup {
            self.shared.fail(reason);
        } else {
            self.counters.disconnects += 1;
            self.first_error.get_or_insert(reason);
        }
    }

    /// Lets every ready publisher send what its window and rate allow; returns how long the
    /// thread may wait for readiness before publishing again.
    fn publish(&mut self, phase: Phase) -> Duration {
        if !matches!(phase, Phase::Warmup | Phase::Measure) {
            return IDLE_WAIT;
        }
        let mut wait = IDLE_WAIT;
        for k in 0..self.publishers.len() {
            let slot = self.publishers[k];
            let conn = &mut self.conns[slot];
            if conn.state != State::Ready || conn.write_blocked || conn.output.len() >= OUTPUT_BYTES_HIGH {
                continue;
            }
            let Role::Publisher(publisher) = &mut conn.role else {
                continue;
            };
            let now = Instant::now();
            let counters = &self.shared.publishers[conn.spec.index];
            let (allowed, until) =
                allowance(&self.plan, &self.shared, publisher, counters.delivered.load(Ordering::Relaxed), now);
            self.counters.window_stalls += u64::from(allowed.stalled);
            wait = wait.min(until);
            if allowed.messages == 0 {
                continue;
            }
            let measured = phase == Phase::Measure;
            let first = publisher.seq + 1;
            let send_ns = self.shared.now_ns();
            for _ in 0..allowed.messages {
                publisher.seq += 1;
                let stamp = Stamp { send_ns, publisher: conn.spec.index as u32, seq: publisher.seq, measured };
                stamp.write(&mut publisher.payload);
                conn.wire.encode_publish(&conn.room_name, &publisher.payload, &mut conn.output);
            }
            publisher.scheduled += allowed.messages;
            counters.sent.store(publisher.seq, Ordering::Release);
            if measured {
                if counters.first_measured.load(Ordering::Relaxed) == 0 {
                    counters.first_measured.store(first, Ordering::Release);
                }
                counters.last_measured.store(publisher.seq, Ordering::Release);
            }
            if allowed.messages == BATCH_MESSAGES_MAX {
                wait = Duration::ZERO;
            }
            if let Err(e) = flush(conn) {
                self.close(slot, phase, e);
            }
        }
        wait
    }

    /// Adds this thread's delivery counts to the shared ones.
    fn flush_counters(&mut self) {
        for &publisher in &self.touched {
            let count = std::mem::take(&mut self.delivered_local[publisher]);
            self.shared.publishers[publisher].delivered.fetch_add(count, Ordering::AcqRel);
        }
        self.touched.clear();
        if self.counters.unique != self.unique_flushed {
            self.shared.unique_measured.fetch_add(self.counters.unique - self.unique_flushed, Ordering::AcqRel);
            self.unique_flushed = self.counters.unique;
        }
    }
}

/// How many messages a publisher may send now.
struct Allowance {
    messages: u64,
    /// Whether the window was reset now.
    stalled: bool,
}

/// What the window and the rate schedule allow `publisher` now, and how long until they may
/// allow more if they allow nothing.
fn allowance(
    plan: &Plan,
    shared: &Shared,
    publisher: &mut Publisher,
    delivered: u64,
    now: Instant,
) -> (Allowance, Duration) {
    let mut messages = BATCH_MESSAGES_MAX;
    let mut stalled = false;
    let mut wait = IDLE_WAIT;
    // A room without subscribers has no window: nobody can acknowledge anything.
    if let Some(fully_delivered) = delivered.checked_div(publisher.audience) {
        if delivered != publisher.delivered_seen {
            publisher.delivered_seen = delivered;
            publisher.moved_at = now;
        }
        let done = fully_delivered + publisher.forgiven;
        let in_flight = publisher.seq.saturating_sub(done);
        let mut open = plan.window.saturating_sub(in_flight);
        if open == 0 && now.duration_since(publisher.moved_at) >= WINDOW_STALL {
            publisher.forgiven += in_flight;
            publisher.moved_at = now;
            stalled = true;
            open = plan.window;
        }
        if open == 0 {
            wait = WINDOW_WAIT;
        }
        messages = messages.min(open);
    }
    let rate = plan.rate_per_publisher();
    if rate > 0.0 && messages > 0 {
        let elapsed_s = shared.now_ns().saturating_sub(shared.start_ns.load(Ordering::Acquire)) as f64 / 1e9;
        let due_total = due_by(elapsed_s, rate, publisher.phase);
        let backlog_max = ((RATE_BACKLOG.as_secs_f64() * rate) as u64).max(1);
        if due_total.saturating_sub(publisher.scheduled) > backlog_max {
            publisher.scheduled = due_total - backlog_max;
        }
        let due = due_total.saturating_sub(publisher.scheduled);
        if due == 0 {
            let next_at_s = due_at_s(publisher.scheduled, rate, publisher.phase);
            wait = wait.min(Duration::from_secs_f64((next_at_s - elapsed_s).clamp(0.0, 1.0)));
        }
        messages = messages.min(due);
    }
    if messages > 0 && messages < BATCH_MESSAGES_MAX {
        wait = wait.min(WINDOW_WAIT);
    }
    (Allowance { messages, stalled }, wait)
}

/// Messages due by `elapsed_s` from a publisher sending `rate` per second, offset by `phase`
/// (a fraction of its period): message `k` (from 0) is due at `(k + phase) / rate`.
fn due_by(elapsed_s: f64, rate: f64, phase: f64) -> u64 {
    let periods = elapsed_s * rate - phase;
    if periods < 0.0 {
        0
    } else {
        periods as u64 + 1
    }
}

/// When message `sent` (from 0) of that publisher is due, seconds from the start.
fn due_at_s(sent: u64, rate: f64, phase: f64) -> f64 {
    (sent as f64 + phase) / rate
}

/// Starts TLS on `conn` if the run uses it, and queues the protocol greeting (which TLS sends
/// once its handshake is done).
fn start_tls_and_greet(conn: &mut Conn, plan: &Plan) -> Result<(), String> {
    if let Some(tls) = &plan.tls {
        conn.tls = Some(Box::new(tls.layer_for(plan.addr).map_err(|e| e.to_string())?));
    }
    let name = conn.name();
    let subscriber = !conn.spec.publisher;
    conn.wire.greet(&name, &conn.room_name, subscriber, &mut conn.output);
    Ok(())
}

/// NATS over TLS, before the upgrade: takes the server's plain `INFO` line off `conn.input`
/// and, once it is whole, starts TLS and greets. Nothing may follow the line in plain text.
fn upgrade_after_info(conn: &mut Conn, plan: &Plan) -> Result<(), String> {
    match take_nats_info(&mut conn.input)? {
        None => Ok(()),
        Some(false) => Err("the NATS server does not offer TLS (its INFO lacks tls_required)".into()),
        Some(true) if !conn.input.is_empty() => Err("plain bytes after the NATS INFO line, before TLS".into()),
        Some(true) => start_tls_and_greet(conn, plan),
    }
}

/// Whether a non-blocking connect has finished; an error if it failed.
fn connected(conn: &mut Conn) -> io::Result<bool> {
    let Some(stream) = conn.stream.as_mut() else {
        return Err(io::Error::new(io::ErrorKind::NotConnected, "no socket"));
    };
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes queued output (through TLS, if the run uses it) until it is all out or the kernel
/// would block.
fn flush(conn: &mut Conn) -> Result<(), String> {
    let Some(stream) = conn.stream.as_mut() else {
        return Ok(());
    };
    let Some(tls) = conn.tls.as_deref_mut() else {
        return write_out(stream, &mut conn.output, &mut conn.write_blocked);
    };
    write_out(&mut tls.writer(stream), &mut conn.output, &mut conn.write_blocked)?;
    // Records may wait without output (the handshake's): they go too.
    tls.write_records(stream).map_err(|e| format!("write failed: {e}"))?;
    conn.write_blocked |= tls.wants_write();
    Ok(())
}

/// Writes `output` into `writer` until it is all out or the writer would block.
fn write_out(writer: &mut impl Write, output: &mut BytesMut, write_blocked: &mut bool) -> Result<(), String> {
    while !output.is_empty() {
        match writer.write(output) {
            Ok(0) => return Err("server stopped accepting bytes".into()),
            Ok(n) => output.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *write_blocked = true;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    Ok(())
}

/// Reads until the kernel would block, handing each whole message to the adapter. Returns
/// whether the adapter reported the connection ready.
fn read_all(conn: &mut Conn, scratch: &mut [u8], shared: &Shared, receipt: &mut Receipt<'_>) -> Result<bool, String> {
    let mut ready = false;
    loop {
        let Some(stream) = conn.stream.as_mut() else {
            return Ok(ready);
        };
        let n = match stream.read(scratch) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        };
        // One clock read per read(): every message in it arrived by now.
        let received_ns = shared.now_ns();
        receipt.counters.reads += 1;
        match conn.tls.as_deref_mut() {
            None if receipt.plan.tls_after_info => {
                conn.input.extend_from_slice(&scratch[..n]);
                upgrade_after_info(conn, receipt.plan)?;
                continue;
            }
            None => conn.input.extend_from_slice(&scratch[..n]),
            Some(tls) => {
                if tls.receive(&scratch[..n], &mut conn.input).map_err(|e| e.to_string())?.peer_closed {
                    return Err("server closed the TLS connection".into());
                }
            }
        }
        let room = conn.room;
        let role = &mut conn.role;
        conn.wire.parse(&mut conn.input, &mut conn.output, &mut |incoming| match incoming {
            Incoming::Ready => ready = true,
            Incoming::Payload(payload) => match role {
                Role::Subscriber(subscriber) => receive(payload, received_ns, room, subscriber, receipt),
                Role::Publisher(_) => receipt.counters.misrouted += 1,
            },
        })?;
        if conn.input.len() > INPUT_BYTES_MAX {
            return Err("input buffer over its limit".into());
        }
    }
}

/// Checks and counts one delivery.
fn receive(payload: &[u8], received_ns: u64, room: usize, subscriber: &mut Subscriber, receipt: &mut Receipt<'_>) {
    let Some(stamp) = Stamp::read(payload) else {
        receipt.counters.malformed += 1;
        return;
    };
    let plan = receipt.plan;
    let publisher = stamp.publisher as usize;
    if payload.len() != plan.size || publisher >= plan.publishers {
        receipt.counters.malformed += 1;
        return;
    }
    if plan.pub_room(publisher) != room {
        receipt.counters.misrouted += 1;
        return;
    }
    if receipt.delivered_local[publisher] == 0 {
        receipt.touched.push(publisher);
    }
    receipt.delivered_local[publisher] += 1;
    let Some(track) = subscriber.tracks.get_mut(publisher / plan.rooms) else {
        receipt.counters.misrouted += 1;
        return;
    };
    let arrival = track.observe(stamp.seq);
    if !stamp.measured {
        receipt.counters.unmeasured += 1;
        return;
    }
    let counters = &mut *receipt.counters;
    counters.delivered += 1;
    match arrival {
        Arrival::InOrder => counters.unique += 1,
        Arrival::Reordered => {
            counters.unique += 1;
            counters.reordered += 1;
        }
        Arrival::Duplicate => {
            counters.duplicated += 1;
            return;
        }
    }
    receipt.latency.record(received_ns.saturating_sub(stamp.send_ns));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_offset_by_their_phase_offer_an_even_stream() {
        // 4 publishers at 10 msgs/s each: 40 msgs/s together, one every 25 ms.
        let mut due_at_ms: Vec<u64> = (0..4)
            .flat_map(|p| (0..3).map(move |k| (due_at_s(k, 10.0, f64::from(p) / 4.0) * 1000.0).round() as u64))
            .collect();
        due_at_ms.sort_unstable();
        assert_eq!(due_at_ms, [0, 25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 275]);
    }

    #[test]
    fn a_message_is_due_from_its_time_on() {
        let (rate, phase) = (10.0, 0.5);
        assert_eq!(due_by(0.0, rate, phase), 0, "the first message waits for its phase");
        assert_eq!(due_by(0.049, rate, phase), 0);
        assert_eq!(due_by(0.051, rate, phase), 1);
        assert_eq!(due_by(0.149, rate, phase), 1);
        assert_eq!(due_by(0.151, rate, phase), 2);
        assert_eq!(due_by(0.0, rate, 0.0), 1, "phase 0 sends at once");
        assert!((due_at_s(1, rate, phase) - 0.15).abs() < 1e-12);
    }
}
