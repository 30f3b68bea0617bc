//! The `session` check, a stateful one: three connections to one `Hub`, driven by a script of
//! steps, with every byte the hub queues for a client checked against the protocol.
//!
//! The input is a sequence of steps `[ctrl][len][len bytes]` (a short last step takes what is
//! left). `ctrl & 3` picks the connection (mod 3) and `ctrl >> 2` the action:
//!
//! * `0..=43`: the bytes arrive on that connection (`input`, then `handle_input`);
//! * `44..=47`: that client stops reading (its output stays queued, as behind a full socket) or,
//!   if it had stopped, reads everything queued;
//! * `48..=61`: the clock advances by `(action - 47) * 3` seconds, connections silent since
//!   they opened are taken as line mode (`expire_silent`) and the hub ticks;
//! * `62`: the peer hangs up; `63`: a connection that is gone is replaced by a new one.
//!
//! After every step the outboxes of reading clients are drained as a reactor would, and each
//! connection's bytes must be valid for its dialect: binary output decodes into `ServerFrame`s
//! starting with `WELCOME` (or a fatal `ERROR`), every `ERROR` code is a known one, nothing
//! follows a fatal `ERROR`, per-stream `seq` only increases, `MEMBERS`, `ROOM_LIST` and
//! `PRESENCE` name valid rooms and members; line output is `name: payload` lines, `* ` status
//! lines and `error <code> <NAME>: text` lines, of which only a fatal one ends it. No connection ever holds more than the output
//! limit plus one frame, one holding more than the limit is being closed (`SLOW_CONSUMER`), and
//! a drained connection that gets bytes queued is in the hub's flush list. The harness runs the
//! hub with a 4 KiB output limit, so a client that stops reading reaches it in a few steps.
//!
//! The hub's own tables agree after every step (`Hub::check_invariants`). The limits hold too: a binary connection without `WELCOME` once the handshake timeout has
//! passed has had its fatal error (`TIMEOUT`, or an earlier one), and so has one that let the
//! ping timeout pass after a `PING` without sending a byte; no connection is ever in more rooms
//! than the per-connection limit, and `TOO_MANY_ROOMS` comes exactly when it is at that limit.
//!
//! Shared by `fuzz_targets/session.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`, which
//! replays every file of `corpus/session/` through [`check`] as an ordinary test on stable.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::codec::{FrameDecoder, ServerFrame, PROTOCOL_VERSION};
use fanout::error::ErrorCode;
use fanout::hub::{Hub, HubConfig};
use fanout::limits::{FRAME_BODY_BYTES_MAX, HEADER_BYTES, MEMBERS_LISTED_MAX, PAYLOAD_BYTES_MAX, ROOMS_LISTED_MAX};
use fanout::router::ConnKey;
use fanout::session::{valid_room_name, valid_user_name, Timeouts};

const CONNS: usize = 3;

/// The output limit of the harness's hub: small, so a stalled reader reaches it within a short
/// input (the default, 4 MiB, would take a thousand 4 KiB publishes).
const OUTPUT_BYTES_MAX: usize = 4096;

/// What the harness knows about one client, from the bytes it sent and received.
struct Peer {
    key: ConnKey,
    session_id: u64,
    /// `Some(true)` once the first byte (or silence) chose line mode, `Some(false)` binary.
    line_mode: Option<bool>,
    /// Received bytes not yet cut into frames or lines.
    received: BytesMut,
    welcomed: bool,
    /// A fatal error arrived: nothing may follow it.
    ended: bool,
    /// Removed from the hub.
    gone: bool,
    /// Highest `seq` seen per `stream`.
    streams: HashMap<u64, u64>,
    /// When the hub opened the connection.
    opened_at: Instant,
    /// When the last `PING` arrived, if no byte was sent since.
    pinged_at: Option<Instant>,
    /// Rooms joined (`JOINED`) and not left (`LEFT`).
    rooms: HashSet<Vec<u8>>,
    /// The per-connection room limit.
    rooms_max: usize,
    /// Not reading: its output stays in the hub's outbox.
    stalled: bool,
    /// Bytes were left queued at the last drain (a reactor would be waiting for WRITABLE).
    backlog: bool,
}

impl Peer {
    fn new(key: ConnKey, session_id: u64, opened_at: Instant, rooms_max: usize) -> Self {
        Self {
            key,
            session_id,
            line_mode: None,
            received: BytesMut::new(),
            welcomed: false,
            ended: false,
            gone: false,
            streams: HashMap::new(),
            opened_at,
            pinged_at: None,
            rooms: HashSet::new(),
            rooms_max,
            stalled: false,
            backlog: false,
        }
    }

    fn receive(&mut self, bytes: &[u8], now: Instant) {
        if bytes.is_empty() {
            return;
        }
        assert!(!self.ended, "session {}: {} bytes after a fatal error", self.session_id, bytes.len());
        self.received.extend_from_slice(bytes);
        if self.line_mode == Some(true) {
            self.receive_lines();
        } else {
            self.receive_frames(now);
        }
    }

