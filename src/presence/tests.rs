//! The presence table's rules: adds, renames and removes by version, tombstones and their
//! bounds, links taking their entries with them.

use super::*;

fn update(kind: PresenceKind, session_id: u64, version: u64, name: &'static str) -> Update {
    Update { kind, session_id, version, name: Bytes::from_static(name.as_bytes()) }
}

fn joined(session_id: u64, version: u64, name: &'static str) -> Update {
    update(PresenceKind::Joined, session_id, version, name)
}

fn left(session_id: u64, version: u64) -> Update {
    update(PresenceKind::Left, session_id, version, "gone")
}

/// A table with room for `entries` entries and `tombstones` tombstones, and no other bound
/// that matters here.
/// Where an update from the link with index `index` comes from.
fn from_link(index: usize) -> Origin {
    Origin::Peer(PeerId::new(index))
}

fn table(entries: usize, tombstones: usize, version_epoch: u64) -> Presence {
    let bounds =
        Bounds { entries_max: entries, room_entries_max: entries, bytes_max: usize::MAX, tombstones_max: tombstones };
    Presence::new(bounds, version_epoch)
}

fn names(p: &Presence, room: &[u8]) -> Vec<String> {
    p.members(room).map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect()
}

#[test]
fn add_rename_remove() {
    let mut p = table(10, 10, 0);
    assert_eq!(p.merge(b"lobby", joined(1, 1, "alice"), Origin::Local), Applied::Joined);
    assert_eq!(p.merge(b"lobby", joined(2, 5, "bob"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"lobby", joined(2, 5, "bob"), from_link(0)), Applied::Unchanged);
    let rename = update(PresenceKind::Renamed, 1, 2, "alicia");
    assert_eq!(p.merge(b"lobby", rename, Origin::Local), Applied::Renamed(Bytes::from_static(b"alice")));
    assert_eq!(names(&p, b"lobby"), ["alicia", "bob"], "join order is kept through a rename");
    assert_eq!(p.holders(b"lobby", b"alice").count(), 0, "the name index follows a rename");
    assert_eq!(p.holders(b"lobby", b"alicia").map(|e| e.session_id).collect::<Vec<_>>(), [1]);
    assert_eq!(p.entry(b"lobby", 2).map(|e| e.version), Some(5));
    match p.merge(b"lobby", left(1, 3), Origin::Local) {
        Applied::Removed(entry) => assert_eq!((entry.name, entry.version), (Bytes::from_static(b"alicia"), 2)),
        other => panic!("alicia's leave: {other:?}"),
    }
    assert_eq!(p.merge(b"lobby", left(1, 4), Origin::Local), Applied::Stale, "our own leaves leave no tombstone");
    assert_eq!(p.len(), 1);
    assert!(matches!(p.merge(b"lobby", left(2, 6), from_link(0)), Applied::Removed(e) if e.session_id == 2));
    assert!(p.is_empty() && p.rooms().is_empty());
    assert_eq!(p.tombstones(), 1, "bob's leave is remembered");
}

#[test]
fn our_versions_increase_from_the_epoch() {
    let mut p = table(10, 10, 1_000);
    assert_eq!([p.next_version(), p.next_version(), p.next_version()], [1_001, 1_002, 1_003]);
}

#[test]
fn a_late_join_after_a_leave_does_not_bring_the_member_back() {
    let mut p = table(10, 10, 0);
    p.merge(b"r", joined(7, 10, "bob"), from_link(1));
    assert!(matches!(p.merge(b"r", left(7, 11), from_link(1)), Applied::Removed(_)));
    assert_eq!(p.merge(b"r", joined(7, 10, "bob"), from_link(2)), Applied::Stale, "a digest that was on its way");
    assert_eq!(p.merge(b"r", joined(7, 11, "bob"), from_link(2)), Applied::Stale, "equal to the tombstone");
    assert_eq!(p.count(b"r"), 0);
    assert_eq!(p.merge(b"r", left(7, 12), from_link(1)), Applied::Buried, "a newer removal moves the tombstone");
    assert_eq!(p.merge(b"r", left(7, 12), from_link(1)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(7, 13, "bob"), from_link(1)), Applied::Joined, "a newer join wins");
    assert_eq!(p.tombstones(), 0, "the tombstone goes with the member's return");
}

#[test]
fn a_stale_rename_never_reverts_a_name() {
    let mut p = table(10, 10, 0);
    p.merge(b"r", joined(3, 1, "ann"), from_link(0));
    let newer = update(PresenceKind::Renamed, 3, 3, "anna");
    assert_eq!(p.merge(b"r", newer, from_link(0)), Applied::Renamed(Bytes::from_static(b"ann")));
    assert_eq!(p.merge(b"r", update(PresenceKind::Renamed, 3, 2, "annie"), from_link(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(3, 1, "ann"), from_link(0)), Applied::Stale);
    assert_eq!(names(&p, b"r"), ["anna"]);
    let same_name = update(PresenceKind::Renamed, 3, 4, "anna");
    assert_eq!(p.merge(b"r", same_name, from_link(0)), Applied::Restamped, "news to relay, nothing to show");
    assert_eq!(p.merge(b"r", update(PresenceKind::Renamed, 3, 4, "anna"), from_link(0)), Applied::Unchanged);
    assert_eq!(p.members(b"r").map(|e| e.version).collect::<Vec<_>>(), [4]);
}

#[test]
fn a_withdrawal_at_the_entrys_own_version_leaves_no_tombstone() {
    let mut p = table(10, 10, 0);
    p.merge(b"r", joined(4, 9, "far"), from_link(0));
    let lost = update(PresenceKind::Lost, 4, 9, "far");
    assert!(matches!(p.merge(b"r", lost, from_link(0)), Applied::Removed(e) if e.version == 9));
    assert_eq!(p.tombstones(), 0);
    assert_eq!(p.merge(b"r", joined(4, 9, "far"), from_link(0)), Applied::Joined, "the relink's digest");
}

#[test]
fn a_peer_cannot_change_our_own_members() {
    let mut p = table(10, 10, 0);
    p.merge(b"r", joined(1, 1, "me"), Origin::Local);
    assert_eq!(p.merge(b"r", left(1, 99), from_link(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", update(PresenceKind::Renamed, 1, 99, "you"), from_link(0)), Applied::Stale);
    assert_eq!(names(&p, b"r"), ["me"]);
}

#[test]
fn a_link_going_down_takes_its_entries_and_tombstones_with_it() {
    let mut p = table(10, 10, 0);
    p.merge(b"a", joined(1, 1, "local"), Origin::Local);
    p.merge(b"a", joined(2, 1, "far"), from_link(3));
    p.merge(b"b", joined(2, 1, "far"), from_link(3));
    p.merge(b"b", joined(4, 1, "near"), from_link(1));
    p.merge(b"b", joined(5, 1, "gone"), from_link(3));
    p.merge(b"b", left(5, 2), from_link(3));
    p.merge(b"c", joined(6, 1, "gone too"), from_link(1));
    p.merge(b"c", left(6, 2), from_link(1));
    assert_eq!(p.tombstones(), 2);
    let mut gone: Vec<(Bytes, u64)> =
        p.remove_origin(PeerId::new(3)).into_iter().map(|(r, e)| (r, e.session_id)).collect();
    gone.sort();
    assert_eq!(gone, [(Bytes::from_static(b"a"), 2), (Bytes::from_static(b"b"), 2)]);
    assert_eq!(p.rooms(), [(&Bytes::from_static(b"a"), 1), (&Bytes::from_static(b"b"), 1)]);
    assert_eq!((p.len(), p.tombstones()), (2, 1), "link 1's tombstone stays");
    assert_eq!(p.merge(b"b", joined(5, 1, "gone"), from_link(0)), Applied::Joined, "link 3 forgot its tombstone");
    assert_eq!(p.merge(b"c", joined(6, 1, "gone too"), from_link(0)), Applied::Stale);
}

#[test]
fn tombstones_beyond_their_limit_forget_the_oldest() {
    let mut p = table(10, 2, 0);
    for id in 1..=3 {
        p.merge(b"r", joined(id, 1, "x"), from_link(0));
        p.merge(b"r", left(id, 2), from_link(0));
    }
    assert_eq!(p.tombstones(), 2);
    assert_eq!(p.merge(b"r", joined(1, 1, "x"), from_link(0)), Applied::Joined, "the oldest was forgotten");
    assert_eq!(p.merge(b"r", joined(2, 1, "x"), from_link(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(3, 1, "x"), from_link(0)), Applied::Stale);
}

#[test]
fn peer_entries_stop_at_the_limit_but_local_ones_do_not() {
    let mut p = table(2, 2, 0);
    assert_eq!(p.merge(b"r", joined(1, 1, "a"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"r", joined(2, 1, "b"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"r", joined(3, 1, "c"), from_link(0)), Applied::Full);
    assert_eq!(p.merge(b"r", joined(4, 1, "d"), Origin::Local), Applied::Joined);
    let rename = update(PresenceKind::Renamed, 1, 2, "a2");
    assert_eq!(p.merge(b"r", rename, from_link(0)), Applied::Renamed(Bytes::from_static(b"a")));
    assert_eq!(p.len(), 3);
}

#[test]
fn peer_entries_stop_at_the_byte_bound_tombstones_included_until_their_link_goes() {
    use crate::limits::{PRESENCE_ENTRY_BYTES, PRESENCE_ROOM_BYTES, PRESENCE_TOMBSTONE_BYTES};
    // Exactly room "r" with two members named "ab" and "cd".
    let two = PRESENCE_ROOM_BYTES + 1 + 2 * (PRESENCE_ENTRY_BYTES + 2);
    let bounds = Bounds { bytes_max: two, ..Bounds::DEFAULT };
    let mut p = Presence::new(bounds, 0);
    assert_eq!(p.merge(b"r", joined(1, 1, "ab"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"r", joined(2, 1, "cd"), from_link(0)), Applied::Joined);
    assert_eq!(p.bytes(), two, "at the bound exactly");
    assert_eq!(p.merge(b"r", joined(3, 1, "e"), from_link(0)), Applied::Full, "one byte of name too many");
    assert_eq!(p.merge(b"s", joined(3, 1, "e"), from_link(0)), Applied::Full, "another room too");
    assert_eq!(p.merge(b"r", joined(4, 1, "mine"), Origin::Local), Applied::Joined, "our own members are kept");
    assert_eq!(names(&p, b"r"), ["ab", "cd", "mine"], "who lists what is kept");
    p.merge(b"r", left(4, 2), Origin::Local);
    assert!(matches!(p.merge(b"r", left(2, 2), from_link(0)), Applied::Removed(_)));
    assert_eq!(p.bytes(), two - (PRESENCE_ENTRY_BYTES + 2) + PRESENCE_TOMBSTONE_BYTES, "a tombstone costs too");
    assert_eq!(p.merge(b"r", joined(3, 1, "e"), from_link(0)), Applied::Full, "the tombstone holds the bytes");
    p.remove_origin(PeerId::new(0));
    assert_eq!(p.bytes(), 0, "a lost link frees everything it brought");
    assert_eq!(p.merge(b"r", joined(3, 1, "e"), from_link(1)), Applied::Joined);
}

#[test]
fn peer_entries_stop_at_the_room_bound_but_other_rooms_fill_on() {
    let mut p = Presence::new(Bounds { room_entries_max: 2, ..Bounds::DEFAULT }, 0);
    assert_eq!(p.merge(b"big", joined(1, 1, "a"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"big", joined(2, 1, "b"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"big", joined(3, 1, "c"), from_link(0)), Applied::Full);
    assert_eq!(p.merge(b"small", joined(3, 1, "c"), from_link(0)), Applied::Joined);
    assert_eq!(p.merge(b"big", joined(4, 1, "d"), Origin::Local), Applied::Joined);
    assert_eq!((p.count(b"big"), p.count(b"small")), (3, 1));
}

// ----- the merge rule against a naive oracle -----

mod merge_property {
    use std::collections::BTreeMap;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const OWNERS: usize = 3;
    const ROOMS: [&[u8]; 2] = [b"r0", b"r1"];
    const NAMES: [&str; 3] = ["ann", "bob", "cy"];

    /// (room, session id) → (name, version): what a table should list.
    type View = BTreeMap<(Vec<u8>, u64), (Bytes, u64)>;

    /// One owner's changes, in the order it made them, each with a higher version.
    fn owner_updates(owner: usize, script: &[(u8, u8, u8, bool)]) -> Vec<(Vec<u8>, Update)> {
        let epoch = 1_000 * owner as u64;
        let mut listed: BTreeMap<(usize, u64), &'static str> = BTreeMap::new();
        let mut updates = Vec::new();
        for &(member, room, name, rename) in script {
            let session_id = 100 * owner as u64 + u64::from(member % 3) + 1;
            let room = usize::from(room) % ROOMS.len();
            let name = NAMES[usize::from(name) % NAMES.len()];
            let kind = match listed.get(&(room, session_id)) {
                None => PresenceKind::Joined,
                Some(old) if rename && *old != name => PresenceKind::Renamed,
                Some(_) if rename => continue,
                Some(_) => [PresenceKind::Left, PresenceKind::Lost][usize::from(member) % 2],
            };
            match kind {
                PresenceKind::Joined | PresenceKind::Renamed => listed.insert((room, session_id), name),
                PresenceKind::Left | PresenceKind::Lost => listed.remove(&(room, session_id)),
            };
            let version = epoch + updates.len() as u64 + 1;
            let update = Update { kind, session_id, version, name: Bytes::from_static(name.as_bytes()) };
            updates.push((ROOMS[room].to_vec(), update));
        }
        updates
    }

    /// The naive oracle: for each member of each room, the update with the highest version
    /// wins; the member is listed unless that update is a removal.
    fn oracle<'a>(updates: impl Iterator<Item = &'a (Vec<u8>, Update)>) -> View {
        let mut newest: BTreeMap<(Vec<u8>, u64), &Update> = BTreeMap::new();
        for (room, update) in updates {
            let slot = newest.entry((room.clone(), update.session_id)).or_insert(update);
            if update.version > slot.version {
                *slot = update;
            }
        }
        newest
            .into_iter()
            .filter(|(_, u)| matches!(u.kind, PresenceKind::Joined | PresenceKind::Renamed))
            .map(|(key, u)| (key, (u.name.clone(), u.version)))
            .collect()
    }

    /// A link's opening digest: every member the owner listed after its first `prefix` changes.
    fn digest(updates: &[(Vec<u8>, Update)], prefix: usize) -> Vec<(Vec<u8>, Update)> {
        oracle(updates[..prefix].iter())
            .into_iter()
            .map(|((room, session_id), (name, version))| {
                (room, Update { kind: PresenceKind::Joined, session_id, version, name })
            })
            .collect()
    }

    fn view(p: &Presence) -> View {
        p.entries().map(|(room, e)| ((room.to_vec(), e.session_id), (e.name.clone(), e.version))).collect()
    }

    /// How one owner's changes are delivered so far.
    struct Stream {
        updates: Vec<(Vec<u8>, Update)>,
        /// The next change to deliver in order.
        next: usize,
        /// The changes before this were sent on an earlier link (never redelivered now).
        floor: usize,
        link: PeerId,
    }

    /// Delivers every owner's changes in per-owner order, interleaved as `schedule` says, with
    /// duplicates, digests of any prefix since the current link formed, and relinks (the link
    /// goes down, a new one opens with a digest of what the owner has sent so far); then the rest
    /// in order. Gives back the table.
    fn deliver(streams: &mut [Stream], schedule: &[(u8, u8, u16)], relinks: bool) -> Presence {
        let mut p = table(1_000, 1_000, 0);
        let mut links_opened = OWNERS;
        for &(action, owner, pick) in schedule {
            let s = &mut streams[usize::from(owner) % OWNERS];
            let pick = usize::from(pick);
            match action % 4 {
                0 if s.next < s.updates.len() => {
                    let (room, update) = s.updates[s.next].clone();
                    p.merge(&room, update, Origin::Peer(s.link));
                    s.next += 1;
                }
                1 if s.next > s.floor => {
                    let (room, update) = s.updates[s.floor + pick % (s.next - s.floor)].clone();
                    p.merge(&room, update, Origin::Peer(s.link));
                }
                2 => {
                    let prefix = s.floor + pick % (s.updates.len() - s.floor + 1);
                    for (room, update) in digest(&s.updates, prefix) {
                        p.merge(&room, update, Origin::Peer(s.link));
                    }
                }
                3 if relinks => {
                    p.remove_origin(s.link);
                    // What was in flight on the old link is lost; the new digest covers it.
                    s.next += pick % (s.updates.len() - s.next + 1);
                    s.floor = s.next;
                    s.link = PeerId::new(links_opened);
                    links_opened += 1;
                    for (room, update) in digest(&s.updates, s.next) {
                        p.merge(&room, update, Origin::Peer(s.link));
                    }
                }
                _ => {}
            }
        }
        for s in streams.iter_mut() {
            for (room, update) in s.updates[s.next..].iter().cloned() {
                p.merge(&room, update, Origin::Peer(s.link));
            }
            s.next = s.updates.len();
        }
        p.check_invariants();
        p
    }

    fn streams_of(scripts: &[Vec<(u8, u8, u8, bool)>]) -> Vec<Stream> {
        let streams = scripts.iter().enumerate();
        streams
            .map(|(o, script)| Stream { updates: owner_updates(o, script), next: 0, floor: 0, link: PeerId::new(o) })
            .collect()
    }

    fn scripts() -> impl Strategy<Value = Vec<Vec<(u8, u8, u8, bool)>>> {
        vec(vec(any::<(u8, u8, u8, bool)>(), 0..14), OWNERS)
    }

    fn schedule() -> impl Strategy<Value = Vec<(u8, u8, u16)>> {
        vec(any::<(u8, u8, u16)>(), 0..120)
    }

    proptest! {
        /// Any order of the same changes consistent with each owner's order, with duplicates
        /// and digests of any prefix replayed anywhere, ends in the table the oracle gives.
        #[test]
        fn every_delivery_order_with_redeliveries_converges_to_the_oracle(
            scripts in scripts(),
            first in schedule(),
            second in schedule(),
        ) {
            let mut streams = streams_of(&scripts);
            let expected = oracle(streams.iter().flat_map(|s| s.updates.iter()));
            let one = view(&deliver(&mut streams, &first, false));
            prop_assert_eq!(&one, &expected);
            let mut streams = streams_of(&scripts);
            let other = view(&deliver(&mut streams, &second, false));
            prop_assert_eq!(&other, &one, "two delivery orders agree");
        }

        /// The same with links going down and re-forming mid-stream: the entries and tombstones
        /// of the lost link go, the new link's digest brings the owner's state back, and
        /// redeliveries on the new link change nothing.
        #[test]
        fn relinks_mid_stream_converge_to_the_oracle(scripts in scripts(), schedule in schedule()) {
            let mut streams = streams_of(&scripts);
            let expected = oracle(streams.iter().flat_map(|s| s.updates.iter()));
            prop_assert_eq!(view(&deliver(&mut streams, &schedule, true)), expected);
        }
    }
}
