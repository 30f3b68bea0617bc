//! Read-only views of a hub for an operator: who is connected (`/connz`), which rooms exist and
//! who wants them (`/roomz`), the node links (`/routez`), and the numbers that mean one thing per
//! server (rooms counted once, node links). Nothing here runs per message: the reactor calls it
//! when an operator asks, and the metrics endpoint once per scrape.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Hub;
use crate::interest::PeerId;
use crate::link::{LinkClass, LinkState};
use crate::router::ConnKey;
use crate::session::Mode;

/// One connection as `/connz` shows it; the reactor adds what only its socket knows (remote
/// address, bytes read, times), so `io` is handed back with it.
#[derive(Debug)]
pub struct ConnView<'a, T> {
    /// The connection's key in its core (the number log lines give it).
    pub key: ConnKey,
    /// The reactor's transport for it.
    pub io: &'a T,
    /// Its session id, unique in the cluster.
    pub session_id: u64,
    /// Its user name (empty before the handshake).
    pub name: &'a Bytes,
    /// Binary, line or not decided yet.
    pub mode: Mode,
    /// The rooms it is in.
    pub rooms: Vec<Bytes>,
    /// Output bytes queued and not yet taken by the kernel.
    pub output_bytes_queued: usize,
    /// Output bytes the kernel took, over the connection's life.
    pub output_bytes_written: u64,
    /// Being closed: its last bytes (an error) are on their way out.
    pub closing: bool,
}

/// A peer as an operator names it: a sibling by its core, a node by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerName {
    /// A sibling core of this node.
    Core(u16),
    /// Another node.
    Node(u16),
    /// A link whose peer has not said who it is yet.
    Link(PeerId),
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Core(core) => write!(f, "core {core}"),
            Self::Node(node) => write!(f, "node {node}"),
            Self::Link(peer) => write!(f, "link {peer}"),
        }
    }
}

/// One node link as `/routez` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    /// The link's index in the hub (the number log lines give it).
    pub peer: PeerId,
    /// The node at the other end, once it said hello.
    pub node_id: Option<u16>,
    /// The socket address of the other end, as the kernel reports it.
    pub remote: Option<SocketAddr>,
    /// The cluster address the peer announced (where others may dial it).
    pub cluster_addr: Option<String>,
    /// `opening`, `up` or `down`.
    pub state: &'static str,
    /// We dialed it (as opposed to accepted it).
    pub dialed: bool,
    /// How long ago the link was opened.
    pub age: Duration,
    /// Bytes queued for the peer (control and data).
    pub queued_bytes: usize,
    /// How long the oldest unsent data byte has waited (sampled per tick: may be a tick older).
    pub oldest_queued_age: Duration,
    /// How long ago the link last received a byte.
    pub last_received_age: Duration,
    /// Forwards dropped because the link's queue was full.
    pub forwards_dropped: u64,
    /// Rooms the peer announced.
    pub rooms: usize,
}

impl<T, L> Hub<T, L> {
    /// This node's id (in `/routez`, beside the ids of the nodes it links to).
    pub fn node_id(&self) -> u16 {
        self.config.node_id
    }

    /// The connections with the `max` lowest session ids, in session id order, and how many
    /// connections there are. Session ids grow with each accept, so a page stays stable while
    /// connections come and go behind it. O(connections), on request only.
    pub fn conn_views(&self, max: usize) -> (usize, Vec<ConnView<'_, T>>) {
        let mut order: Vec<(u64, ConnKey)> = self.conns.iter().map(|(k, c)| (c.session.session_id(), k)).collect();
        let total = order.len();
        if max < order.len() {
            if max == 0 {
                return (total, Vec::new());
            }
            order.select_nth_unstable(max - 1);
            order.truncate(max);
        }
        order.sort_unstable();
        let views = order
            .into_iter()
            .map(|(session_id, key)| {
                let conn = &self.conns[key];
                ConnView {
                    key,
                    io: &conn.io,
                    session_id,
                    name: conn.session.name(),
                    mode: conn.session.mode(),
                    rooms: self.router.rooms_of_conn(key),
                    output_bytes_queued: conn.outbox.queued_bytes(),
                    output_bytes_written: conn.outbox.written_total(),
                    closing: conn.is_closing(),
                }
            })
            .collect();
        (total, views)
    }

