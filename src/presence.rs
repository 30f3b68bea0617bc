//! Who is in each room, as plain data: the members of this core, and those its peers told it
//! about, merged so that any order of delivery ends in the same table.
//!
//! Every core is the only writer of its own members' entries (it *owns* them). It stamps each
//! change — a join, a rename, a leave — with a **version** from its own counter
//! ([`Presence::next_version`]), which starts at the process's id epoch (the wall clock in
//! microseconds when clustered, like session ids), so a restarted core's versions never fall
//! below its previous life's. It sends each change to its peers (`PRESENCE` peer frames, relayed
//! by a node's gateway between its cores and the other nodes like a `FORWARD`), and a link that
//! forms starts with every entry the sender may tell that link, each with its version.
//!
//! # The merge rule
//! For one member of one room, the update with the highest version wins ([`Presence::merge`]):
//! * a join or rename newer than what is known sets the member's name; one that is not newer is
//!   stale and changes nothing (so a digest delivered twice, or late, is harmless);
//! * a removal newer than what is known removes the member and leaves a **tombstone** with its
//!   version, so that a late join or rename of the same member (a digest that was already on its
//!   way) cannot bring it back;
//! * a removal at *exactly* the entry's version is a **withdrawal**, not the owner's word: a
//!   gateway that lost the link an entry came by tells its own peers the entry is gone, quoting
//!   the version it had. A withdrawal leaves no tombstone, so the same entry comes back when the
//!   digest of a re-formed link re-delivers it.
//!
//! An entry remembers which link brought it ([`Origin`]), so when a link goes down the entries
//! it brought are dropped at once ([`Presence::remove_origin`]).
//!
//! # Why tombstones are bounded this way
//! A tombstone is only needed while an older update of its member may still arrive. Updates
//! from one owner travel over one ordered path, so stale ones come only from a digest or a
//! relay path that was in flight when the member left; when the link that brought a tombstone
//! goes down, whatever it had in flight is gone with it, and the next link starts from a fresh
//! digest, which lists live members only. So tombstones are kept per link and dropped with
//! it, and besides at most [`crate::limits::PRESENCE_TOMBSTONES_MAX`] are kept, the oldest
//! forgotten first: a stale update older than that many later leaves is not expected on an
//! ordered link. A removal of a member this core never listed leaves no tombstone (on an
//! ordered link a member's join comes before its leave; only a member not kept for lack of room
//! is unknown, and remembering its removal could bury a withdrawn entry for good).
//!
//! # Bounds
//! Entries from peers are kept only while the table is under all of [`Bounds`]: entries in all
//! ([`crate::limits::PRESENCE_ENTRIES_MAX`]), entries per room
//! ([`crate::limits::PRESENCE_ROOM_ENTRIES_MAX`]) and bytes
//! ([`crate::limits::PRESENCE_BYTES_MAX`], an estimate of the table's own memory: a fixed cost
//! per entry, room and tombstone plus the names). An entry not kept is not listed: `WHO`,
//! `/who` and the greeting count only the entries kept. This core's own members are always
//! kept (the router bounds them), and so is a rename of a kept entry (dropping it would leave a
//! stale name for good), so the bytes may pass the bound by at most one name's growth per
//! entry until entries leave.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::codec::PresenceKind;
use crate::interest::PeerId;
use crate::limits::{
    PRESENCE_BYTES_MAX, PRESENCE_ENTRIES_MAX, PRESENCE_ENTRY_BYTES, PRESENCE_ROOM_BYTES, PRESENCE_ROOM_ENTRIES_MAX,
    PRESENCE_TOMBSTONES_MAX, PRESENCE_TOMBSTONE_BYTES,
};

/// How much a table keeps of what peers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries in all rooms.
    pub entries_max: usize,
    /// Entries in one room.
    pub room_entries_max: usize,
    /// Estimated bytes of the whole table (entries, rooms, tombstones, names).
    pub bytes_max: usize,
    /// Tombstones (the oldest is forgotten beyond it).
    pub tombstones_max: usize,
}

impl Bounds {
    /// The limits of `crate::limits`, as a server runs with.
    pub const DEFAULT: Bounds = Bounds {
        entries_max: PRESENCE_ENTRIES_MAX,
        room_entries_max: PRESENCE_ROOM_ENTRIES_MAX,
        bytes_max: PRESENCE_BYTES_MAX,
        tombstones_max: PRESENCE_TOMBSTONES_MAX,
    };
}

