//! Sans-IO codecs: length-prefixed binary frames ([`FrameDecoder`], [`ClientFrame`],
//! [`ServerFrame`]) and the line-mode splitter ([`mod@line`]).
//!
//! Decoding works on a `BytesMut` that the caller fills however it likes; a decoded frame's
//! fields are `Bytes` slices of that buffer, so payloads are never copied. The decoder never
//! reserves memory from a declared length: it waits until the whole frame is in the buffer, and
//! it rejects a header that declares more than its limit as soon as the header's 5 bytes are in.

pub mod line;
pub mod peer;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::limits::{FRAME_BODY_BYTES_MAX, HEADER_BYTES, PAYLOAD_BYTES_MAX};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// `HELLO.flags` bit: deliver the connection's own publishes back to it.
pub const HELLO_FLAG_ECHO: u8 = 0b1;

/// `JOIN.flags` bit: publish to the room but receive nothing from it.
pub const JOIN_FLAG_SEND_ONLY: u8 = 0b1;

/// `JOIN.flags` bit: after `JOINED`, send the room's `MEMBERS` and then its `PRESENCE` events.
pub const JOIN_FLAG_PRESENCE: u8 = 0b10;

/// Frame type bytes, as assigned in `protocol.md`.
pub mod frame_type {
    /// Client → server: handshake.
    pub const HELLO: u8 = 0x01;
    /// Client → server: join a room.
    pub const JOIN: u8 = 0x02;
    /// Client → server: leave a room.
    pub const LEAVE: u8 = 0x03;
    /// Client → server: publish to a room.
    pub const PUBLISH: u8 = 0x04;
    /// Either direction: keepalive probe.
    pub const PING: u8 = 0x05;
    /// Either direction: keepalive answer.
    pub const PONG: u8 = 0x06;
    /// Client → server: who is in a room.
    pub const WHO: u8 = 0x07;
    /// Client → server: which rooms exist.
    pub const ROOMS: u8 = 0x08;
    /// Server → client: handshake reply.
    pub const WELCOME: u8 = 0x10;
    /// Server → client: one delivery of one publish.
    pub const MESSAGE: u8 = 0x11;
    /// Server → client: a join took effect.
    pub const JOINED: u8 = 0x12;
    /// Server → client: a leave took effect.
    pub const LEFT: u8 = 0x13;
    /// Server → client: an error.
    pub const ERROR: u8 = 0x14;
    /// Server → client: a room's members (the answer to `WHO`, or after a presence `JOIN`).
    pub const MEMBERS: u8 = 0x15;
    /// Server → client: the rooms (the answer to `ROOMS`).
    pub const ROOM_LIST: u8 = 0x16;
    /// Server → client: a member joined, left or was renamed in a room the client watches.
    pub const PRESENCE: u8 = 0x17;
    /// First type of the range reserved for peer-link frames.
    pub const PEER_FIRST: u8 = 0x40;
    /// Last type of the range reserved for peer-link frames.
    pub const PEER_LAST: u8 = 0x7F;
}

/// One frame cut from the stream: its type byte and its body, not yet parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The type byte.
    pub kind: u8,
    /// The body, a zero-copy slice of the read buffer.
    pub body: Bytes,
}

/// Cuts frames out of a byte stream: the incremental half of the codec.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    body_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(FRAME_BODY_BYTES_MAX)
    }
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `body_bytes_max`.
    pub fn new(body_bytes_max: usize) -> Self {
        Self { body_bytes_max }
    }

    /// Takes the next whole frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
    ///
    /// Errors are final for the stream: the caller reports them and closes the connection.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<RawFrame>, DecodeError> {
        let Some(header) = buf.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = header[4];
        if declared as u64 > self.body_bytes_max as u64 {
            return Err(DecodeError::FrameTooLarge { declared: declared as u64, max: self.body_bytes_max });
        }
        if !is_assigned(kind) {
            return Err(DecodeError::UnknownFrameType(kind));
        }
        let body_len = declared as usize;
        if buf.len() < HEADER_BYTES + body_len {
            return Ok(None);
        }
        buf.advance(HEADER_BYTES);
        let body = buf.split_to(body_len).freeze();
        Ok(Some(RawFrame { kind, body }))
    }
}

/// Whether `kind` is an assigned frame type (in either direction, or the peer-link range).
pub fn is_assigned(kind: u8) -> bool {
    use frame_type::*;
    matches!(kind, HELLO..=ROOMS | WELCOME..=PRESENCE | PEER_FIRST..=PEER_LAST)
}

