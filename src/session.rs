//! One connection's protocol state machine, without sockets: bytes in, [`Request`]s out, and
//! keepalive decisions from an injected clock.
//!
//! The session decides the dialect from the first byte, enforces the handshake and the frame
//! and name rules, and turns both dialects into the same requests, so the hub never sees a byte.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::auth::Tokens;
use crate::codec::line::{is_line_mode, LineSplitter};
use crate::codec::{
    ClientFrame, FrameDecoder, HELLO_FLAG_ECHO, JOIN_FLAG_PRESENCE, JOIN_FLAG_SEND_ONLY, PROTOCOL_VERSION,
};
use crate::error::{DecodeError, ErrorCode};
use crate::limits::{DEFAULT_ROOM, LINE_MODE_SILENCE};

/// Which dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No byte has arrived yet.
    Undecided,
    /// Length-prefixed binary frames.
    Binary,
    /// Newline-terminated text.
    Line,
}

/// A validated request from a client, the same for both dialects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A binary client completed the handshake: answer with `WELCOME`.
    Hello {
        /// The client's user name.
        name: Bytes,
        /// Whether it wants its own publishes back.
        echo: bool,
    },
    /// A line-mode client arrived (its first byte was text, or it stayed silent): put it in
    /// the default room and greet it.
    LineStart,
    /// Join a room.
    Join {
        /// A valid room name.
        room: Bytes,
        /// Publish-only membership.
        send_only: bool,
        /// Send the room's members after `JOINED`, then its presence events.
        presence: bool,
    },
    /// List the members of a room.
    Who {
        /// A valid room name.
        room: Bytes,
    },
    /// List the rooms.
    Rooms,
    /// A line-mode command (a line starting with `/`), or a line typed outside any room.
    Line(LineCommand),
    /// Leave a room.
    Leave {
        /// A valid room name.
        room: Bytes,
    },
    /// Publish to a room.
    Publish {
        /// A valid room name.
        room: Bytes,
        /// Opaque payload, within the payload limit.
        payload: Bytes,
    },
    /// Answer with `PONG`.
    Ping(u64),
    /// The client answered a `PING` (life was already noted).
    Pong(u64),
}

/// What a line-mode user asked for with a `/command` (see `protocol.md`, line mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineCommand {
    /// `/nick NAME`: take a new name (not yet checked against the name rules).
    Nick(Bytes),
    /// `/join ROOM`: leave the current room and join `ROOM`.
    Join(Bytes),
    /// `/leave`: leave the current room.
    Leave,
    /// `/who [ROOM]`: list the members of `ROOM`, or of the current room.
    Who(Option<Bytes>),
    /// `/rooms`: list the rooms.
    Rooms,
    /// `/help`: list the commands.
    Help,
    /// `/quit`: leave and hang up.
    Quit,
    /// A `/command` that does not exist (the command word is given).
    Unknown(Bytes),
    /// A line to send while in no room.
    NoRoom,
}

/// Something the client did wrong: fatal codes end the connection, request errors do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The wire code.
    pub code: ErrorCode,
    /// Text for humans.
    pub text: String,
}

impl Fault {
    fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self { code, text: text.into() }
    }
}

impl From<DecodeError> for Fault {
    fn from(e: DecodeError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// What the clock asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Send `PING` with this nonce.
    SendPing(u64),
    /// The handshake or keepalive ran out: close with `TIMEOUT`.
    Expired,
}

/// The timeouts a session enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connect → `HELLO` (or the first line).
    pub handshake: Duration,
    /// Silence before the server pings.
    pub ping_interval: Duration,
    /// Silence after a ping before the connection is given up.
    pub ping_timeout: Duration,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    mode: Mode,
    ready: bool,
    failed: bool,
    frames: FrameDecoder,
    lines: LineSplitter,
    name: Bytes,
    echo: bool,
    connected_at: Instant,
    last_heard: Instant,
    ping_sent_at: Option<Instant>,
    /// Someone asked for this connection's name: it must be heard from by then.
    probe_deadline: Option<Instant>,
    pings_sent: u64,
    timeouts: Timeouts,
    session_id: u64,
    /// Where the process's id counter started, so the guest name counts from 1 (see [`guest_name`]).
    id_epoch: u64,
    tokens: Option<Tokens>,
    /// Line mode: the room typed lines go to.
    line_room: Option<Bytes>,
    /// Line mode chosen because the client stayed silent, and nothing received since.
    line_by_silence: bool,
}

