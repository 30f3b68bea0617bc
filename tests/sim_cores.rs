//! Three cores as three sans-IO [`Hub`]s, linked pairwise by simulated byte streams, driven by a
//! seeded schedule: no threads, no sockets, no mio, no clock.
//!
//! The test is the network. It moves the bytes a hub queues on a link to the peer hub's link
//! input, in batches cut at random byte offsets and in a random order *across* links, but FIFO
//! on each link (a link is an ordered stream); it feeds clients' frames to the hubs cut the same
//! way, and reads what the hubs queue for clients. It also parses the link frames in flight, so
//! it knows when each core applied which `INTEREST`, received which `INTEREST_ACK` and handled
//! which `FORWARD`, and checks against that:
//!
//! * exactly once: a publish reaches every receiving member that had its `JOINED` before the
//!   publish was sent (and had not sent `LEAVE` before the publish reached its core), once;
//!   nothing reaches a connection that is not a member when the publish reaches its core;
//! * per-publisher FIFO: one stream's `seq` only grows at each receiver, and is the
//!   publisher's count of publishes in that membership;
//! * `JOINED` for a room leaves a core only after every peer applied the room's `INTEREST` and
//!   its `INTEREST_ACK` came back;
//! * a core forwards a publish at most once to each peer, and a peer link going down releases
//!   the `JOIN`s waiting for it and stops forwarding to it;
//! * replies to one connection leave in request order, also when the client pipelines requests
//!   behind a `JOIN` that waits for acks (the random clients pipeline freely and hang up at any
//!   moment).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fanout::codec::peer::{peer_type, PeerFrame};
use fanout::codec::{frame_type, ClientFrame, FrameDecoder, Hello, RawFrame, ServerFrame, HELLO_FLAG_ECHO};
use fanout::codec::{JOIN_FLAG_SEND_ONLY, PROTOCOL_VERSION};
use fanout::hub::{Hub, HubConfig};
use fanout::interest::PeerId;
use fanout::link::LinkState;
use fanout::router::ConnKey;

const HUBS: usize = 3;
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

fn encode(frame: &ClientFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

/// One direction of a peer link: bytes the sender flushed and the receiver has not read yet,
/// plus the test's own parse of the stream on both ends.
#[derive(Default)]
struct Wire {
    in_flight: VecDeque<u8>,
    sent: BytesMut,
    received: BytesMut,
}

/// A reply a client waits for, in request order (with the membership it concerns).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Welcome,
    Joined(Bytes, usize),
    Left(Bytes, usize),
    Pong(u64),
}

/// A request the client wrote, so its send and handling times can be recorded.
#[derive(Debug, Clone, Copy)]
enum Req {
    Join(usize),
    Leave(usize),
    Publish(usize),
    Other,
}

struct Client {
    hub: usize,
    key: ConnKey,
    name: String,
    echo: bool,
    alive: bool,
    /// Bytes the client wrote that the hub has not been given yet.
    unsent: VecDeque<u8>,
    written_total: usize,
    sent_total: usize,
    /// Every request written, with the stream offset of its last byte.
    requests: Vec<(usize, Req)>,
    /// Requests before this index were handed to the hub (their last byte was).
    next_sent: usize,
    /// Requests before this index were handled by the hub (their bytes left its input buffer).
    next_handled: usize,
    expect: VecDeque<Expect>,
    /// Per room, the membership the client will have once everything it wrote is handled.
    rooms: [Option<usize>; ROOMS.len()],
    /// Received bytes not yet cut into frames (a hub queues whole frames, so this stays empty).
    input: BytesMut,
    /// Every frame received, for the scripted tests.
    log: Vec<ServerFrame>,
}

/// One `JOIN` of one client, until its `LEAVE` or hangup. Times are the simulation's clock:
/// one tick per step (a transmit, a link delivery, a hangup).
struct Membership {
    client: usize,
    room: usize,
    receives: bool,
    join_sent: Option<u64>,
    join_handled: Option<u64>,
    joined_received: Option<u64>,
    leave_handled: Option<u64>,
    left_received: bool,
    published: u64,
    stream: Option<u64>,
}

struct Publish {
    client: usize,
    room: usize,
    membership: usize,
    seq: u64,
    payload: Bytes,
    sent: Option<u64>,
    handled: Option<u64>,
    /// When each hub handled this publish's `FORWARD`.
    arrival: [Option<u64>; HUBS],
}

/// Three hubs, the wires between them and the clients on them.
struct Sim {
    hubs: Vec<Hub<(), ()>>,
    /// `peer[a][b]`: hub a's id for its link to hub b.
    peer: Vec<Vec<PeerId>>,
    /// `wires[a][b]`: bytes from hub a to hub b.
    wires: Vec<Vec<Wire>>,
    clients: Vec<Client>,
    memberships: Vec<Membership>,
    publishes: Vec<Publish>,
    /// (client, publish) → when it was delivered.
    delivered: HashMap<(usize, usize), u64>,
    /// (client, stream) → last seq received.
    last_seq: HashMap<(usize, u64), u64>,
    /// (from, to, room) → the last `INTEREST` (add, token) hub `from` flushed towards hub `to`.
    interest_sent: HashMap<(usize, usize, Bytes), (bool, u64)>,
    /// (at, from, room) → whether the last `INTEREST` hub `at` handled from hub `from` was an add.
    interest_applied: HashMap<(usize, usize, Bytes), bool>,
    /// (at, from, token): hub `at` handled hub `from`'s `INTEREST_ACK` for `token`.
    acks_received: HashSet<(usize, usize, u64)>,
    /// Run the delivery oracle on every frame (the scripted tests check by hand instead).
    strict: bool,
    clock: u64,
    now: Instant,
    nonces: u64,
}

