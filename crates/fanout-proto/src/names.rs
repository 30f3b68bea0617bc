//! The rules for user and room names (`protocol.md`, "Names"), for servers and clients alike.

use crate::limits::{ROOM_NAME_BYTES_MAX, USER_NAME_BYTES_MAX};

/// Whether `name` follows the user-name rules: 1..=32 bytes of `A-Z a-z 0-9 _ - .`.
pub fn valid_user_name(name: &[u8]) -> bool {
    (1..=USER_NAME_BYTES_MAX).contains(&name.len())
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `room` follows the room-name rules: 1..=64 bytes of printable ASCII without space.
pub fn valid_room_name(room: &[u8]) -> bool {
    (1..=ROOM_NAME_BYTES_MAX).contains(&room.len()) && room.iter().all(|&b| (0x21..=0x7E).contains(&b))
}
