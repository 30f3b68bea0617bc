//! The `peer_link` check, a stateful one: a hub with two clients and one sibling link, where the
//! sibling is the fuzzer. It drives the link's *state machine* (interest, acks, forwards,
//! presence, keepalive, link loss), not only the frame parser.
//!
//! The input is a sequence of steps `[ctrl][len][len bytes]` (a short last step takes what is
//! left); `ctrl % 8` picks the action:
//!
//! * `0`: the bytes arrive on the link as they are (garbage or frames, split anywhere);
//! * `1`..=`3`: a well-formed peer frame built from the bytes arrives: `INTEREST` (add or remove
//!   one of three rooms, with or without an ack token), `INTEREST_ACK` (a small token),
//!   `FORWARD` (a message to one of the rooms), `PRESENCE` (a member joins, leaves, is lost or
//!   renamed), `PING` — so that the fuzzer reaches deep states without guessing lengths;
//! * `4`: a client joins (with or without presence) or leaves a room, or publishes to it;
//! * `5`: the clock advances by `bytes[0]` × 20 ms and the hub ticks (ack waits expire);
//! * `6`: the link goes down (it stays down: later link input is ignored);
//! * `7`: a client hangs up and is replaced.
//!
//! After every step: `Hub::check_invariants` holds; every byte the hub queued for a client
//! decodes as server frames, and every byte queued on the link decodes as peer frames. Nothing
//! the sibling sends may panic the hub.
//!
//! Shared by `fuzz_targets/peer_link.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`, which
//! replays every file of `corpus/peer_link/` through [`check`] on stable.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::codec::peer::{encode_forward, encode_interest, encode_presence, peer_type, PeerFrame, PeerPresenceKind};
use fanout::codec::{
    encode_message, encode_nonce, frame_type, ClientFrame, FrameDecoder, Hello, PresenceKind, ServerFrame,
    JOIN_FLAG_PRESENCE, PROTOCOL_VERSION,
};
use fanout::hub::{Hub, HubConfig};
use fanout::router::ConnKey;

const ROOMS: [&[u8]; 3] = [b"r0", b"r1", b"room-two"];
const CLIENTS: usize = 2;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn greet(hub: &mut Hub<(), ()>, n: usize, now: Instant) -> Option<ConnKey> {
    let key = hub.open((), now).ok()?;
    let mut hello = BytesMut::new();
    let name = format!("c{n}");
    let frame =
        Hello { version: PROTOCOL_VERSION, flags: 0, name: name.into_bytes().into(), token: Default::default() };
    ClientFrame::Hello(frame).encode(&mut hello);
    hub.conn_mut(key)?.input.extend_from_slice(&hello);
    hub.handle_input(key, now);
    Some(key)
}

