//! One reactor's clients, rooms and fan-out, without sockets.
//!
//! The reactor feeds the hub bytes and readiness; the hub runs each connection's [`Session`],
//! applies requests to the [`Router`], encodes each publish **once** and queues it on every
//! recipient's [`Outbox`], and tells the reactor which connections have bytes to flush and
//! which are finished. `T` is the transport the reactor keeps with each connection (a
//! `TcpStream` in the server, `()` in tests): the hub stores it and never touches it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codec::line::{encode_error_line, encode_message_line, LineSplitter};
use crate::codec::{
    encode_error_raw, encode_message, encode_nonce, encode_room_reply, encode_welcome, frame_type, FrameDecoder,
    PresenceKind, Welcome, PROTOCOL_VERSION,
};
use crate::error::ErrorCode;
use crate::interest::{Interest, PeerId};
use crate::keyed_slab::KeyedSlab;
use crate::limits::{
    CLOSE_LINGER, FRAME_BODY_BYTES_MAX, HEADER_BYTES, LINE_BYTES_MAX, LINE_MODE_SILENCE, SHARE_FRAME_BYTES_MIN,
};
use crate::link::Link;
use crate::outbox::{Framing, Outbox};
use crate::presence::{Bounds, Presence};
use crate::rng::{OsRandom, RandomSource};
use crate::router::{ConnKey, IdIssuer, Member, RouteError, Router, ID_COUNTER_BITS};
use crate::session::{Fault, Mode, Request, Session, TimerEvent};

/// The fan-out loop's view of a hub, borrowed field by field so the router's member list can be
/// read at the same time (a method borrowing all of `self` could not).
macro_rules! fanout {
    ($hub:expr) => {
        Fanout {
            conns: &mut $hub.conns,
            to_flush: &mut $hub.to_flush,
            slow: &mut $hub.slow,
            stats: &mut $hub.stats,
            output_bytes_max: $hub.config.output_bytes_max,
        }
    };
}

pub use crate::config::HubConfig;
pub use crate::limits::MAX_CORE_ID;

/// Counters of what the hub did, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Connections opened.
    pub connections_opened: u64,
    /// Publishes accepted.
    pub publishes: u64,
    /// Messages queued for recipients.
    pub deliveries: u64,
    /// Connections cut as slow consumers.
    pub slow_consumers: u64,
    /// Fatal protocol errors, by code.
    pub fatal_errors: u64,
    /// Connections refused because the hub was full.
    pub refused_full: u64,
    /// Publishes forwarded to peers (one per interested peer).
    pub forwards_sent: u64,
    /// Forwarded publishes received from peers.
    pub forwards_received: u64,
    /// Forwards dropped because a peer link's queue was over its limit.
    pub forwards_dropped: u64,
    /// Connections to the cluster port closed at once: too many handshakes were pending.
    pub node_links_refused: u64,
    /// Node links cut because their oldest unsent data waited too long (a slow peer).
    pub node_links_too_slow: u64,
    /// Announcements a peer did not acknowledge in time (the join went ahead without it).
    pub interest_acks_timed_out: u64,
    /// `ERROR` frames sent, by code, in [`ErrorCode::ALL`] order.
    pub errors: [u64; ErrorCode::ALL.len()],
}

impl Stats {
    fn count_error(&mut self, code: ErrorCode) {
        if let Some(at) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[at] += 1;
        }
    }
}

/// Whether a connection still takes part in the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Out of every room; its last bytes (an error) are being flushed, then it is shut down
    /// and dropped when the peer hangs up or at the deadline.
    Closing {
        deadline: Instant,
    },
}

/// One connection as the hub holds it.
#[derive(Debug)]
pub struct Conn<T> {
    /// The reactor's transport for this connection.
    pub io: T,
    /// Bytes read and not yet decoded; the reactor appends, the hub consumes.
    pub input: BytesMut,
    session: Session,
    outbox: Outbox,
    flush_queued: bool,
    state: State,
    /// Waiting for a `JOINED`: the connection's later requests wait too, so its replies
    /// keep request order.
    awaiting_joined: bool,
    /// The join being answered asked for presence (`MEMBERS` after `JOINED`, then events).
    watch_pending: bool,
    /// Line mode: the greeting went out.
    greeted: bool,
    /// Where the connection comes from, for log lines: set by the reactor at accept (the hub
    /// never touches a socket).
    remote: Option<std::net::SocketAddr>,
}