impl Sim {
    fn new(strict: bool) -> Self {
        let start = Instant::now();
        let mut hubs: Vec<Hub<(), ()>> =
            (0..HUBS).map(|core| Hub::new(HubConfig { core_id: core as u16, ..HubConfig::default() })).collect();
        let mut peer = vec![vec![PeerId::new(usize::MAX); HUBS]; HUBS];
        for a in 0..HUBS {
            for b in a + 1..HUBS {
                peer[a][b] = hubs[a].add_link((), start);
                peer[b][a] = hubs[b].add_link((), start);
            }
        }
        let wires = (0..HUBS).map(|_| (0..HUBS).map(|_| Wire::default()).collect()).collect();
        let mut sim = Self {
            hubs,
            peer,
            wires,
            clients: Vec::new(),
            memberships: Vec::new(),
            publishes: Vec::new(),
            delivered: HashMap::new(),
            last_seq: HashMap::new(),
            interest_sent: HashMap::new(),
            interest_applied: HashMap::new(),
            acks_received: HashSet::new(),
            strict,
            clock: 0,
            now: start,
            nonces: 0,
        };
        for h in 0..HUBS {
            sim.flush_links(h);
        }
        sim.settle();
        for a in 0..HUBS {
            for b in (0..HUBS).filter(|b| *b != a) {
                let state = sim.link_state(a, b);
                assert_eq!(state, LinkState::Up { node_id: 0, core_id: b as u16 }, "hub {a}'s link to hub {b}");
            }
        }
        sim
    }

    fn link_state(&mut self, a: usize, b: usize) -> LinkState {
        let p = self.peer[a][b];
        self.hubs[a].link_mut(p).expect("link exists").state()
    }

