//! A peer link: one type for core ↔ core and node ↔ node.
//!
//! A link is an ordered stream of frames to a peer, exactly like a client connection but
//! speaking the peer frames of [`crate::codec::peer`]. Like [`crate::hub::Conn`] it is sans-IO:
//! the reactor moves bytes between `io` and the link's input buffer and outbox, the hub decides
//! what the frames mean. Routing code sees "peer `p` wants room R", never a thread or a socket;
//! the only difference it knows is the link's [`LinkClass`], which decides what may be relayed.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codec::peer::{LinkHello, PeerFrame, NONCE_BYTES};
use crate::codec::FrameDecoder;
use crate::error::DecodeError;
use crate::outbox::Outbox;

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

/// One peer link as the hub holds it.
#[derive(Debug)]
pub struct Link<L> {
    /// The reactor's transport for this link.
    pub io: L,
    /// Bytes read and not yet decoded; the reactor appends, the hub consumes.
    pub input: BytesMut,
    pub(crate) outbox: Outbox,
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
    pub(crate) ping_sent: bool,
    decoder: FrameDecoder,
}

impl<L> Link<L> {
    /// A link of `class` over `io` that has sent nothing yet.
    pub fn new(io: L, class: LinkClass, dialed: bool, nonce: [u8; NONCE_BYTES], now: Instant) -> Self {
        Self {
            io,
            input: BytesMut::new(),
            // Forwards are shared, never copied per link: one publish goes to many links.
            outbox: Outbox::with_share_threshold(0),
            flush_queued: false,
            state: LinkState::Opening,
            class,
            forwards_dropped: 0,
            dialed,
            nonce,
            hello: None,
            opened_at: now,
            last_heard: now,
            ping_sent: false,
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

    /// The transport and the output queue together, so the reactor can flush one into the other.
    pub fn io_and_outbox(&mut self) -> (&mut L, &mut Outbox) {
        (&mut self.io, &mut self.outbox)
    }

    /// The link's state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The link's class.
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
    pub fn forwards_dropped(&self) -> u64 {
        self.forwards_dropped
    }

    /// The node id the peer said hello with, if it did.
    pub fn peer_node_id(&self) -> Option<u16> {
        self.hello.as_ref().map(|h| h.node_id)
    }

    /// The cluster address the peer announced, if it is a node that said hello.
    pub fn peer_cluster_addr(&self) -> Option<&Bytes> {
        self.hello.as_ref().map(|h| &h.cluster_addr).filter(|a| !a.is_empty())
    }

    pub(crate) fn push(&mut self, frame: &Bytes) {
        self.outbox.push(frame);
    }
}