/// Writes a frame header for a body of `body_len` bytes.
pub fn put_header(dst: &mut BytesMut, kind: u8, body_len: usize) {
    debug_assert!(body_len <= FRAME_BODY_BYTES_MAX, "encoder asked for an oversize frame");
    dst.put_u32(body_len as u32);
    dst.put_u8(kind);
}

/// A frame a client sends to the server, parsed and checked against its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Handshake.
    Hello(Hello),
    /// Join `room`; `flags` may hold [`JOIN_FLAG_SEND_ONLY`].
    Join {
        /// `JOIN.flags`.
        flags: u8,
        /// Room name (not yet checked against the room rules).
        room: Bytes,
    },
    /// Leave `room`.
    Leave {
        /// Room name.
        room: Bytes,
    },
    /// Publish `payload` to `room`.
    Publish {
        /// Room name.
        room: Bytes,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Keepalive probe.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// Who is in `room`.
    Who {
        /// Room name.
        room: Bytes,
    },
    /// Which rooms exist.
    Rooms,
}

/// The fields of `HELLO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u8,
    /// `HELLO.flags`.
    pub flags: u8,
    /// User name (not yet checked against the name rules).
    pub name: Bytes,
    /// Authentication token (empty when unused).
    pub token: Bytes,
}

/// A frame the server sends to a client, parsed (used by the client library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Handshake reply.
    Welcome(Welcome),
    /// One delivery.
    Message(Message),
    /// A join took effect.
    Joined(Bytes),
    /// A leave took effect.
    Left(Bytes),
    /// An error: the wire code and the human text.
    Error {
        /// Wire code (see `ErrorCode`); unknown codes are kept as numbers.
        code: u16,
        /// Text for humans.
        text: Bytes,
    },
    /// Keepalive probe (the client must answer).
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// A room's members.
    Members(Members),
    /// The rooms.
    RoomList(RoomList),
    /// A change in a watched room's membership.
    Presence(PresenceEvent),
}

/// The fields of `MEMBERS`: who is in a room, as this server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The room asked about.
    pub room: Bytes,
    /// How many members the room has in all (more than listed when over the listing limit).
    pub total: u32,
    /// Up to the listing limit of members, in join order.
    pub members: Vec<MemberInfo>,
}

/// One member as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's session id (unique in the cluster: tells two members of one name apart).
    pub session_id: u64,
    /// The member's name.
    pub name: Bytes,
}

/// The fields of `ROOM_LIST`: the rooms that have members, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomList {
    /// How many rooms there are in all.
    pub total: u32,
    /// Up to the listing limit of (room, member count), by name.
    pub rooms: Vec<(Bytes, u32)>,
}

/// What happened to a member, in a `PRESENCE` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// The member joined the room.
    Joined = 1,
    /// The member left the room (`LEAVE`, or a line-mode `/leave`, `/join`, `/quit`).
    Left = 2,
    /// The member's connection closed, or its node became unreachable.
    Lost = 3,
    /// The member took a new name (line mode `/nick`); `name` is the new one.
    Renamed = 4,
}

impl PresenceKind {
    /// The kind for a wire value, if it is one we know.
    pub fn from_u8(value: u8) -> Option<Self> {
        [Self::Joined, Self::Left, Self::Lost, Self::Renamed].into_iter().find(|k| *k as u8 == value)
    }
}

/// The fields of `PRESENCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// What happened.
    pub kind: PresenceKind,
    /// The member's session id.
    pub session_id: u64,
    /// The room.
    pub room: Bytes,
    /// The member's name (the new one for `Renamed`).
    pub name: Bytes,
}

/// The fields of `WELCOME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the server speaks.
    pub version: u8,
    /// Node the client landed on.
    pub node_id: u16,
    /// Core (reactor) the client landed on.
    pub core_id: u16,
    /// The connection's session id.
    pub session_id: u64,
    /// The server's max frame body.
    pub max_body: u32,
}

/// The fields of `MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The publisher's membership of the room.
    pub stream: u64,
    /// Position in that stream, from 1.
    pub seq: u64,
    /// Room name.
    pub room: Bytes,
    /// Publisher's name.
    pub name: Bytes,
    /// Opaque payload.
    pub payload: Bytes,
}

/// Reads a body field by field, turning any shortfall into `Malformed`.
struct Fields {
    body: Bytes,
}

