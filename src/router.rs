//! Rooms and membership as plain data: which connections are in which room, and who receives
//! a publish. No sockets, no buffers: the hub asks, the router answers.

use std::collections::HashMap;

use bytes::Bytes;
use slab::Slab;

use crate::keyed_slab::SlabKey;

/// The key of a connection in its reactor's slab.
///
/// A newtype, not a bare `usize`, so a connection key is never taken for a link id
/// ([`PeerId`](crate::interest::PeerId)) or a mio token: the reactor maps each to its own token
/// range in `reactor/token.rs`, which asserts the ranges. It prints as its number, so log lines
/// say `connection 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey(usize);

impl ConnKey {
    /// The key of slot `index` of a connection slab (the reactor, reading a token back).
    pub fn new(index: usize) -> Self {
        Self(index)
    }

    /// The slot of the connection slab this key names.
    pub fn index(self) -> usize {
        self.0
    }
}

impl SlabKey for ConnKey {
    fn from_index(index: usize) -> Self {
        Self(index)
    }

    fn index(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One member of a room, as the fan-out loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The member's connection.
    pub conn: ConnKey,
    /// False for `SEND_ONLY` members, who publish but never receive.
    pub receives: bool,
    /// True once the member is told of others joining and leaving (line mode always; binary
    /// clients that joined with the presence flag).
    pub watches: bool,
}

/// A room: its name and its members, in join order.
#[derive(Debug)]
struct Room {
    name: Bytes,
    members: Vec<Member>,
    /// Members with `watches` set, so a presence change in a room nobody watches costs nothing.
    watchers: usize,
}

/// One connection's membership of one room, with the publish stream that membership owns.
#[derive(Debug, Clone, Copy)]
struct Membership {
    room: usize,
    stream: u64,
    last_seq: u64,
    send_only: bool,
}

/// Why the router refused a request; each maps to a request error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The connection is already in the rooms-per-connection limit.
    TooManyRooms,
    /// The connection is not a member of that room.
    NotAMember,
    /// The connection is already a member of that room.
    AlreadyAMember,
}

/// What a join or leave did to the room as a whole; later, interest routing tells peers about
/// a room's first and last local member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The room was created (join) or removed (leave) by this change.
    pub room_edge: bool,
}

/// Everything the fan-out loop needs to deliver one publish.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The room's name, as stored (shared, not copied).
    pub room: &'a Bytes,
    /// The publisher's stream in this room.
    pub stream: u64,
    /// This publish's position in the stream, from 1.
    pub seq: u64,
    /// Every member of the room, the publisher and send-only members included.
    pub members: &'a [Member],
}

/// Bits of the per-core counter at the bottom of session and stream ids (node 16, core 8 above).
pub const ID_COUNTER_BITS: u32 = 40;

/// The counter part of an id.
const ID_COUNTER_MASK: u64 = (1 << ID_COUNTER_BITS) - 1;

/// Hands out one core's ids (sessions or streams): `base | counter`, the 40-bit counter counting
/// up from the process's `epoch` (its start time in microseconds), so a restarted process does
/// not repeat the ids of the one before it. The counter wraps within its 40 bits (never into the
/// core or node bits) and skips 0, so an id is never 0.
#[derive(Debug, Clone)]
pub struct IdIssuer {
    base: u64,
    epoch: u64,
    issued: u64,
}

impl IdIssuer {
    /// Ids `base | (epoch + 1)`, `base | (epoch + 2)`, … modulo 2^40; `base` has its low 40 bits
    /// clear, `epoch` is taken modulo 2^40.
    pub fn new(base: u64, epoch: u64) -> Self {
        debug_assert_eq!(base & ID_COUNTER_MASK, 0, "the id base leaves the counter's 40 bits clear");
        Self { base, epoch: epoch & ID_COUNTER_MASK, issued: 0 }
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        loop {
            self.issued += 1;
            let counter = self.epoch.wrapping_add(self.issued) & ID_COUNTER_MASK;
            if counter != 0 {
                let id = self.base | counter;
                debug_assert_eq!(id & !ID_COUNTER_MASK, self.base, "an id's counter stays in its 40 bits");
                return id;
            }
        }
    }
}

/// How many ids after `epoch` (modulo 2^40) the counter of `id` is: 1 for a process's first id.
/// Line mode uses it for short guest names.
pub fn id_number(id: u64, epoch: u64) -> u64 {
    (id & ID_COUNTER_MASK).wrapping_sub(epoch) & ID_COUNTER_MASK
}