impl Session {
    /// A session for a connection accepted at `now`.
    pub fn new(session_id: u64, now: Instant, timeouts: Timeouts, frames: FrameDecoder, lines: LineSplitter) -> Self {
        Self {
            mode: Mode::Undecided,
            ready: false,
            failed: false,
            frames,
            lines,
            name: Bytes::new(),
            echo: false,
            connected_at: now,
            last_heard: now,
            ping_sent_at: None,
            probe_deadline: None,
            pings_sent: 0,
            timeouts,
            session_id,
            id_epoch: 0,
            tokens: None,
            line_room: None,
            line_by_silence: false,
        }
    }

    /// Tells the session where its process's id counter started (`HubConfig::id_epoch`), so a
    /// guest name stays short: `guest7`, not a 13-digit counter.
    pub fn with_id_epoch(mut self, id_epoch: u64) -> Self {
        self.id_epoch = id_epoch;
        self
    }

    /// Requires one of `tokens` in `HELLO`; line mode, which cannot send one, is refused.
    pub fn with_tokens(mut self, tokens: Option<Tokens>) -> Self {
        self.tokens = tokens;
        self
    }

    /// The dialect, once the first byte decided it.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The user name (empty before the handshake).
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// Renames the user (line mode `/nick`; the caller has checked the name rules).
    pub fn set_name(&mut self, name: Bytes) {
        self.name = name;
    }

    /// Line mode: the room typed lines are published to, if any.
    pub fn line_room(&self) -> Option<&Bytes> {
        self.line_room.as_ref()
    }

    /// Line mode: sets the room typed lines go to (the hub calls it when a join or leave
    /// took effect).
    pub fn set_line_room(&mut self, room: Option<Bytes>) {
        self.line_room = room;
    }

    /// When the connection, still silent, is to be taken as a line-mode client.
    #[cfg(any(test, feature = "testing"))]
    pub fn line_mode_deadline(&self, silence: Duration) -> Option<Instant> {
        (self.mode == Mode::Undecided && !self.failed).then(|| self.connected_at + silence)
    }

    /// The client stayed silent past the line-mode silence: it is a person with `nc` who
    /// listens first. Gives [`Request::LineStart`], or nothing if a byte decided meanwhile.
    pub fn take_as_line(&mut self) -> Result<Option<Request>, Fault> {
        if self.mode != Mode::Undecided || self.failed {
            return Ok(None);
        }
        self.line_by_silence = true;
        let result = self.start_line();
        if let Err(fault) = &result {
            self.failed = fault.code.is_fatal();
        }
        result
    }

    fn start_line(&mut self) -> Result<Option<Request>, Fault> {
        self.mode = Mode::Line;
        if self.tokens.is_some() {
            return Err(Fault::new(ErrorCode::Unauthorized, "this server needs a token: use a binary client"));
        }
        self.ready = true;
        self.name = Bytes::from(guest_name(self.session_id, self.id_epoch));
        self.line_room = Some(Bytes::from_static(DEFAULT_ROOM.as_bytes()));
        Ok(Some(Request::LineStart))
    }

    /// Whether the client asked for its own publishes.
    pub fn echo(&self) -> bool {
        self.echo
    }

    /// The session id given at creation.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Notes that bytes arrived at `now`: the client is alive.
    pub fn heard_from(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_sent_at = None;
        self.probe_deadline = None;
    }

