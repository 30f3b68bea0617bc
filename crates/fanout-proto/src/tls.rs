//! TLS for the protocol's connections (the `tls` feature): rustls with the `ring` provider.
//!
//! * [`TlsLayer`] is one TLS connection, client or server side, *sans-IO*: it never touches a
//!   socket itself, so a non-blocking event loop (the server's reactor, the bench's workers)
//!   drives it exactly like the frame codec. Ciphertext the loop read goes in through
//!   [`TlsLayer::receive`] and comes out as plaintext appended to the connection's input buffer;
//!   the connection's output leaves through [`TlsLayer::writer`], a [`Write`] that encrypts into
//!   a bounded buffer ([`TLS_BUFFERED_BYTES_MAX`]) and hands records to the socket, answering
//!   `WouldBlock` once that buffer is full — so an output queue flushed through it keeps its
//!   backlog (and its slow-consumer limit) as over plain TCP.
//! * [`ClientTls`] is what a client needs to dial: the roots it trusts, its own certificate for
//!   mutual TLS, the name to verify. [`BlockingTls`] runs a [`TlsLayer`] over a blocking socket
//!   for [`crate::client::Client`].
//! * [`pem`] reads certificate and key files, with errors that name the flag they came from.
//!
//! ```
//! # use fanout_proto::tls::{TlsLayer, Received};
//! # fn pump(client: &mut TlsLayer, server: &mut TlsLayer) -> Result<(), Box<dyn std::error::Error>> {
//! // The event loop: bytes from the socket in, plaintext out into the input buffer.
//! let mut wire = Vec::new();
//! client.write_records(&mut wire)?; // the ClientHello, as the socket would take it
//! let mut input = bytes::BytesMut::new();
//! let Received { peer_closed } = server.receive(&wire, &mut input)?;
//! # let _ = peer_closed; Ok(()) }
//! ```

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
pub use rustls;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::limits::TLS_BUFFERED_BYTES_MAX;

mod blocking;
mod client_config;
pub mod pem;

pub use blocking::BlockingTls;
pub use client_config::{server_name, ClientTls};

/// The crypto every TLS configuration of fanout uses: rustls's `ring` provider (it builds with a
/// C compiler alone; the default aws-lc-rs needs cmake). Passed explicitly, never installed as a
/// process default, so a program embedding the client keeps its own choice.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `first_bytes` (the first a peer sent; any prefix will do) can start a TLS connection:
/// a handshake record (content type 22) of TLS 1.x. A plain fanout client or node starts
/// otherwise (a frame length's zero byte, or text), so a TLS port can say what it got instead.
pub fn starts_like_tls(first_bytes: &[u8]) -> bool {
    const HANDSHAKE_RECORD: u8 = 0x16;
    const TLS_MAJOR_VERSION: u8 = 0x03;
    match first_bytes {
        [] => true,
        [kind] => *kind == HANDSHAKE_RECORD,
        [kind, major, ..] => *kind == HANDSHAKE_RECORD && *major == TLS_MAJOR_VERSION,
    }
}

/// Why a TLS connection failed. Every variant ends the connection; none is a panic.
#[derive(Debug)]
pub enum TlsError {
    /// The peer broke TLS: a malformed record, a failed verification (an untrusted or
    /// wrongly named certificate, a missing client certificate), or an alert it sent.
    Protocol(rustls::Error),
    /// The layer could not take the bytes in: its buffers are full, or the peer sent records
    /// after it closed the connection.
    Overrun(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "TLS: {e}"),
            Self::Overrun(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// What one [`TlsLayer::receive`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The peer closed TLS cleanly (`close_notify`): it sends nothing more.
    pub peer_closed: bool,
}

/// One TLS connection, client or server side, between a socket and a codec; see the module docs.
pub struct TlsLayer {
    conn: Connection,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.conn {
            Connection::Client(_) => "client",
            Connection::Server(_) => "server",
        };
        f.debug_struct("TlsLayer")
            .field("side", &side)
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// The server side of a connection just accepted, presenting `config`'s certificate.
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let conn = ServerConnection::new(config).map_err(TlsError::Protocol)?;
        Ok(Self::bounded(Connection::Server(conn)))
    }