/// Room membership for one reactor.
#[derive(Debug)]
pub struct Router {
    by_name: HashMap<Bytes, usize>,
    rooms: Slab<Room>,
    /// Indexed by connection key; slab keys are dense, so a vector beats a map.
    memberships: Vec<Vec<Membership>>,
    rooms_per_connection_max: usize,
    streams: IdIssuer,
}

impl Router {
    /// A router whose stream ids are `stream_base + 1, + 2, …` and that lets a connection be in
    /// at most `rooms_per_connection_max` rooms.
    #[cfg(any(test, feature = "testing"))]
    pub fn new(stream_base: u64, rooms_per_connection_max: usize) -> Self {
        let streams = IdIssuer::new(stream_base & !ID_COUNTER_MASK, stream_base & ID_COUNTER_MASK);
        Self::with_stream_ids(streams, rooms_per_connection_max)
    }

    /// A router whose stream ids come from `streams` (see [`IdIssuer`]: unique across restarts).
    pub fn with_stream_ids(streams: IdIssuer, rooms_per_connection_max: usize) -> Self {
        Self { by_name: HashMap::new(), rooms: Slab::new(), memberships: Vec::new(), rooms_per_connection_max, streams }
    }

    /// Adds `conn` to `room`, creating the room if it is new.
    pub fn join(&mut self, conn: ConnKey, room: &[u8], send_only: bool) -> Result<Change, RouteError> {
        if self.memberships.len() <= conn.index() {
            self.memberships.resize_with(conn.index() + 1, Vec::new);
        }
        let existing = self.by_name.get(room).copied();
        if let Some(id) = existing {
            if self.memberships[conn.index()].iter().any(|m| m.room == id) {
                return Err(RouteError::AlreadyAMember);
            }
        }
        if self.memberships[conn.index()].len() >= self.rooms_per_connection_max {
            return Err(RouteError::TooManyRooms);
        }
        let id = existing.unwrap_or_else(|| {
            // Own the name: a slice of the read buffer would pin that whole buffer for as long
            // as the room lives.
            let name = Bytes::copy_from_slice(room);
            let id = self.rooms.insert(Room { name: name.clone(), members: Vec::new(), watchers: 0 });
            self.by_name.insert(name, id);
            id
        });
        self.rooms[id].members.push(Member { conn, receives: !send_only, watches: false });
        let stream = self.streams.next_id();
        self.memberships[conn.index()].push(Membership { room: id, stream, last_seq: 0, send_only });
        self.debug_assert_invariants();
        Ok(Change { room_edge: existing.is_none() })
    }

    /// Removes `conn` from `room`, removing the room if it is left empty.
    pub fn leave(&mut self, conn: ConnKey, room: &[u8]) -> Result<Change, RouteError> {
        let id = self.by_name.get(room).copied().ok_or(RouteError::NotAMember)?;
        let list = self.memberships.get_mut(conn.index()).ok_or(RouteError::NotAMember)?;
        let at = list.iter().position(|m| m.room == id).ok_or(RouteError::NotAMember)?;
        list.swap_remove(at);
        let removed = self.remove_member(id, conn);
        self.debug_assert_invariants();
        Ok(Change { room_edge: removed.is_some() })
    }

    /// Removes `conn` from every room it is in (it disconnected); returns how many it left.
    #[cfg(any(test, feature = "testing"))]
    pub fn disconnect(&mut self, conn: ConnKey) -> usize {
        self.disconnect_with(conn, |_| {})
    }

    /// Like [`Router::disconnect`], calling `on_removed` with each room it left empty.
    pub fn disconnect_with(&mut self, conn: ConnKey, mut on_removed: impl FnMut(Bytes)) -> usize {
        let Some(list) = self.memberships.get_mut(conn.index()) else {
            return 0;
        };
        let left = std::mem::take(list);
        for m in &left {
            if let Some(room) = self.remove_member(m.room, conn) {
                on_removed(room);
            }
        }
        self.debug_assert_invariants();
        left.len()
    }