    /// Takes the next request off the front of `input`; `Ok(None)` means more bytes are needed.
    ///
    /// After a fatal fault the session yields nothing more.
    pub fn next_request(&mut self, input: &mut BytesMut) -> Result<Option<Request>, Fault> {
        if self.failed {
            return Ok(None);
        }
        let result = self.decode(input);
        if let Err(fault) = &result {
            self.failed = fault.code.is_fatal();
        }
        result
    }

    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Request>, Fault> {
        if self.mode == Mode::Undecided {
            let Some(&first) = input.first() else {
                return Ok(None);
            };
            if is_line_mode(first) {
                return self.start_line();
            }
            self.mode = Mode::Binary;
        }
        match self.mode {
            Mode::Line => self.next_line(input),
            _ => self.next_frame(input),
        }
    }

    fn next_line(&mut self, input: &mut BytesMut) -> Result<Option<Request>, Fault> {
        if self.line_by_silence {
            if let Some(&first) = input.first() {
                self.line_by_silence = false;
                if first == 0 {
                    // A binary frame's first byte: a binary client whose HELLO came too late.
                    let text = format!(
                        "a binary client must send HELLO within {} ms of connecting; this connection was taken as text",
                        LINE_MODE_SILENCE.as_millis()
                    );
                    return Err(Fault::new(ErrorCode::Timeout, text));
                }
            }
        }
        loop {
            let Some(line) = self.lines.next_line(input)? else {
                return Ok(None);
            };
            if line.is_empty() {
                continue;
            }
            if line.first() == Some(&b'/') && line.get(1) != Some(&b'/') {
                return Ok(Some(Request::Line(parse_command(&line))));
            }
            // `//text` sends `/text`.
            let payload = if line.first() == Some(&b'/') { line.slice(1..) } else { line };
            return Ok(Some(match &self.line_room {
                Some(room) => Request::Publish { room: room.clone(), payload },
                None => Request::Line(LineCommand::NoRoom),
            }));
        }
    }