impl<T> Conn<T> {
    /// True while the connection waits for a `JOINED`; the reactor stops reading it until the
    /// hub lists it in [`Hub::take_resumed`].
    pub fn is_paused(&self) -> bool {
        self.awaiting_joined
    }

    /// The connection's output queue (the reactor flushes it).
    #[cfg(any(test, feature = "testing"))]
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The transport and the output queue together, so the reactor can flush one into the other.
    pub fn io_and_outbox(&mut self) -> (&mut T, &mut Outbox) {
        (&mut self.io, &mut self.outbox)
    }

    /// True once the connection is being closed: input is discarded, output is its last.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    /// The connection's session id.
    pub fn session_id(&self) -> u64 {
        self.session.session_id()
    }

    /// Records the connection's remote address (the reactor, at accept), so that every log line
    /// about the connection can name it.
    pub fn set_remote(&mut self, remote: std::net::SocketAddr) {
        self.remote = Some(remote);
    }

    /// Who the connection is, for log lines: `from ADDR` and, once known, `as NAME`.
    pub fn label(&self) -> ConnLabel<'_> {
        ConnLabel { remote: self.remote, name: self.session.name() }
    }
}

/// A connection as log lines name it: its remote address and, once known, its user name
/// (validated ASCII, escaped all the same: it came from the client).
#[derive(Debug, Clone, Copy)]
pub struct ConnLabel<'a> {
    remote: Option<std::net::SocketAddr>,
    name: &'a [u8],
}

impl std::fmt::Display for ConnLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.remote {
            Some(remote) => write!(f, "from {remote}")?,
            None => f.write_str("from an unknown address")?,
        }
        if !self.name.is_empty() {
            write!(f, " as {}", self.name.escape_ascii())?;
        }
        Ok(())
    }
}

/// One reactor's connections, rooms and peer links.
#[derive(Debug)]
pub struct Hub<T, L = ()> {
    conns: KeyedSlab<ConnKey, Conn<T>>,
    router: Router,
    links: KeyedSlab<PeerId, Link<L>>,
    interest: Interest,
    /// Rooms announced to each class of peer, indexed by [`LinkClass::index`].
    /// Ordered (as `pending`), so that a hub's output never depends on a hash seed: a
    /// simulated run replays exactly. Neither is touched per message.
    announced: [BTreeSet<Bytes>; 2],
    pending: BTreeMap<Bytes, PendingInterest>,
    tokens_issued: u64,
    gateway: Option<Gateway>,
    learned_nodes: Vec<NodeAddress>,
    links_down: Vec<PeerId>,
    links_to_flush: Vec<PeerId>,
    resumed: Vec<ConnKey>,
    /// Released from a `JOIN` wait: their buffered input runs at the end of the current input.
    unpaused: Vec<ConnKey>,
    config: HubConfig,
    to_flush: Vec<ConnKey>,
    finished: Vec<ConnKey>,
    slow: Vec<ConnKey>,
    /// Connections not yet decided, in accept order (so by deadline): (deadline, key, session).
    undecided: VecDeque<(Instant, ConnKey, u64)>,
    /// Draining: when each connection is to be told `DRAINING` and closed, earliest first.
    drain: VecDeque<(Instant, ConnKey, u64)>,
    presence: Presence,
    /// Nonces and seeds: the OS for a server, a seed for a simulation.
    random: Box<dyn RandomSource>,
    /// The latest time an input brought (for deadlines set deep inside, like the ack wait).
    clock: Option<Instant>,
    encode: BytesMut,
    sessions: IdIssuer,
    stats: Stats,
}

