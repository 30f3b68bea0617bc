//! A peer link: one type for core ↔ core now and node ↔ node later.
//!
//! A link is a framed byte stream to a peer, exactly like a client connection but speaking the
//! peer frames of [`crate::codec::peer`]. Like [`crate::hub::Conn`] it is sans-IO: the reactor
//! moves bytes between `io` and the link's input buffer and outbox, the hub decides what the
//! frames mean. Routing code sees "peer `p` wants room R", never a thread or a socket.

use bytes::{Bytes, BytesMut};

use crate::codec::peer::PeerFrame;
use crate::codec::FrameDecoder;
use crate::error::DecodeError;
use crate::outbox::Outbox;

/// Whether the peer has introduced itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Frames may flow, but the peer's `LINK_HELLO` has not arrived yet.
    Opening,
    /// The peer said who it is.
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
    pub(crate) forwards_dropped: u64,
    decoder: FrameDecoder,
}

impl<L> Link<L> {
    /// A link over `io` that has sent nothing yet.
    pub fn new(io: L) -> Self {
        Self {
            io,
            input: BytesMut::new(),
            // Forwards are shared, never copied per link: one publish goes to many links.
            outbox: Outbox::with_share_threshold(0),
            flush_queued: false,
            state: LinkState::Opening,
            forwards_dropped: 0,
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

    /// Publishes dropped because this link's queue was over its limit.
    pub fn forwards_dropped(&self) -> u64 {
        self.forwards_dropped
    }

    pub(crate) fn push(&mut self, frame: &Bytes) {
        self.outbox.push(frame);
    }

    pub(crate) fn push_encoded(&mut self, frame: &PeerFrame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        self.outbox.push_slice(&buf);
    }
}
