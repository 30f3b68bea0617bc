//! The one byte path of the reactor: accepting sockets, reading them into an input buffer and
//! flushing queued frames into them, shared by client connections and node links. What the
//! bytes mean is the hub's business; what readiness means for a socket is this module's.
//!
//! A [`Transport`] is a socket with the registration state the reactor keeps for it: whether it
//! waits for WRITABLE (only while the kernel refused bytes) and whether it is queued to be read
//! again (a socket that used its read budget this turn is, since edge-triggered readiness will
//! not remind us). An [`Acceptor`] is a listener that pauses after the process ran out of
//! descriptors instead of spinning.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::interest::PeerId;
use crate::limits::{ACCEPT_BACKOFF, ACCEPT_ERRORS_IN_A_ROW_MAX, READ_BYTES_PER_TURN_MAX};
use crate::outbox::Flush;
use crate::router::ConnKey;

/// A connected socket and its registration state: a client connection's or a node link's.
#[derive(Debug)]
pub struct Transport {
    stream: TcpStream,
    wants_write: bool,
    read_queued: bool,
}

/// What one [`Transport::read`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// Bytes taken from the socket (appended to the input unless told to discard them).
    pub bytes: usize,
    /// The peer hung up or the socket failed: no more bytes will come.
    pub closed: bool,
    /// The read budget ran out with bytes maybe left: read again next turn.
    pub again: bool,
}

impl Transport {
    /// A transport for a socket that is not registered yet.
    pub(super) fn new(stream: TcpStream) -> Self {
        Self { stream, wants_write: false, read_queued: false }
    }

    /// The socket, for what only it knows (addresses, options).
    pub(super) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Registers the socket for reads under `token`.
    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.stream, token, Interest::READABLE)
    }

    /// Deregisters the socket (before it is dropped).
    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Marks the transport queued for a read; false when it already was.
    pub(super) fn queue_read(&mut self) -> bool {
        !std::mem::replace(&mut self.read_queued, true)
    }

    /// Takes the transport off the read queue without reading (its connection is paused).
    pub(super) fn read_dequeued(&mut self) {
        self.read_queued = false;
    }

    /// Reads until the socket would block, it closes, or [`READ_BYTES_PER_TURN_MAX`] bytes were
    /// taken (then it stays queued: [`Received::again`]). Bytes go into `input` when `keep`, else
    /// they are read and dropped (a closing connection's).
    pub(super) fn read(&mut self, scratch: &mut [u8], input: &mut BytesMut, keep: bool) -> Received {
        self.read_queued = false;
        let mut received = Received::default();
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    received.closed = true;
                    return received;
                }
                Ok(n) => {
                    if keep {
                        input.extend_from_slice(&scratch[..n]);
                    }
                    received.bytes += n;
                    if received.bytes >= READ_BYTES_PER_TURN_MAX {
                        self.read_queued = true;
                        received.again = true;
                        return received;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("read: {e}");
                    received.closed = true;
                    return received;
                }
            }
        }
    }

    /// Lets `write` hand queued bytes to the socket, then asks for WRITABLE readiness exactly
    /// while the kernel refuses bytes. An error means the socket is dead.
    pub(super) fn flush(
        &mut self,
        registry: &Registry,
        token: Token,
        write: impl FnOnce(&mut dyn Write) -> io::Result<Flush>,
    ) -> io::Result<Flush> {
        let flush = write(&mut self.stream)?;
        let wants_write = flush == Flush::Blocked;
        if wants_write != self.wants_write {
            self.wants_write = wants_write;
            let interest = if wants_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if let Err(e) = registry.reregister(&mut self.stream, token, interest) {
                log::debug!("reregister {token:?}: {e}");
            }
        }
        Ok(flush)
    }

    /// Sends FIN (our last bytes are out) or closes both directions.
    pub(super) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    /// Writes `bytes` once, best effort, and drops the socket (a refusal).
    pub(super) fn write_once(mut self, bytes: &[u8]) {
        let _ = self.stream.write(bytes);
    }
}

/// A listener that pauses accepting for [`ACCEPT_BACKOFF`] when the process runs out of
/// descriptors (EMFILE/ENFILE), leaving the rest in the kernel's backlog, instead of spinning on
/// a readiness that will not go away.
#[derive(Debug)]
pub(super) struct Acceptor {
    listener: TcpListener,
    /// Names the listener in logs.
    what: &'static str,
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// Accepts from `listener`, named `what` in logs.
    pub(super) fn new(listener: TcpListener, what: &'static str) -> Self {
        Self { listener, what, paused_until: None }
    }

    /// The listener, to register, deregister or ask its address.
    pub(super) fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// The address it listens on.
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, or `None` when the backlog is empty or accepting is paused.
    pub(super) fn accept(&mut self, now: Instant) -> Option<(TcpStream, SocketAddr)> {
        if self.paused_until.is_some() {
            return None;
        }
        for _ in 0..ACCEPT_ERRORS_IN_A_ROW_MAX {
            match self.listener.accept() {
                Ok(accepted) => return Some(accepted),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error().is_some_and(|code| code == 24 || code == 23) => {
                    log::warn!("{} accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}", self.what);
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
                Err(e) => log::warn!("{} accept: {e}", self.what),
            }
        }
        None
    }

    /// Ends a pause that is over; true when accepting may go on (call [`Acceptor::accept`]).
    pub(super) fn resume_due(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// When a pause ends, for the loop's timeout.
    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }
}

/// A socket the reactor reads and flushes on the hub's behalf: the two kinds share this path
/// and differ only in which of the hub's tables holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// A client connection.
    Conn(ConnKey),
    /// A node link (a sibling core's link has no socket: it is flushed as mail).
    Link(PeerId),
}