    /// Opens a connection on `hub` and writes its `HELLO` (not yet transmitted).
    fn add_client(&mut self, hub: usize, echo: bool) -> usize {
        let key = self.hubs[hub].open((), self.now).unwrap_or_else(|_| panic!("hub {hub} refused a connection"));
        let c = self.clients.len();
        self.clients.push(Client {
            hub,
            key,
            name: format!("c{c}"),
            echo,
            alive: true,
            unsent: VecDeque::new(),
            written_total: 0,
            sent_total: 0,
            requests: Vec::new(),
            next_sent: 0,
            next_handled: 0,
            expect: VecDeque::new(),
            rooms: [None; ROOMS.len()],
            input: BytesMut::new(),
            log: Vec::new(),
        });
        let hello = ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: if echo { HELLO_FLAG_ECHO } else { 0 },
            name: Bytes::from(format!("c{c}")),
            token: Bytes::new(),
        });
        self.write(c, &hello, Req::Other, Some(Expect::Welcome));
        c
    }

    /// The client writes a frame (the hub gets it on a later [`Sim::transmit`]).
    fn write(&mut self, c: usize, frame: &ClientFrame, req: Req, expect: Option<Expect>) {
        let client = &mut self.clients[c];
        let bytes = encode(frame);
        client.unsent.extend(&bytes);
        client.written_total += bytes.len();
        client.requests.push((client.written_total, req));
        client.expect.extend(expect);
    }

    fn join(&mut self, c: usize, r: usize, send_only: bool) {
        assert!(self.clients[c].rooms[r].is_none(), "c{c} joins {} twice", ROOMS[r]);
        let m = self.memberships.len();
        self.memberships.push(Membership {
            client: c,
            room: r,
            receives: !send_only,
            join_sent: None,
            join_handled: None,
            joined_received: None,
            leave_handled: None,
            left_received: false,
            published: 0,
            stream: None,
        });
        self.clients[c].rooms[r] = Some(m);
        let room = Bytes::from_static(ROOMS[r].as_bytes());
        let flags = if send_only { JOIN_FLAG_SEND_ONLY } else { 0 };
        self.write(c, &ClientFrame::Join { flags, room: room.clone() }, Req::Join(m), Some(Expect::Joined(room, m)));
    }

    fn leave(&mut self, c: usize, r: usize) {
        let m = self.clients[c].rooms[r].take().unwrap_or_else(|| panic!("c{c} leaves {} unjoined", ROOMS[r]));
        let room = Bytes::from_static(ROOMS[r].as_bytes());
        self.write(c, &ClientFrame::Leave { room: room.clone() }, Req::Leave(m), Some(Expect::Left(room, m)));
    }

    fn publish(&mut self, c: usize, r: usize, filler: usize) {
        let m = self.clients[c].rooms[r].unwrap_or_else(|| panic!("c{c} publishes to {} unjoined", ROOMS[r]));
        let id = self.publishes.len();
        let mut payload = format!("P{id}:").into_bytes();
        payload.resize(payload.len() + filler, b'.');
        let payload = Bytes::from(payload);
        self.memberships[m].published += 1;
        let seq = self.memberships[m].published;
        self.publishes.push(Publish {
            client: c,
            room: r,
            membership: m,
            seq,
            payload: payload.clone(),
            sent: None,
            handled: None,
            arrival: [None; HUBS],
        });
        let room = Bytes::from_static(ROOMS[r].as_bytes());
        self.write(c, &ClientFrame::Publish { room, payload }, Req::Publish(id), None);
    }

    fn ping(&mut self, c: usize) {
        self.nonces += 1;
        let nonce = self.nonces;
        self.write(c, &ClientFrame::Ping(nonce), Req::Other, Some(Expect::Pong(nonce)));
    }

    /// Hands up to `max` of the client's written bytes to its hub.
    fn transmit(&mut self, c: usize, max: usize) {
        let client = &mut self.clients[c];
        let k = max.min(client.unsent.len());
        if k == 0 || !client.alive {
            return;
        }
        self.clock += 1;
        let t = self.clock;
        let bytes: Vec<u8> = client.unsent.drain(..k).collect();
        client.sent_total += k;
        let mut sent = Vec::new();
        while client.requests.get(client.next_sent).is_some_and(|(end, _)| *end <= client.sent_total) {
            sent.push(client.requests[client.next_sent].1);
            client.next_sent += 1;
        }
        let (hub, key) = (client.hub, client.key);
        for req in sent {
            match req {
                Req::Join(m) => self.memberships[m].join_sent = Some(t),
                Req::Publish(id) => self.publishes[id].sent = Some(t),
                Req::Leave(_) | Req::Other => {}
            }
        }
        self.hubs[hub].conn_mut(key).expect("live connection").input.extend_from_slice(&bytes);
        self.hubs[hub].handle_input(key, self.now);
        self.after_op(hub);
    }

    /// The client's socket closes: it leaves every room at once; unsent bytes are lost.
    fn hang_up(&mut self, c: usize) {
        self.clock += 1;
        let t = self.clock;
        let (hub, key) = (self.clients[c].hub, self.clients[c].key);
        // Whatever the hub had not handled yet is lost with the connection.
        self.clients[c].alive = false;
        for m in self.memberships.iter_mut().filter(|m| m.client == c && m.join_handled.is_some()) {
            m.leave_handled.get_or_insert(t);
        }
        self.hubs[hub].handle_hangup(key);
        self.after_op(hub);
    }

    /// Hands up to `max` bytes in flight from hub `a` to hub `b`.
    fn deliver(&mut self, a: usize, b: usize, max: usize) {
        let wire = &mut self.wires[a][b];
        let k = max.min(wire.in_flight.len());
        if k == 0 {
            return;
        }
        self.clock += 1;
        let t = self.clock;
        let bytes: Vec<u8> = wire.in_flight.drain(..k).collect();
        wire.received.extend_from_slice(&bytes);
        let mut frames = Vec::new();
        while let Some(raw) = FrameDecoder::default().decode(&mut wire.received).expect("a valid link stream") {
            frames.push(PeerFrame::parse(raw).expect("a valid peer frame"));
        }
        let down = self.link_state(b, a) == LinkState::Down;
        for frame in frames.into_iter().filter(|_| !down) {
            match frame {
                PeerFrame::Interest { add, room, .. } => {
                    self.interest_applied.insert((b, a, room), add);
                }
                PeerFrame::InterestAck(token) => {
                    self.acks_received.insert((b, a, token));
                }
                PeerFrame::Forward { body, .. } => {
                    let raw = RawFrame { kind: frame_type::MESSAGE, body };
                    let Ok(ServerFrame::Message(m)) = ServerFrame::parse(raw) else {
                        panic!("FORWARD is not a MESSAGE")
                    };
                    if let Some(id) = self.publish_id(&m.payload) {
                        let arrival = &mut self.publishes[id].arrival[b];
                        assert!(arrival.is_none(), "publish {id} forwarded twice from hub {a} to hub {b}");
                        *arrival = Some(t);
                    }
                }
                PeerFrame::Hello(_)
                | PeerFrame::Auth(_)
                | PeerFrame::Nodes(_)
                | PeerFrame::Presence(_)
                | PeerFrame::Ping(_)
                | PeerFrame::Pong(_) => {}
            }
        }
        let p = self.peer[b][a];
        self.hubs[b].link_mut(p).expect("link exists").input.extend_from_slice(&bytes);
        self.hubs[b].handle_link_input(p, self.now);
        self.after_op(b);
    }

    fn publish_id(&self, payload: &[u8]) -> Option<usize> {
        let text = std::str::from_utf8(payload).ok()?;
        let id: usize = text.strip_prefix('P')?.split(':').next()?.parse().ok()?;
        (id < self.publishes.len()).then_some(id)
    }

    /// What the reactor does after a hub ran: flush the connections and links the hub listed,
    /// and remove finished connections. Anything queued but not listed would never be sent.
    fn after_op(&mut self, h: usize) {
        // A resumed connection is only read again (and may already be paused on its next JOIN):
        // bytes it had already sent are the hub's to handle when it resumes it. Here they are
        // all in `input` already, so there is nothing to read.
        let mut resumed = Vec::new();
        self.hubs[h].take_resumed(&mut resumed);
        self.note_handled(h);
        // Clients first: a JOINED is checked against the interest state from before this step.
        self.drain_clients(h);
        self.flush_links(h);
        let mut finished = Vec::new();
        self.hubs[h].take_finished(&mut finished);
        for key in finished {
            self.hubs[h].remove(key);
        }
    }

    /// Records when requests were handled: a request is handled once its bytes have left the
    /// connection's input buffer (a connection waiting for a `JOINED` leaves the rest there).
    fn note_handled(&mut self, h: usize) {
        let t = self.clock;
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if client.hub != h || !client.alive {
                continue;
            }
            let buffered = self.hubs[h].conn_mut(client.key).expect("live connection").input.len();
            let consumed = client.sent_total - buffered;
            let mut handled = Vec::new();
            let client = &mut self.clients[c];
            while client.requests.get(client.next_handled).is_some_and(|(end, _)| *end <= consumed) {
                handled.push(client.requests[client.next_handled].1);
                client.next_handled += 1;
            }
            for req in handled {
                match req {
                    Req::Join(m) => self.memberships[m].join_handled = Some(t),
                    Req::Leave(m) => self.memberships[m].leave_handled = Some(t),
                    Req::Publish(id) => self.publishes[id].handled = Some(t),
                    Req::Other => {}
                }
            }
        }
    }

    fn flush_links(&mut self, a: usize) {
        let mut listed = Vec::new();
        self.hubs[a].take_links_to_flush(&mut listed);
        for b in (0..HUBS).filter(|b| *b != a) {
            let p = self.peer[a][b];
            let link = self.hubs[a].link_mut(p).expect("link exists");
            let down = link.state() == LinkState::Down;
            let outbox = link.io_and_queues().1;
            let queued = outbox.queued_bytes();
            assert!(queued == 0 || listed.contains(&p), "hub {a}: link to hub {b} has {queued} bytes, not listed");
            let mut out = Vec::new();
            outbox.flush_to(&mut out).expect("a Vec takes everything");
            if out.is_empty() {
                continue;
            }
            assert!(!down, "hub {a} queued {} bytes on its link to hub {b}, which is down", out.len());
            let wire = &mut self.wires[a][b];
            wire.in_flight.extend(&out);
            wire.sent.extend_from_slice(&out);
            while let Some(raw) = FrameDecoder::default().decode(&mut wire.sent).expect("a valid link stream") {
                if let PeerFrame::Interest { add, token, room } = PeerFrame::parse(raw).expect("a valid peer frame") {
                    self.interest_sent.insert((a, b, room), (add, token));
                }
            }
        }
    }

    fn drain_clients(&mut self, h: usize) {
        let mut listed = Vec::new();
        self.hubs[h].take_to_flush(&mut listed);
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if client.hub != h || !client.alive {
                continue;
            }
            let key = client.key;
            let outbox = self.hubs[h].conn_mut(key).expect("live connection").outbox_mut();
            let queued = outbox.queued_bytes();
            assert!(queued == 0 || listed.contains(&key), "hub {h}: c{c} has {queued} bytes queued, not listed");
            let mut out = Vec::new();
            outbox.flush_to(&mut out).expect("a Vec takes everything");
            self.clients[c].input.extend_from_slice(&out);
            while let Some(raw) =
                FrameDecoder::default().decode(&mut self.clients[c].input).expect("whole server frames")
            {
                let frame = ServerFrame::parse(raw).expect("a valid server frame");
                self.on_frame(c, frame);
            }
        }
    }

    fn on_frame(&mut self, c: usize, frame: ServerFrame) {
        self.clients[c].log.push(frame.clone());
        if !self.strict {
            return;
        }
        let t = self.clock;
        let h = self.clients[c].hub;
        let front = self.clients[c].expect.pop_front();
        let reply_in_order = match (&frame, &front) {
            (ServerFrame::Message(m), _) => {
                if let Some(front) = front {
                    self.clients[c].expect.push_front(front);
                }
                return self.check_message(c, m);
            }
            (ServerFrame::Welcome(w), Some(Expect::Welcome)) => {
                assert_eq!((w.core_id, (w.session_id >> 40) & 0xff), (h as u16, h as u64), "c{c}'s WELCOME");
                true
            }
            (ServerFrame::Joined(room), Some(Expect::Joined(want, m))) if room == want => {
                assert!(self.memberships[*m].join_handled.is_some(), "c{c}: JOINED before the JOIN was handled");
                self.memberships[*m].joined_received = Some(t);
                self.check_interest_acked(h, room);
                true
            }
            (ServerFrame::Left(room), Some(Expect::Left(want, m))) if room == want => {
                assert!(self.memberships[*m].leave_handled.is_some(), "c{c}: LEFT before the LEAVE was handled");
                self.memberships[*m].left_received = true;
                true
            }
            (ServerFrame::Pong(n), Some(Expect::Pong(want))) => n == want,
            _ => false,
        };
        assert!(reply_in_order, "c{c}: got {frame:?} while waiting for {front:?} (replies out of request order?)");
    }

    /// A `JOINED` for `room` left hub `a`: every peer must have applied `a`'s interest in it and
    /// acknowledged it to `a` (checked against what `a` had sent before this step).
    fn check_interest_acked(&self, a: usize, room: &Bytes) {
        for b in (0..HUBS).filter(|b| *b != a) {
            let name = String::from_utf8_lossy(room);
            match self.interest_sent.get(&(a, b, room.clone())) {
                Some(&(true, token)) => assert!(
                    token == 0 || self.acks_received.contains(&(a, b, token)),
                    "JOINED {name} on hub {a} before hub {b}'s INTEREST_ACK {token} arrived"
                ),
                other => panic!("JOINED {name} on hub {a} while its last INTEREST to hub {b} is {other:?}"),
            }
            assert_eq!(
                self.interest_applied.get(&(b, a, room.clone())),
                Some(&true),
                "JOINED {name} on hub {a} before hub {b} applied the interest"
            );
        }
    }

    fn check_message(&mut self, c: usize, m: &fanout::codec::Message) {
        let t = self.clock;
        let id = self.publish_id(&m.payload).unwrap_or_else(|| panic!("c{c}: unknown payload {:?}", m.payload));
        let p = &self.publishes[id];
        assert!(p.handled.is_some(), "c{c} got publish {id}, which was never handled");
        let publisher = &self.clients[p.client];
        assert_eq!(&m.room[..], ROOMS[p.room].as_bytes(), "c{c}: publish {id}'s room");
        assert_eq!(&m.name[..], publisher.name.as_bytes(), "c{c}: publish {id}'s name");
        assert_eq!(m.payload, p.payload, "c{c}: publish {id}'s payload");
        assert_eq!(m.seq, p.seq, "c{c}: publish {id}'s seq");
        if c == p.client {
            assert!(publisher.echo, "c{c} got its own publish {id} without ECHO");
        }
        let (hy, hx) = (self.clients[c].hub, publisher.hub);
        if hy == hx {
            assert_eq!(p.handled, Some(t), "c{c}: local publish {id} delivered at another step than handled");
        } else {
            assert_eq!(p.arrival[hy], Some(t), "c{c}: publish {id} delivered without its FORWARD to hub {hy}");
        }
        let (room, membership) = (p.room, p.membership);
        // The membership the client is in: its JOIN handled, its LEFT not yet received.
        let active = self
            .memberships
            .iter()
            .find(|x| x.client == c && x.room == room && x.join_handled.is_some() && !x.left_received);
        let Some(active) = active else { panic!("c{c} got publish {id} in {} while not a member", ROOMS[room]) };
        assert!(active.leave_handled.is_none_or(|l| l >= t), "c{c} got publish {id} after its LEAVE");
        assert!(active.receives, "c{c} got publish {id} as a SEND_ONLY member");
        assert!(self.delivered.insert((c, id), t).is_none(), "c{c} got publish {id} twice");
        let stream = *self.memberships[membership].stream.get_or_insert(m.stream);
        assert_eq!(stream, m.stream, "publish {id}: one membership, two streams");
        let last = self.last_seq.entry((c, m.stream)).or_insert(0);
        assert!(m.seq > *last, "c{c}: stream {} went from seq {} to {}", m.stream, *last, m.seq);
        *last = m.seq;
    }

    fn any_in_flight(&self) -> bool {
        self.wires.iter().flatten().any(|w| !w.in_flight.is_empty())
            || self.clients.iter().any(|c| c.alive && !c.unsent.is_empty())
    }

    /// Transmits and delivers everything until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            if !self.any_in_flight() {
                return;
            }
            for c in 0..self.clients.len() {
                self.transmit(c, usize::MAX);
            }
            for a in 0..HUBS {
                for b in (0..HUBS).filter(|b| *b != a) {
                    self.deliver(a, b, usize::MAX);
                }
            }
        }
        panic!("the simulation did not settle");
    }

    /// After [`Sim::settle`]: every request was handled and answered, and every publish
    /// reached every member that was owed it.
    fn check_final(&self) {
        for (c, client) in self.clients.iter().enumerate().filter(|(_, c)| c.alive) {
            assert_eq!(client.next_handled, client.requests.len(), "c{c}: requests never handled (stuck paused?)");
            assert!(client.expect.is_empty(), "c{c} still waits for {:?}", client.expect);
        }
        for (id, p) in self.publishes.iter().enumerate() {
            let (Some(sent), Some(handled)) = (p.sent, p.handled) else {
                assert!(!self.delivered.keys().any(|(_, d)| *d == id), "publish {id} delivered, never handled");
                continue;
            };
            let hx = self.clients[p.client].hub;
            for (y, at) in self.delivered.iter().filter(|((_, d), _)| *d == id).map(|((y, _), at)| (*y, *at)) {
                let hy = self.clients[y].hub;
                assert!(hy != hx || at == handled, "publish {id}: delivered to c{y} at {at}, handled at {handled}");
                assert!(at >= handled, "publish {id}: delivered to c{y} before it was handled");
            }
            for m in &self.memberships {
                if m.room != p.room || !m.receives || (m.client == p.client && !self.clients[p.client].echo) {
                    continue;
                }
                // Owed: the member had its JOINED before the publish was sent...
                if m.joined_received.is_none_or(|j| j >= sent) {
                    continue;
                }
                let y = m.client;
                let hy = self.clients[y].hub;
                // ...and the publish reached the member's core before its LEAVE was handled there.
                let reached = if hy == hx {
                    handled
                } else if m.leave_handled.is_none_or(|l| l > handled) {
                    p.arrival[hy].unwrap_or_else(|| {
                        panic!("publish {id} in {} never forwarded to hub {hy}, where c{y} had JOINED", ROOMS[p.room])
                    })
                } else {
                    continue;
                };
                if m.leave_handled.is_none_or(|l| reached < l) {
                    assert!(
                        self.delivered.contains_key(&(y, id)),
                        "c{y} (hub {hy}) missed publish {id} by c{} (hub {hx}) in {}",
                        p.client,
                        ROOMS[p.room]
                    );
                }
            }
        }
        let mut streams = HashSet::new();
        for m in self.memberships.iter().filter_map(|m| m.stream) {
            assert!(streams.insert(m), "stream {m} used by two memberships");
        }
        for (h, hub) in self.hubs.iter().enumerate() {
            assert_eq!(hub.stats().forwards_dropped, 0, "hub {h} dropped forwards");
        }
    }

    /// Takes the frames `c` received since the last call.
    fn take_log(&mut self, c: usize) -> Vec<ServerFrame> {
        std::mem::take(&mut self.clients[c].log)
    }

    fn wire_len(&self, a: usize, b: usize) -> usize {
        self.wires[a][b].in_flight.len()
    }

    /// The type bytes of the whole frames in flight from hub `a` to hub `b` (as sent: a wire
    /// carries whole frames until `deliver` cuts one).
    fn wire_frame_types(&self, a: usize, b: usize) -> Vec<u8> {
        let mut bytes = BytesMut::from(&self.wires[a][b].in_flight.iter().copied().collect::<Vec<u8>>()[..]);
        let mut kinds = Vec::new();
        while let Ok(Some(raw)) = FrameDecoder::default().decode(&mut bytes) {
            kinds.push(raw.kind);
        }
        kinds
    }
}