fn byte(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

/// A well-formed peer frame chosen and filled by `bytes`.
fn peer_frame(kind: u8, bytes: &[u8], dst: &mut BytesMut) {
    let room = ROOMS[byte(bytes, 0) as usize % ROOMS.len()];
    let small = u64::from(byte(bytes, 1) % 8);
    match (kind, byte(bytes, 2) % 4) {
        (1, _) => encode_interest(dst, byte(bytes, 3) % 2 == 0, small, room),
        (2, 0) => encode_nonce(dst, peer_type::INTEREST_ACK, small),
        (2, 1) => encode_nonce(dst, frame_type::PING, small),
        (2, _) => {
            let mut message = BytesMut::new();
            let payload = bytes.get(4..).unwrap_or(&[]);
            encode_message(&mut message, 1 << 40 | small, u64::from(byte(bytes, 3)) + 1, room, b"far", payload);
            encode_forward(dst, &message[5..]);
        }
        (_, event) => {
            let kind = [PresenceKind::Joined, PresenceKind::Left, PresenceKind::Lost, PresenceKind::Renamed]
                [event as usize % 4];
            let name: &[u8] = if byte(bytes, 3) % 2 == 0 { b"far" } else { b"farther" };
            // A few versions only, so the fuzzer meets stale, equal and newer updates.
            let version = u64::from(byte(bytes, 4) % 8);
            let kind = if byte(bytes, 5) % 8 == 0 { PeerPresenceKind::Probe } else { kind.into() };
            encode_presence(dst, version, kind, 1 << 40 | small, room, name);
        }
    }
}

/// A client request chosen and filled by `bytes`.
fn client_request(bytes: &[u8], dst: &mut BytesMut) {
    let room = ROOMS[byte(bytes, 0) as usize % ROOMS.len()];
    match byte(bytes, 1) % 4 {
        0 => ClientFrame::Join { flags: byte(bytes, 2) & JOIN_FLAG_PRESENCE, room: room.into() }.encode(dst),
        1 => ClientFrame::Leave { room: room.into() }.encode(dst),
        2 => ClientFrame::Who { room: room.into() }.encode(dst),
        _ => ClientFrame::Publish { room: room.into(), payload: bytes.get(2..).unwrap_or(&[]).to_vec().into() }
            .encode(dst),
    }
}

/// Every byte in `bytes` must decode as frames of the kind `parse` accepts.
fn decodes_whole<T>(
    bytes: &mut BytesMut,
    parse: impl Fn(fanout::codec::RawFrame) -> Result<T, fanout::error::DecodeError>,
) {
    let decoder = FrameDecoder::default();
    while let Some(raw) = decoder.decode(bytes).expect("the hub wrote a valid frame header") {
        parse(raw).expect("the hub wrote a valid frame body");
    }
    assert!(bytes.is_empty(), "the hub wrote a partial frame");
}

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let mut now = start();
    let mut hub: Hub<(), ()> = Hub::new(HubConfig::default());
    hub.set_random(Box::new(fanout::rng::SeededRandom::new(1)));
    let peer = hub.add_link((), now);
    let mut clients: Vec<Option<ConnKey>> = (0..CLIENTS).map(|n| greet(&mut hub, n, now)).collect();
    let mut link_up = true;
    let (mut to_clients, mut to_link) = (BytesMut::new(), BytesMut::new());
    let mut keys = Vec::new();
    let mut rest = data;
    while let Some((&ctrl, after)) = rest.split_first() {
        let len = after.first().map_or(0, |&l| l as usize).min(after.len().saturating_sub(1));
        let chunk = after.get(1..1 + len).unwrap_or(&[]);
        rest = after.get(1 + len..).unwrap_or(&[]);
        let client = (ctrl as usize >> 3) % CLIENTS;
        match ctrl % 8 {
            0..=3 if link_up => {
                let link = hub.link_mut(peer).expect("the link exists until it is removed");
                if ctrl % 8 == 0 {
                    link.input.extend_from_slice(chunk);
                } else {
                    let mut frame = BytesMut::new();
                    peer_frame(ctrl % 8, chunk, &mut frame);
                    link.input.extend_from_slice(&frame);
                }
                hub.handle_link_input(peer, now);
            }
            4 => {
                if let Some(key) = clients[client] {
                    let mut request = BytesMut::new();
                    client_request(chunk, &mut request);
                    if let Some(conn) = hub.conn_mut(key) {
                        conn.input.extend_from_slice(&request);
                        hub.handle_input(key, now);
                    }
                }
            }
            5 => {
                now += Duration::from_millis(20 * u64::from(byte(chunk, 0)));
                hub.tick(now);
            }
            6 => {
                hub.link_down(peer, now);
                link_up = false;
            }
            7 => {
                if let Some(key) = clients[client].take() {
                    hub.handle_hangup(key);
                }
                clients[client] = greet(&mut hub, client + CLIENTS, now);
            }
            _ => {}
        }
        hub.check_invariants();
        // Drain like a reactor, checking what the hub wrote.
        hub.take_to_flush(&mut keys);
        for key in clients.iter().flatten() {
            if let Some(conn) = hub.conn_mut(*key) {
                let mut written = Vec::new();
                conn.outbox_mut().flush_to(&mut written).expect("a buffer takes everything");
                to_clients.extend_from_slice(&written);
                decodes_whole(&mut to_clients, ServerFrame::parse);
            }
        }
        if let Some(link) = hub.link_mut(peer) {
            let mut written = Vec::new();
            link.io_and_queues().1.flush_to(&mut written).expect("a buffer takes everything");
            to_link.extend_from_slice(&written);
            decodes_whole(&mut to_link, PeerFrame::parse);
        }
        hub.take_finished(&mut keys);
        for key in keys.drain(..) {
            hub.remove(key);
            for slot in &mut clients {
                if *slot == Some(key) {
                    *slot = None;
                }
            }
        }
    }
}
