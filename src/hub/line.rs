//! Line mode for people: the greeting, the `/commands`, and the answers to `WHO` and `ROOMS`
//! in both dialects.
//!
//! A line-mode connection is in at most one room at a time (the default room at first); what
//! it types goes there. Everything the server says to it is text: `* ` status lines, presence
//! lines and `error …` lines, never a binary frame.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Hub, State};
use crate::codec::line::encode_status_line;
use crate::codec::{encode_members, encode_room_list, encode_room_reply, frame_type};
use crate::limits::{CLOSE_LINGER, DEFAULT_ROOM, MEMBERS_LISTED_MAX, ROOMS_LISTED_MAX};
use crate::router::ConnKey;
use crate::session::{check_room, valid_user_name, LineCommand, Mode};

/// What `/help` prints, one status line each.
const HELP: [&str; 8] = [
    "type a line and press enter to send it to the room; //text sends /text",
    "/nick NAME    take a new name (1-32 of A-Z a-z 0-9 _ - .)",
    "/join ROOM    leave this room and join ROOM",
    "/leave        leave this room",
    "/who [ROOM]   who is in this room (or ROOM)",
    "/rooms        the rooms and how many are in each",
    "/help         this list",
    "/quit         leave and hang up",
];

impl<T, L> Hub<T, L> {
    /// A line-mode client arrived: it joins the default room and is greeted once that join
    /// took effect.
    pub(super) fn line_start(&mut self, key: ConnKey) {
        // A fresh connection is in no room, so this join cannot hit a limit.
        self.join_unchecked(key, DEFAULT_ROOM.as_bytes(), false, true);
    }

    /// A join took effect (the room's announcement was acknowledged): `JOINED` (and, when asked
    /// for, the room's `MEMBERS`) for a binary client; the greeting or a status line in line mode.
    pub(super) fn join_took_effect(&mut self, key: ConnKey, room: &[u8]) {
        if self.lost_name_race(key, room) {
            return;
        }
        let conn = &mut self.conns[key];
        if conn.session.mode() == Mode::Line {
            conn.session.set_line_room(Some(Bytes::copy_from_slice(room)));
            let name = String::from_utf8_lossy(conn.session.name()).into_owned();
            let first = !std::mem::replace(&mut conn.greeted, true);
            self.router.set_watching(key, room, true);
            let room_text = String::from_utf8_lossy(room);
            let others = match self.presence.count(room).saturating_sub(1) {
                0 => "nobody else".to_string(),
                1 => "1 other".to_string(),
                n => format!("{n} others"),
            };
            let text = if first {
                format!("welcome {name}: you are in {room_text} with {others}; type to chat, /help for commands")
            } else {
                format!("you are in {room_text} with {others}")
            };
            self.say(key, &text);
            return;
        }
        let watch = std::mem::take(&mut conn.watch_pending);
        self.reply(key, |dst| encode_room_reply(dst, frame_type::JOINED, room));
        if watch {
            self.router.set_watching(key, room, true);
            self.who(key, room);
        }
    }

