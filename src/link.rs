//! A peer link: one type for core ↔ core and node ↔ node.
//!
//! A link is an ordered stream of frames to a peer, exactly like a client connection but
//! speaking the peer frames of [`crate::codec::peer`]. Like [`crate::hub::Conn`] it is sans-IO:
//! the reactor moves bytes between `io` and the link's input buffer and outbox, the hub decides
//! what the frames mean. Routing code sees "peer `p` wants room R", never a thread or a socket;
//! the only difference it knows is the link's [`LinkClass`], which decides what may be relayed.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codec::peer::{LinkHello, PeerFrame, NONCE_BYTES};
use crate::codec::FrameDecoder;
use crate::error::DecodeError;
use crate::outbox::{Flush, Outbox};

/// What kind of peer a link reaches: it decides relaying (a message never goes from one link of
/// a class to another link of the same class) and authentication (nodes prove the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkClass {
    /// Another core of this node, in the same process.
    Sibling,
    /// Another node's gateway, over the network.
    Node,
}

impl LinkClass {
    /// A small index for per-class tables.
    pub fn index(self) -> usize {
        match self {
            Self::Sibling => 0,
            Self::Node => 1,
        }
    }

    /// The other class.
    pub fn other(self) -> Self {
        match self {
            Self::Sibling => Self::Node,
            Self::Node => Self::Sibling,
        }
    }
}

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Frames may flow to a sibling; a node link is still proving who it is.
    Opening,
    /// The peer said who it is (and, for a node, proved the cluster secret).
    Up {
        /// The peer's node.
        node_id: u16,
        /// The peer's core.
        core_id: u16,
    },
    /// The link failed; nothing more is sent or read.
    Down,
}

/// A link's two output queues. Control frames (handshake, interest and its acks, presence,
/// keepalive) go ahead of forwarded messages, at the next frame boundary: a link that is behind
/// with data still answers a `JOIN`'s interest promptly and still shows it is alive.
#[derive(Debug)]
pub struct LinkQueues {
    /// Control frames, copied; small and few.
    pub(crate) control: Outbox,
    /// Forwarded messages, shared by reference count (one publish goes to many links).
    pub(crate) data: Outbox,
}

impl LinkQueues {
    fn new() -> Self {
        Self { control: Outbox::new(), data: Outbox::with_share_threshold(0) }
    }

    /// Bytes queued in both.
    pub fn queued_bytes(&self) -> usize {
        self.control.queued_bytes() + self.data.queued_bytes()
    }

    /// True when nothing is queued.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
    }

    /// Drops everything queued (the link is down).
    pub fn clear(&mut self) {
        self.control.clear();
        self.data.clear();
    }

    /// Writes as much as `writer` takes: the rest of a half-written data frame, then every
    /// control frame, then data; until drained or `WouldBlock`.
    pub fn flush_to<W: Write>(&mut self, writer: &mut W) -> io::Result<Flush> {
        if self.data.flush_front_frame_to(writer)? == Flush::Blocked {
            return Ok(Flush::Blocked);
        }
        if self.control.flush_to(writer)? == Flush::Blocked {
            return Ok(Flush::Blocked);
        }
        self.data.flush_to(writer)
    }
}

/// One peer link as the hub holds it.
#[derive(Debug)]
pub struct Link<L> {
    /// The reactor's transport for this link.
    pub io: L,
    /// Bytes read and not yet decoded; the reactor appends, the hub consumes.
    pub input: BytesMut,
    pub(crate) queues: LinkQueues,
    pub(crate) flush_queued: bool,
    pub(crate) state: LinkState,
    pub(crate) class: LinkClass,
    pub(crate) forwards_dropped: u64,
    /// We dialed it (as opposed to accepted it): decides which of two links to one node stays.
    pub(crate) dialed: bool,
    /// The nonce we sent; the peer must MAC it with the secret.
    pub(crate) nonce: [u8; NONCE_BYTES],
    /// What the peer said in its `LINK_HELLO`.
    pub(crate) hello: Option<LinkHello>,
    pub(crate) opened_at: Instant,
    pub(crate) last_heard: Instant,
    /// When a frame was last queued: a node link with nothing to say for a while sends `PING`,
    /// so the peer always hears from it, however far behind the other direction is.
    pub(crate) last_queued: Instant,
    /// (when, data bytes queued in all by then), one per timer tick while data waits.
    lag_samples: std::collections::VecDeque<(Instant, u64)>,
    /// The socket address of a node link's peer, as the kernel reports it (never what the peer
    /// claims): log lines name a link by it. `None` between cores.
    pub(crate) remote: Option<SocketAddr>,
    decoder: FrameDecoder,
}