/// The estimated cost of an entry named `name`.
fn entry_bytes(name: &[u8]) -> usize {
    PRESENCE_ENTRY_BYTES + name.len()
}

/// The estimated cost of a room named `room` (its name and its indexes).
fn room_bytes(room: &[u8]) -> usize {
    PRESENCE_ROOM_BYTES + room.len()
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A connection of this core.
    Local,
    /// The peer link that told us about it.
    Peer(PeerId),
}

/// One member of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The member's session id, unique in the cluster.
    pub session_id: u64,
    /// The member's current name.
    pub name: Bytes,
    /// The owner's version of the update that set this name (a join or rename).
    pub version: u64,
    /// Who told us.
    pub origin: Origin,
}

/// One change to one member, as its owner stamped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Joined or renamed set the name; left or lost remove the member.
    pub kind: PresenceKind,
    /// The member.
    pub session_id: u64,
    /// The owner's version of this change.
    pub version: u64,
    /// The member's name (the new one for a rename).
    pub name: Bytes,
}

/// What a [`Presence::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A member that was not listed is now.
    Joined,
    /// A listed member has a new name; the old name is given.
    Renamed(Bytes),
    /// A listed member is gone; its entry is given.
    Removed(Entry),
    /// A removal of a member that was already gone, newer than its tombstone: the tombstone
    /// now has that version. Nothing visible changed.
    Buried,
    /// A listed member's newer version under the same name: nobody sees a change, but the
    /// entry's version moved (peers relayed to must hear it, or a later withdrawal at this
    /// version would look like a removal to them).
    Restamped,
    /// Nothing changed: the same entry again (as after a link re-sync).
    Unchanged,
    /// Ignored: not newer than what is known of the member (or a peer's word on our own member).
    Stale,
    /// Not stored: the table is at its limit.
    Full,
}

/// A removed member, remembered so a late update cannot bring it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tombstone {
    version: u64,
    /// The link that brought the removal: the tombstone goes when it does.
    peer: PeerId,
    /// When it was made, for forgetting the oldest first.
    buried: u64,
}

/// What is known of one member of one room.
enum Known {
    Nothing,
    Listed { version: u64, origin: Origin },
    Gone { version: u64 },
}

/// One room's members: in the order this core learned of them, by session id and by name.
#[derive(Debug, Default)]
struct RoomMembers {
    by_order: BTreeMap<u64, Entry>,
    order_of: HashMap<u64, u64>,
    /// Name → the session ids holding it (one, but for members of several nodes): a `JOIN`'s
    /// name check costs O(1), not a scan of the room.
    by_name: HashMap<Bytes, Vec<u64>>,
}

impl RoomMembers {
    fn index_name(&mut self, name: &Bytes, session_id: u64) {
        self.by_name.entry(name.clone()).or_default().push(session_id);
    }

    fn unindex_name(&mut self, name: &[u8], session_id: u64) {
        if let Some(holders) = self.by_name.get_mut(name) {
            holders.retain(|id| *id != session_id);
            if holders.is_empty() {
                self.by_name.remove(name);
            }
        }
    }
}

/// Room → members, in the order this core learned of them. Every operation on one member is
/// O(log n) in the room's size, so a room of many thousands joins and leaves cheaply.
#[derive(Debug)]
pub struct Presence {
    /// By name, ordered: a link's sync and a lost link's notices go out in an order that does
    /// not depend on a hash seed. Touched on joins and leaves, never per message.
    rooms: BTreeMap<Bytes, RoomMembers>,
    entries: usize,
    /// The estimated bytes of everything held (see [`Bounds::bytes_max`]).
    bytes: usize,
    bounds: Bounds,
    learned: u64,
    /// Room → member → tombstone.
    tombstones: HashMap<Bytes, HashMap<u64, Tombstone>>,
    /// The same tombstones oldest first: when made → (room, member).
    graveyard: BTreeMap<u64, (Bytes, u64)>,
    buried: u64,
    version_epoch: u64,
    versions_issued: u64,
}

impl Presence {
    /// An empty table keeping what peers tell it within `bounds`, whose own versions start
    /// above `version_epoch` (the process's id epoch).
    pub fn new(bounds: Bounds, version_epoch: u64) -> Self {
        Self {
            rooms: BTreeMap::new(),
            entries: 0,
            bytes: 0,
            bounds,
            learned: 0,
            tombstones: HashMap::new(),
            graveyard: BTreeMap::new(),
            buried: 0,
            version_epoch,
            versions_issued: 0,
        }
    }

