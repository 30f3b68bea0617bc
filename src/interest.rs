//! Which peers want which rooms: the routing table of the peer links, as plain data.
//!
//! A peer (a sibling core, later a node) announces a room when the room gains its first member
//! there and withdraws it when the room loses its last. A publish is forwarded once to each
//! peer listed for its room, and a forwarded message is never forwarded again.

use std::collections::HashMap;

use bytes::Bytes;

use crate::keyed_slab::SlabKey;

/// Index of a peer link in its hub.
///
/// A newtype, not a bare `usize`, so a link id is never taken for a connection key
/// ([`ConnKey`](crate::router::ConnKey)) or a mio token: the reactor maps each to its own token
/// range in `reactor/token.rs`, which asserts the ranges. It prints as its number, so log lines
/// say `link 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(usize);

impl PeerId {
    /// The id of slot `index` of a link slab (the reactor, reading a token back).
    pub fn new(index: usize) -> Self {
        Self(index)
    }

    /// The slot of the link slab this id names.
    pub fn index(self) -> usize {
        self.0
    }
}

impl SlabKey for PeerId {
    fn from_index(index: usize) -> Self {
        Self(index)
    }

    fn index(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Room → peers with members in it.
#[derive(Debug, Default)]
pub struct Interest {
    rooms: HashMap<Bytes, Vec<PeerId>>,
}

impl Interest {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `peer` has members in `room`; false if it was already recorded.
    pub fn add(&mut self, peer: PeerId, room: &[u8]) -> bool {
        if let Some(peers) = self.rooms.get_mut(room) {
            if peers.contains(&peer) {
                return false;
            }
            peers.push(peer);
            return true;
        }
        self.rooms.insert(Bytes::copy_from_slice(room), vec![peer]);
        true
    }

    /// Records that `peer` has no members left in `room`; false if it was not recorded.
    pub fn remove(&mut self, peer: PeerId, room: &[u8]) -> bool {
        let Some(peers) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(at) = peers.iter().position(|p| *p == peer) else {
            return false;
        };
        peers.remove(at);
        if peers.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// Forgets everything `peer` announced (its link went down); returns how many rooms.
    pub fn remove_peer(&mut self, peer: PeerId) -> usize {
        let mut removed = 0;
        self.rooms.retain(|_, peers| {
            if let Some(at) = peers.iter().position(|p| *p == peer) {
                peers.remove(at);
                removed += 1;
            }
            !peers.is_empty()
        });
        removed
    }

    /// The rooms `peer` wants, by name.
    pub fn rooms_of(&self, peer: PeerId) -> Vec<Bytes> {
        let mut rooms: Vec<Bytes> =
            self.rooms.iter().filter(|(_, peers)| peers.contains(&peer)).map(|(room, _)| room.clone()).collect();
        // By name, not in hash order: what a hub does next must not depend on a hash seed.
        rooms.sort_unstable();
        rooms
    }

    /// The peers to forward a publish in `room` to, in announcement order.
    pub fn peers(&self, room: &[u8]) -> &[PeerId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// How many rooms some peer wants.
    #[cfg(any(test, feature = "testing"))]
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn link(index: usize) -> PeerId {
        PeerId::new(index)
    }

    #[test]
    fn add_remove_and_lookup() {
        let mut t = Interest::new();
        assert!(t.peers(b"r").is_empty());
        assert!(t.add(link(1), b"r"));
        assert!(!t.add(link(1), b"r"), "a second add is a no-op");
        assert!(t.add(link(0), b"r"));
        assert_eq!(t.peers(b"r"), &[link(1), link(0)]);
        assert!(t.remove(link(1), b"r"));
        assert!(!t.remove(link(1), b"r"));
        assert_eq!(t.peers(b"r"), &[link(0)]);
        assert!(t.remove(link(0), b"r"));
        assert_eq!(t.room_count(), 0, "a room nobody wants is forgotten");
    }

    #[test]
    fn a_peer_going_down_withdraws_all_its_rooms() {
        let mut t = Interest::new();
        t.add(link(2), b"a");
        t.add(link(2), b"b");
        t.add(link(3), b"b");
        assert_eq!(t.remove_peer(link(2)), 2);
        assert!(t.peers(b"a").is_empty());
        assert_eq!(t.peers(b"b"), &[link(3)]);
        assert_eq!(t.room_count(), 1);
    }

    proptest! {
        #[test]
        fn matches_a_set_of_pairs(ops in proptest::collection::vec((0u8..3, 0usize..3, 0u8..3), 0..64)) {
            let mut t = Interest::new();
            let mut oracle = BTreeSet::new();
            for (op, peer, room) in ops {
                let peer = link(peer);
                let name = [b'a' + room];
                match op {
                    0 => prop_assert_eq!(t.add(peer, &name), oracle.insert((room, peer))),
                    1 => prop_assert_eq!(t.remove(peer, &name), oracle.remove(&(room, peer))),
                    _ => {
                        let before = oracle.len();
                        oracle.retain(|(_, p)| *p != peer);
                        prop_assert_eq!(t.remove_peer(peer), before - oracle.len());
                    }
                }
                for r in 0..3u8 {
                    let mut got: Vec<PeerId> = t.peers(&[b'a' + r]).to_vec();
                    got.sort_unstable();
                    let want: Vec<PeerId> = oracle.iter().filter(|(x, _)| *x == r).map(|(_, p)| *p).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
