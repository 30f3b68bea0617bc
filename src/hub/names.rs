//! Names unique per room on one node: the check at `JOIN` (and line-mode `/join`, `/nick`),
//! the probe of a holder that may be dead, and the tie-break when two cores admit one name at
//! the same moment.
//!
//! * **The check.** A core refuses a `JOIN` with `NAME_TAKEN` (a request error: retry it) when
//!   its presence view lists another member of this node in the room under the same name.
//! * **Takeover.** A client that reconnects under its name may find its old session still
//!   holding it: a half-open connection not yet found dead, or a leave not yet heard from the
//!   sibling core. So the refusal also probes the holder — here if it is ours, else by asking
//!   its core over the sibling link (a peer `PRESENCE` of kind probe): it is sent a `PING` at
//!   once and closed with `TIMEOUT` unless it says anything within [`NAME_PROBE_TIMEOUT`]. A
//!   client that reconnects retries its `JOIN` for a bounded time (`Client::join_retrying`), so
//!   it gets its name back once its old session is gone.
//! * **The race.** Sibling cores learn of each other's members asynchronously, so two may admit
//!   one name in one room at once. When a core learns of a same-name member of its node from a
//!   sibling, the member with the greater (version, session id) gives way: if it is ours, it is
//!   told `NAME_TAKEN` and taken out of the room (a binary client also gets `LEFT`; one still
//!   waiting for its `JOINED` gets the error instead). Both cores compute the same, so one
//!   holder remains once presence has converged.
//!
//! Across nodes names are not unique: that would need consensus, which a relay that keeps
//! serving through a partition does not wait for (see `protocol.md`, presence).

use bytes::Bytes;

use super::Hub;
use crate::codec::peer::{encode_presence as encode_peer_presence, PeerPresenceKind};
use crate::codec::{encode_room_reply, frame_type};
use crate::error::ErrorCode;
use crate::limits::NAME_PROBE_TIMEOUT;
use crate::link::{LinkClass, LinkState};
use crate::presence::Origin;
use crate::router::{ConnKey, ID_COUNTER_BITS};
use crate::session::Mode;

impl<T, L> Hub<T, L> {
    /// Whether `session_id` is a session of this node (any core).
    fn of_this_node(&self, session_id: u64) -> bool {
        session_id >> 48 == u64::from(self.config.node_id)
    }

    /// Another member of this node that holds `name` in `room`, as this core sees it.
    fn name_holder(&self, key: ConnKey, room: &[u8], name: &[u8]) -> Option<u64> {
        let own = self.conns[key].session.session_id();
        let holder = self.presence.holders(room, name).find(|e| e.session_id != own && self.of_this_node(e.session_id));
        holder.map(|e| e.session_id)
    }

    /// Whether `key` may take `name` in `room`; if not, it is told `NAME_TAKEN` (with `after`
    /// for line mode: what is left unchanged) and a holder of this core is probed.
    pub(super) fn name_free(&mut self, key: ConnKey, room: &[u8], name: &[u8], after: &str) -> bool {
        let Some(holder) = self.name_holder(key, room, name) else {
            return true;
        };
        self.probe_holder(room, holder, name);
        let (name, room) = (String::from_utf8_lossy(name), String::from_utf8_lossy(room));
        let text = format!("the name {name} is taken in {room} on this node{after}");
        self.request_error(key, ErrorCode::NameTaken, &text);
        false
    }

    /// Has the member holding a name someone asks for checked: probed here if it is ours, else
    /// by its own core, asked over the sibling link (a peer `PRESENCE` of kind probe).
    fn probe_holder(&mut self, room: &[u8], holder: u64, name: &[u8]) {
        let core = (holder >> ID_COUNTER_BITS) & 0xFF;
        if core == u64::from(self.config.core_id) {
            return self.probe_member(room, holder);
        }
        let sibling = self.links.iter().find(|(_, l)| {
            l.class == LinkClass::Sibling
                && matches!(l.state(), LinkState::Up { core_id, .. } if u64::from(core_id) == core)
        });
        if let Some((peer, _)) = sibling {
            let probe = PeerPresenceKind::Probe;
            self.send_to_peer(peer, |dst| encode_peer_presence(dst, 0, probe, holder, room, name));
        }
    }

