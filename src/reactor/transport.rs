//! The one byte path of the reactor: accepting sockets, reading them into an input buffer and
//! flushing queued frames into them, shared by client connections and node links. What the
//! bytes mean is the hub's business; what readiness means for a socket is this module's.
//!
//! A [`Transport`] is a socket with the registration state the reactor keeps for it: whether it
//! waits for WRITABLE (only while the kernel refused bytes) and whether it is queued to be read
//! again (a socket that used its read budget this turn is, since edge-triggered readiness will
//! not remind us). An [`Acceptor`] is a listener that pauses after the process ran out of
//! descriptors instead of spinning.
//!
//! A transport may carry a [`TlsLayer`] between its socket and the input buffer and output
//! queue (a client of the TLS listener, a node link with cluster TLS): reads decrypt what came
//! (at most what was read, so the read budget holds), flushes encrypt into the layer's bounded
//! buffer and write its records. The handshake needs no turn of its own: its records leave with
//! the next flush ([`Received::wants_flush`] asks for one), and it is over when
//! [`Received::secured`] says so. The rest of the reactor cannot tell a TLS transport apart.

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
use crate::tls::{starts_like_tls, TlsError, TlsLayer};

/// A connected socket and its registration state: a client connection's or a node link's.
#[derive(Debug)]
pub struct Transport {
    stream: TcpStream,
    wants_write: bool,
    read_queued: bool,
    /// Some bytes came from the peer already (so a TLS failure is not about the first ones).
    heard: bool,
    /// TLS between the socket and the buffers, if the connection is TLS (boxed: a plain
    /// connection pays one pointer for it).
    tls: Option<Box<TlsLayer>>,
}

/// What one [`Transport::read`] did.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// Bytes taken from the socket (their plaintext appended to the input unless told to discard
    /// them).
    pub bytes: usize,
    /// The peer hung up or the socket failed: no more bytes will come.
    pub closed: bool,
    /// The read budget ran out with bytes maybe left: read again next turn.
    pub again: bool,
    /// TLS: the handshake finished during this read.
    pub secured: bool,
    /// TLS: records wait to be written (handshake messages): flush the transport.
    pub wants_flush: bool,
    /// TLS: why the connection failed, if it did (`closed` is set too).
    pub tls_failure: Option<TlsFailure>,
}

/// Why a TLS transport was given up.
#[derive(Debug)]
pub(super) enum TlsFailure {
    /// Its first bytes were not TLS: a plain client or node on a TLS port.
    NotTls,
    /// TLS failed: a certificate not trusted, a malformed record, an alert from the peer.
    Failed(TlsError),
}

impl Transport {
    /// A transport for a socket that is not registered yet.
    pub(super) fn new(stream: TcpStream) -> Self {
        Self { stream, wants_write: false, read_queued: false, heard: false, tls: None }
    }

    /// A transport whose bytes go through `tls`.
    pub(super) fn with_tls(stream: TcpStream, tls: TlsLayer) -> Self {
        Self { tls: Some(Box::new(tls)), ..Self::new(stream) }
    }

    /// True while a TLS transport is still in its handshake.
    pub(super) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
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
                    received.bytes += n;
                    if !self.take(&scratch[..n], input, keep, &mut received) {
                        received.closed = true;
                        return received;
                    }
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

    /// Puts bytes read from the socket into `input` (dropped unless `keep`), through TLS if the
    /// transport has it; false when the connection is over (TLS failed or the peer closed it).
    fn take(&mut self, bytes: &[u8], input: &mut BytesMut, keep: bool, received: &mut Received) -> bool {
        let first = !std::mem::replace(&mut self.heard, true);
        let Some(tls) = self.tls.as_deref_mut() else {
            if keep {
                input.extend_from_slice(bytes);
            }
            return true;
        };
        let was_handshaking = tls.is_handshaking();
        let start = input.len();
        let result = tls.receive(bytes, input);
        if !keep {
            input.truncate(start);
        }
        received.secured |= was_handshaking && !tls.is_handshaking();
        received.wants_flush |= tls.wants_write();
        match result {
            Ok(tls_received) => !tls_received.peer_closed,
            Err(e) => {
                // Best effort: the alert that tells the peer why.
                let _ = tls.write_records(&mut self.stream);
                let not_tls = first && was_handshaking && !starts_like_tls(bytes);
                received.tls_failure = Some(if not_tls { TlsFailure::NotTls } else { TlsFailure::Failed(e) });
                false
            }
        }
    }

    /// Lets `write` hand queued bytes to the socket (through TLS, if the transport has it),
    /// then asks for WRITABLE readiness exactly while the kernel refuses bytes. An error means
    /// the socket is dead.
    pub(super) fn flush(
        &mut self,
        registry: &Registry,
        token: Token,
        write: impl FnOnce(&mut dyn Write) -> io::Result<Flush>,
    ) -> io::Result<Flush> {
        let flush = match self.tls.as_deref_mut() {
            None => write(&mut self.stream)?,
            Some(tls) => {
                let flushed = write(&mut tls.writer(&mut self.stream))?;
                // Records may wait without plaintext (the handshake's): they go too.
                tls.write_records(&mut self.stream)?;
                if tls.wants_write() {
                    Flush::Blocked
                } else {
                    flushed
                }
            }
        };
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

    /// Sends FIN (our last bytes are out) or closes both directions; over TLS, TLS's own end
    /// (`close_notify`) goes first, best effort.
    pub(super) fn shutdown(&mut self, how: Shutdown) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.close();
            let _ = tls.write_records(&mut self.stream);
        }
        let _ = self.stream.shutdown(how);
    }

    /// Writes `bytes` once, best effort, and drops the socket (a refusal). A TLS transport
    /// writes nothing: no plaintext may cross before the handshake, and a server refusing
    /// connections under load should not spend a handshake on each.
    pub(super) fn write_once(mut self, bytes: &[u8]) {
        if self.tls.is_none() {
            let _ = self.stream.write(bytes);
        }
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
