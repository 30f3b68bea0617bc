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

fn names(p: &Presence, room: &[u8]) -> Vec<String> {
    p.members(room).map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect()
}

#[test]
fn add_rename_remove() {
    let mut p = Presence::new(10, 10, 0);
    assert_eq!(p.merge(b"lobby", joined(1, 1, "alice"), Origin::Local), Applied::Joined);
    assert_eq!(p.merge(b"lobby", joined(2, 5, "bob"), Origin::Peer(0)), Applied::Joined);
    assert_eq!(p.merge(b"lobby", joined(2, 5, "bob"), Origin::Peer(0)), Applied::Unchanged);
    let rename = update(PresenceKind::Renamed, 1, 2, "alicia");
    assert_eq!(p.merge(b"lobby", rename, Origin::Local), Applied::Renamed(Bytes::from_static(b"alice")));
    assert_eq!(names(&p, b"lobby"), ["alicia", "bob"], "join order is kept through a rename");
    match p.merge(b"lobby", left(1, 3), Origin::Local) {
        Applied::Removed(entry) => assert_eq!((entry.name, entry.version), (Bytes::from_static(b"alicia"), 2)),
        other => panic!("alicia's leave: {other:?}"),
    }
    assert_eq!(p.merge(b"lobby", left(1, 4), Origin::Local), Applied::Stale, "our own leaves leave no tombstone");
    assert_eq!(p.len(), 1);
    assert!(matches!(p.merge(b"lobby", left(2, 6), Origin::Peer(0)), Applied::Removed(e) if e.session_id == 2));
    assert!(p.is_empty() && p.rooms().is_empty());
    assert_eq!(p.tombstones(), 1, "bob's leave is remembered");
}

#[test]
fn our_versions_increase_from_the_epoch() {
    let mut p = Presence::new(10, 10, 1_000);
    assert_eq!([p.next_version(), p.next_version(), p.next_version()], [1_001, 1_002, 1_003]);
}

#[test]
fn a_late_join_after_a_leave_does_not_bring_the_member_back() {
    let mut p = Presence::new(10, 10, 0);
    p.merge(b"r", joined(7, 10, "bob"), Origin::Peer(1));
    assert!(matches!(p.merge(b"r", left(7, 11), Origin::Peer(1)), Applied::Removed(_)));
    assert_eq!(p.merge(b"r", joined(7, 10, "bob"), Origin::Peer(2)), Applied::Stale, "a digest that was on its way");
    assert_eq!(p.merge(b"r", joined(7, 11, "bob"), Origin::Peer(2)), Applied::Stale, "equal to the tombstone");
    assert_eq!(p.count(b"r"), 0);
    assert_eq!(p.merge(b"r", left(7, 12), Origin::Peer(1)), Applied::Buried, "a newer removal moves the tombstone");
    assert_eq!(p.merge(b"r", left(7, 12), Origin::Peer(1)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(7, 13, "bob"), Origin::Peer(1)), Applied::Joined, "a newer join wins");
    assert_eq!(p.tombstones(), 0, "the tombstone goes with the member's return");
}