    /// Pings our member `session_id` of `room` (someone asked for its name); it is closed unless
    /// it answers within [`NAME_PROBE_TIMEOUT`] (see `Hub::tick`). Not ours, or gone: nothing.
    pub(super) fn probe_member(&mut self, room: &[u8], session_id: u64) {
        let (Some(now), Some(key)) = (self.clock, self.member_key(room, session_id)) else {
            return;
        };
        if let Some(nonce) = self.conns[key].session.probe(now, NAME_PROBE_TIMEOUT) {
            self.reply(key, |dst| crate::codec::encode_nonce(dst, frame_type::PING, nonce));
        }
    }

    /// The connection of our member `session_id` of `room`. O(members): only on a conflict.
    fn member_key(&self, room: &[u8], session_id: u64) -> Option<ConnKey> {
        let members = self.router.members(room)?;
        members.iter().map(|m| m.conn).find(|k| self.conns[*k].session.session_id() == session_id)
    }

    /// A sibling's member `theirs` = (version, session id) took `name` in `room`: each of ours
    /// with that name and a greater (version, session id) gives way. Ours still waiting for
    /// `JOINED` are settled when it is due ([`Hub::lost_name_race`]).
    pub(super) fn settle_name_race(&mut self, room: &[u8], theirs: (u64, u64), name: &[u8]) {
        if !self.of_this_node(theirs.1) {
            return;
        }
        let losers: Vec<u64> = self
            .presence
            .holders(room, name)
            .filter(|e| e.origin == Origin::Local && (e.version, e.session_id) > theirs)
            .map(|e| e.session_id)
            .collect();
        for session_id in losers {
            match self.member_key(room, session_id) {
                Some(key) if !self.conns[key].awaiting_joined => self.give_way(key, room, true),
                _ => {}
            }
        }
    }

    /// Whether `key`, whose join of `room` is about to take effect, lost its name to a member
    /// of a sibling core that took the same name at the same moment; if so it is out of the
    /// room again and told `NAME_TAKEN` instead of `JOINED`.
    pub(super) fn lost_name_race(&mut self, key: ConnKey, room: &[u8]) -> bool {
        let session_id = self.conns[key].session.session_id();
        let name = self.conns[key].session.name().clone();
        let Some(own) = self.presence.entry(room, session_id).map(|e| e.version) else {
            return false;
        };
        let lost = self.presence.holders(room, &name).any(|e| {
            e.session_id != session_id
                && self.of_this_node(e.session_id)
                && (e.version, e.session_id) < (own, session_id)
        });
        if lost {
            self.give_way(key, room, false);
        }
        lost
    }

    /// Takes `key` out of `room` because another member of this node holds its name there;
    /// `was_joined`: it had its `JOINED` (so a binary client gets `LEFT` too).
    fn give_way(&mut self, key: ConnKey, room: &[u8], was_joined: bool) {
        let name = self.conns[key].session.name().clone();
        self.conns[key].watch_pending = false;
        if self.leave(key, room).is_err() {
            return;
        }
        let (name, room_text) = (String::from_utf8_lossy(&name), String::from_utf8_lossy(room));
        let line_mode = self.conns[key].session.mode() == Mode::Line;
        let text = format!("the name {name} is taken in {room_text} on this node: you are not in {room_text}");
        self.request_error(key, ErrorCode::NameTaken, &text);
        if line_mode {
            if self.conns[key].session.line_room().is_some_and(|r| r[..] == *room) {
                self.conns[key].session.set_line_room(None);
            }
            let hint = format!("/nick NAME, then /join {room_text}");
            return self.say(key, &format!("you are in no room: {hint}"));
        }
        if was_joined {
            self.reply(key, |dst| encode_room_reply(dst, frame_type::LEFT, room));
        }
    }

    /// The name `key` would show in `room` after a `/nick` to `name` is free in every room it
    /// is in; if not, it is told so and keeps its name.
    pub(super) fn name_free_everywhere(&mut self, key: ConnKey, name: &Bytes) -> bool {
        let rooms = self.router.rooms_of_conn(key);
        rooms.iter().all(|room| self.name_free(key, room, name, " (your name is unchanged)"))
    }
}
