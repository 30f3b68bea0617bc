//! Who is in each room, as plain data: the members of this core, and those its peers told it
//! about.
//!
//! Every core is the only writer of its own members' entries. It sends each change to its peers
//! (`PRESENCE` peer frames, relayed by a node's gateway between its cores and the other nodes
//! like a `FORWARD`), and a link that forms starts with every entry the sender may tell that
//! link. An entry remembers where it came from ([`Origin`]), so when a link goes down the
//! entries it brought are dropped at once. The table is bounded by
//! [`crate::limits::PRESENCE_ENTRIES_MAX`] entries.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::interest::PeerId;

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
    /// Who told us.
    pub origin: Origin,
}

/// What an [`Presence::add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new member.
    New,
    /// A known member under a new name; the old name is given.
    Renamed(Bytes),
    /// Nothing new (the same entry again, as after a link re-sync).
    Unchanged,
    /// Not stored: the table is at its limit.
    Full,
}

/// One room's members: in the order this core learned of them, and by session id.
#[derive(Debug, Default)]
struct RoomMembers {
    by_order: BTreeMap<u64, Entry>,
    order_of: HashMap<u64, u64>,
}

/// Room → members, in the order this core learned of them. Every operation on one member is
/// O(log n) in the room's size, so a room of many thousands joins and leaves cheaply.
#[derive(Debug)]
pub struct Presence {
    /// By name, ordered: a link's sync and a lost link's notices go out in an order that does
    /// not depend on a hash seed. Touched on joins and leaves, never per message.
    rooms: BTreeMap<Bytes, RoomMembers>,
    entries: usize,
    entries_max: usize,
    learned: u64,
}

impl Presence {
    /// An empty table holding at most `entries_max` entries.
    pub fn new(entries_max: usize) -> Self {
        Self { rooms: BTreeMap::new(), entries: 0, entries_max, learned: 0 }
    }

    /// Records `entry` as a member of `room`, or its new name if it is already one. Local
    /// entries are always stored (the router already bounds them); entries from peers only while
    /// the table is under its limit.
    pub fn add(&mut self, room: &[u8], entry: Entry) -> Added {
        if let Some(members) = self.rooms.get_mut(room) {
            if let Some(order) = members.order_of.get(&entry.session_id) {
                let known = members.by_order.get_mut(order).expect("indexed entries exist");
                known.origin = entry.origin;
                if known.name == entry.name {
                    return Added::Unchanged;
                }
                return Added::Renamed(std::mem::replace(&mut known.name, entry.name));
            }
        }
        if entry.origin != Origin::Local && self.entries >= self.entries_max {
            return Added::Full;
        }
        self.entries += 1;
        self.learned += 1;
        let members = self.rooms.entry(Bytes::copy_from_slice(room)).or_default();
        members.order_of.insert(entry.session_id, self.learned);
        members.by_order.insert(self.learned, entry);
        self.debug_assert_invariants();
        Added::New
    }

    /// Removes the member `session_id` from `room`; gives back its entry if it was there.
    pub fn remove(&mut self, room: &[u8], session_id: u64) -> Option<Entry> {
        let members = self.rooms.get_mut(room)?;
        let order = members.order_of.remove(&session_id)?;
        let entry = members.by_order.remove(&order);
        debug_assert!(entry.is_some(), "indexed entries exist");
        if members.by_order.is_empty() {
            self.rooms.remove(room);
        }
        self.entries -= 1;
        self.debug_assert_invariants();
        entry
    }

    /// Removes every entry that `peer` brought (its link went down), as (room, entry).
    pub fn remove_origin(&mut self, peer: PeerId) -> Vec<(Bytes, Entry)> {
        let mut removed = Vec::new();
        self.rooms.retain(|room, members| {
            let RoomMembers { by_order, order_of } = members;
            by_order.retain(|_, e| {
                if e.origin == Origin::Peer(peer) {
                    order_of.remove(&e.session_id);
                    removed.push((room.clone(), e.clone()));
                    return false;
                }
                true
            });
            !by_order.is_empty()
        });
        self.entries -= removed.len();
        self.debug_assert_invariants();
        removed
    }

