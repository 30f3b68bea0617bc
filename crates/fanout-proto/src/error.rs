//! Error types: what a peer did wrong (mapped to a wire [`ErrorCode`]) and what decoding found.

use std::fmt;

/// The `code` of an `ERROR` frame; see the table in `protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// A body does not match its layout.
    MalformedFrame = 1,
    /// A header declared a body longer than the limit.
    FrameTooLarge = 2,
    /// The type byte is not assigned.
    UnknownFrameType = 3,
    /// An assigned type that is not allowed in this direction or state.
    UnexpectedFrame = 4,
    /// `HELLO.version` is not one we speak.
    UnsupportedVersion = 5,
    /// `HELLO.name` breaks the name rules.
    InvalidName = 6,
    /// Output queued for the connection passed its limit.
    SlowConsumer = 7,
    /// Handshake or keepalive timed out.
    Timeout = 8,
    /// The connection limit is reached.
    ServerFull = 9,
    /// The server is stopping.
    ShuttingDown = 10,
    /// Authentication failed (reserved).
    Unauthorized = 11,
    /// A line-mode line is longer than the limit.
    LineTooLong = 12,
    /// A `PUBLISH` payload is longer than the limit.
    PayloadTooLarge = 13,
    /// The server is being taken out of service (lame duck): reconnect to another.
    Draining = 14,
    /// A room name breaks the room rules.
    InvalidRoom = 256,
    /// A `JOIN` would pass the rooms-per-connection limit.
    TooManyRooms = 257,
    /// `LEAVE` or `PUBLISH` of a room the connection is not in.
    NotAMember = 258,
    /// `JOIN` of a room the connection is already in.
    AlreadyAMember = 259,
    /// `JOIN` of a room where another member connected to this node holds the connection's
    /// name (retry: a stale holder is probed and closed), or this member lost a same-name race
    /// between two cores and was taken out of the room.
    NameTaken = 260,
}

impl ErrorCode {
    /// Every code, for tests and documentation checks.
    pub const ALL: [ErrorCode; 19] = [
        Self::MalformedFrame,
        Self::FrameTooLarge,
        Self::UnknownFrameType,
        Self::UnexpectedFrame,
        Self::UnsupportedVersion,
        Self::InvalidName,
        Self::SlowConsumer,
        Self::Timeout,
        Self::ServerFull,
        Self::ShuttingDown,
        Self::Unauthorized,
        Self::LineTooLong,
        Self::PayloadTooLarge,
        Self::Draining,
        Self::InvalidRoom,
        Self::TooManyRooms,
        Self::NotAMember,
        Self::AlreadyAMember,
        Self::NameTaken,
    ];

    /// Fatal codes close the connection; request errors (256 and up) leave it open.
    pub fn is_fatal(self) -> bool {
        (self as u16) < 256
    }

    /// The code's name as `protocol.md` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedFrame => "MALFORMED_FRAME",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::UnknownFrameType => "UNKNOWN_FRAME_TYPE",
            Self::UnexpectedFrame => "UNEXPECTED_FRAME",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::InvalidName => "INVALID_NAME",
            Self::SlowConsumer => "SLOW_CONSUMER",
            Self::Timeout => "TIMEOUT",
            Self::ServerFull => "SERVER_FULL",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::LineTooLong => "LINE_TOO_LONG",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::Draining => "DRAINING",
            Self::InvalidRoom => "INVALID_ROOM",
            Self::TooManyRooms => "TOO_MANY_ROOMS",
            Self::NotAMember => "NOT_A_MEMBER",
            Self::AlreadyAMember => "ALREADY_A_MEMBER",
            Self::NameTaken => "NAME_TAKEN",
        }
    }

    /// The code for a wire value, if it is one we know.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u16 == value)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u16)
    }
}

/// Why bytes could not be decoded into a frame; every variant maps to a fatal [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header declared a body longer than the decoder's limit.
    FrameTooLarge {
        /// Declared body length.
        declared: u64,
        /// The limit it broke.
        max: usize,
    },
    /// The type byte is not assigned.
    UnknownFrameType(u8),
    /// An assigned type not valid in this direction.
    UnexpectedFrame(u8),
    /// The body does not match its layout; the text says which field.
    Malformed(&'static str),
    /// A `PUBLISH` payload longer than the limit.
    PayloadTooLarge(usize),
    /// A line-mode line longer than the limit.
    LineTooLong,
}

impl DecodeError {
    /// The wire code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnknownFrameType(_) => ErrorCode::UnknownFrameType,
            Self::UnexpectedFrame(_) => ErrorCode::UnexpectedFrame,
            Self::Malformed(_) => ErrorCode::MalformedFrame,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::LineTooLong => ErrorCode::LineTooLong,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { declared, max } => {
                write!(f, "frame body of {declared} bytes is over the limit of {max}")
            }
            Self::UnknownFrameType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            Self::UnexpectedFrame(t) => write!(f, "frame type 0x{t:02x} is not allowed here"),
            Self::Malformed(what) => write!(f, "malformed frame: {what}"),
            Self::PayloadTooLarge(len) => write!(f, "payload of {len} bytes is over the limit"),
            Self::LineTooLong => write!(f, "line is over the limit"),
        }
    }
}

impl std::error::Error for DecodeError {}