    /// Looks up the room and the publisher's stream for a publish by `conn` to `room`, and
    /// advances that stream's sequence number.
    pub fn publish(&mut self, conn: ConnKey, room: &[u8]) -> Result<Delivery<'_>, RouteError> {
        let id = self.by_name.get(room).copied().ok_or(RouteError::NotAMember)?;
        let list = self.memberships.get_mut(conn.index()).ok_or(RouteError::NotAMember)?;
        let membership = list.iter_mut().find(|m| m.room == id).ok_or(RouteError::NotAMember)?;
        membership.last_seq += 1;
        let (stream, seq) = (membership.stream, membership.last_seq);
        let room = &self.rooms[id];
        Ok(Delivery { room: &room.name, stream, seq, members: &room.members })
    }

    /// Holds back (`false`) or resumes (`true`) deliveries to `conn` in `room`; a send-only
    /// member never receives. A member is held while its `JOINED` waits for peers' acks, so
    /// nothing reaches it before the point its guarantees start from.
    pub fn set_receiving(&mut self, conn: ConnKey, room: &[u8], receiving: bool) {
        let Some(id) = self.by_name.get(room).copied() else {
            return;
        };
        let Some(m) = self.memberships.get(conn.index()).and_then(|list| list.iter().find(|m| m.room == id)) else {
            return;
        };
        let receives = receiving && !m.send_only;
        if let Some(member) = self.rooms[id].members.iter_mut().find(|x| x.conn == conn) {
            member.receives = receives;
        }
    }

    /// Starts (`true`) or stops telling `conn` of presence changes in `room`.
    pub fn set_watching(&mut self, conn: ConnKey, room: &[u8], watching: bool) {
        let Some(id) = self.by_name.get(room).copied() else {
            return;
        };
        let room = &mut self.rooms[id];
        if let Some(member) = room.members.iter_mut().find(|x| x.conn == conn) {
            if member.watches != watching {
                member.watches = watching;
                if watching {
                    room.watchers += 1;
                } else {
                    room.watchers -= 1;
                }
            }
        }
    }

    /// The members of `room` that watch it (are told of presence changes).
    pub fn watchers(&self, room: &[u8]) -> impl Iterator<Item = ConnKey> + '_ {
        let room = self.by_name.get(room).map(|id| &self.rooms[*id]).filter(|r| r.watchers > 0);
        room.into_iter().flat_map(|r| r.members.iter().filter(|m| m.watches).map(|m| m.conn))
    }

    /// The rooms `conn` is in, in join order.
    pub fn rooms_of_conn(&self, conn: ConnKey) -> Vec<Bytes> {
        self.memberships
            .get(conn.index())
            .map_or_else(Vec::new, |list| list.iter().map(|m| self.rooms[m.room].name.clone()).collect())
    }

    /// The members of `room`, if it exists.
    pub fn members(&self, room: &[u8]) -> Option<&[Member]> {
        let id = self.by_name.get(room)?;
        Some(&self.rooms[*id].members)
    }

    /// How many rooms `conn` is in.
    #[cfg(any(test, feature = "testing"))]
    pub fn rooms_of(&self, conn: ConnKey) -> usize {
        self.memberships.get(conn.index()).map_or(0, Vec::len)
    }

    /// How many rooms exist (have at least one member).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Removes one member; returns the room's name if that left the room empty (and gone).
    fn remove_member(&mut self, id: usize, conn: ConnKey) -> Option<Bytes> {
        let room = &mut self.rooms[id];
        let members = &mut room.members;
        if let Some(at) = members.iter().position(|m| m.conn == conn) {
            // Keep join order: fan-out order is then stable and easy to reason about.
            if members.remove(at).watches {
                room.watchers -= 1;
            }
        }
        if members.is_empty() {
            let room = self.rooms.remove(id);
            self.by_name.remove(&room.name);
            return Some(room.name);
        }
        None
    }

    /// Names of every room (the hub cross-checks them against presence).
    pub fn room_names(&self) -> impl Iterator<Item = &Bytes> {
        self.rooms.iter().map(|(_, room)| &room.name)
    }

    fn debug_assert_invariants(&self) {
        // O(members): run in unit tests, not in debug servers holding thousands of members.
        if cfg!(test) {
            self.check_invariants();
        }
    }

    /// Panics if the tables disagree (every member has one membership, no empty room, watcher
    /// counts right). O(members): for tests, simulations and fuzz checks, after every step.
    pub fn check_invariants(&self) {
        assert_eq!(self.by_name.len(), self.rooms.len());
        let mut total = 0;
        for (index, list) in self.memberships.iter().enumerate() {
            let conn = ConnKey::new(index);
            assert!(list.len() <= self.rooms_per_connection_max);
            for m in list {
                assert!(self.rooms[m.room].members.iter().any(|x| x.conn == conn));
            }
            total += list.len();
        }
        let members: usize = self.rooms.iter().map(|(_, r)| r.members.len()).sum();
        assert_eq!(total, members, "every member has exactly one membership");
        for (_, room) in &self.rooms {
            assert!(!room.members.is_empty(), "empty rooms are removed");
            assert_eq!(room.watchers, room.members.iter().filter(|m| m.watches).count());
        }
    }
}

#[cfg(test)]
mod tests;
