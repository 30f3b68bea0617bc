use super::*;

use std::collections::{BTreeMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;

fn room(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

/// The key of connection `index`.
fn key(index: usize) -> ConnKey {
    ConnKey::new(index)
}

/// The indexes of the connections in `room`, in the router's order, or `None` if the room does
/// not exist.
fn conns_in(router: &Router, name: &str) -> Option<Vec<usize>> {
    router.members(name.as_bytes()).map(|members| members.iter().map(|m| m.conn.index()).collect())
}

/// `(stream, seq)` of a publish, or the refusal.
fn publish(router: &mut Router, conn: ConnKey, name: &str) -> Result<(u64, u64), RouteError> {
    router.publish(conn, name.as_bytes()).map(|d| (d.stream, d.seq))
}

#[test]
fn join_creates_the_room_and_leave_removes_it() {
    let mut r = Router::new(0, 4);
    assert_eq!(r.room_count(), 0);
    assert_eq!(r.join(key(1), &room("a"), false), Ok(Change { room_edge: true }));
    assert_eq!(r.room_count(), 1);
    assert_eq!(conns_in(&r, "a"), Some(vec![1]));
    assert_eq!(r.rooms_of(key(1)), 1);

    assert_eq!(r.leave(key(1), b"a"), Ok(Change { room_edge: true }));
    assert_eq!(r.room_count(), 0);
    assert_eq!(conns_in(&r, "a"), None);
    assert_eq!(r.rooms_of(key(1)), 0);
}

#[test]
fn room_edge_is_true_exactly_on_first_join_and_last_leave() {
    let mut r = Router::new(0, 4);
    assert_eq!(r.join(key(0), &room("a"), false), Ok(Change { room_edge: true }));
    assert_eq!(r.join(key(1), &room("a"), false), Ok(Change { room_edge: false }));
    assert_eq!(r.join(key(2), &room("a"), true), Ok(Change { room_edge: false }));
    assert_eq!(r.leave(key(0), b"a"), Ok(Change { room_edge: false }));
    assert_eq!(r.leave(key(2), b"a"), Ok(Change { room_edge: false }));
    assert_eq!(r.room_count(), 1);
    assert_eq!(r.leave(key(1), b"a"), Ok(Change { room_edge: true }));
    assert_eq!(r.room_count(), 0);
    // The room is new again.
    assert_eq!(r.join(key(2), &room("a"), false), Ok(Change { room_edge: true }));
}

#[test]
fn members_are_in_join_order_with_their_receive_flag() {
    let mut r = Router::new(0, 4);
    for (conn, send_only) in [(5, false), (2, true), (9, false), (0, false)] {
        r.join(key(conn), &room("a"), send_only).unwrap();
    }
    let want = [
        Member { conn: key(5), receives: true, watches: false },
        Member { conn: key(2), receives: false, watches: false },
        Member { conn: key(9), receives: true, watches: false },
        Member { conn: key(0), receives: true, watches: false },
    ];
    assert_eq!(r.members(b"a"), Some(&want[..]));
    // Leaving from the middle keeps the others' order.
    r.leave(key(2), b"a").unwrap();
    assert_eq!(conns_in(&r, "a"), Some(vec![5, 9, 0]));
}

#[test]
fn disconnect_leaves_every_room() {
    let mut r = Router::new(0, 4);
    r.join(key(1), &room("a"), false).unwrap();
    r.join(key(1), &room("b"), false).unwrap();
    r.join(key(1), &room("c"), false).unwrap();
    r.join(key(2), &room("b"), false).unwrap();
    assert_eq!(r.disconnect(key(1)), 3);
    assert_eq!(r.rooms_of(key(1)), 0);
    assert_eq!(r.room_count(), 1, "only b, which still has conn 2");
    assert_eq!(conns_in(&r, "b"), Some(vec![2]));
    assert_eq!(r.disconnect(key(1)), 0, "a second disconnect does nothing");
    assert_eq!(r.disconnect(key(99)), 0, "a connection the router never saw");
}

#[test]
fn rooms_per_connection_limit_is_exact() {
    let mut r = Router::new(0, 3);
    for name in ["a", "b", "c"] {
        r.join(key(7), &room(name), false).unwrap();
    }
    assert_eq!(r.join(key(7), &room("d"), false), Err(RouteError::TooManyRooms));
    assert_eq!(r.rooms_of(key(7)), 3);
    assert_eq!(r.room_count(), 3, "a refused join creates no room");
    assert_eq!(conns_in(&r, "d"), None);
    // Another connection is not affected, and a leave makes room again.
    assert_eq!(r.join(key(8), &room("d"), false), Ok(Change { room_edge: true }));
    r.leave(key(7), b"a").unwrap();
    assert_eq!(r.join(key(7), &room("d"), false), Ok(Change { room_edge: false }));
}

#[test]
fn joining_twice_is_already_a_member() {
    let mut r = Router::new(0, 1);
    r.join(key(3), &room("a"), false).unwrap();
    // At the limit too: the more precise error wins.
    assert_eq!(r.join(key(3), &room("a"), true), Err(RouteError::AlreadyAMember));
    assert_eq!(r.members(b"a"), Some(&[Member { conn: key(3), receives: true, watches: false }][..]));
}

#[test]
fn leave_and_publish_outside_a_room_are_not_a_member() {
    let mut r = Router::new(0, 4);
    assert_eq!(r.leave(key(0), b"nowhere"), Err(RouteError::NotAMember));
    assert_eq!(publish(&mut r, key(0), "nowhere"), Err(RouteError::NotAMember));
    r.join(key(1), &room("a"), false).unwrap();
    // The room exists, but conn 0 (known or not) is not in it.
    assert_eq!(r.leave(key(0), b"a"), Err(RouteError::NotAMember));
    assert_eq!(publish(&mut r, key(0), "a"), Err(RouteError::NotAMember));
    assert_eq!(r.leave(key(50), b"a"), Err(RouteError::NotAMember));
    assert_eq!(publish(&mut r, key(50), "a"), Err(RouteError::NotAMember));
    // After leaving, the same.
    r.join(key(0), &room("b"), false).unwrap();
    r.leave(key(0), b"b").unwrap();
    assert_eq!(r.leave(key(0), b"b"), Err(RouteError::NotAMember));
    assert_eq!(publish(&mut r, key(0), "b"), Err(RouteError::NotAMember));
    assert_eq!(conns_in(&r, "a"), Some(vec![1]));
}

#[test]
fn publish_reports_room_and_every_member() {
    let mut r = Router::new(0, 4);
    r.join(key(1), &room("a"), false).unwrap();
    r.join(key(2), &room("a"), true).unwrap();
    let d = r.publish(key(2), b"a").unwrap();
    assert_eq!(&d.room[..], b"a");
    assert_eq!(
        d.members,
        &[Member { conn: key(1), receives: true, watches: false }, Member { conn: key(2), receives: false, watches: false }]
    );
}

#[test]
fn room_name_is_copied_out_of_the_callers_buffer() {
    // A name sliced from a read buffer must not pin that buffer for the life of the room.
    let read_buffer = Bytes::from(b"xxxxlobbyxxxx".to_vec());
    let mut r = Router::new(0, 4);
    r.join(key(1), &read_buffer.slice(4..9), false).unwrap();
    let d = r.publish(key(1), b"lobby").unwrap();
    assert_eq!(&d.room[..], b"lobby");
    let start = read_buffer.as_ptr() as usize;
    let stored = d.room.as_ptr() as usize;
    assert!(stored < start || stored >= start + read_buffer.len(), "the room name points into the read buffer");
}

#[test]
fn seq_counts_from_one_per_membership_and_a_rejoin_gets_a_new_stream() {
    let base = 1000;
    let mut r = Router::new(base, 4);
    r.join(key(1), &room("a"), false).unwrap();
    r.join(key(1), &room("b"), false).unwrap();
    r.join(key(2), &room("a"), false).unwrap();
    let (stream_1a, _) = publish(&mut r, key(1), "a").unwrap();
    assert_eq!(stream_1a, base + 1, "stream ids start after the base");
    assert_eq!(publish(&mut r, key(1), "a"), Ok((stream_1a, 2)));
    assert_eq!(publish(&mut r, key(1), "a"), Ok((stream_1a, 3)));
    // Another room, another publisher: their own streams, from 1.
    assert_eq!(publish(&mut r, key(1), "b"), Ok((base + 2, 1)));
    assert_eq!(publish(&mut r, key(2), "a"), Ok((base + 3, 1)));
    assert_eq!(publish(&mut r, key(1), "a"), Ok((stream_1a, 4)));

    r.leave(key(1), b"a").unwrap();
    r.join(key(1), &room("a"), false).unwrap();
    let (rejoined, seq) = publish(&mut r, key(1), "a").unwrap();
    assert_ne!(rejoined, stream_1a);
    assert_eq!((rejoined, seq), (base + 4, 1));
    assert_eq!(publish(&mut r, key(1), "b"), Ok((base + 2, 2)), "other memberships keep counting");
}

#[test]
fn stream_ids_never_repeat() {
    let mut r = Router::new(1 << 40, 2);
    let mut seen = HashSet::new();
    for round in 0..50usize {
        let conn = key(round % 3);
        let name = ["a", "b", "c"][round % 3];
        r.join(conn, &room(name), false).unwrap();
        let (stream, seq) = publish(&mut r, conn, name).unwrap();
        assert_eq!(seq, 1);
        assert!(seen.insert(stream), "stream {stream} reused in round {round}");
        if round % 2 == 0 {
            r.leave(conn, name.as_bytes()).unwrap();
        } else {
            r.disconnect(conn);
        }
    }
    assert_eq!(r.room_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Random operation sequences against a naive oracle
// ---------------------------------------------------------------------------------------------

const CONNS: usize = 4;
const ROOMS: [&str; 3] = ["a", "b", "c"];
const LIMIT: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Join(ConnKey, usize, bool),
    Leave(ConnKey, usize),
    Publish(ConnKey, usize),
    Disconnect(ConnKey),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let conn = (0..CONNS).prop_map(ConnKey::new);
    let room = 0..ROOMS.len();
    prop_oneof![
        3 => (conn.clone(), room.clone(), any::<bool>()).prop_map(|(c, r, s)| Op::Join(c, r, s)),
        2 => (conn.clone(), room.clone()).prop_map(|(c, r)| Op::Leave(c, r)),
        2 => (conn.clone(), room).prop_map(|(c, r)| Op::Publish(c, r)),
        1 => conn.prop_map(Op::Disconnect),
    ]
}

/// The obvious model: each room's members in join order.
#[derive(Debug, Default)]
struct Oracle {
    rooms: BTreeMap<usize, Vec<Member>>,
}

impl Oracle {
    fn is_member(&self, conn: ConnKey, room: usize) -> bool {
        self.rooms.get(&room).is_some_and(|m| m.iter().any(|x| x.conn == conn))
    }

    fn rooms_of(&self, conn: ConnKey) -> usize {
        self.rooms.values().filter(|m| m.iter().any(|x| x.conn == conn)).count()
    }

    fn join(&mut self, conn: ConnKey, room: usize, send_only: bool) -> Result<Change, RouteError> {
        if self.is_member(conn, room) {
            return Err(RouteError::AlreadyAMember);
        }
        if self.rooms_of(conn) >= LIMIT {
            return Err(RouteError::TooManyRooms);
        }
        let members = self.rooms.entry(room).or_default();
        members.push(Member { conn, receives: !send_only, watches: false });
        Ok(Change { room_edge: members.len() == 1 })
    }

    fn leave(&mut self, conn: ConnKey, room: usize) -> Result<Change, RouteError> {
        if !self.is_member(conn, room) {
            return Err(RouteError::NotAMember);
        }
        let members = self.rooms.get_mut(&room).unwrap();
        members.retain(|m| m.conn != conn);
        let emptied = members.is_empty();
        if emptied {
            self.rooms.remove(&room);
        }
        Ok(Change { room_edge: emptied })
    }

    fn disconnect(&mut self, conn: ConnKey) -> usize {
        let rooms: Vec<usize> = self.rooms.keys().copied().filter(|r| self.is_member(conn, *r)).collect();
        for r in &rooms {
            self.leave(conn, *r).unwrap();
        }
        rooms.len()
    }
}

proptest! {
    #[test]
    fn router_matches_a_naive_oracle(ops in vec(arb_op(), 1..80)) {
        let mut router = Router::new(0, LIMIT);
        let mut oracle = Oracle::default();
        // Per (conn, room): the stream of the current membership and its last seq.
        let mut streams: BTreeMap<(ConnKey, usize), (u64, u64)> = BTreeMap::new();
        let mut issued = HashSet::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Join(c, r, send_only) => {
                    let got = router.join(c, &room(ROOMS[r]), send_only);
                    prop_assert_eq!(got, oracle.join(c, r, send_only), "step {} {:?}", step, op);
                }
                Op::Leave(c, r) => {
                    let got = router.leave(c, ROOMS[r].as_bytes());
                    prop_assert_eq!(got, oracle.leave(c, r), "step {} {:?}", step, op);
                    if got.is_ok() {
                        streams.remove(&(c, r));
                    }
                }
                Op::Publish(c, r) => {
                    let got = router.publish(c, ROOMS[r].as_bytes()).map(|d| (d.stream, d.seq, d.members.to_vec()));
                    if !oracle.is_member(c, r) {
                        prop_assert_eq!(got, Err(RouteError::NotAMember), "step {} {:?}", step, op);
                        continue;
                    }
                    let (stream, seq, members) = got.unwrap();
                    prop_assert_eq!(&members, &oracle.rooms[&r], "step {} {:?}", step, op);
                    match streams.get(&(c, r)) {
                        Some(&(known, last)) => prop_assert_eq!((stream, seq), (known, last + 1)),
                        None => {
                            prop_assert_eq!(seq, 1);
                            prop_assert!(issued.insert(stream), "stream {} reused", stream);
                        }
                    }
                    streams.insert((c, r), (stream, seq));
                }
                Op::Disconnect(c) => {
                    prop_assert_eq!(router.disconnect(c), oracle.disconnect(c), "step {} {:?}", step, op);
                    streams.retain(|(conn, _), _| *conn != c);
                }
            }
            for (r, name) in ROOMS.iter().enumerate() {
                prop_assert_eq!(router.members(name.as_bytes()), oracle.rooms.get(&r).map(Vec::as_slice));
            }
            for c in (0..CONNS).map(ConnKey::new) {
                prop_assert_eq!(router.rooms_of(c), oracle.rooms_of(c), "rooms_of({}) after step {}", c, step);
            }
            prop_assert_eq!(router.room_count(), oracle.rooms.len());
        }
    }
}