impl<T, L> Hub<T, L> {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        // Ids are unique across the cluster: node in the top 16 bits, core in the next 8, and a
        // counter that starts at this process's epoch, so unique across restarts too.
        debug_assert!(config.core_id <= MAX_CORE_ID, "core ids have 8 bits in session and stream ids");
        let id_base = (u64::from(config.node_id) << 48) | (u64::from(config.core_id) << ID_COUNTER_BITS);
        let sessions = IdIssuer::new(id_base, config.id_epoch);
        let presence = Presence::new(Bounds::DEFAULT, config.id_epoch);
        Self {
            conns: KeyedSlab::new(),
            router: Router::with_stream_ids(IdIssuer::new(id_base, config.id_epoch), config.rooms_per_connection_max),
            links: KeyedSlab::new(),
            interest: Interest::new(),
            announced: [BTreeSet::new(), BTreeSet::new()],
            pending: BTreeMap::new(),
            tokens_issued: 0,
            gateway: None,
            learned_nodes: Vec::new(),
            links_down: Vec::new(),
            links_to_flush: Vec::new(),
            resumed: Vec::new(),
            unpaused: Vec::new(),
            config,
            to_flush: Vec::new(),
            finished: Vec::new(),
            slow: Vec::new(),
            undecided: VecDeque::new(),
            drain: VecDeque::new(),
            presence,
            random: Box::new(OsRandom),
            clock: None,
            encode: BytesMut::with_capacity(ENCODE_BUFFER_BYTES),
            sessions,
            stats: Stats::default(),
        }
    }

    /// Replaces the source of link nonces and seeds (the OS by default): a simulation gives a
    /// seeded one so that a run replays exactly.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_random(&mut self, random: Box<dyn RandomSource>) {
        self.random = random;
    }

    /// A random number from the hub's source, for seeding what the reactor runs beside it.
    pub fn random_u64(&mut self) -> u64 {
        self.random.next_u64()
    }

    /// Takes a new connection, or gives it back with the `SERVER_FULL` frame to send it.
    pub fn open(&mut self, io: T, now: Instant) -> Result<ConnKey, (T, Bytes)> {
        let key = self.open_counted(io, now)?;
        self.start_silence(key, now);
        Ok(key)
    }

    /// Takes a new connection whose first bytes wait behind its transport's own handshake
    /// (TLS): it is counted against the connection limit and its handshake timeout runs from
    /// `now`, like any other's, but its line-mode silence starts only at
    /// [`Hub::transport_ready`] — a binary client cannot send `HELLO` before the TLS handshake
    /// is over, however long that takes on a slow network.
    pub fn open_behind_handshake(&mut self, io: T, now: Instant) -> Result<ConnKey, (T, Bytes)> {
        self.open_counted(io, now)
    }

    /// The transport of a connection opened with [`Hub::open_behind_handshake`] finished its
    /// handshake at `now`: its line-mode silence starts.
    pub fn transport_ready(&mut self, key: ConnKey, now: Instant) {
        self.start_silence(key, now);
    }

    /// Starts the silence after which the connection is taken as line mode.
    fn start_silence(&mut self, key: ConnKey, now: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        // Deadlines are `now` plus a constant, so the queue stays in deadline order.
        self.undecided.push_back((now + LINE_MODE_SILENCE, key, conn.session_id()));
    }

    fn open_counted(&mut self, io: T, now: Instant) -> Result<ConnKey, (T, Bytes)> {
        if self.config.live_connections.fetch_add(1, Ordering::AcqRel) >= self.config.connections_max {
            self.config.live_connections.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused_full += 1;
            let mut frame = BytesMut::new();
            encode_error_raw(&mut frame, ErrorCode::ServerFull as u16, b"the server is at its connection limit");
            return Err((io, frame.freeze()));
        }
        let session = Session::new(
            self.sessions.next_id(),
            now,
            self.config.timeouts,
            FrameDecoder::new(FRAME_BODY_BYTES_MAX),
            LineSplitter::new(LINE_BYTES_MAX),
        )
        .with_tokens(self.config.tokens.clone())
        .with_id_epoch(self.config.id_epoch);
        self.stats.connections_opened += 1;
        let session_id = session.session_id();
        let key = self.conns.insert(Conn {
            io,
            input: BytesMut::new(),
            session,
            outbox: Outbox::new(),
            flush_queued: false,
            state: State::Open,
            awaiting_joined: false,
            watch_pending: false,
            greeted: false,
            remote: None,
        });
        debug_assert_eq!(self.conns[key].session_id(), session_id);
        Ok(key)
    }

    /// The next moment a silent connection is due to be taken as line mode, if any: the
    /// reactor wakes then and calls [`Hub::expire_silent`] (the periodic tick is too coarse).
    pub fn next_deadline(&self) -> Option<Instant> {
        let silent = self.undecided.front().map(|(deadline, _, _)| *deadline);
        let drain = self.drain.front().map(|(deadline, _, _)| *deadline);
        match (silent, drain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the server out of service: every open connection is told `DRAINING` and closed, at
    /// moments spread evenly over `period` from `now` (a client that reconnects elsewhere at
    /// once then arrives there a few at a time). The reactor stops accepting first.
    pub fn start_drain(&mut self, now: Instant, period: std::time::Duration) {
        let open: Vec<(ConnKey, u64)> =
            self.conns.iter().filter(|(_, c)| !c.is_closing()).map(|(k, c)| (k, c.session_id())).collect();
        let count = open.len().max(1) as u32;
        self.drain = open
            .into_iter()
            .enumerate()
            .map(|(i, (key, session))| (now + period / count * i as u32, key, session))
            .collect();
        self.clock = Some(now);
    }

    /// Closes the connections whose drain moment has come; see [`Hub::start_drain`].
    pub fn expire_drain(&mut self, now: Instant) {
        while let Some(&(at, key, session)) = self.drain.front() {
            if at > now {
                return;
            }
            self.drain.pop_front();
            if self.conns.get(key).is_some_and(|c| c.session_id() == session && !c.is_closing()) {
                self.close(key, ErrorCode::Draining, "the server is draining: reconnect to another", now);
            }
        }
    }

    /// Takes every connection that stayed silent for the line-mode silence as a line-mode
    /// client: it joins the default room and is greeted in text.
    pub fn expire_silent(&mut self, now: Instant) {
        self.clock = Some(now);
        while let Some(&(deadline, key, session_id)) = self.undecided.front() {
            if deadline > now {
                return;
            }
            self.undecided.pop_front();
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.session.session_id() != session_id || conn.is_closing() {
                continue;
            }
            match conn.session.take_as_line() {
                Ok(Some(request)) => self.apply(key, request, now),
                Ok(None) => {}
                Err(fault) => self.fault(key, fault, now),
            }
            self.cut_slow_consumers(now);
        }
    }

    /// The connection under `key`, if it exists.
    pub fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn<T>> {
        self.conns.get_mut(key)
    }

    /// How many connections the hub holds (closing ones included).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when the hub holds no connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// How many rooms exist.
    #[cfg(any(test, feature = "testing"))]
    pub fn room_count(&self) -> usize {
        self.router.room_count()
    }

    /// What the hub has done so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Decodes and applies everything in the connection's input buffer.
    pub fn handle_input(&mut self, key: ConnKey, now: Instant) {
        self.clock = Some(now);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.is_closing() {
            conn.input.clear();
            return;
        }
        conn.session.heard_from(now);
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.is_closing() {
                conn.input.clear();
                return;
            }
            if conn.awaiting_joined {
                return;
            }
            match conn.session.next_request(&mut conn.input) {
                Ok(Some(request)) => {
                    self.apply(key, request, now);
                    self.cut_slow_consumers(now);
                }
                Ok(None) => return,
                Err(fault) => self.fault(key, fault, now),
            }
        }
    }

    /// The peer closed its side or the socket failed: drop the connection now.
    pub fn handle_hangup(&mut self, key: ConnKey) {
        if self.conns.contains(key) {
            self.leave_all(key, PresenceKind::Lost);
            self.finish(key);
        }
    }

    /// Runs every connection's timers; call it a few times per shortest timeout.
    pub fn tick(&mut self, now: Instant) {
        self.clock = Some(now);
        let mut expired = Vec::new();
        let mut pings = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            match conn.state {
                State::Closing { deadline } if now >= deadline => expired.push(key),
                State::Closing { .. } => {}
                State::Open => {
                    if !conn.flush_queued {
                        // Idle output: hand the buffers back (a busy connection reuses them).
                        conn.outbox.release_idle_buffers();
                    }
                    match conn.session.poll_timer(now) {
                        Some(TimerEvent::SendPing(nonce)) => pings.push((key, nonce)),
                        Some(TimerEvent::Expired) => expired.push(key),
                        None => {}
                    }
                }
            }
        }
        for (key, nonce) in pings {
            self.reply(key, |dst| encode_nonce(dst, frame_type::PING, nonce));
        }
        self.tick_links(now);
        for key in expired {
            if self.conns[key].is_closing() {
                self.finish(key);
            } else {
                let text = "no HELLO or answer to PING in time";
                self.close(key, ErrorCode::Timeout, text, now);
            }
        }
        self.cut_slow_consumers(now);
    }

    /// Starts closing every connection with `SHUTTING_DOWN`.
    pub fn shut_down(&mut self, now: Instant) {
        let keys: Vec<ConnKey> = self.conns.iter().filter(|(_, c)| !c.is_closing()).map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, ErrorCode::ShuttingDown, "the server is stopping", now);
        }
    }

    /// Panics if the hub's tables disagree: the router's and presence's own invariants, our
    /// members in presence exactly the router's, closing connections in no room, a connection
    /// flagged for flushing listed, one waiting for `JOINED` waited for, every awaited ack on a
    /// live link. O(everything): for simulations and fuzz checks after every step, not servers.
    #[cfg(any(test, feature = "testing"))]
    pub fn check_invariants(&self) {
        self.router.check_invariants();
        self.presence.check_invariants();
        let mut router_members = 0;
        for room in self.router.room_names() {
            let members = self.router.members(room).unwrap_or(&[]);
            router_members += members.len();
            let mut routed: Vec<u64> = members.iter().map(|m| self.conns[m.conn].session.session_id()).collect();
            let mut present: Vec<u64> = self
                .presence
                .members(room)
                .filter(|e| e.origin == crate::presence::Origin::Local)
                .map(|e| e.session_id)
                .collect();
            routed.sort_unstable();
            present.sort_unstable();
            assert_eq!(routed, present, "room {room:?}: members and local presence differ");
        }
        let local_entries = self.presence.entries().filter(|(_, e)| e.origin == crate::presence::Origin::Local).count();
        assert_eq!(local_entries, router_members, "local presence entries in rooms without members");
        for (key, conn) in self.conns.iter() {
            if conn.is_closing() {
                assert_eq!(self.router.rooms_of(key), 0, "closing connection {key} is in a room");
            }
            if conn.flush_queued {
                assert!(self.to_flush.contains(&key), "connection {key} flagged for flushing but not listed");
            }
        }
        self.check_link_invariants();
    }

    /// Whether some connection has bytes queued since the last [`Hub::take_to_flush`].
    pub fn has_to_flush(&self) -> bool {
        !self.to_flush.is_empty()
    }

    /// Connections with bytes queued since the last call: flush each once.
    pub fn take_to_flush(&mut self, into: &mut Vec<ConnKey>) {
        into.clear();
        std::mem::swap(into, &mut self.to_flush);
        // A key may be stale (its connection was removed and the slot reused): keep each key
        // only while its connection still has the flag set, so every key appears once.
        let conns = &mut self.conns;
        into.retain(|key| conns.get_mut(*key).is_some_and(|conn| std::mem::take(&mut conn.flush_queued)));
    }

    /// Connections that are done since the last call: deregister and [`Hub::remove`] them.
    pub fn take_finished(&mut self, into: &mut Vec<ConnKey>) {
        into.clear();
        std::mem::swap(into, &mut self.finished);
    }

    /// Removes a finished connection and gives back its transport.
    pub fn remove(&mut self, key: ConnKey) -> Option<T> {
        let conn = self.conns.try_remove(key)?;
        self.config.live_connections.fetch_sub(1, Ordering::AcqRel);
        self.leave_all_of(key, conn.session.session_id(), conn.session.name().clone(), PresenceKind::Lost);
        Some(conn.io)
    }

    fn apply(&mut self, key: ConnKey, request: Request, now: Instant) {
        match request {
            Request::Hello { .. } => {
                let welcome = Welcome {
                    version: PROTOCOL_VERSION,
                    node_id: self.config.node_id,
                    core_id: self.config.core_id,
                    session_id: self.conns[key].session.session_id(),
                    max_body: FRAME_BODY_BYTES_MAX as u32,
                };
                self.reply(key, |dst| encode_welcome(dst, &welcome));
            }
            Request::LineStart => {
                // Nothing was queued for the connection before it chose its dialect.
                self.conns[key].outbox.set_framing(Framing::Lines);
                self.line_start(key);
            }
            Request::Join { room, send_only, presence } => self.join(key, &room, send_only, presence),
            Request::Leave { room } => {
                if self.leave(key, &room).is_ok() {
                    self.reply(key, |dst| encode_room_reply(dst, frame_type::LEFT, &room));
                }
            }
            Request::Who { room } => self.who(key, &room),
            Request::Rooms => self.list_rooms(key),
            Request::Line(command) => self.line_command(key, command, now),
            Request::Publish { room, payload } => self.publish(key, &room, &payload, now),
            Request::Ping(nonce) => self.reply(key, |dst| encode_nonce(dst, frame_type::PONG, nonce)),
            Request::Pong(_) => {}
        }
    }

    /// The fan-out hot path: encode once, queue for every other local member and once for
    /// each interested peer, cut slow consumers.
    fn publish(&mut self, key: ConnKey, room: &[u8], payload: &Bytes, now: Instant) {
        let publisher = &self.conns[key];
        let name = publisher.session.name().clone();
        let skip = if publisher.session.echo() { None } else { Some(key) };
        let delivery = match self.router.publish(key, room) {
            Ok(delivery) => delivery,
            Err(e) => return self.refuse(key, e, room),
        };
        let frame_len = HEADER_BYTES + 8 + 8 + 1 + delivery.room.len() + 1 + name.len() + payload.len();
        let frame = encode_frame(&mut self.encode, frame_len, |dst| {
            encode_message(dst, delivery.stream, delivery.seq, delivery.room, &name, payload)
        });
        self.stats.publishes += 1;
        fanout!(self).deliver(delivery.members, skip, &frame, &name, payload);
        self.forward(room, &frame, None, now);
        self.cut_slow_consumers(now);
    }

    fn cut_slow_consumers(&mut self, now: Instant) {
        if self.slow.is_empty() {
            return;
        }
        let mut slow = std::mem::take(&mut self.slow);
        for victim in slow.drain(..) {
            if self.conns.get(victim).is_some_and(|c| !c.is_closing()) {
                self.stats.slow_consumers += 1;
                self.close(victim, ErrorCode::SlowConsumer, "output queue over its limit; read faster", now);
            }
        }
        self.slow = slow;
    }

    /// Connections that stopped waiting for a `JOINED` since the last call: read them again.
    pub fn take_resumed(&mut self, into: &mut Vec<ConnKey>) {
        into.clear();
        std::mem::swap(into, &mut self.resumed);
    }

    /// Adds `key` to `room` and tells everyone; `JOINED` follows once the room's announcement
    /// is acknowledged (see `peers.rs`).
    fn join(&mut self, key: ConnKey, room: &[u8], send_only: bool, watch: bool) {
        let name = self.conns[key].session.name().clone();
        if self.name_free(key, room, &name, "") {
            self.join_unchecked(key, room, send_only, watch);
        }
    }

    /// [`Hub::join`] without the name check: a line-mode guest's own name is unique on its node
    /// (it carries its core's counter), and it must land in the lobby to be greeted.
    fn join_unchecked(&mut self, key: ConnKey, room: &[u8], send_only: bool, watch: bool) {
        match self.router.join(key, room, send_only) {
            Ok(change) => {
                let conn = &mut self.conns[key];
                conn.watch_pending = watch;
                let (session_id, name) = (conn.session.session_id(), conn.session.name().clone());
                self.local_presence(room, PresenceKind::Joined, session_id, &name);
                self.joined(key, room, change.room_edge);
            }
            Err(e) => self.refuse(key, e, room),
        }
    }

    /// Takes `key` out of `room` and tells everyone; refuses if it is not a member.
    fn leave(&mut self, key: ConnKey, room: &[u8]) -> Result<(), RouteError> {
        match self.router.leave(key, room) {
            Ok(change) => {
                if change.room_edge {
                    self.room_gone(room);
                }
                let session = &self.conns[key].session;
                let (session_id, name) = (session.session_id(), session.name().clone());
                self.local_presence(room, PresenceKind::Left, session_id, &name);
                Ok(())
            }
            Err(e) => {
                self.refuse(key, e, room);
                Err(e)
            }
        }
    }

    /// Takes `key` out of every room, withdrawing rooms it leaves empty; `why` is what the
    /// other members are told.
    fn leave_all(&mut self, key: ConnKey, why: PresenceKind) {
        let session = &self.conns[key].session;
        let (session_id, name) = (session.session_id(), session.name().clone());
        self.leave_all_of(key, session_id, name, why);
    }

    fn leave_all_of(&mut self, key: ConnKey, session_id: u64, name: Bytes, why: PresenceKind) {
        let rooms = self.router.rooms_of_conn(key);
        if rooms.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        self.router.disconnect_with(key, |room| gone.push(room));
        for room in gone {
            self.room_gone(&room);
        }
        for room in rooms {
            self.local_presence(&room, why, session_id, &name);
        }
    }

    fn refuse(&mut self, key: ConnKey, error: RouteError, room: &[u8]) {
        let room = String::from_utf8_lossy(room);
        let (code, text) = match error {
            RouteError::TooManyRooms => (ErrorCode::TooManyRooms, format!("cannot join {room}: too many rooms")),
            RouteError::NotAMember => (ErrorCode::NotAMember, format!("not a member of {room}")),
            RouteError::AlreadyAMember => (ErrorCode::AlreadyAMember, format!("already a member of {room}")),
        };
        self.request_error(key, code, &text);
    }

    /// A refused request: an `ERROR` frame, or an error line in line mode; the connection stays.
    fn request_error(&mut self, key: ConnKey, code: ErrorCode, text: &str) {
        self.stats.count_error(code);
        if self.conns[key].session.mode() == Mode::Line {
            let mut line = BytesMut::new();
            encode_error_line(&mut line, code, text);
            self.push_line(key, &line);
        } else {
            self.reply(key, |dst| encode_error_raw(dst, code as u16, text.as_bytes()));
        }
    }

    fn fault(&mut self, key: ConnKey, fault: Fault, now: Instant) {
        if fault.code.is_fatal() {
            self.stats.fatal_errors += 1;
            self.close(key, fault.code, &fault.text, now);
        } else {
            self.request_error(key, fault.code, &fault.text);
        }
    }

    /// Takes the connection out of every room, replaces its queue with one error, and lets it
    /// linger so the error can be read before the socket goes.
    fn close(&mut self, key: ConnKey, code: ErrorCode, text: &str, now: Instant) {
        let conn = &self.conns[key];
        let (session, who) = (conn.session.session_id(), conn.label());
        if matches!(code, ErrorCode::ShuttingDown | ErrorCode::Draining) {
            log::debug!("closing connection {key} {who} (session {session}): {code}: {text}");
        } else {
            log::info!("closing connection {key} {who} (session {session}): {code}: {text}");
        }
        self.stats.count_error(code);
        self.leave_all(key, PresenceKind::Lost);
        let conn = &mut self.conns[key];
        conn.state = State::Closing { deadline: now + CLOSE_LINGER };
        conn.input.clear();
        // Frees a slow consumer's backlog at once, but never splits a frame on the wire.
        conn.outbox.cut_after_current_frame();
        let mut frame = BytesMut::new();
        if conn.session.mode() == Mode::Line {
            encode_error_line(&mut frame, code, text);
        } else {
            encode_error_raw(&mut frame, code as u16, text.as_bytes());
        }
        conn.outbox.push_slice(&frame);
        self.queue_flush(key);
    }

    fn reply(&mut self, key: ConnKey, encode: impl FnOnce(&mut BytesMut)) {
        let mut frame = BytesMut::new();
        encode(&mut frame);
        let conn = &mut self.conns[key];
        if conn.session.mode() == Mode::Line || conn.is_closing() {
            return;
        }
        conn.outbox.push_slice(&frame);
        // Replies count against the output limit too: a client that sends requests and never
        // reads the answers is a slow consumer like any other.
        if conn.outbox.queued_bytes() > self.config.output_bytes_max {
            self.slow.push(key);
        }
        self.queue_flush(key);
    }

    /// Queues text for a line-mode connection (it counts against the output limit like any
    /// reply); binary connections get nothing from it.
    fn push_line(&mut self, key: ConnKey, line: &[u8]) {
        let conn = &mut self.conns[key];
        if conn.session.mode() != Mode::Line || conn.is_closing() {
            return;
        }
        conn.outbox.push_slice(line);
        if conn.outbox.queued_bytes() > self.config.output_bytes_max {
            self.slow.push(key);
        }
        self.queue_flush(key);
    }

    fn queue_flush(&mut self, key: ConnKey) {
        let conn = &mut self.conns[key];
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.to_flush.push(key);
        }
    }

    fn finish(&mut self, key: ConnKey) {
        if !self.finished.contains(&key) {
            self.finished.push(key);
        }
    }
}