// ----- the seeded random schedules -----

const RUNS: u64 = 2000;
const STEPS: usize = 150;
const START_CLIENTS: usize = 5;

/// One random schedule: clients pipeline whatever they like (a `JOIN`, then a `PUBLISH` to
/// that room, a `LEAVE` and a `PING`, all before any reply) and hang up at any moment; every byte
/// stream is cut at random places; links deliver in random order.
fn run_schedule(seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new(true);
    for _ in 0..START_CLIENTS {
        let hub = rng.below(HUBS);
        let echo = rng.chance(1, 4);
        sim.add_client(hub, echo);
    }
    for _ in 0..STEPS {
        let roll = rng.below(100);
        let wires: Vec<(usize, usize)> = (0..HUBS)
            .flat_map(|a| (0..HUBS).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && sim.wire_len(a, b) > 0)
            .collect();
        let alive: Vec<usize> = (0..sim.clients.len()).filter(|c| sim.clients[*c].alive).collect();
        let writers: Vec<usize> = alive.iter().copied().filter(|c| !sim.clients[*c].unsent.is_empty()).collect();
        if roll < 40 && !wires.is_empty() {
            let (a, b) = wires[rng.below(wires.len())];
            let k = rng.cut(sim.wire_len(a, b));
            sim.deliver(a, b, k);
        } else if roll < 65 && !writers.is_empty() {
            let c = writers[rng.below(writers.len())];
            let k = rng.cut(sim.clients[c].unsent.len());
            sim.transmit(c, k);
        } else if roll < 97 {
            let c = alive[rng.below(alive.len())];
            let r = rng.below(ROOMS.len());
            match (sim.clients[c].rooms[r], rng.below(8)) {
                (_, 0) => sim.ping(c),
                (None, _) => sim.join(c, r, rng.chance(1, 8)),
                (Some(_), 1) => sim.leave(c, r),
                (Some(_), _) => sim.publish(c, r, rng.below(40)),
            }
        } else {
            sim.hang_up(alive[rng.below(alive.len())]);
            let hub = rng.below(HUBS);
            let echo = rng.chance(1, 4);
            sim.add_client(hub, echo);
        }
        for hub in &sim.hubs {
            hub.check_invariants();
        }
    }
    sim.settle();
    sim.check_final();
    sim.delivered.len()
}

