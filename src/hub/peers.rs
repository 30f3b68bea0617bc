//! The hub's peer links: interest announcements, forwarding and relaying, the `JOINED`
//! barrier, and the node handshake, gossip and keepalive.
//!
//! Routing rules, the same for sibling cores and remote nodes:
//! * A peer is told about a room ("announced") when this hub wants that room's messages: it has
//!   local members, or — on a node's gateway (core 0) — a peer of the *other* class wants it,
//!   because the gateway relays between its siblings and the other nodes.
//! * A publish goes to every peer that announced its room. A forwarded message is delivered
//!   locally and, on a gateway only, relayed to the peers of the other class: never back to a
//!   link of the class it came from. So a message crosses each link at most once and cannot loop.
//! * A new announcement is acknowledged by every peer it went to; `JOINED` waits for those acks,
//!   and a gateway acknowledges a relayed announcement only once its own peers have.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{encode_frame, Fanout, Hub};
use crate::cluster::{check_link_proof, link_proof, LINK_HANDSHAKE_TIMEOUT, LINK_PING_INTERVAL, LINK_SILENCE_MAX};
use crate::codec::peer::{encode_forward, encode_interest, message_body, name_and_payload, peer_type};
use crate::codec::peer::{
    is_valid_cluster_addr, quoted, LinkHello, PeerFrame, LINK_VERSION, NODES_PER_FRAME_MAX, NONCE_BYTES,
};
use crate::codec::{encode_nonce, frame_type, put_header};
use crate::interest::PeerId;
use crate::limits::{HEADER_BYTES, INTEREST_ACK_WAIT_MAX, LINK_OUTPUT_BYTES_MAX, NODE_LINK_LAG_MAX};
use crate::link::{Link, LinkClass, LinkState};
use crate::router::ConnKey;
use crate::tls::starts_like_tls;

/// What core 0 of a clustered node needs to act as its gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The shared cluster secret (never logged, never sent: only MACs of it are).
    pub secret: Vec<u8>,
    /// Where this node accepts node links, told to peers for gossip.
    pub cluster_addr: String,
    /// Random per process, so a restarted node or a node reusing an id is recognised.
    pub instance: u64,
}

/// A node learned of through gossip, for the reactor to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The node's id.
    pub node_id: u16,
    /// Its cluster address.
    pub addr: String,
}

/// Someone waiting for a room's announcements to be acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) enum Waiter {
    /// A connection owed a `JOINED` (with its session id: the slot may be reused meanwhile);
    /// it waits for every peer.
    Conn(ConnKey, u64),
    /// A peer owed an `INTEREST_ACK` with this token: a gateway relaying the peer's
    /// announcement waits only for the peers of the *other* class, so two gateways relaying
    /// to each other never wait for each other.
    Ack(PeerId, u64, LinkClass),
}

/// One room's announcements still waiting for acks, and who waits for them.
#[derive(Debug, Default)]
pub(super) struct PendingInterest {
    /// (peer, token, peer's class, when to stop waiting for it: set from the hub's clock, or at
    /// the next tick if no input has brought the time yet).
    awaiting: Vec<(PeerId, u64, LinkClass, Option<Instant>)>,
    /// Who waits, each with its own bound: acks awaited for links that formed after a waiter
    /// came (a re-announcement) must not hold it longer than its own wait.
    waiters: Vec<(Waiter, Option<Instant>)>,
}

impl PendingInterest {
    fn waits_for(&self, class: LinkClass) -> bool {
        self.awaiting.iter().any(|(_, _, c, _)| *c == class)
    }
}

/// How log lines name a link: a node link by its socket's address as the kernel reports it
/// (`node link 3 (127.0.0.1:40312)`), never by what the peer claims; a sibling as `peer link 1`.
#[derive(Debug, Clone, Copy)]
struct LinkName {
    peer: PeerId,
    class: LinkClass,
    remote: Option<SocketAddr>,
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.class {
            LinkClass::Sibling => "peer link",
            LinkClass::Node => "node link",
        };
        match self.remote {
            Some(remote) => write!(f, "{kind} {} ({remote})", self.peer),
            None => write!(f, "{kind} {}", self.peer),
        }
    }
}