pub mod introspect;
mod line;
mod names;
mod peers;
mod presence;
use crate::limits::ENCODE_BUFFER_BYTES;
use peers::PendingInterest;
pub use peers::{Gateway, NodeAddress};

#[cfg(test)]
mod tests;

/// Encodes one frame of `len` bytes to hand to many outboxes. A frame small enough to be
/// copied into each outbox is cut from the reused `encode` buffer (no allocation); one big
/// enough to be shared gets its own allocation, so a slow reader holding it pins nothing else.
fn encode_frame(encode: &mut BytesMut, len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    if len < SHARE_FRAME_BYTES_MIN {
        // Reserve only what this frame needs: the buffer then refills in place while it is
        // unshared, and otherwise grows by its original 64 KiB, not once per frame.
        encode.reserve(len);
        write(encode);
        debug_assert_eq!(encode.len(), len);
        encode.split().freeze()
    } else {
        let mut own = BytesMut::with_capacity(len);
        write(&mut own);
        debug_assert_eq!(own.len(), len);
        own.freeze()
    }
}

/// The parts of a hub the fan-out loop writes to, borrowed apart from the router so one
/// room's member list can be read while recipients' outboxes are written.
struct Fanout<'a, T> {
    conns: &'a mut KeyedSlab<ConnKey, Conn<T>>,
    to_flush: &'a mut Vec<ConnKey>,
    slow: &'a mut Vec<ConnKey>,
    stats: &'a mut Stats,
    output_bytes_max: usize,
}