#[test]
fn random_schedules_deliver_exactly_once_in_order_and_join_only_after_acks() {
    let mut deliveries = 0;
    for seed in 0..RUNS {
        match catch_unwind(AssertUnwindSafe(|| run_schedule(seed))) {
            Ok(n) => deliveries += n,
            Err(_) => panic!("schedule with seed {seed} failed (replay: run_schedule({seed}))"),
        }
    }
    eprintln!("{RUNS} schedules, {deliveries} deliveries checked");
    // The schedules must actually exercise delivery, not just pass vacuously.
    assert!(deliveries > RUNS as usize * 10, "only {deliveries} deliveries in {RUNS} schedules");
}

// ----- scripted scenarios -----

/// A fresh simulation with one greeted client per entry of `hubs`.
fn scripted(hubs: &[usize]) -> (Sim, Vec<usize>) {
    let mut sim = Sim::new(false);
    let clients: Vec<usize> = hubs.iter().map(|&h| sim.add_client(h, false)).collect();
    for &c in &clients {
        sim.transmit(c, usize::MAX);
        assert!(matches!(sim.take_log(c)[..], [ServerFrame::Welcome(_)]), "c{c} greeted");
    }
    (sim, clients)
}

fn joined(room: &str) -> ServerFrame {
    ServerFrame::Joined(Bytes::copy_from_slice(room.as_bytes()))
}