impl<T, L> Hub<T, L> {
    /// Makes this hub its node's gateway: it will take node links and relay for its siblings.
    pub fn set_gateway(&mut self, gateway: Gateway) {
        self.gateway = Some(gateway);
    }

    /// Adds a link to a sibling core and announces every room we want.
    pub fn add_link(&mut self, io: L, now: Instant) -> PeerId {
        self.open_link(io, LinkClass::Sibling, false, now)
    }

    /// Adds a link to another node (dialed by us, or accepted) whose socket reaches `remote`
    /// (named in its log lines); it carries nothing until the peer has proved the cluster secret.
    pub fn add_node_link(&mut self, io: L, dialed: bool, remote: Option<SocketAddr>, now: Instant) -> PeerId {
        let peer = self.open_link(io, LinkClass::Node, dialed, now);
        self.links[peer].remote = remote;
        peer
    }

    /// The link as log lines name it.
    fn link_name(&self, peer: PeerId) -> LinkName {
        let (class, remote) = self.links.get(peer).map_or((LinkClass::Node, None), |l| (l.class, l.remote));
        LinkName { peer, class, remote }
    }

    fn open_link(&mut self, io: L, class: LinkClass, dialed: bool, now: Instant) -> PeerId {
        self.clock = Some(now);
        let mut nonce = [0; NONCE_BYTES];
        if class == LinkClass::Node {
            self.random.fill(&mut nonce);
        }
        let peer = self.links.insert(Link::new(io, class, dialed, nonce, now));
        let hello = LinkHello {
            version: LINK_VERSION,
            node_id: self.config.node_id,
            core_id: self.config.core_id,
            instance: self.gateway.as_ref().map_or(0, |g| g.instance),
            nonce,
            cluster_addr: Bytes::from(self.gateway.as_ref().map_or_else(String::new, |g| g.cluster_addr.clone())),
        };
        self.send_frame(peer, &PeerFrame::Hello(hello));
        if class == LinkClass::Sibling {
            self.sync_announcements(peer);
            self.sync_presence(peer);
        }
        peer
    }

    /// The link to `peer`, if it exists.
    pub fn link_mut(&mut self, peer: PeerId) -> Option<&mut Link<L>> {
        self.links.get_mut(peer)
    }

    /// Node links accepted or dialed that have not proved the cluster secret yet.
    pub fn pending_node_links(&self) -> usize {
        self.links.iter().filter(|(_, l)| l.class == LinkClass::Node && l.state == LinkState::Opening).count()
    }

    /// Notes a connection to the cluster port closed because too many handshakes were pending.
    pub fn count_refused_node_link(&mut self) {
        self.stats.node_links_refused += 1;
    }

    /// How many peer links the hub holds (down ones not yet removed included).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Links of `class` that are up: siblings that said hello, nodes that proved the cluster
    /// secret. A node link still in its handshake is not counted: anyone can open one.
    pub fn links_up(&self, class: LinkClass) -> usize {
        self.links.iter().filter(|(_, l)| l.class == class && matches!(l.state, LinkState::Up { .. })).count()
    }

    /// Links that went down and are not yet removed.
    pub fn links_down(&self) -> usize {
        self.links.iter().filter(|(_, l)| l.state == LinkState::Down).count()
    }

