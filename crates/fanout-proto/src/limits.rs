//! Limits of the wire protocol itself, the same for every server and client, with their units
//! in their names (`protocol.md` documents each). The server's own limits, with these
//! re-exported, are in the `fanout` crate's `limits`. Relations are checked at compile time.

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

/// How long a client that reconnects under its name keeps retrying a `JOIN` refused with
/// `NAME_TAKEN` (its old session may still hold the name until the server has found it dead),
/// with [`NAME_TAKEN_RETRY_DELAY_MIN`]..[`NAME_TAKEN_RETRY_DELAY_MAX`] between tries.
pub const NAME_TAKEN_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(4);

/// First pause before retrying a `JOIN` refused with `NAME_TAKEN`; it doubles up to the max.
pub const NAME_TAKEN_RETRY_DELAY_MIN: std::time::Duration = std::time::Duration::from_millis(25);

/// Longest pause between two retries of a `JOIN` refused with `NAME_TAKEN`.
pub const NAME_TAKEN_RETRY_DELAY_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest text in an `ERROR` frame; longer text is cut.
pub const ERROR_TEXT_BYTES_MAX: usize = 256;

/// The room line-mode clients live in.
pub const DEFAULT_ROOM: &str = "lobby";

/// Most members one `MEMBERS` reply (and a line-mode `/who`) lists; the total is always given.
pub const MEMBERS_LISTED_MAX: usize = 256;

/// Most rooms one `ROOM_LIST` reply (and a line-mode `/rooms`) lists; the total is always given.
pub const ROOMS_LISTED_MAX: usize = 256;

const _: () = assert!(PAYLOAD_BYTES_MAX + MESSAGE_FIELDS_BYTES_MAX <= FRAME_BODY_BYTES_MAX);

const _: () = assert!(FRAME_BODY_BYTES_MAX < (1 << 24), "binary frames must start with 0x00");

const _: () = assert!(1 + ROOM_NAME_BYTES_MAX + PAYLOAD_BYTES_MAX <= FRAME_BODY_BYTES_MAX);

const _: () = assert!(LINE_BYTES_MAX <= PAYLOAD_BYTES_MAX);

const _: () = assert!(DEFAULT_ROOM.len() <= ROOM_NAME_BYTES_MAX);

const _: () = assert!(ROOM_NAME_BYTES_MAX <= u8::MAX as usize, "room names have a one-byte length");

const _: () = assert!(USER_NAME_BYTES_MAX <= u8::MAX as usize, "user names have a one-byte length");

const _: () = assert!(
    1 + ROOM_NAME_BYTES_MAX + 4 + 2 + MEMBERS_LISTED_MAX * (8 + 1 + USER_NAME_BYTES_MAX) <= FRAME_BODY_BYTES_MAX,
    "a MEMBERS reply fits one frame"
);

const _: () = assert!(
    4 + 2 + ROOMS_LISTED_MAX * (1 + ROOM_NAME_BYTES_MAX + 4) <= FRAME_BODY_BYTES_MAX,
    "a ROOM_LIST reply fits one frame"
);

const _: () = assert!(MEMBERS_LISTED_MAX <= u16::MAX as usize && ROOMS_LISTED_MAX <= u16::MAX as usize);

/// Bytes one TLS connection may hold that its socket has not taken yet: plaintext written before
/// the handshake finished plus encrypted records (rustls's `set_buffer_limit`). Past it the TLS
/// layer takes no more plaintext, so the connection's own output queue, where the slow-consumer
/// limit is counted, holds the backlog.
pub const TLS_BUFFERED_BYTES_MAX: usize = 64 * 1024;

/// Largest PEM file (certificate chain, private key, CA bundle) read for TLS: a whole public CA
/// bundle is about 200 KiB.
pub const PEM_FILE_BYTES_MAX: usize = 1024 * 1024;

/// Largest TLS record: 16 KiB of plaintext plus its header, padding and tag (RFC 8446 §5.2).
pub const TLS_RECORD_BYTES_MAX: usize = 16 * 1024 + 256 + 5;

const _: () = assert!(TLS_BUFFERED_BYTES_MAX >= TLS_RECORD_BYTES_MAX, "the TLS buffer takes a whole record");