fn left(room: &str) -> ServerFrame {
    ServerFrame::Left(Bytes::copy_from_slice(room.as_bytes()))
}

/// The payloads of the messages among `frames`.
fn payloads(frames: &[ServerFrame]) -> Vec<Bytes> {
    frames.iter().filter_map(|f| if let ServerFrame::Message(m) = f { Some(m.payload.clone()) } else { None }).collect()
}

#[test]
fn joined_waits_for_every_peers_interest_ack() {
    let (mut sim, c) = scripted(&[0, 0, 0]);
    sim.join(c[0], 0, false);
    sim.transmit(c[0], usize::MAX);
    assert!(sim.take_log(c[0]).is_empty(), "JOINED before any peer heard of the room");
    assert!(sim.wire_len(0, 1) > 0 && sim.wire_len(0, 2) > 0, "INTEREST goes to both peers");
    // Both peers apply the interest and answer; their acks are withheld.
    sim.deliver(0, 1, usize::MAX);
    sim.deliver(0, 2, usize::MAX);
    assert!(sim.wire_len(1, 0) > 0 && sim.wire_len(2, 0) > 0, "both peers acknowledge");
    assert!(sim.take_log(c[0]).is_empty(), "JOINED with every ack withheld");
    // A second member on the same core waits for the same acks.
    sim.join(c[1], 0, false);
    sim.transmit(c[1], usize::MAX);
    // Only its presence goes out: a room already announced is not announced again.
    for peer in [1, 2] {
        assert_eq!(sim.wire_frame_types(0, peer), [peer_type::PRESENCE], "to hub {peer}");
    }
    // Hub 1's ack, cut in two: still one ack missing.
    sim.deliver(1, 0, 3);
    sim.deliver(1, 0, usize::MAX);
    assert!(sim.take_log(c[0]).is_empty() && sim.take_log(c[1]).is_empty(), "JOINED with hub 2's ack withheld");
    sim.deliver(2, 0, usize::MAX);
    assert_eq!(sim.take_log(c[0]), vec![joined("r0")]);
    assert_eq!(sim.take_log(c[1]), vec![joined("r0")]);
    // The room is known everywhere now: a third member is confirmed at once, and only its
    // presence goes over the links (behind the second member's, still undelivered).
    sim.join(c[2], 0, false);
    sim.transmit(c[2], usize::MAX);
    assert_eq!(sim.take_log(c[2]), vec![joined("r0")]);
    for peer in [1, 2] {
        assert_eq!(sim.wire_frame_types(0, peer), [peer_type::PRESENCE; 2], "to hub {peer}");
    }
}