    /// The version for this core's next change of one of its own members: above every
    /// version it issued before, in this life and (clustered, by the epoch) the previous ones.
    pub fn next_version(&mut self) -> u64 {
        self.versions_issued += 1;
        self.version_epoch.saturating_add(self.versions_issued)
    }

    /// Applies `update` to `room` under the merge rule (see the module doc). Local entries are
    /// always stored (the router already bounds them); entries from peers only within the
    /// limits; a peer's word on one of our own members is ignored.
    pub fn merge(&mut self, room: &[u8], update: Update, origin: Origin) -> Applied {
        let applied = match update.kind {
            PresenceKind::Joined | PresenceKind::Renamed => self.merge_name(room, update, origin),
            PresenceKind::Left | PresenceKind::Lost => self.merge_removal(room, update, origin),
        };
        self.debug_assert_invariants();
        applied
    }

    fn known(&self, room: &[u8], session_id: u64) -> Known {
        if let Some(entry) = self.entry(room, session_id) {
            return Known::Listed { version: entry.version, origin: entry.origin };
        }
        match self.tombstones.get(room).and_then(|members| members.get(&session_id)) {
            Some(tombstone) => Known::Gone { version: tombstone.version },
            None => Known::Nothing,
        }
    }

    fn merge_name(&mut self, room: &[u8], update: Update, origin: Origin) -> Applied {
        match self.known(room, update.session_id) {
            Known::Listed { origin: Origin::Local, .. } if origin != Origin::Local => Applied::Stale,
            Known::Listed { version, .. } if update.version < version => Applied::Stale,
            Known::Listed { version, .. } => {
                let members = self.rooms.get_mut(room).expect("a listed member's room exists");
                let order = members.order_of[&update.session_id];
                let entry = members.by_order.get_mut(&order).expect("indexed entries exist");
                // The newest link to tell us of an entry is the one it now depends on.
                entry.origin = origin;
                if update.version == version {
                    return Applied::Unchanged;
                }
                entry.version = update.version;
                if entry.name == update.name {
                    return Applied::Restamped;
                }
                // Owned: a slice of a link's read buffer would pin the whole buffer.
                let name = Bytes::copy_from_slice(&update.name);
                let old = std::mem::replace(&mut entry.name, name.clone());
                members.unindex_name(&old, update.session_id);
                members.index_name(&name, update.session_id);
                self.bytes = self.bytes + name.len() - old.len();
                Applied::Renamed(old)
            }
            Known::Gone { version } if update.version <= version => Applied::Stale,
            Known::Gone { .. } | Known::Nothing => self.insert(room, update, origin),
        }
    }

    fn merge_removal(&mut self, room: &[u8], update: Update, origin: Origin) -> Applied {
        match self.known(room, update.session_id) {
            Known::Listed { origin: Origin::Local, .. } if origin != Origin::Local => Applied::Stale,
            Known::Listed { version, .. } if update.version < version => Applied::Stale,
            Known::Listed { version, .. } => {
                let entry = self.remove_entry(room, update.session_id).expect("a listed member has an entry");
                if update.version > version {
                    self.bury(room, update.session_id, update.version, origin);
                }
                Applied::Removed(entry)
            }
            Known::Gone { version } if update.version > version => {
                self.bury(room, update.session_id, update.version, origin);
                Applied::Buried
            }
            Known::Gone { .. } | Known::Nothing => Applied::Stale,
        }
    }

    /// Whether an entry from a peer named `name` fits in `room` within the bounds.
    fn has_room_for(&self, room: &[u8], name: &[u8]) -> bool {
        let in_room = self.count(room);
        let new_room = if in_room == 0 { room_bytes(room) } else { 0 };
        self.entries < self.bounds.entries_max
            && in_room < self.bounds.room_entries_max
            && self.bytes + entry_bytes(name) + new_room <= self.bounds.bytes_max
    }