    fn next_frame(&mut self, input: &mut BytesMut) -> Result<Option<Request>, Fault> {
        let Some(raw) = self.frames.decode(input)? else {
            return Ok(None);
        };
        let kind = raw.kind;
        let frame = ClientFrame::parse(raw)?;
        if !self.ready {
            let ClientFrame::Hello(hello) = frame else {
                return Err(Fault::new(ErrorCode::UnexpectedFrame, format!("frame type 0x{kind:02x} before HELLO")));
            };
            if hello.version != PROTOCOL_VERSION {
                return Err(Fault::new(
                    ErrorCode::UnsupportedVersion,
                    format!("version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.version),
                ));
            }
            if let Some(tokens) = &self.tokens {
                if !tokens.accepts(&hello.token) {
                    // Says nothing about the token offered: no echo of secrets, no hints.
                    return Err(Fault::new(ErrorCode::Unauthorized, "bad or missing token"));
                }
            }
            if !valid_user_name(&hello.name) {
                return Err(Fault::new(ErrorCode::InvalidName, "name must be 1-32 bytes of A-Z a-z 0-9 _ - ."));
            }
            self.ready = true;
            // Own the name: a slice of the read buffer would pin that buffer for the session.
            self.name = Bytes::copy_from_slice(&hello.name);
            self.echo = hello.flags & HELLO_FLAG_ECHO != 0;
            return Ok(Some(Request::Hello { name: hello.name, echo: self.echo }));
        }
        let request = match frame {
            ClientFrame::Hello(_) => return Err(Fault::new(ErrorCode::UnexpectedFrame, "second HELLO")),
            ClientFrame::Join { flags, room } => {
                check_room(&room)?;
                let send_only = flags & JOIN_FLAG_SEND_ONLY != 0;
                Request::Join { room, send_only, presence: flags & JOIN_FLAG_PRESENCE != 0 }
            }
            ClientFrame::Who { room } => {
                check_room(&room)?;
                Request::Who { room }
            }
            ClientFrame::Rooms => Request::Rooms,
            ClientFrame::Leave { room } => {
                check_room(&room)?;
                Request::Leave { room }
            }
            ClientFrame::Publish { room, payload } => {
                check_room(&room)?;
                Request::Publish { room, payload }
            }
            ClientFrame::Ping(nonce) => Request::Ping(nonce),
            ClientFrame::Pong(nonce) => Request::Pong(nonce),
        };
        Ok(Some(request))
    }

    /// Someone else asks for this connection's name: unless it is already being pinged, ping
    /// it now (the nonce to send is returned), and either way it must answer (any byte) within
    /// `timeout` or expire. Line-mode connections are never probed (a person's `nc` does not
    /// answer pings); the kernel's keepalive finds those.
    pub fn probe(&mut self, now: Instant, timeout: Duration) -> Option<u64> {
        if self.failed || !self.ready || self.mode == Mode::Line {
            return None;
        }
        let deadline = now + timeout;
        self.probe_deadline = Some(self.probe_deadline.map_or(deadline, |d| d.min(deadline)));
        if self.ping_sent_at.is_some() {
            return None;
        }
        self.ping_sent_at = Some(now);
        self.pings_sent += 1;
        Some(self.pings_sent)
    }

    /// What the clock asks of this connection at `now`, if anything.
    pub fn poll_timer(&mut self, now: Instant) -> Option<TimerEvent> {
        if self.failed {
            return None;
        }
        if !self.ready {
            return (now.saturating_duration_since(self.connected_at) >= self.timeouts.handshake)
                .then_some(TimerEvent::Expired);
        }
        if self.mode == Mode::Line {
            return None;
        }
        if self.probe_deadline.is_some_and(|deadline| now >= deadline) {
            return Some(TimerEvent::Expired);
        }
        if let Some(sent) = self.ping_sent_at {
            return (now.saturating_duration_since(sent) >= self.timeouts.ping_timeout).then_some(TimerEvent::Expired);
        }
        if now.saturating_duration_since(self.last_heard) >= self.timeouts.ping_interval {
            self.ping_sent_at = Some(now);
            self.pings_sent += 1;
            return Some(TimerEvent::SendPing(self.pings_sent));
        }
        None
    }
}

/// The name a line-mode client starts with: `guest` and the session's number on its core since
/// the process started (its id's counter relative to `id_epoch`), then its core (`-core`) on a
/// multi-core server, or its node and core (`-node.core`) in a cluster, so that it is unique in
/// the cluster while the process runs and short where there is only one core.
pub fn guest_name(session_id: u64, id_epoch: u64) -> String {
    let (node, core) = (session_id >> 48, (session_id >> 40) & 0xFF);
    let counter = crate::router::id_number(session_id, id_epoch);
    match (node, core) {
        (0, 0) => format!("guest{counter}"),
        (0, core) => format!("guest{counter}-{core}"),
        (node, core) => format!("guest{counter}-{node}.{core}"),
    }
}

/// Reads a line-mode `/command [argument]` (the line starts with one `/`).
fn parse_command(line: &Bytes) -> LineCommand {
    let text = line.slice(1..);
    let (word, rest) = match memchr::memchr(b' ', &text) {
        Some(at) => (text.slice(..at), text.slice(at + 1..)),
        None => (text.clone(), Bytes::new()),
    };
    let arg = trim(&rest);
    match (&word[..], arg.is_empty()) {
        (b"nick", false) => LineCommand::Nick(arg),
        (b"join", false) => LineCommand::Join(arg),
        (b"leave", true) => LineCommand::Leave,
        (b"who", true) => LineCommand::Who(None),
        (b"who", false) => LineCommand::Who(Some(arg)),
        (b"rooms", true) => LineCommand::Rooms,
        (b"help", _) => LineCommand::Help,
        (b"quit", _) => LineCommand::Quit,
        _ => LineCommand::Unknown(word),
    }
}

fn trim(text: &Bytes) -> Bytes {
    let start = text.iter().position(|b| *b != b' ').unwrap_or(text.len());
    let end = text.iter().rposition(|b| *b != b' ').map_or(start, |at| at + 1);
    text.slice(start..end.max(start))
}

pub use fanout_proto::names::{valid_room_name, valid_user_name};

pub(crate) fn check_room(room: &[u8]) -> Result<(), Fault> {
    if valid_room_name(room) {
        Ok(())
    } else {
        Err(Fault::new(ErrorCode::InvalidRoom, "room must be 1-64 bytes of printable ASCII without space"))
    }
}

#[cfg(test)]
mod tests;