#[test]
fn a_publish_is_forwarded_once_per_interested_peer_and_never_again() {
    let (mut sim, c) = scripted(&[0, 1, 1, 2]);
    for &x in &c {
        sim.join(x, 0, false);
        sim.transmit(x, usize::MAX);
        sim.settle();
        assert_eq!(sim.take_log(x), vec![joined("r0")]);
    }
    sim.publish(c[0], 0, 0);
    sim.transmit(c[0], usize::MAX);
    // One FORWARD per peer however many members it has; nothing goes between hubs 1 and 2.
    let forwards_sent: Vec<u64> = sim.hubs.iter().map(|h| h.stats().forwards_sent).collect();
    assert_eq!(forwards_sent, vec![2, 0, 0]);
    sim.settle();
    assert_eq!((0..HUBS).map(|h| sim.hubs[h].stats().forwards_sent).sum::<u64>(), 2, "a forward is never forwarded");
    for &x in &c[1..] {
        assert_eq!(payloads(&sim.take_log(x)), vec![Bytes::from_static(b"P0:")], "c{x}");
    }
    assert!(sim.take_log(c[0]).is_empty(), "no echo without ECHO");
}

#[test]
fn a_link_going_down_releases_pending_joins_and_stops_forwarding() {
    let (mut sim, c) = scripted(&[0, 1, 2]);
    let (a, b, d) = (c[0], c[1], c[2]);
    for &x in &[b, d] {
        sim.join(x, 0, false);
        sim.transmit(x, usize::MAX);
        sim.settle();
        assert_eq!(sim.take_log(x), vec![joined("r0")]);
    }
    // a creates r0 on hub 0; hub 1's ack arrives, hub 2's does not.
    sim.join(a, 0, false);
    sim.transmit(a, usize::MAX);
    sim.deliver(0, 1, usize::MAX);
    sim.deliver(0, 2, usize::MAX);
    sim.deliver(1, 0, usize::MAX);
    assert!(sim.take_log(a).is_empty(), "JOINED without hub 2's ack");
    assert!(sim.wire_len(2, 0) > 0, "hub 2's ack is in flight");

    let p02 = sim.peer[0][2];
    let now = sim.now;
    sim.hubs[0].link_down(p02, now);
    sim.after_op(0);
    assert_eq!(sim.link_state(0, 2), LinkState::Down);
    assert_eq!(sim.take_log(a), vec![joined("r0")], "a dead peer's ack is not waited for");

    // a publishes: hub 1 gets it, hub 2 is not sent anything, though d is in r0 there.
    sim.publish(a, 0, 0);
    sim.transmit(a, usize::MAX);
    assert_eq!(sim.hubs[0].stats().forwards_sent, 1);
    assert_eq!(sim.wire_len(0, 2), 0, "nothing is queued for a peer whose link is down");
    // What hub 2 still sends on the dead link (its ack, then d's publish) is ignored.
    sim.publish(d, 0, 0);
    sim.transmit(d, usize::MAX);
    sim.settle();
    assert_eq!(payloads(&sim.take_log(b)), vec![Bytes::from_static(b"P0:"), Bytes::from_static(b"P1:")]);
    assert!(sim.take_log(d).is_empty(), "d is behind the dead link");
    assert!(sim.take_log(a).is_empty(), "d's publish came over the dead link");

    // A room created after the link went down waits only for the live peer.
    sim.join(a, 1, false);
    sim.transmit(a, usize::MAX);
    assert_eq!(sim.wire_len(0, 2), 0, "no INTEREST to a peer whose link is down");
    assert!(sim.take_log(a).is_empty());
    sim.settle();
    assert_eq!(sim.take_log(a), vec![joined("r1")]);
    let a_key = sim.clients[a].key;
    sim.leave(a, 1);
    sim.transmit(a, usize::MAX);
    assert_eq!(sim.take_log(a), vec![left("r1")]);
    assert!(sim.hubs[0].conn_mut(a_key).is_some());
}