    fn receive_frames(&mut self, now: Instant) {
        let decoder = FrameDecoder::default();
        while let Some(raw) = decoder.decode(&mut self.received).expect("server frame header is valid") {
            assert!(!self.ended, "session {}: a frame after a fatal error", self.session_id);
            let frame = ServerFrame::parse(raw).expect("server frame body is valid");
            if !self.welcomed {
                assert!(
                    matches!(frame, ServerFrame::Welcome(_) | ServerFrame::Error { .. }),
                    "session {}: first frame is not WELCOME or ERROR: {frame:?}",
                    self.session_id
                );
            }
            match frame {
                ServerFrame::Welcome(w) => {
                    assert!(!self.welcomed, "second WELCOME");
                    self.welcomed = true;
                    assert_eq!(w.version, PROTOCOL_VERSION);
                    assert_eq!(w.session_id, self.session_id, "WELCOME names another session");
                    assert_eq!(w.max_body as usize, FRAME_BODY_BYTES_MAX);
                }
                ServerFrame::Message(m) => {
                    assert!(valid_room_name(&m.room), "MESSAGE to an invalid room {:?}", m.room);
                    assert!(valid_user_name(&m.name), "MESSAGE from an invalid name {:?}", m.name);
                    assert!(m.payload.len() <= PAYLOAD_BYTES_MAX);
                    assert!(m.seq >= 1, "seq starts at 1");
                    let last = self.streams.entry(m.stream).or_insert(0);
                    assert!(m.seq > *last, "stream {} went from seq {} to {}", m.stream, *last, m.seq);
                    *last = m.seq;
                }
                ServerFrame::Joined(room) => {
                    assert!(valid_room_name(&room), "JOINED names an invalid room {room:?}");
                    assert!(self.rooms.insert(room.to_vec()), "JOINED for a room already joined");
                    assert!(self.rooms.len() <= self.rooms_max, "in {} rooms, over the limit", self.rooms.len());
                }
                ServerFrame::Left(room) => {
                    assert!(valid_room_name(&room), "LEFT names an invalid room {room:?}");
                    assert!(self.rooms.remove(&room[..]), "LEFT for a room not joined");
                }
                ServerFrame::Error { code, text } => {
                    let known = ErrorCode::from_u16(code).unwrap_or_else(|| panic!("unknown ERROR code {code}"));
                    assert!(text.len() <= fanout::limits::ERROR_TEXT_BYTES_MAX);
                    assert!(std::str::from_utf8(&text).is_ok(), "ERROR text is not UTF-8");
                    if known.is_fatal() {
                        self.ended = true;
                    }
                    if known == ErrorCode::TooManyRooms {
                        assert_eq!(self.rooms.len(), self.rooms_max, "TOO_MANY_ROOMS below the limit");
                    }
                }
                ServerFrame::Ping(_) => self.pinged_at = Some(now),
                ServerFrame::Pong(_) => {}
                ServerFrame::Members(m) => {
                    assert!(valid_room_name(&m.room), "MEMBERS of an invalid room {:?}", m.room);
                    assert!(m.members.len() <= MEMBERS_LISTED_MAX && m.members.len() <= m.total as usize);
                    assert!(m.members.iter().all(|x| valid_user_name(&x.name)), "MEMBERS lists an invalid name");
                }
                ServerFrame::RoomList(list) => {
                    assert!(list.rooms.len() <= ROOMS_LISTED_MAX && list.rooms.len() <= list.total as usize);
                    assert!(list.rooms.iter().all(|(r, n)| valid_room_name(r) && *n > 0), "ROOM_LIST entry");
                }
                ServerFrame::Presence(p) => {
                    assert!(valid_room_name(&p.room) && valid_user_name(&p.name), "PRESENCE {p:?}");
                    assert_ne!(p.session_id, self.session_id, "a member told of its own change");
                }
            }
        }
    }