impl Fields {
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        if self.body.is_empty() {
            return Err(DecodeError::Malformed(what));
        }
        Ok(self.body.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if self.body.len() < len {
            return Err(DecodeError::Malformed(what));
        }
        Ok(self.body.split_to(len))
    }

    fn short_str(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u8(what)? as usize;
        self.bytes(len, what)
    }

    fn rest(self) -> Bytes {
        self.body
    }

    fn end(self, what: &'static str) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }
}

impl ClientFrame {
    /// Parses a raw frame that arrived at the server.
    pub fn parse(raw: RawFrame) -> Result<Self, DecodeError> {
        use frame_type::*;
        let mut f = Fields { body: raw.body };
        let frame = match raw.kind {
            HELLO => {
                let version = f.u8("HELLO.version")?;
                let flags = f.u8("HELLO.flags")?;
                if flags & !HELLO_FLAG_ECHO != 0 {
                    return Err(DecodeError::Malformed("HELLO.flags has a reserved bit set"));
                }
                let name = f.short_str("HELLO.name")?;
                let token = f.short_str("HELLO.token")?;
                f.end("HELLO has trailing bytes")?;
                return Ok(Self::Hello(Hello { version, flags, name, token }));
            }
            JOIN => {
                let flags = f.u8("JOIN.flags")?;
                if flags & !(JOIN_FLAG_SEND_ONLY | JOIN_FLAG_PRESENCE) != 0 {
                    return Err(DecodeError::Malformed("JOIN.flags has a reserved bit set"));
                }
                Self::Join { flags, room: f.rest() }
            }
            LEAVE => Self::Leave { room: f.rest() },
            PUBLISH => {
                let room = f.short_str("PUBLISH.room")?;
                let payload = f.rest();
                if payload.len() > PAYLOAD_BYTES_MAX {
                    return Err(DecodeError::PayloadTooLarge(payload.len()));
                }
                Self::Publish { room, payload }
            }
            PING => Self::Ping(nonce(f, "PING")?),
            PONG => Self::Pong(nonce(f, "PONG")?),
            WHO => Self::Who { room: f.rest() },
            ROOMS => {
                f.end("ROOMS has a body")?;
                Self::Rooms
            }
            kind if is_assigned(kind) => return Err(DecodeError::UnexpectedFrame(kind)),
            kind => return Err(DecodeError::UnknownFrameType(kind)),
        };
        Ok(frame)
    }

    /// Appends this frame, header included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        use frame_type::*;
        match self {
            Self::Who { room } => encode_room_reply(dst, WHO, room),
            Self::Rooms => put_header(dst, ROOMS, 0),
            Self::Hello(h) => {
                put_header(dst, HELLO, 4 + h.name.len() + h.token.len());
                dst.put_u8(h.version);
                dst.put_u8(h.flags);
                put_short_str(dst, &h.name);
                put_short_str(dst, &h.token);
            }
            Self::Join { flags, room } => {
                put_header(dst, JOIN, 1 + room.len());
                dst.put_u8(*flags);
                dst.put_slice(room);
            }
            Self::Leave { room } => {
                put_header(dst, LEAVE, room.len());
                dst.put_slice(room);
            }
            Self::Publish { room, payload } => encode_publish(dst, room, payload),
            Self::Ping(nonce) => encode_nonce(dst, PING, *nonce),
            Self::Pong(nonce) => encode_nonce(dst, PONG, *nonce),
        }
    }
}