    /// Members of `room` on this core.
    pub fn local_room_members(&self, room: &[u8]) -> usize {
        self.router.members(room).map_or(0, <[_]>::len)
    }

    /// Members of `room` anywhere in the cluster, as presence knows them (bounded by
    /// `PRESENCE_ENTRIES_MAX`: a full table undercounts).
    pub fn cluster_room_members(&self, room: &[u8]) -> usize {
        self.presence.count(room)
    }

    /// Every room this hub knows of, sorted: its own, those its peers announced (on core 0 every
    /// sibling's, and every other node's), and those presence lists.
    pub fn known_rooms(&self) -> Vec<Bytes> {
        let mut rooms: BTreeSet<Bytes> = self.router.room_names().cloned().collect();
        for (peer, _) in self.links.iter() {
            rooms.extend(self.interest.rooms_of(peer));
        }
        rooms.extend(self.presence.rooms().into_iter().map(|(room, _)| room.clone()));
        rooms.into_iter().collect()
    }

    /// Rooms with at least one member on this server, each counted once however many cores it
    /// has members on: this core's rooms and those a sibling announced. Exact on core 0 — the
    /// core the metrics endpoint runs on — because a sibling that is not a gateway announces
    /// exactly the rooms it has members in (a gateway also announces rooms other nodes want).
    /// O(rooms), once per scrape.
    pub fn server_room_count(&self) -> usize {
        let mut from_siblings: HashSet<Bytes> = HashSet::new();
        for (peer, link) in self.links.iter() {
            if link.class == LinkClass::Sibling {
                let rooms = self.interest.rooms_of(peer).into_iter();
                from_siblings.extend(rooms.filter(|room| self.router.members(room).is_none()));
            }
        }
        self.router.room_count() + from_siblings.len()
    }

    /// The peers that announced `room` (they get its messages), as operators name them.
    pub fn interested_peers(&self, room: &[u8]) -> Vec<PeerName> {
        let mut names: Vec<PeerName> = self.interest.peers(room).iter().map(|p| self.peer_name(*p)).collect();
        names.sort_unstable();
        names
    }

    fn peer_name(&self, peer: PeerId) -> PeerName {
        let Some(link) = self.links.get(peer) else {
            return PeerName::Link(peer);
        };
        match (link.class, &link.hello) {
            (LinkClass::Sibling, Some(hello)) => PeerName::Core(hello.core_id),
            (LinkClass::Node, Some(hello)) if matches!(link.state, LinkState::Up { .. }) => {
                PeerName::Node(hello.node_id)
            }
            _ => PeerName::Link(peer),
        }
    }

    /// Every node link, as `/routez` shows it, aged as of `now`. Takes `&mut self` only because
    /// the age of the oldest queued byte is read by sampling the link's queue, as a tick does (a
    /// sample more only makes the measure finer).
    pub fn node_link_views(&mut self, now: Instant) -> Vec<LinkView> {
        let peers: Vec<PeerId> =
            self.links.iter().filter(|(_, l)| l.class == LinkClass::Node).map(|(peer, _)| peer).collect();
        let mut views = Vec::with_capacity(peers.len());
        for peer in peers {
            let rooms = self.interest.rooms_of(peer).len();
            let link = &mut self.links[peer];
            let oldest_queued_age = link.data_lag(now);
            views.push(LinkView {
                peer,
                node_id: link.peer_node_id(),
                remote: link.remote,
                cluster_addr: link.peer_cluster_addr().map(|a| String::from_utf8_lossy(a).into_owned()),
                state: match link.state {
                    LinkState::Opening => "opening",
                    LinkState::Up { .. } => "up",
                    LinkState::Down => "down",
                },
                dialed: link.dialed,
                age: now.saturating_duration_since(link.opened_at),
                queued_bytes: link.queues.queued_bytes(),
                oldest_queued_age,
                last_received_age: now.saturating_duration_since(link.last_heard),
                forwards_dropped: link.forwards_dropped,
                rooms,
            });
        }
        views
    }
}