    fn receive_lines(&mut self) {
        while let Some(newline) = self.received.iter().position(|&b| b == b'\n') {
            let line = self.received.split_to(newline + 1);
            let line = &line[..newline];
            assert!(!self.ended, "session {}: a line after the error line", self.session_id);
            if let Some(error) = line.strip_prefix(b"error ") {
                let error = std::str::from_utf8(error).expect("error line is UTF-8");
                let (code, rest) = error.split_once(' ').expect("error line has a code and a name");
                let code: u16 = code.parse().expect("error line code is a number");
                let known = ErrorCode::from_u16(code).unwrap_or_else(|| panic!("unknown error line code {code}"));
                let (name, _text) = rest.split_once(": ").expect("error line has NAME: text");
                assert_eq!(name, known.name(), "error line name does not match its code");
                self.ended = known.is_fatal();
            } else if line.starts_with(b"* ") {
                // A status line: the greeting, a presence change, an answer to a command.
            } else {
                let sep = line.windows(2).position(|w| w == b": ").expect("message line is name: payload");
                assert!(valid_user_name(&line[..sep]), "message line from an invalid name {:?}", &line[..sep]);
                assert!(!line[sep + 2..].contains(&b'\r'), "message line carries a carriage return");
            }
        }
    }
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn open(hub: &mut Hub<()>, now: Instant, rooms_max: usize) -> Peer {
    let key = hub.open((), now).unwrap_or_else(|_| panic!("the hub refused connection number {}", hub.len() + 1));
    let session_id = hub.conn_mut(key).expect("just opened").session_id();
    Peer::new(key, session_id, now, rooms_max)
}

/// The timeouts have been enforced on `peer` by `now` (the hub ticked at `now` if the clock
/// moved, and the peer's output has been drained).
fn check_timeouts(peer: &Peer, now: Instant, timeouts: &Timeouts) {
    if peer.ended || peer.line_mode == Some(true) {
        return;
    }
    if !peer.welcomed {
        let waited = now - peer.opened_at;
        assert!(waited < timeouts.handshake, "session {}: no HELLO for {waited:?} and not cut", peer.session_id);
    }
    if let Some(pinged_at) = peer.pinged_at {
        let silent = now - pinged_at;
        assert!(silent < timeouts.ping_timeout, "session {}: silent {silent:?} after PING", peer.session_id);
    }
}

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let config = HubConfig { output_bytes_max: OUTPUT_BYTES_MAX, ..HubConfig::default() };
    let queued_max = config.output_bytes_max + HEADER_BYTES + FRAME_BODY_BYTES_MAX;
    let (timeouts, rooms_max) = (config.timeouts, config.rooms_per_connection_max);
    let mut now = start();
    let mut hub: Hub<()> = Hub::new(config);
    let mut peers: Vec<Peer> = (0..CONNS).map(|_| open(&mut hub, now, rooms_max)).collect();
    let mut keys = Vec::new();
    let mut drained = Vec::new();

    let mut rest = data;
    while let Some((&ctrl, after)) = rest.split_first() {
        let len = after.first().map_or(0, |&l| l as usize).min(after.len().saturating_sub(1));
        let chunk = after.get(1..1 + len).unwrap_or(&[]);
        rest = after.get(1 + len..).unwrap_or(&[]);
        let index = (ctrl & 3) as usize % CONNS;
        let action = ctrl >> 2;
        let peer = &mut peers[index];
        match action {
            0..=43 => {
                if !peer.gone && !chunk.is_empty() {
                    let conn = hub.conn_mut(peer.key).expect("a connection that is not gone exists");
                    if peer.line_mode.is_none() && !conn.is_closing() {
                        peer.line_mode = Some((0x20..=0x7E).contains(&chunk[0]));
                    }
                    if !conn.is_closing() {
                        // Any byte is life: the hub forgets its PING.
                        peer.pinged_at = None;
                    }
                    conn.input.extend_from_slice(chunk);
                    hub.handle_input(peer.key, now);
                }
            }
            44..=47 => peer.stalled = !peer.stalled,
            48..=61 => {
                now += Duration::from_secs(3 * u64::from(action - 47));
                hub.expire_silent(now);
                for peer in peers.iter_mut().filter(|p| !p.gone && p.line_mode.is_none()) {
                    if !hub.conn_mut(peer.key).is_some_and(|c| c.is_closing()) {
                        peer.line_mode = Some(true);
                    }
                }
                hub.tick(now);
            }
            62 => {
                if !peer.gone {
                    hub.handle_hangup(peer.key);
                }
            }
            _ => {
                if peer.gone {
                    *peer = open(&mut hub, now, rooms_max);
                }
            }
        }

        // Flush as the reactor does: the hub's flush list, then everything must be drained.
        hub.take_to_flush(&mut keys);
        for peer in peers.iter_mut().filter(|p| !p.gone) {
            let conn = hub.conn_mut(peer.key).expect("a connection that is not gone exists");
            let queued = conn.outbox_mut().queued_bytes();
            let closing = conn.is_closing();
            assert!(queued <= queued_max, "session {}: {queued} bytes queued", peer.session_id);
            if queued > OUTPUT_BYTES_MAX {
                assert!(closing, "session {}: {queued} bytes queued and not cut", peer.session_id);
            }
            if queued > 0 && !peer.backlog {
                assert!(
                    keys.contains(&peer.key),
                    "session {}: bytes queued but not in the flush list",
                    peer.session_id
                );
            }
            if peer.stalled {
                peer.backlog = queued > 0;
                continue;
            }
            drained.clear();
            conn.outbox_mut().flush_to(&mut drained).expect("a Vec takes everything");
            assert!(conn.outbox_mut().is_empty());
            let backlog = std::mem::take(&mut peer.backlog);
            peer.receive(&drained, now);
            if backlog {
                // A PING in a backlog was sent at some earlier tick, perhaps before bytes that
                // answered it: only a PING drained in the step that queued it dates the silence.
                peer.pinged_at = None;
            }
            if peer.ended {
                assert!(closing, "session {}: a fatal error but the connection is not closing", peer.session_id);
            }
            check_timeouts(peer, now, &timeouts);
        }
        hub.check_invariants();
        hub.take_finished(&mut keys);
        for key in keys.drain(..) {
            if hub.remove(key).is_some() {
                if let Some(peer) = peers.iter_mut().find(|p| !p.gone && p.key == key) {
                    peer.gone = true;
                }
            }
        }
    }
}