impl ServerFrame {
    /// Parses a raw frame that arrived at a client.
    pub fn parse(raw: RawFrame) -> Result<Self, DecodeError> {
        use frame_type::*;
        let mut f = Fields { body: raw.body };
        let frame = match raw.kind {
            WELCOME => {
                let version = f.u8("WELCOME.version")?;
                let _flags = f.u8("WELCOME.flags")?;
                let node_id = f.u16("WELCOME.node_id")?;
                let core_id = f.u16("WELCOME.core_id")?;
                let session_id = f.u64("WELCOME.session_id")?;
                let max_body = f.u32("WELCOME.max_body")?;
                // Later versions may append fields: ignore the rest.
                Self::Welcome(Welcome { version, node_id, core_id, session_id, max_body })
            }
            MESSAGE => {
                let stream = f.u64("MESSAGE.stream")?;
                let seq = f.u64("MESSAGE.seq")?;
                let room = f.short_str("MESSAGE.room")?;
                let name = f.short_str("MESSAGE.name")?;
                Self::Message(Message { stream, seq, room, name, payload: f.rest() })
            }
            JOINED => Self::Joined(f.rest()),
            LEFT => Self::Left(f.rest()),
            ERROR => {
                let code = f.u16("ERROR.code")?;
                Self::Error { code, text: f.rest() }
            }
            PING => Self::Ping(nonce(f, "PING")?),
            PONG => Self::Pong(nonce(f, "PONG")?),
            MEMBERS => {
                let room = f.short_str("MEMBERS.room")?;
                let total = f.u32("MEMBERS.total")?;
                let count = f.u16("MEMBERS.count")?;
                let mut members = Vec::with_capacity(usize::from(count).min(crate::limits::MEMBERS_LISTED_MAX));
                for _ in 0..count {
                    let session_id = f.u64("MEMBERS.session_id")?;
                    let name = f.short_str("MEMBERS.name")?;
                    members.push(MemberInfo { session_id, name });
                }
                f.end("MEMBERS has trailing bytes")?;
                Self::Members(Members { room, total, members })
            }
            ROOM_LIST => {
                let total = f.u32("ROOM_LIST.total")?;
                let count = f.u16("ROOM_LIST.count")?;
                let mut rooms = Vec::with_capacity(usize::from(count).min(crate::limits::ROOMS_LISTED_MAX));
                for _ in 0..count {
                    let room = f.short_str("ROOM_LIST.room")?;
                    rooms.push((room, f.u32("ROOM_LIST.members")?));
                }
                f.end("ROOM_LIST has trailing bytes")?;
                Self::RoomList(RoomList { total, rooms })
            }
            PRESENCE => Self::Presence(parse_presence(f.rest())?),
            kind if is_assigned(kind) => return Err(DecodeError::UnexpectedFrame(kind)),
            kind => return Err(DecodeError::UnknownFrameType(kind)),
        };
        Ok(frame)
    }

    /// Appends this frame, header included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        use frame_type::*;
        match self {
            Self::Members(m) => {
                let listed = m.members.iter().map(|x| (x.session_id, &x.name[..]));
                encode_members(dst, &m.room, m.total, listed);
            }
            Self::RoomList(list) => encode_room_list(dst, list.total, list.rooms.iter().map(|(r, n)| (&r[..], *n))),
            Self::Presence(p) => encode_presence(dst, p.kind, p.session_id, &p.room, &p.name),
            Self::Welcome(w) => encode_welcome(dst, w),
            Self::Message(m) => encode_message(dst, m.stream, m.seq, &m.room, &m.name, &m.payload),
            Self::Joined(room) => encode_room_reply(dst, JOINED, room),
            Self::Left(room) => encode_room_reply(dst, LEFT, room),
            Self::Error { code, text } => encode_error_raw(dst, *code, text),
            Self::Ping(nonce) => encode_nonce(dst, PING, *nonce),
            Self::Pong(nonce) => encode_nonce(dst, PONG, *nonce),
        }
    }
}

fn nonce(mut f: Fields, what: &'static str) -> Result<u64, DecodeError> {
    let nonce = f.u64(what)?;
    f.end(what)?;
    Ok(nonce)
}

fn put_short_str(dst: &mut BytesMut, s: &[u8]) {
    debug_assert!(s.len() <= u8::MAX as usize);
    dst.put_u8(s.len() as u8);
    dst.put_slice(s);
}

/// Appends a `PUBLISH` frame.
pub fn encode_publish(dst: &mut BytesMut, room: &[u8], payload: &[u8]) {
    put_header(dst, frame_type::PUBLISH, 1 + room.len() + payload.len());
    put_short_str(dst, room);
    dst.put_slice(payload);
}

/// Appends a `MESSAGE` frame: the one encoding done per publish on the fan-out hot path.
pub fn encode_message(dst: &mut BytesMut, stream: u64, seq: u64, room: &[u8], name: &[u8], payload: &[u8]) {
    let body_len = 8 + 8 + 1 + room.len() + 1 + name.len() + payload.len();
    dst.reserve(HEADER_BYTES + body_len);
    put_header(dst, frame_type::MESSAGE, body_len);
    dst.put_u64(stream);
    dst.put_u64(seq);
    put_short_str(dst, room);
    put_short_str(dst, name);
    dst.put_slice(payload);
}

/// Appends a `WELCOME` frame.
pub fn encode_welcome(dst: &mut BytesMut, w: &Welcome) {
    put_header(dst, frame_type::WELCOME, 18);
    dst.put_u8(w.version);
    dst.put_u8(0);
    dst.put_u16(w.node_id);
    dst.put_u16(w.core_id);
    dst.put_u64(w.session_id);
    dst.put_u32(w.max_body);
}