#[test]
fn replies_keep_request_order_while_a_join_waits_for_acks() {
    // protocol.md: "its replies to one connection leave in that order". A PING sent right
    // after a JOIN must be answered after the JOINED, however long the JOINED waits.
    let (mut sim, c) = scripted(&[0]);
    sim.join(c[0], 0, false);
    sim.ping(c[0]);
    sim.transmit(c[0], usize::MAX);
    let early = sim.take_log(c[0]);
    assert!(early.is_empty(), "while JOIN waits for the peers' acks the client got {early:?}, a reply out of order");
    sim.settle();
    assert_eq!(sim.take_log(c[0]), vec![joined("r0"), ServerFrame::Pong(1)], "JOINED, then PONG");
}

#[test]
fn a_join_then_a_leave_sent_together_get_joined_then_left() {
    // JOIN → JOINED (or an error), LEAVE → LEFT, in order, even when the LEAVE comes before the
    // peers acknowledged the room.
    let (mut sim, c) = scripted(&[0]);
    sim.join(c[0], 0, false);
    sim.leave(c[0], 0);
    sim.transmit(c[0], usize::MAX);
    sim.settle();
    assert_eq!(sim.take_log(c[0]), vec![joined("r0"), left("r0")]);
}

#[test]
fn a_joined_owed_to_a_closed_connection_never_reaches_the_next_one_in_its_slot() {
    // c0 creates r0 on hub 0; c1 joins while the acks are pending and hangs up; the slot is
    // reused by c2, who never joins anything and must never get JOINED.
    let (mut sim, c) = scripted(&[0, 0]);
    sim.join(c[0], 0, false);
    sim.transmit(c[0], usize::MAX);
    sim.join(c[1], 0, false);
    sim.transmit(c[1], usize::MAX);
    let old_key = sim.clients[c[1]].key;
    sim.hang_up(c[1]);
    let c2 = sim.add_client(0, false);
    sim.transmit(c2, usize::MAX);
    assert!(matches!(sim.take_log(c2)[..], [ServerFrame::Welcome(_)]));
    assert_eq!(sim.clients[c2].key, old_key, "the slab reuses the freed slot");
    sim.settle();
    assert_eq!(sim.take_log(c[0]), vec![joined("r0")]);
    let stray = sim.take_log(c2);
    assert!(stray.is_empty(), "a fresh connection got {stray:?} for a JOIN it never sent");
}