    /// The members of `room` in the order this core learned of them (none if nobody is known).
    pub fn members(&self, room: &[u8]) -> impl Iterator<Item = &Entry> {
        self.rooms.get(room).into_iter().flat_map(|m| m.by_order.values())
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

    fn debug_assert_invariants(&self) {
        if cfg!(test) {
            self.check_invariants();
        }
    }

    /// Panics if the table disagrees with itself (counts, indexes, no empty room). O(entries):
    /// for tests, simulations and fuzz checks.
    pub fn check_invariants(&self) {
        let total: usize = self.rooms.values().map(|m| m.by_order.len()).sum();
        assert_eq!(total, self.entries);
        for members in self.rooms.values() {
            assert!(!members.by_order.is_empty(), "empty rooms are removed");
            assert_eq!(members.by_order.len(), members.order_of.len(), "one index entry per member");
            for (session_id, order) in &members.order_of {
                assert_eq!(members.by_order.get(order).map(|e| e.session_id), Some(*session_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session_id: u64, name: &'static str, origin: Origin) -> Entry {
        Entry { session_id, name: Bytes::from_static(name.as_bytes()), origin }
    }

    #[test]
    fn add_rename_remove() {
        let mut p = Presence::new(10);
        assert_eq!(p.add(b"lobby", entry(1, "alice", Origin::Local)), Added::New);
        assert_eq!(p.add(b"lobby", entry(2, "bob", Origin::Peer(0))), Added::New);
        assert_eq!(p.add(b"lobby", entry(2, "bob", Origin::Peer(0))), Added::Unchanged);
        assert_eq!(p.add(b"lobby", entry(1, "alicia", Origin::Local)), Added::Renamed(Bytes::from_static(b"alice")));
        let names: Vec<&[u8]> = p.members(b"lobby").map(|e| &e.name[..]).collect();
        assert_eq!(names, [&b"alicia"[..], b"bob"], "join order is kept through a rename");
        assert_eq!(p.remove(b"lobby", 1).map(|e| e.name), Some(Bytes::from_static(b"alicia")));
        assert_eq!(p.remove(b"lobby", 1), None);
        assert_eq!(p.len(), 1);
        assert_eq!(p.remove(b"lobby", 2).map(|e| e.session_id), Some(2));
        assert!(p.is_empty() && p.rooms().is_empty());
    }

    #[test]
    fn a_link_going_down_takes_its_entries_with_it() {
        let mut p = Presence::new(10);
        p.add(b"a", entry(1, "local", Origin::Local));
        p.add(b"a", entry(2, "far", Origin::Peer(3)));
        p.add(b"b", entry(2, "far", Origin::Peer(3)));
        p.add(b"b", entry(4, "near", Origin::Peer(1)));
        let mut gone: Vec<(Bytes, u64)> = p.remove_origin(3).into_iter().map(|(r, e)| (r, e.session_id)).collect();
        gone.sort();
        assert_eq!(gone, [(Bytes::from_static(b"a"), 2), (Bytes::from_static(b"b"), 2)]);
        assert_eq!(p.rooms(), [(&Bytes::from_static(b"a"), 1), (&Bytes::from_static(b"b"), 1)]);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn peer_entries_stop_at_the_limit_but_local_ones_do_not() {
        let mut p = Presence::new(2);
        assert_eq!(p.add(b"r", entry(1, "a", Origin::Peer(0))), Added::New);
        assert_eq!(p.add(b"r", entry(2, "b", Origin::Peer(0))), Added::New);
        assert_eq!(p.add(b"r", entry(3, "c", Origin::Peer(0))), Added::Full);
        assert_eq!(p.add(b"r", entry(4, "d", Origin::Local)), Added::New);
        assert_eq!(p.add(b"r", entry(1, "a2", Origin::Peer(0))), Added::Renamed(Bytes::from_static(b"a")));
        assert_eq!(p.len(), 3);
    }
}
