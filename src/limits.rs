//! Every limit of the server in one place, with its unit in its name.
//!
//! `protocol.md` documents each of these; `config.rs` lets an operator change the ones that
//! have a flag. Relations between them are checked at compile time at the bottom.

use std::time::Duration;

/// Bytes in a frame header: `length: u32` then `type: u8`.
pub const HEADER_BYTES: usize = 5;

/// Largest `PUBLISH` payload a client may send (and so the largest `MESSAGE` payload).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Longest user name in `HELLO`.
pub const USER_NAME_BYTES_MAX: usize = 32;

/// Longest room name.
pub const ROOM_NAME_BYTES_MAX: usize = 64;

/// Longest `HELLO` token (it has a one-byte length).
pub const TOKEN_BYTES_MAX: usize = 255;

/// Bytes of a `MESSAGE` body besides its payload, at most: stream, seq, room and name fields.
pub const MESSAGE_FIELDS_BYTES_MAX: usize = 8 + 8 + 1 + ROOM_NAME_BYTES_MAX + 1 + USER_NAME_BYTES_MAX;

/// Largest frame body the server accepts or sends: a full payload plus 1 KiB for fields.
pub const FRAME_BODY_BYTES_MAX: usize = PAYLOAD_BYTES_MAX + 1024;

/// Longest line a line-mode client may send, newline excluded.
pub const LINE_BYTES_MAX: usize = 4096;

/// Longest text in an `ERROR` frame; longer text is cut.
pub const ERROR_TEXT_BYTES_MAX: usize = 256;

/// Default limit on rooms one connection may be a member of at once.
pub const ROOMS_PER_CONNECTION_MAX: usize = 64;

/// Default limit on bytes queued for one connection before it is cut as a slow consumer.
pub const OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Default limit on concurrent client connections per server.
pub const CONNECTIONS_MAX: usize = 100_000;

/// Default time a binary client has between connecting and sending `HELLO`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection being closed for a fault may take to read its error and hang up.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Default silence from a client after which the server sends `PING`.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Default further silence after a `PING` before the server gives up on the client.
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from one connection per event-loop turn, so one flooding client cannot starve
/// the others; the rest is read on the next turn.
pub const READ_BYTES_PER_TURN_MAX: usize = 256 * 1024;

/// Bytes the reactor asks the kernel for in one `read`.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most buffers handed to one vectored write (Linux `IOV_MAX` is 1024).
pub const IOVECS_PER_WRITE_MAX: usize = 64;

/// Frames of this size or more are shared by reference count; smaller ones are copied into a
/// connection's output buffer. Chosen by `benches/fanout.rs`: copying wins below 384 B,
/// sharing from 512 B (see the README for the figures).
pub const SHARE_FRAME_BYTES_MIN: usize = 512;

/// The room line-mode clients live in.
pub const DEFAULT_ROOM: &str = "lobby";

/// How long a new connection may stay silent before it is taken as a line-mode (text) client
/// and greeted. Binary clients send `HELLO` the moment they connect, so they decide their
/// dialect by their first byte long before this; a person with `nc` who only listens is greeted
/// after it and then receives the room's messages.
pub const LINE_MODE_SILENCE: Duration = Duration::from_millis(150);

/// Idle time before the kernel probes a client's TCP connection (line-mode clients are never
/// pinged, so this is what finds a dead `nc`).
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Time between two TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered TCP keepalive probes before the kernel drops the connection: a dead peer is found
/// within idle + probes × interval = 90 s.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Most members one `MEMBERS` reply (and a line-mode `/who`) lists; the total is always given.
pub const MEMBERS_LISTED_MAX: usize = 256;

/// Most rooms one `ROOM_LIST` reply (and a line-mode `/rooms`) lists; the total is always given.
pub const ROOMS_LISTED_MAX: usize = 256;

/// Most presence entries (one per member of a room, cluster-wide) one core keeps; entries
/// from peers beyond it are not stored, so `/who` shows fewer members than there are.
pub const PRESENCE_ENTRIES_MAX: usize = 1_000_000;

const _: () = assert!(PAYLOAD_BYTES_MAX + MESSAGE_FIELDS_BYTES_MAX <= FRAME_BODY_BYTES_MAX);
const _: () = assert!(FRAME_BODY_BYTES_MAX < (1 << 24), "binary frames must start with 0x00");
const _: () = assert!(1 + ROOM_NAME_BYTES_MAX + PAYLOAD_BYTES_MAX <= FRAME_BODY_BYTES_MAX);
const _: () = assert!(LINE_BYTES_MAX <= PAYLOAD_BYTES_MAX);
const _: () = assert!(DEFAULT_ROOM.len() <= ROOM_NAME_BYTES_MAX);
const _: () = assert!(ROOM_NAME_BYTES_MAX <= u8::MAX as usize, "room names have a one-byte length");
const _: () = assert!(USER_NAME_BYTES_MAX <= u8::MAX as usize, "user names have a one-byte length");
const _: () = assert!(READ_CHUNK_BYTES <= READ_BYTES_PER_TURN_MAX);
const _: () = assert!(OUTPUT_BYTES_MAX >= HEADER_BYTES + FRAME_BODY_BYTES_MAX);
const _: () = assert!(
    1 + ROOM_NAME_BYTES_MAX + 4 + 2 + MEMBERS_LISTED_MAX * (8 + 1 + USER_NAME_BYTES_MAX) <= FRAME_BODY_BYTES_MAX,
    "a MEMBERS reply fits one frame"
);
const _: () = assert!(
    4 + 2 + ROOMS_LISTED_MAX * (1 + ROOM_NAME_BYTES_MAX + 4) <= FRAME_BODY_BYTES_MAX,
    "a ROOM_LIST reply fits one frame"
);
const _: () = assert!(MEMBERS_LISTED_MAX <= u16::MAX as usize && ROOMS_LISTED_MAX <= u16::MAX as usize);
const _: () = assert!(LINE_MODE_SILENCE.as_millis() < HANDSHAKE_TIMEOUT.as_millis());

/// How long accepting pauses after the process ran out of file descriptors (client and node
/// listeners alike): the rest waits in the kernel's backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Node links accepted and not yet authenticated, at most; a connection to the cluster port
/// beyond it is closed at once (a real node redials), so a flood of half-open connections costs
/// no handshake state.
pub const NODE_LINKS_PENDING_MAX: usize = 64;

/// Longest a `JOIN` (or a gateway relaying an announcement) waits for a peer's `INTEREST_ACK`;
/// a peer that has not answered by then is not waited for (checked once per timer tick).
pub const INTEREST_ACK_WAIT_MAX: Duration = Duration::from_secs(2);

/// Longest the oldest unsent byte of data may wait on a node link before the link is cut as too
/// slow (grey failure); with the kernel's share bounded by [`NODE_LINK_UNSENT_BYTES_MAX`], this
/// bounds how late a message crossing a slow link can be.
pub const NODE_LINK_LAG_MAX: Duration = Duration::from_secs(2);

/// Bytes a node link's socket may hold that the kernel has not sent yet (`TCP_NOTSENT_LOWAT`):
/// the backlog waits in the link's queues, where control frames can pass it and its age is known.
pub const NODE_LINK_UNSENT_BYTES_MAX: u32 = 128 * 1024;

/// Bytes queued on one peer link before further forwards to that peer are dropped.
pub const LINK_OUTPUT_BYTES_MAX: usize = 64 * 1024 * 1024;