/// Appends a `JOINED` or `LEFT` frame.
pub fn encode_room_reply(dst: &mut BytesMut, kind: u8, room: &[u8]) {
    put_header(dst, kind, room.len());
    dst.put_slice(room);
}

/// Appends an `ERROR` frame; `text` is cut to the error-text limit.
pub fn encode_error_raw(dst: &mut BytesMut, code: u16, text: &[u8]) {
    let text = &text[..text.len().min(crate::limits::ERROR_TEXT_BYTES_MAX)];
    put_header(dst, frame_type::ERROR, 2 + text.len());
    dst.put_u16(code);
    dst.put_slice(text);
}

/// Appends a `MEMBERS` frame listing `listed` (at most [`crate::limits::MEMBERS_LISTED_MAX`]
/// are written) of a room of `total` members.
pub fn encode_members<'a>(dst: &mut BytesMut, room: &[u8], total: u32, listed: impl Iterator<Item = (u64, &'a [u8])>) {
    let at = dst.len();
    put_header(dst, frame_type::MEMBERS, 0);
    put_short_str(dst, room);
    dst.put_u32(total);
    let count_at = dst.len();
    dst.put_u16(0);
    let mut count = 0u16;
    for (session_id, name) in listed.take(crate::limits::MEMBERS_LISTED_MAX) {
        dst.put_u64(session_id);
        put_short_str(dst, name);
        count += 1;
    }
    dst[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    patch_body_len(dst, at);
}

/// Appends a `ROOM_LIST` frame listing `listed` (at most [`crate::limits::ROOMS_LISTED_MAX`]
/// are written) of `total` rooms.
pub fn encode_room_list<'a>(dst: &mut BytesMut, total: u32, listed: impl Iterator<Item = (&'a [u8], u32)>) {
    let at = dst.len();
    put_header(dst, frame_type::ROOM_LIST, 0);
    dst.put_u32(total);
    let count_at = dst.len();
    dst.put_u16(0);
    let mut count = 0u16;
    for (room, members) in listed.take(crate::limits::ROOMS_LISTED_MAX) {
        put_short_str(dst, room);
        dst.put_u32(members);
        count += 1;
    }
    dst[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    patch_body_len(dst, at);
}

/// Parses a `PRESENCE` body (the same for the client frame and the peer frame).
pub fn parse_presence(body: Bytes) -> Result<PresenceEvent, DecodeError> {
    let mut f = Fields { body };
    let kind = PresenceKind::from_u8(f.u8("PRESENCE.kind")?).ok_or(DecodeError::Malformed("PRESENCE.kind"))?;
    let session_id = f.u64("PRESENCE.session_id")?;
    let room = f.short_str("PRESENCE.room")?;
    let name = f.short_str("PRESENCE.name")?;
    f.end("PRESENCE has trailing bytes")?;
    Ok(PresenceEvent { kind, session_id, room, name })
}

/// Appends a `PRESENCE` frame (`kind` is [`frame_type::PRESENCE`], or the peer-link type that
/// carries the same body).
pub fn encode_presence_as(
    dst: &mut BytesMut,
    kind: u8,
    event: PresenceKind,
    session_id: u64,
    room: &[u8],
    name: &[u8],
) {
    put_header(dst, kind, 1 + 8 + 1 + room.len() + 1 + name.len());
    dst.put_u8(event as u8);
    dst.put_u64(session_id);
    put_short_str(dst, room);
    put_short_str(dst, name);
}

/// Appends a `PRESENCE` frame.
pub fn encode_presence(dst: &mut BytesMut, kind: PresenceKind, session_id: u64, room: &[u8], name: &[u8]) {
    encode_presence_as(dst, frame_type::PRESENCE, kind, session_id, room, name);
}

/// Writes the body length of the frame whose header starts at `at` and runs to the end of `dst`.
fn patch_body_len(dst: &mut BytesMut, at: usize) {
    let body_len = dst.len() - at - HEADER_BYTES;
    debug_assert!(body_len <= FRAME_BODY_BYTES_MAX, "encoder wrote an oversize frame");
    dst[at..at + 4].copy_from_slice(&(body_len as u32).to_be_bytes());
}

/// Appends a `PING` or `PONG` frame.
pub fn encode_nonce(dst: &mut BytesMut, kind: u8, nonce: u64) {
    put_header(dst, kind, 8);
    dst.put_u64(nonce);
}

#[cfg(test)]
mod tests;