    /// The client side of a connection to the server that must prove it is `name`.
    pub fn client(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Self, TlsError> {
        let conn = ClientConnection::new(config, name).map_err(TlsError::Protocol)?;
        Ok(Self::bounded(Connection::Client(conn)))
    }

    fn bounded(mut conn: Connection) -> Self {
        conn.set_buffer_limit(Some(TLS_BUFFERED_BYTES_MAX));
        Self { conn }
    }

    /// Takes in every byte of `ciphertext` (read from the socket) and appends the plaintext it
    /// held to `plaintext`: never more bytes than `ciphertext` had, so a read budget on the
    /// socket bounds the plaintext too. A partial record waits inside for its rest. After an
    /// error the connection is over; records queued by then (an alert telling the peer why) may
    /// still be written with [`TlsLayer::write_records`].
    pub fn receive(&mut self, mut ciphertext: &[u8], plaintext: &mut BytesMut) -> Result<Received, TlsError> {
        // Each turn takes at least one byte, so the loop ends within `ciphertext.len()` turns.
        while !ciphertext.is_empty() {
            let taken = self.conn.read_tls(&mut ciphertext).map_err(TlsError::Overrun)?;
            let state = self.conn.process_new_packets().map_err(TlsError::Protocol)?;
            self.take_plaintext(state.plaintext_bytes_to_read(), plaintext)?;
            if state.peer_has_closed() {
                // Anything after `close_notify` is ignored, as TLS requires.
                return Ok(Received { peer_closed: true });
            }
            if taken == 0 {
                let e = io::Error::other("the TLS layer took no bytes");
                return Err(TlsError::Overrun(e));
            }
        }
        Ok(Received { peer_closed: false })
    }

    /// Moves `count` bytes of decrypted plaintext to the end of `plaintext`.
    fn take_plaintext(&mut self, count: usize, plaintext: &mut BytesMut) -> Result<(), TlsError> {
        if count == 0 {
            return Ok(());
        }
        let start = plaintext.len();
        plaintext.resize(start + count, 0);
        let read = self.conn.reader().read_exact(&mut plaintext[start..]);
        read.map_err(|e| {
            plaintext.truncate(start);
            TlsError::Overrun(e)
        })
    }

    /// True until the handshake is over (application bytes written meanwhile wait inside).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True while TLS records wait for the socket: the loop should write them
    /// ([`TlsLayer::write_records`]) and, if the socket refuses, wait for it to become writable.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting TLS records (handshake messages, alerts, encrypted data) to `socket` until
    /// none is left or the socket would block; [`TlsLayer::wants_write`] tells which.
    pub fn write_records<W: Write>(&mut self, socket: &mut W) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A [`Write`] that encrypts plaintext into this connection and writes the records to
    /// `socket`; see [`TlsWriter`].
    pub fn writer<'a, W: Write>(&'a mut self, socket: &'a mut W) -> TlsWriter<'a, W> {
        TlsWriter { layer: self, socket }
    }

    /// Queues `close_notify`, TLS's own end of stream; write it with [`TlsLayer::write_records`]
    /// before shutting the socket down.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

/// Plaintext in, TLS records out to a socket: what an output queue flushes into when its
/// connection is TLS. `write` first hands the socket records already encrypted, then takes as
/// much plaintext as the layer's bounded buffer holds; when that buffer is full and the socket
/// refuses more, it answers `WouldBlock`, as the socket itself would.
pub struct TlsWriter<'a, W: Write> {
    layer: &'a mut TlsLayer,
    socket: &'a mut W,
}

impl<W: Write> Write for TlsWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.layer.write_records(self.socket)?;
        let taken = self.layer.conn.writer().write_vectored(bufs)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.layer.write_records(self.socket)?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.layer.write_records(self.socket)
    }
}

#[cfg(test)]
pub(crate) mod test_certs;
#[cfg(test)]
mod tests;