impl<T> Fanout<'_, T> {
    /// Queues `frame` (or its line rendering, built at most once) for every receiving member
    /// but `skip`; notes who needs a flush and who went over the output limit.
    ///
    /// Per recipient this is the append, the flush mark and one comparison with the output
    /// limit (kept per recipient so a queue never passes the limit by more than one frame);
    /// the outbox records nothing per frame, and the delivery count is added once.
    fn deliver(&mut self, members: &[Member], skip: Option<ConnKey>, frame: &Bytes, name: &[u8], payload: &[u8]) {
        let mut line: Option<Bytes> = None;
        let mut delivered = 0;
        for member in members {
            if !member.receives || Some(member.conn) == skip {
                continue;
            }
            let conn = &mut self.conns[member.conn];
            debug_assert!(!conn.is_closing(), "closing connections are in no room");

            if conn.session.mode() == Mode::Line {
                let line = line.get_or_insert_with(|| {
                    let mut dst = BytesMut::new();
                    encode_message_line(&mut dst, name, payload);
                    dst.freeze()
                });
                conn.outbox.push(line);
            } else {
                conn.outbox.push(frame);
            }
            delivered += 1;
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.to_flush.push(member.conn);
            }
            if conn.outbox.queued_bytes() > self.output_bytes_max {
                self.slow.push(member.conn);
            }
        }
        self.stats.deliveries += delivered;
    }
}