    /// (node id, when its link last received bytes) of every authenticated node link: how
    /// stale a link is before its silence limit cuts it (a blackholed peer shows here first).
    pub fn node_links_last_heard(&self) -> impl Iterator<Item = (u16, Instant)> + '_ {
        self.links.iter().filter(|(_, l)| l.class == LinkClass::Node).filter_map(|(_, l)| match l.state {
            LinkState::Up { node_id, .. } => Some((node_id, l.last_heard)),
            _ => None,
        })
    }

    /// Bytes queued on all peer links.
    pub fn link_queued_bytes(&self) -> usize {
        self.links.iter().map(|(_, l)| l.queues.queued_bytes()).sum()
    }

    /// Cluster addresses of the nodes we have an authenticated link to.
    pub fn linked_node_addrs(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|(_, l)| l.class == LinkClass::Node && matches!(l.state, LinkState::Up { .. }))
            .filter_map(|(_, l)| l.peer_cluster_addr().map(|a| String::from_utf8_lossy(a).into_owned()))
            .collect()
    }

    /// Ids of the nodes we have an authenticated link to.
    pub fn linked_node_ids(&self) -> Vec<u16> {
        self.links
            .iter()
            .filter(|(_, l)| l.class == LinkClass::Node)
            .filter_map(|(_, l)| match l.state {
                LinkState::Up { node_id, .. } => Some(node_id),
                _ => None,
            })
            .collect()
    }

    /// Nodes learned through gossip since the last call.
    pub fn take_node_addresses(&mut self, into: &mut Vec<NodeAddress>) {
        into.clear();
        std::mem::swap(into, &mut self.learned_nodes);
    }

    /// Links that went down since the last call: deregister them, then [`Hub::remove_link`].
    pub fn take_links_down(&mut self, into: &mut Vec<PeerId>) {
        into.clear();
        std::mem::swap(into, &mut self.links_down);
    }

    /// Removes a down link and gives back its transport.
    pub fn remove_link(&mut self, peer: PeerId) -> Option<L> {
        if self.links.get(peer).is_some_and(|l| l.state == LinkState::Down) {
            return self.links.try_remove(peer).map(|l| l.io);
        }
        None
    }

    /// Links with bytes queued since the last call: flush each once.
    pub fn take_links_to_flush(&mut self, into: &mut Vec<PeerId>) {
        into.clear();
        std::mem::swap(into, &mut self.links_to_flush);
        let links = &mut self.links;
        into.retain(|peer| links.get_mut(*peer).is_some_and(|link| std::mem::take(&mut link.flush_queued)));
    }

    /// Decodes and applies everything in the link's input buffer.
    pub fn handle_link_input(&mut self, peer: PeerId, now: Instant) {
        self.clock = Some(now);
        if let Some(link) = self.links.get_mut(peer) {
            link.last_heard = now;
        }
        loop {
            let Some(link) = self.links.get_mut(peer) else {
                return;
            };
            if link.state == LinkState::Down {
                link.input.clear();
                return;
            }
            // A TLS ClientHello where a LINK_HELLO belongs: the peer runs node-link TLS, this
            // node does not. Checked before decoding, which may consume the bytes.
            let speaks_tls = link.state == LinkState::Opening && link.input.len() >= 3 && starts_like_tls(&link.input);
            match link.next_frame() {
                Ok(Some(frame)) => self.apply_peer(peer, frame, now),
                Ok(None) => break,
                Err(_) if speaks_tls => {
                    log::error!(
                        "{} speaks TLS: it runs node-link TLS and this node does not; give this node \
                         --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca too; dropping the link",
                        self.link_name(peer)
                    );
                    self.link_down(peer, now);
                    break;
                }
                Err(e) => {
                    log::error!("{} sent a bad frame: {e}; dropping the link", self.link_name(peer));
                    self.link_down(peer, now);
                    break;
                }
            }
        }
        self.run_unpaused(now);
    }

    /// The links' part of [`Hub::check_invariants`].
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn check_link_invariants(&self) {
        for (key, conn) in self.conns.iter() {
            if conn.awaiting_joined && !conn.is_closing() {
                let sid = conn.session_id();
                let waited = self
                    .pending
                    .values()
                    .any(|p| p.waiters.iter().any(|(w, _)| matches!(w, Waiter::Conn(k, s) if *k == key && *s == sid)));
                assert!(waited, "connection {key} waits for a JOINED nobody will send");
            }
        }
        for (room, pending) in &self.pending {
            assert!(!pending.awaiting.is_empty(), "room {room:?}: a pending announcement with nothing awaited");
            for (peer, ..) in &pending.awaiting {
                let live = self.links.get(*peer).is_some_and(|l| l.state != LinkState::Down);
                assert!(live, "room {room:?}: an ack awaited from link {peer}, which is down or gone");
            }
        }
        for (room, entry) in self.presence.entries() {
            if let crate::presence::Origin::Peer(peer) = entry.origin {
                let live = self.links.get(peer).is_some_and(|l| l.state != LinkState::Down);
                assert!(live, "room {room:?}: a presence entry from link {peer}, which is down or gone");
            }
        }
    }

    /// Handles the input that waited behind released `JOIN`s, in release order. Called at the
    /// end of every input that can release one (link input, link down, the timer), so routing
    /// never re-enters session decoding.
    pub(super) fn run_unpaused(&mut self, now: Instant) {
        // Each round handles what the previous one released; a connection is released at most
        // once per JOIN it sent, so this ends.
        while !self.unpaused.is_empty() {
            for key in std::mem::take(&mut self.unpaused) {
                self.handle_input(key, now);
            }
        }
    }

    /// The link failed: forget the peer's interest, stop waiting for its acks, withdraw what
    /// only it made us want.
    pub fn link_down(&mut self, peer: PeerId, now: Instant) {
        self.clock = Some(now);
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        if link.state == LinkState::Down {
            return;
        }
        let name = LinkName { peer, class: link.class, remote: link.remote };
        match link.state {
            LinkState::Up { node_id, .. } if link.class == LinkClass::Node => {
                log::warn!("{name} to node {node_id} is down");
            }
            _ if link.class == LinkClass::Node => log::info!("{name} closed before it was up"),
            _ => log::info!("{name} is down"),
        }
        link.state = LinkState::Down;
        link.queues.clear();
        link.input.clear();
        self.links_down.push(peer);
        self.presence_link_down(peer);
        let rooms = self.interest.rooms_of(peer);
        self.interest.remove_peer(peer);
        for room in rooms {
            self.update_announcements(&room);
        }
        let tokens: Vec<u64> = self
            .pending
            .values()
            .flat_map(|p| p.awaiting.iter().filter(|(p2, _, _, _)| *p2 == peer).map(|(_, t, _, _)| *t))
            .collect();
        for token in tokens {
            self.acked(peer, token);
        }
        self.run_unpaused(now);
    }

    fn apply_peer(&mut self, peer: PeerId, frame: PeerFrame, now: Instant) {
        let link = &self.links[peer];
        let authenticated = link.class == LinkClass::Sibling || matches!(link.state, LinkState::Up { .. });
        match frame {
            PeerFrame::Hello(hello) => self.on_hello(peer, hello, now),
            PeerFrame::Auth(proof) => self.on_auth(peer, &proof, now),
            PeerFrame::Ping(nonce) => self.send_to_peer(peer, |dst| encode_nonce(dst, frame_type::PONG, nonce)),
            PeerFrame::Pong(_) => {}
            _ if !authenticated => {
                let name = self.link_name(peer);
                log::error!("{name} sent traffic before proving the cluster secret; dropping it");
                self.link_down(peer, now);
            }
            PeerFrame::Nodes(nodes) => self.on_nodes(peer, nodes),
            PeerFrame::Interest { add, token, room } => {
                if add {
                    self.interest.add(peer, &room);
                } else {
                    self.interest.remove(peer, &room);
                }
                self.update_announcements(&room);
                if token != 0 {
                    let class = self.links[peer].class;
                    match self.pending.get_mut(&room[..]).filter(|p| p.waits_for(class.other())) {
                        Some(pending) => {
                            let give_up_at = self.clock.map(|clock| clock + INTEREST_ACK_WAIT_MAX);
                            pending.waiters.push((Waiter::Ack(peer, token, class), give_up_at));
                        }
                        None => self.send_to_peer(peer, |dst| encode_nonce(dst, peer_type::INTEREST_ACK, token)),
                    }
                }
            }
            PeerFrame::InterestAck(token) => self.acked(peer, token),
            PeerFrame::Presence(event) => self.peer_presence(peer, event),
            PeerFrame::Forward { room, body } => self.deliver_forward(peer, &room, &body, now),
        }
    }

    fn on_hello(&mut self, peer: PeerId, hello: LinkHello, now: Instant) {
        let name = self.link_name(peer);
        if hello.version != LINK_VERSION {
            log::error!("{name} speaks link version {}, we speak {LINK_VERSION}; refusing it", hello.version);
            return self.link_down(peer, now);
        }
        let link = &self.links[peer];
        if link.class == LinkClass::Sibling {
            log::debug!("peer link {peer} is core {}", hello.core_id);
            self.links[peer].state = LinkState::Up { node_id: hello.node_id, core_id: hello.core_id };
            self.links[peer].hello = Some(hello);
            return;
        }
        let Some((secret, instance)) = self.gateway.as_ref().map(|g| (g.secret.clone(), g.instance)) else {
            log::error!("{name} on a core that is not a gateway; dropping it");
            return self.link_down(peer, now);
        };
        // Checked before anything is stored, gossiped or logged: the peer is not authenticated,
        // and its address is text of its choosing.
        if !is_valid_cluster_addr(&hello.cluster_addr) {
            let addr = quoted(&hello.cluster_addr);
            log::error!("refusing {name}: its cluster address {addr} is not host:port");
            return self.link_down(peer, now);
        }
        let addr = String::from_utf8_lossy(&hello.cluster_addr).into_owned();
        if hello.node_id == self.config.node_id {
            if hello.instance != instance {
                log::error!("refusing {name} (at {addr}): it uses our node id {}", hello.node_id);
            }
            return self.link_down(peer, now);
        }
        let dialer_of = |link: &Link<L>, peer_id: u16, own: u16| if link.dialed { own } else { peer_id };
        let own = self.config.node_id;
        let twin = self.links.iter().find(|(other, l)| {
            *other != peer
                && l.class == LinkClass::Node
                && l.state != LinkState::Down
                && l.hello.as_ref().is_some_and(|h| h.node_id == hello.node_id)
        });
        if let Some((other, other_link)) = twin {
            let other_hello = other_link.hello.as_ref().map(|h| h.instance);
            if other_hello != Some(hello.instance) {
                log::error!("refusing {name} (at {addr}): node id {} is already used by another node", hello.node_id);
                return self.link_down(peer, now);
            }
            // Two links to the same node. A working link always stays (a redial that reached an
            // already linked node, say under another address, must not replace it); between two
            // links still in their handshake (both dialed at once), the one dialed by the
            // smaller id stays, which both ends decide alike.
            let other_up = matches!(other_link.state, LinkState::Up { .. });
            let keep_new = !other_up
                && dialer_of(&self.links[peer], hello.node_id, own) < dialer_of(other_link, hello.node_id, own);
            let drop = if keep_new { other } else { peer };
            log::debug!("two links to node {}; dropping link {drop}", hello.node_id);
            self.link_down(drop, now);
            if drop == peer {
                return;
            }
        }
        let proof = link_proof(&secret, &hello.nonce, own);
        self.links[peer].hello = Some(hello);
        self.send_frame(peer, &PeerFrame::Auth(proof));
    }

    fn on_auth(&mut self, peer: PeerId, proof: &[u8], now: Instant) {
        let name = self.link_name(peer);
        let (Some(gateway), Some(hello)) = (&self.gateway, &self.links[peer].hello) else {
            log::error!("{name} sent LINK_AUTH out of turn; dropping it");
            return self.link_down(peer, now);
        };
        // Checked by on_hello before the hello was stored.
        let addr = String::from_utf8_lossy(&hello.cluster_addr).into_owned();
        let (node_id, core_id) = (hello.node_id, hello.core_id);
        if !check_link_proof(&gateway.secret, &self.links[peer].nonce, node_id, proof) {
            log::error!("refusing {name} (node {node_id} at {addr}): wrong cluster secret");
            return self.link_down(peer, now);
        }
        log::info!("{name} up: node {node_id} at {addr}");
        self.links[peer].state = LinkState::Up { node_id, core_id };
        self.sync_announcements(peer);
        self.sync_presence(peer);
        self.gossip();
    }

    /// Tells every node we are linked to which nodes we are linked to.
    fn gossip(&mut self) {
        let Some(gateway) = &self.gateway else {
            return;
        };
        let mut nodes = vec![(self.config.node_id, Bytes::from(gateway.cluster_addr.clone()))];
        for (_, link) in self.links.iter() {
            if let (LinkState::Up { node_id, .. }, LinkClass::Node) = (link.state, link.class) {
                if let Some(addr) = link.peer_cluster_addr() {
                    nodes.push((node_id, addr.clone()));
                }
            }
        }
        nodes.truncate(NODES_PER_FRAME_MAX);
        let frame = PeerFrame::Nodes(nodes);
        let peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| l.class == LinkClass::Node && matches!(l.state, LinkState::Up { .. }))
            .map(|(p, _)| p)
            .collect();
        for peer in peers {
            self.send_frame(peer, &frame);
        }
    }

    /// Gossip from an authenticated node: nodes to dial, each address checked like a
    /// `LINK_HELLO`'s before it is dialed (a bad one is logged escaped and skipped).
    fn on_nodes(&mut self, peer: PeerId, nodes: Vec<(u16, Bytes)>) {
        for (node_id, addr) in nodes {
            if node_id == self.config.node_id || addr.is_empty() {
                continue;
            }
            if !is_valid_cluster_addr(&addr) {
                let (name, addr) = (self.link_name(peer), quoted(&addr));
                log::warn!("{name} gossiped node {node_id} at {addr}, which is not host:port; not dialing it");
                continue;
            }
            let linked = self.links.iter().any(|(_, l)| l.hello.as_ref().is_some_and(|h| h.node_id == node_id));
            if !linked {
                let addr = String::from_utf8_lossy(&addr).into_owned();
                self.learned_nodes.push(super::NodeAddress { node_id, addr });
            }
        }
    }

    /// A member joined `room`; `created` if it is the room's first local member.
    pub(super) fn joined(&mut self, key: ConnKey, room: &[u8], created: bool) {
        if created {
            self.update_announcements(room);
        }
        if let Some(pending) = self.pending.get_mut(room).filter(|p| !p.awaiting.is_empty()) {
            let give_up_at = self.clock.map(|clock| clock + INTEREST_ACK_WAIT_MAX);
            pending.waiters.push((Waiter::Conn(key, self.conns[key].session.session_id()), give_up_at));
            self.conns[key].awaiting_joined = true;
            // Nothing reaches it before its JOINED (a forward still in flight for an earlier
            // life of the room, say): its guarantees start there.
            self.router.set_receiving(key, room, false);
            return;
        }
        self.join_took_effect(key, room);
    }

    /// `room` lost its last local member: withdraw it where nothing else keeps it wanted.
    pub(super) fn room_gone(&mut self, room: &[u8]) {
        self.update_announcements(room);
    }

    /// Whether peers of `class` should send us `room`'s messages.
    fn should_announce(&self, class: LinkClass, room: &[u8]) -> bool {
        if self.router.members(room).is_some() {
            return true;
        }
        self.gateway.is_some()
            && self.interest.peers(room).iter().any(|p| self.links.get(*p).is_some_and(|l| l.class == class.other()))
    }

    /// Brings what each class of peer was told about `room` up to date; new announcements'
    /// acks are then pending under the room.
    fn update_announcements(&mut self, room: &[u8]) {
        for class in [LinkClass::Sibling, LinkClass::Node] {
            let want = self.should_announce(class, room);
            let told = self.announced[class.index()].contains(room);
            if want == told {
                continue;
            }
            let peers: Vec<PeerId> =
                self.links.iter().filter(|(_, l)| l.class == class && l.carries_traffic()).map(|(p, _)| p).collect();
            if want {
                self.announced[class.index()].insert(Bytes::copy_from_slice(room));
                if peers.is_empty() {
                    continue;
                }
                self.tokens_issued += 1;
                let token = self.tokens_issued;
                for &peer in &peers {
                    self.send_to_peer(peer, |dst| encode_interest(dst, true, token, room));
                }
                let pending = self.pending.entry(Bytes::copy_from_slice(room)).or_default();
                let give_up_at = self.clock.map(|clock| clock + INTEREST_ACK_WAIT_MAX);
                pending.awaiting.extend(peers.iter().map(|p| (*p, token, class, give_up_at)));
            } else {
                self.announced[class.index()].remove(room);
                for &peer in &peers {
                    self.send_to_peer(peer, |dst| encode_interest(dst, false, 0, room));
                }
            }
        }
    }

    /// A new link: announce to it every room its class has been told about.
    fn sync_announcements(&mut self, peer: PeerId) {
        let class = self.links[peer].class;
        let rooms: Vec<Bytes> = self.announced[class.index()].iter().cloned().collect();
        let give_up_at = self.clock.map(|clock| clock + INTEREST_ACK_WAIT_MAX);
        for room in rooms {
            // Acknowledged like any announcement: a JOIN of the room until the new peer has
            // applied it waits for its ack, or a publish there right after could miss the member.
            self.tokens_issued += 1;
            let token = self.tokens_issued;
            self.send_to_peer(peer, |dst| encode_interest(dst, true, token, &room));
            self.pending.entry(room).or_default().awaiting.push((peer, token, class, give_up_at));
        }
    }

    /// `peer` applied the announcement with `token`; when a room's announcements are all
    /// acknowledged, its waiters get their `JOINED` or `INTEREST_ACK`.
    fn acked(&mut self, peer: PeerId, token: u64) {
        let mut ready = Vec::new();
        self.pending.retain(|room, pending| {
            let before = pending.awaiting.len();
            pending.awaiting.retain(|(p, t, _, _)| (*p, *t) != (peer, token));
            if pending.awaiting.len() == before {
                return true;
            }
            let waiters = std::mem::take(&mut pending.waiters);
            let (go, stay): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(w, _)| match w {
                Waiter::Conn(..) => pending.awaiting.is_empty(),
                Waiter::Ack(_, _, class) => !pending.waits_for(class.other()),
            });
            pending.waiters = stay;
            if !go.is_empty() {
                ready.push((room.clone(), go.into_iter().map(|(w, _)| w).collect::<Vec<_>>()));
            }
            !pending.awaiting.is_empty()
        });
        for (room, waiters) in ready {
            self.release(&room, waiters);
        }
    }

    fn release(&mut self, room: &[u8], waiters: Vec<Waiter>) {
        for waiter in waiters {
            match waiter {
                Waiter::Ack(peer, token, _) => {
                    if self.links.get(peer).is_some_and(|l| l.carries_traffic()) {
                        self.send_to_peer(peer, |dst| encode_nonce(dst, peer_type::INTEREST_ACK, token));
                    }
                }
                Waiter::Conn(key, session_id) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.session.session_id() != session_id || conn.is_closing() {
                        continue;
                    }
                    conn.awaiting_joined = false;
                    self.router.set_receiving(key, room, true);
                    self.join_took_effect(key, room);
                    self.resumed.push(key);
                    // Requests that arrived behind the JOIN run once the routing that released it
                    // is done (`run_unpaused`), never from inside it.
                    self.unpaused.push(key);
                }
            }
        }
    }

    /// Queues one `FORWARD` of an encoded `MESSAGE` on every peer link that wants `room`;
    /// `from` is the class of link it arrived on, if it was forwarded to us.
    pub(super) fn forward(&mut self, room: &[u8], message: &Bytes, from: Option<LinkClass>, now: Instant) {
        if from.is_some() && self.gateway.is_none() {
            return; // only a gateway relays
        }
        let Self { interest, links, encode, stats, links_to_flush, .. } = self;
        let mut frame: Option<Bytes> = None;
        let mut too_slow: Vec<PeerId> = Vec::new();
        for &peer in interest.peers(room) {
            let Some(link) = links.get_mut(peer) else {
                continue;
            };
            if !link.carries_traffic() || Some(link.class) == from {
                continue;
            }
            let frame = frame.get_or_insert_with(|| {
                let body = message_body(message);
                encode.reserve(HEADER_BYTES + body.len());
                encode_forward(encode, body);
                encode.split().freeze()
            });
            if link.queues.data.queued_bytes() > LINK_OUTPUT_BYTES_MAX {
                link.forwards_dropped += 1;
                stats.forwards_dropped += 1;
                if link.class == LinkClass::Node {
                    // A node this far behind (grey failure) is cut and redialled, never waited for.
                    too_slow.push(peer);
                }
                // A sibling this far behind loses messages (seq gaps show it); it never stalls us.
                continue;
            }
            link.push(frame, now);
            stats.forwards_sent += 1;
            if !link.flush_queued {
                link.flush_queued = true;
                links_to_flush.push(peer);
            }
        }
        for peer in too_slow {
            log::warn!("{} is over its queue limit; dropping it", self.link_name(peer));
            self.link_down(peer, now);
        }
    }

    /// Delivers a publish forwarded by a peer to our members of `room`, and relays it if we
    /// are a gateway; never sends it back toward the class it came from.
    fn deliver_forward(&mut self, peer: PeerId, room: &[u8], body: &Bytes, now: Instant) {
        self.stats.forwards_received += 1;
        let Some((name, payload)) = name_and_payload(body) else {
            return;
        };
        let frame = encode_frame(&mut self.encode, HEADER_BYTES + body.len(), |dst| {
            put_header(dst, frame_type::MESSAGE, body.len());
            dst.extend_from_slice(body);
        });
        if let Some(members) = self.router.members(room) {
            fanout!(self).deliver(members, None, &frame, name, payload);
        }
        let from = self.links[peer].class;
        self.forward(room, &frame, Some(from), now);
        self.cut_slow_consumers(now);
    }

    /// Node links' keepalive, handshake deadline and lag bound, and every announcement's
    /// bounded wait for acks.
    pub(super) fn tick_links(&mut self, now: Instant) {
        self.clock = Some(now);
        let mut down = Vec::new();
        let mut pings = Vec::new();
        for (peer, link) in self.links.iter_mut() {
            if link.class != LinkClass::Node || link.state == LinkState::Down {
                continue;
            }
            let name = LinkName { peer, class: link.class, remote: link.remote };
            let silent = now.saturating_duration_since(link.last_heard);
            let opening = link.state == LinkState::Opening;
            if opening && now.saturating_duration_since(link.opened_at) > LINK_HANDSHAKE_TIMEOUT {
                log::warn!("{name} did not finish its handshake in time");
                down.push(peer);
                continue;
            }
            if silent > LINK_SILENCE_MAX {
                log::warn!("{name} has been silent for {silent:?}");
                down.push(peer);
                continue;
            }
            if opening {
                continue;
            }
            let lag = link.data_lag(now);
            if lag > NODE_LINK_LAG_MAX {
                // A slow peer (grey failure): cut rather than let its messages grow late.
                log::warn!("{name} is {lag:?} behind; dropping it");
                self.stats.node_links_too_slow += 1;
                down.push(peer);
            } else if now.saturating_duration_since(link.last_queued) >= LINK_PING_INTERVAL {
                // Nothing said for a while: say something, so the peer hears us whatever the
                // state of the other direction.
                pings.push(peer);
            }
        }
        for peer in pings {
            self.send_to_peer(peer, |dst| encode_nonce(dst, frame_type::PING, 0));
        }
        for peer in down {
            self.link_down(peer, now);
        }
        // Every wait for an ack is bounded: a peer that did not answer in time is not waited for.
        let mut expired: Vec<(PeerId, u64)> = Vec::new();
        for pending in self.pending.values_mut() {
            for (peer, token, _, give_up_at) in &mut pending.awaiting {
                match give_up_at {
                    Some(at) if *at <= now => expired.push((*peer, *token)),
                    Some(_) => {}
                    None => *give_up_at = Some(now + INTEREST_ACK_WAIT_MAX),
                }
            }
        }
        // And every waiter's own wait: acks awaited from links that formed after it came do not
        // hold it past its bound either.
        let mut overdue: Vec<(Bytes, Vec<Waiter>)> = Vec::new();
        for (room, pending) in &mut self.pending {
            let waiters = std::mem::take(&mut pending.waiters);
            let (late, keep): (Vec<_>, Vec<_>) =
                waiters.into_iter().partition(|(_, at)| at.is_some_and(|at| at <= now));
            pending.waiters = keep;
            for (_, at) in &mut pending.waiters {
                at.get_or_insert(now + INTEREST_ACK_WAIT_MAX);
            }
            if !late.is_empty() {
                overdue.push((room.clone(), late.into_iter().map(|(w, _)| w).collect()));
            }
        }
        for (room, waiters) in overdue {
            self.stats.interest_acks_timed_out += 1;
            self.release(&room, waiters);
        }
        for (peer, token) in expired {
            let name = self.link_name(peer);
            log::warn!("{name} did not acknowledge interest within {INTEREST_ACK_WAIT_MAX:?}; not waiting");
            self.stats.interest_acks_timed_out += 1;
            self.acked(peer, token);
        }
        self.run_unpaused(now);
    }

    fn send_frame(&mut self, peer: PeerId, frame: &PeerFrame) {
        self.send_to_peer(peer, |dst| frame.encode(dst));
    }

    pub(super) fn send_to_peer(&mut self, peer: PeerId, encode: impl FnOnce(&mut BytesMut)) {
        let mut frame = BytesMut::new();
        encode(&mut frame);
        let now = self.clock.unwrap_or(self.links[peer].last_queued);
        self.links[peer].push_control(&frame, now);
        self.queue_link_flush(peer);
    }

    fn queue_link_flush(&mut self, peer: PeerId) {
        let link = &mut self.links[peer];
        if !link.flush_queued {
            link.flush_queued = true;
            self.links_to_flush.push(peer);
        }
    }
}