    /// Lists a member that is not listed, dropping its tombstone.
    fn insert(&mut self, room: &[u8], update: Update, origin: Origin) -> Applied {
        if origin != Origin::Local && !self.has_room_for(room, &update.name) {
            return Applied::Full;
        }
        self.unbury(room, update.session_id);
        self.entries += 1;
        self.bytes += entry_bytes(&update.name);
        self.learned += 1;
        let members = match self.rooms.get_mut(room) {
            Some(members) => members,
            None => {
                self.bytes += room_bytes(room);
                self.rooms.entry(Bytes::copy_from_slice(room)).or_default()
            }
        };
        members.order_of.insert(update.session_id, self.learned);
        let name = Bytes::copy_from_slice(&update.name);
        let entry = Entry { session_id: update.session_id, name, version: update.version, origin };
        members.index_name(&entry.name, entry.session_id);
        members.by_order.insert(self.learned, entry);
        Applied::Joined
    }

    fn remove_entry(&mut self, room: &[u8], session_id: u64) -> Option<Entry> {
        let members = self.rooms.get_mut(room)?;
        let order = members.order_of.remove(&session_id)?;
        let entry = members.by_order.remove(&order)?;
        members.unindex_name(&entry.name, session_id);
        if members.by_order.is_empty() {
            self.rooms.remove(room);
            self.bytes -= room_bytes(room);
        }
        self.entries -= 1;
        self.bytes -= entry_bytes(&entry.name);
        Some(entry)
    }

    /// Remembers that `session_id` left `room` at `version` (a peer's members only: our own
    /// never come back to us), forgetting the oldest tombstone beyond the limit.
    fn bury(&mut self, room: &[u8], session_id: u64, version: u64, origin: Origin) {
        let Origin::Peer(peer) = origin else {
            return;
        };
        self.unbury(room, session_id);
        if self.bounds.tombstones_max == 0 {
            return;
        }
        if self.graveyard.len() >= self.bounds.tombstones_max {
            if let Some((_, (old_room, old_id))) = self.graveyard.pop_first() {
                self.forget_tombstone(&old_room, old_id);
            }
        }
        self.buried += 1;
        let room = match self.tombstones.get_key_value(room) {
            Some((room, _)) => room.clone(),
            None => Bytes::copy_from_slice(room),
        };
        let tombstone = Tombstone { version, peer, buried: self.buried };
        self.tombstones.entry(room.clone()).or_default().insert(session_id, tombstone);
        self.graveyard.insert(self.buried, (room, session_id));
        self.bytes += PRESENCE_TOMBSTONE_BYTES;
    }

    fn unbury(&mut self, room: &[u8], session_id: u64) {
        if let Some(tombstone) = self.forget_tombstone(room, session_id) {
            self.graveyard.remove(&tombstone.buried);
        }
    }

    /// Drops a tombstone from the by-room map only (the caller keeps the graveyard in step).
    fn forget_tombstone(&mut self, room: &[u8], session_id: u64) -> Option<Tombstone> {
        let members = self.tombstones.get_mut(room)?;
        let tombstone = members.remove(&session_id)?;
        if members.is_empty() {
            self.tombstones.remove(room);
        }
        self.bytes -= PRESENCE_TOMBSTONE_BYTES;
        Some(tombstone)
    }

    /// Removes every entry and tombstone that `peer` brought (its link went down); gives back
    /// the entries, as (room, entry).
    pub fn remove_origin(&mut self, peer: PeerId) -> Vec<(Bytes, Entry)> {
        let mut removed = Vec::new();
        let mut freed = 0;
        self.rooms.retain(|room, members| {
            let RoomMembers { by_order, order_of, by_name } = members;
            by_order.retain(|_, e| {
                if e.origin == Origin::Peer(peer) {
                    order_of.remove(&e.session_id);
                    if let Some(holders) = by_name.get_mut(&e.name) {
                        holders.retain(|id| *id != e.session_id);
                        if holders.is_empty() {
                            by_name.remove(&e.name);
                        }
                    }
                    freed += entry_bytes(&e.name);
                    removed.push((room.clone(), e.clone()));
                    return false;
                }
                true
            });
            if by_order.is_empty() {
                freed += room_bytes(room);
            }
            !by_order.is_empty()
        });
        self.entries -= removed.len();
        let graveyard = &mut self.graveyard;
        self.tombstones.retain(|_, members| {
            members.retain(|_, tombstone| {
                let keep = tombstone.peer != peer;
                if !keep {
                    graveyard.remove(&tombstone.buried);
                    freed += PRESENCE_TOMBSTONE_BYTES;
                }
                keep
            });
            !members.is_empty()
        });
        self.bytes -= freed;
        self.debug_assert_invariants();
        removed
    }