    /// Answers `WHO`: the room's members as this core knows them (`MEMBERS`, or a line).
    pub(super) fn who(&mut self, key: ConnKey, room: &[u8]) {
        let count = self.presence.count(room);
        let members = self.presence.members(room);
        let total = u32::try_from(count).unwrap_or(u32::MAX);
        if self.conns[key].session.mode() != Mode::Line {
            let mut frame = BytesMut::new();
            encode_members(&mut frame, room, total, members.map(|e| (e.session_id, &e.name[..])));
            return self.reply(key, |dst| dst.extend_from_slice(&frame));
        }
        let asker = self.conns[key].session.session_id();
        let node = u64::from(self.config.node_id);
        let mut text = format!("{count} in {}:", String::from_utf8_lossy(room));
        for (i, entry) in members.take(MEMBERS_LISTED_MAX).enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let you = if entry.session_id == asker { " (you)" } else { "" };
            let _ = write!(text, "{sep}{}", String::from_utf8_lossy(&entry.name));
            // Names are unique per node only: a shared one is told apart by its node.
            let entry_node = entry.session_id >> 48;
            if entry_node != node && self.presence.holders(room, &entry.name).nth(1).is_some() {
                let _ = write!(text, "@{entry_node}");
            }
            text.push_str(you);
        }
        if count > MEMBERS_LISTED_MAX {
            let _ = write!(text, " and {} more", count - MEMBERS_LISTED_MAX);
        }
        self.say(key, &text);
    }

    /// Answers `ROOMS`: every room with members, by name (`ROOM_LIST`, or a line).
    pub(super) fn list_rooms(&mut self, key: ConnKey) {
        let rooms = self.presence.rooms();
        let total = u32::try_from(rooms.len()).unwrap_or(u32::MAX);
        if self.conns[key].session.mode() != Mode::Line {
            let mut frame = BytesMut::new();
            let listed = rooms.iter().map(|(room, n)| (&room[..], u32::try_from(*n).unwrap_or(u32::MAX)));
            encode_room_list(&mut frame, total, listed);
            return self.reply(key, |dst| dst.extend_from_slice(&frame));
        }
        let mut text = match rooms.len() {
            1 => "1 room:".to_string(),
            n => format!("{n} rooms:"),
        };
        for (i, (room, n)) in rooms.iter().take(ROOMS_LISTED_MAX).enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(text, "{sep}{} ({n})", String::from_utf8_lossy(room));
        }
        if rooms.len() > ROOMS_LISTED_MAX {
            let _ = write!(text, " and {} more", rooms.len() - ROOMS_LISTED_MAX);
        }
        self.say(key, &text);
    }

    /// Carries out a line-mode `/command`.
    pub(super) fn line_command(&mut self, key: ConnKey, command: LineCommand, now: Instant) {
        let current = self.conns[key].session.line_room().cloned();
        match command {
            LineCommand::Nick(name) => self.nick(key, name),
            LineCommand::Join(room) => {
                if let Err(fault) = check_room(&room) {
                    return self.request_error(key, fault.code, &fault.text);
                }
                if current.as_deref() == Some(&room[..]) {
                    return self.say(key, &format!("you are already in {}", String::from_utf8_lossy(&room)));
                }
                let name = self.conns[key].session.name().clone();
                // Checked before leaving the current room: refused, the user stays where it was.
                if !self.name_free(key, &room, &name, "; /nick NAME first (you stay where you are)") {
                    return;
                }
                if let Some(current) = current {
                    if self.leave(key, &current).is_err() {
                        return;
                    }
                    self.conns[key].session.set_line_room(None);
                }
                self.join(key, &room, false, true);
            }
            LineCommand::Leave => match current {
                Some(room) => {
                    if self.leave(key, &room).is_ok() {
                        self.conns[key].session.set_line_room(None);
                        let text = format!("you left {}; /join ROOM to chat again", String::from_utf8_lossy(&room));
                        self.say(key, &text);
                    }
                }
                None => self.say(key, "you are in no room: /join ROOM"),
            },
            LineCommand::Who(room) => match room.or(current) {
                Some(room) => match check_room(&room) {
                    Ok(()) => self.who(key, &room),
                    Err(fault) => self.request_error(key, fault.code, &fault.text),
                },
                None => self.say(key, "you are in no room: /who ROOM, or /join ROOM"),
            },
            LineCommand::Rooms => self.list_rooms(key),
            LineCommand::Help => {
                for line in HELP {
                    self.say(key, line);
                }
            }
            LineCommand::Quit => {
                self.leave_all(key, crate::codec::PresenceKind::Left);
                self.say(key, "bye");
                self.hang_up(key, now);
            }
            LineCommand::Unknown(word) => {
                let text = format!("unknown command /{}: /help lists the commands", String::from_utf8_lossy(&word));
                self.say(key, &text);
            }
            LineCommand::NoRoom => self.say(key, "you are in no room: /join ROOM to chat"),
        }
    }

    /// `/nick NAME`: a new name, shown to the rooms the connection is in.
    fn nick(&mut self, key: ConnKey, name: Bytes) {
        if !valid_user_name(&name) {
            // Not INVALID_NAME: that code is fatal, and a typo in a command must not hang up.
            return self.say(key, "a name is 1-32 of A-Z a-z 0-9 _ - . (your name is unchanged)");
        }
        let session = &mut self.conns[key].session;
        if *session.name() == name {
            return;
        }
        if !self.name_free_everywhere(key, &name) {
            return;
        }
        let session = &mut self.conns[key].session;
        let name = Bytes::copy_from_slice(&name);
        session.set_name(name.clone());
        let session_id = session.session_id();
        for room in self.router.rooms_of_conn(key) {
            self.local_presence(&room, crate::codec::PresenceKind::Renamed, session_id, &name);
        }
        self.say(key, &format!("you are now {}", String::from_utf8_lossy(&name)));
    }

    /// Queues a `* text` status line for a line-mode connection.
    pub(super) fn say(&mut self, key: ConnKey, text: &str) {
        let mut line = BytesMut::new();
        encode_status_line(&mut line, text);
        self.push_line(key, &line);
    }

    /// Ends a connection without an error: what is queued (a farewell) is flushed, then the
    /// socket is shut down, or dropped at the linger deadline.
    fn hang_up(&mut self, key: ConnKey, now: Instant) {
        let conn = &mut self.conns[key];
        conn.state = State::Closing { deadline: now + CLOSE_LINGER };
        conn.input.clear();
        self.queue_flush(key);
    }
}