impl<L> Link<L> {
    /// A link of `class` over `io` that has sent nothing yet.
    pub fn new(io: L, class: LinkClass, dialed: bool, nonce: [u8; NONCE_BYTES], now: Instant) -> Self {
        Self {
            io,
            input: BytesMut::new(),
            queues: LinkQueues::new(),
            flush_queued: false,
            state: LinkState::Opening,
            class,
            forwards_dropped: 0,
            dialed,
            nonce,
            hello: None,
            opened_at: now,
            last_heard: now,
            last_queued: now,
            lag_samples: std::collections::VecDeque::new(),
            remote: None,
            decoder: FrameDecoder::default(),
        }
    }

    /// The next whole frame from the peer, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<PeerFrame>, DecodeError> {
        match self.decoder.decode(&mut self.input)? {
            Some(raw) => PeerFrame::parse(raw).map(Some),
            None => Ok(None),
        }
    }

    /// The transport and the output queues together, so the reactor can flush one into the other.
    pub fn io_and_queues(&mut self) -> (&mut L, &mut LinkQueues) {
        (&mut self.io, &mut self.queues)
    }

    /// The link's state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The link's class.
    #[cfg(any(test, feature = "testing"))]
    pub fn class(&self) -> LinkClass {
        self.class
    }

    /// Whether routed traffic (interest, forwards) may go to this peer: siblings from the
    /// start, nodes only once they proved the cluster secret.
    pub fn carries_traffic(&self) -> bool {
        match self.state {
            LinkState::Up { .. } => true,
            LinkState::Opening => self.class == LinkClass::Sibling,
            LinkState::Down => false,
        }
    }

    /// Publishes dropped because this link's queue was over its limit.
    #[cfg(any(test, feature = "testing"))]
    pub fn forwards_dropped(&self) -> u64 {
        self.forwards_dropped
    }

    /// The node id the peer said hello with, if it did.
    pub fn peer_node_id(&self) -> Option<u16> {
        self.hello.as_ref().map(|h| h.node_id)
    }

    /// The peer's socket address, for a node link whose reactor knew it.
    #[cfg(any(test, feature = "testing"))]
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The cluster address the peer announced, if it is a node that said hello.
    pub fn peer_cluster_addr(&self) -> Option<&Bytes> {
        self.hello.as_ref().map(|h| &h.cluster_addr).filter(|a| !a.is_empty())
    }

    /// Queues a forwarded message (data).
    pub(crate) fn push(&mut self, frame: &Bytes, now: Instant) {
        self.queues.data.push(frame);
        self.last_queued = now;
    }

    /// Queues a control frame, ahead of data at the next frame boundary.
    pub(crate) fn push_control(&mut self, frame: &[u8], now: Instant) {
        self.queues.control.push_slice(frame);
        self.last_queued = now;
    }

    /// How long the oldest byte of data not yet written has waited, at least (sampled once per
    /// timer tick, so it may be up to a tick older); samples now.
    pub(crate) fn data_lag(&mut self, now: Instant) -> std::time::Duration {
        let data = &self.queues.data;
        let written = data.written_total();
        let queued_total = written + data.queued_bytes() as u64;
        // A sample (t, q): every byte queued by t is among the first q. The oldest unsent byte
        // (number `written`) came after every sample with q <= written, and by the first
        // sample with q > written.
        while self.lag_samples.front().is_some_and(|(_, q)| *q <= written) {
            self.lag_samples.pop_front();
        }
        let lag =
            self.lag_samples.front().map_or(std::time::Duration::ZERO, |(t, _)| now.saturating_duration_since(*t));
        if self.lag_samples.back().is_none_or(|(_, q)| *q < queued_total) {
            self.lag_samples.push_back((now, queued_total));
        }
        lag
    }
}