#[test]
fn a_stale_rename_never_reverts_a_name() {
    let mut p = Presence::new(10, 10, 0);
    p.merge(b"r", joined(3, 1, "ann"), Origin::Peer(0));
    let newer = update(PresenceKind::Renamed, 3, 3, "anna");
    assert_eq!(p.merge(b"r", newer, Origin::Peer(0)), Applied::Renamed(Bytes::from_static(b"ann")));
    assert_eq!(p.merge(b"r", update(PresenceKind::Renamed, 3, 2, "annie"), Origin::Peer(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(3, 1, "ann"), Origin::Peer(0)), Applied::Stale);
    assert_eq!(names(&p, b"r"), ["anna"]);
}

#[test]
fn a_withdrawal_at_the_entrys_own_version_leaves_no_tombstone() {
    let mut p = Presence::new(10, 10, 0);
    p.merge(b"r", joined(4, 9, "far"), Origin::Peer(0));
    let lost = update(PresenceKind::Lost, 4, 9, "far");
    assert!(matches!(p.merge(b"r", lost, Origin::Peer(0)), Applied::Removed(e) if e.version == 9));
    assert_eq!(p.tombstones(), 0);
    assert_eq!(p.merge(b"r", joined(4, 9, "far"), Origin::Peer(0)), Applied::Joined, "the relink's digest");
}

#[test]
fn a_peer_cannot_change_our_own_members() {
    let mut p = Presence::new(10, 10, 0);
    p.merge(b"r", joined(1, 1, "me"), Origin::Local);
    assert_eq!(p.merge(b"r", left(1, 99), Origin::Peer(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", update(PresenceKind::Renamed, 1, 99, "you"), Origin::Peer(0)), Applied::Stale);
    assert_eq!(names(&p, b"r"), ["me"]);
}

#[test]
fn a_link_going_down_takes_its_entries_and_tombstones_with_it() {
    let mut p = Presence::new(10, 10, 0);
    p.merge(b"a", joined(1, 1, "local"), Origin::Local);
    p.merge(b"a", joined(2, 1, "far"), Origin::Peer(3));
    p.merge(b"b", joined(2, 1, "far"), Origin::Peer(3));
    p.merge(b"b", joined(4, 1, "near"), Origin::Peer(1));
    p.merge(b"b", joined(5, 1, "gone"), Origin::Peer(3));
    p.merge(b"b", left(5, 2), Origin::Peer(3));
    p.merge(b"c", joined(6, 1, "gone too"), Origin::Peer(1));
    p.merge(b"c", left(6, 2), Origin::Peer(1));
    assert_eq!(p.tombstones(), 2);
    let mut gone: Vec<(Bytes, u64)> = p.remove_origin(3).into_iter().map(|(r, e)| (r, e.session_id)).collect();
    gone.sort();
    assert_eq!(gone, [(Bytes::from_static(b"a"), 2), (Bytes::from_static(b"b"), 2)]);
    assert_eq!(p.rooms(), [(&Bytes::from_static(b"a"), 1), (&Bytes::from_static(b"b"), 1)]);
    assert_eq!((p.len(), p.tombstones()), (2, 1), "link 1's tombstone stays");
    assert_eq!(p.merge(b"b", joined(5, 1, "gone"), Origin::Peer(0)), Applied::Joined, "link 3 forgot its tombstone");
    assert_eq!(p.merge(b"c", joined(6, 1, "gone too"), Origin::Peer(0)), Applied::Stale);
}

#[test]
fn tombstones_beyond_their_limit_forget_the_oldest() {
    let mut p = Presence::new(10, 2, 0);
    for id in 1..=3 {
        p.merge(b"r", joined(id, 1, "x"), Origin::Peer(0));
        p.merge(b"r", left(id, 2), Origin::Peer(0));
    }
    assert_eq!(p.tombstones(), 2);
    assert_eq!(p.merge(b"r", joined(1, 1, "x"), Origin::Peer(0)), Applied::Joined, "the oldest was forgotten");
    assert_eq!(p.merge(b"r", joined(2, 1, "x"), Origin::Peer(0)), Applied::Stale);
    assert_eq!(p.merge(b"r", joined(3, 1, "x"), Origin::Peer(0)), Applied::Stale);
}

#[test]
fn peer_entries_stop_at_the_limit_but_local_ones_do_not() {
    let mut p = Presence::new(2, 2, 0);
    assert_eq!(p.merge(b"r", joined(1, 1, "a"), Origin::Peer(0)), Applied::Joined);
    assert_eq!(p.merge(b"r", joined(2, 1, "b"), Origin::Peer(0)), Applied::Joined);
    assert_eq!(p.merge(b"r", joined(3, 1, "c"), Origin::Peer(0)), Applied::Full);
    assert_eq!(p.merge(b"r", joined(4, 1, "d"), Origin::Local), Applied::Joined);
    let rename = update(PresenceKind::Renamed, 1, 2, "a2");
    assert_eq!(p.merge(b"r", rename, Origin::Peer(0)), Applied::Renamed(Bytes::from_static(b"a")));
    assert_eq!(p.len(), 3);
}
