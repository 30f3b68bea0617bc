//! A [`TlsLayer`] over a blocking `TcpStream`, for [`crate::client::Client`]: one thread reads
//! while others write, as over plain TCP.
//!
//! Why not `rustls::StreamOwned`: it owns the socket and needs `&mut` for reads and writes
//! alike, so a reader blocked waiting for the server would hold every writer up. Here the
//! reader waits on the socket *without* the lock and takes it only to decrypt what arrived;
//! writers take it to encrypt and send. Records from both go out under the lock, in order.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::TlsLayer;

/// Bytes asked of the socket per read: one TLS record and its overhead.
const READ_CHUNK_BYTES: usize = 17 * 1024;

/// Reads that may bring no plaintext (handshake messages, session tickets, key updates) before
/// one that does; a server that sends only such records is given up on.
const READS_WITHOUT_PLAINTEXT_MAX: usize = 64;

/// One TLS connection on a blocking socket, shared by a reading half and writing halves.
#[derive(Debug, Clone)]
pub struct BlockingTls {
    socket: Arc<TcpStream>,
    layer: Arc<Mutex<TlsLayer>>,
}

impl BlockingTls {
    /// Runs `layer`'s handshake over `socket`, within `timeout` if given (the socket's read
    /// timeout is changed on the way, and left as it was set last). Plaintext that arrives with
    /// the handshake's last records is appended to `input`.
    pub fn handshake(
        socket: TcpStream,
        mut layer: TlsLayer,
        timeout: Option<Duration>,
        input: &mut BytesMut,
    ) -> io::Result<Self> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut socket_ref = &socket;
        // Each turn reads at least one byte or fails; the deadline bounds the turns in time.
        while layer.is_handshaking() {
            layer.write_records(&mut socket_ref)?;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long"));
                }
                socket.set_read_timeout(Some(left))?;
            }
            let n = socket_ref.read(&mut chunk)?;
            if n == 0 {
                let text = "the server closed the connection during the TLS handshake";
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, text));
            }
            if let Err(e) = layer.receive(&chunk[..n], input) {
                // Tell the server why (an alert), then give up.
                let _ = layer.write_records(&mut socket_ref);
                return Err(e.into());
            }
        }
        layer.write_records(&mut socket_ref)?;
        Ok(Self { socket: Arc::new(socket), layer: Arc::new(Mutex::new(layer)) })
    }

    fn lock(&self) -> MutexGuard<'_, TlsLayer> {
        self.layer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks (up to the socket's read timeout) until plaintext arrives, appends it to `input`
    /// and returns how many bytes came; 0 when the server closed the connection.
    pub fn read_into(&self, input: &mut BytesMut) -> io::Result<usize> {
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        for _ in 0..READS_WITHOUT_PLAINTEXT_MAX {
            let n = (&*self.socket).read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            let before = input.len();
            let mut layer = self.lock();
            let received = layer.receive(&chunk[..n], input);
            // Answers the server may need (a key update) and alerts go out in order.
            let written = layer.write_records(&mut &*self.socket);
            let received = received?;
            written?;
            if input.len() > before || received.peer_closed {
                return Ok(input.len() - before);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "the server sends TLS records that carry no data"))
    }

    /// Encrypts and sends all of `plaintext`.
    pub fn write_all(&self, plaintext: &[u8]) -> io::Result<()> {
        let mut layer = self.lock();
        let mut socket = &*self.socket;
        layer.writer(&mut socket).write_all(plaintext)?;
        layer.write_records(&mut socket)
    }

    /// Sends `close_notify` and closes both directions.
    pub fn shutdown(&self) -> io::Result<()> {
        let mut layer = self.lock();
        layer.close();
        let _ = layer.write_records(&mut &*self.socket);
        self.socket.shutdown(Shutdown::Both)
    }
}