    /// The members of `room` in the order this core learned of them (none if nobody is known).
    pub fn members(&self, room: &[u8]) -> impl Iterator<Item = &Entry> {
        self.rooms.get(room).into_iter().flat_map(|m| m.by_order.values())
    }

    /// The members of `room` named `name` (one, unless members of several nodes share it).
    pub fn holders<'a>(&'a self, room: &[u8], name: &[u8]) -> impl Iterator<Item = &'a Entry> + 'a {
        let members = self.rooms.get(room);
        let ids = members.and_then(|m| m.by_name.get(name)).map_or(&[][..], |ids| &ids[..]);
        ids.iter().filter_map(move |id| members.and_then(|m| m.by_order.get(m.order_of.get(id)?)))
    }

    /// The entry of member `session_id` in `room`, if listed.
    pub fn entry(&self, room: &[u8], session_id: u64) -> Option<&Entry> {
        let members = self.rooms.get(room)?;
        members.by_order.get(members.order_of.get(&session_id)?)
    }

    /// How many members `room` has.
    pub fn count(&self, room: &[u8]) -> usize {
        self.rooms.get(room).map_or(0, |m| m.by_order.len())
    }

    /// Every room with members and how many, sorted by name.
    pub fn rooms(&self) -> Vec<(&Bytes, usize)> {
        let mut rooms: Vec<(&Bytes, usize)> = self.rooms.iter().map(|(r, m)| (r, m.by_order.len())).collect();
        rooms.sort_unstable();
        rooms
    }

    /// Every (room, entry), for a link that forms.
    pub fn entries(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.rooms.iter().flat_map(|(room, members)| members.by_order.values().map(move |e| (room, e)))
    }

    /// How many entries the table holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when no room has a member.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// How many tombstones the table holds.
    #[cfg(test)]
    pub fn tombstones(&self) -> usize {
        self.graveyard.len()
    }

    /// The estimated bytes the table holds (see [`Bounds::bytes_max`]).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn debug_assert_invariants(&self) {
        if cfg!(test) {
            self.check_invariants();
        }
    }

    /// Panics if the table disagrees with itself (counts, indexes, no empty room, one
    /// graveyard row per tombstone, no member both listed and buried). O(entries): for tests,
    /// simulations and fuzz checks.
    pub fn check_invariants(&self) {
        let total: usize = self.rooms.values().map(|m| m.by_order.len()).sum();
        assert_eq!(total, self.entries);
        for members in self.rooms.values() {
            assert!(!members.by_order.is_empty(), "empty rooms are removed");
            assert_eq!(members.by_order.len(), members.order_of.len(), "one index entry per member");
            for (session_id, order) in &members.order_of {
                assert_eq!(members.by_order.get(order).map(|e| e.session_id), Some(*session_id));
            }
            let named: usize = members.by_name.values().map(Vec::len).sum();
            assert_eq!(named, members.by_order.len(), "one name index entry per member");
            for (name, holders) in &members.by_name {
                assert!(!holders.is_empty(), "no empty name index entry");
                for id in holders {
                    let entry = members.order_of.get(id).and_then(|order| members.by_order.get(order));
                    assert_eq!(entry.map(|e| &e.name), Some(name), "the name index points at its member");
                }
            }
        }
        let buried: usize = self.tombstones.values().map(HashMap::len).sum();
        assert_eq!(buried, self.graveyard.len(), "one graveyard row per tombstone");
        assert!(buried <= self.bounds.tombstones_max, "tombstones within their limit");
        let names: usize = self.entries().map(|(_, e)| entry_bytes(&e.name)).sum();
        let rooms: usize = self.rooms.keys().map(|room| room_bytes(room)).sum();
        assert_eq!(self.bytes, names + rooms + buried * PRESENCE_TOMBSTONE_BYTES, "bytes counted as held");
        for (buried, (room, session_id)) in &self.graveyard {
            let tombstone = self.tombstones.get(room).and_then(|m| m.get(session_id));
            assert_eq!(tombstone.map(|t| t.buried), Some(*buried), "the graveyard points at its tombstone");
            assert!(self.entry(room, *session_id).is_none(), "a member is listed or buried, not both");
        }
    }
}

#[cfg(test)]
mod tests;
