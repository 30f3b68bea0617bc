//! A blocking client of the binary protocol, on `std::net`: used by the tests, `fanout chat`
//! and load tools. [`Client`] reads; its [`Sender`] (cheap to clone, safe to share between
//! threads) writes. With the `tls` feature and [`ClientOptions::tls`], both go over TLS.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::codec::{
    encode_publish, ClientFrame, FrameDecoder, Hello, Members, Message, PresenceEvent, RoomList, ServerFrame, Welcome,
    HELLO_FLAG_ECHO, JOIN_FLAG_PRESENCE, JOIN_FLAG_SEND_ONLY, PROTOCOL_VERSION,
};
use crate::error::{DecodeError, ErrorCode};

/// What can go wrong talking to a server.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed (a read timeout shows up here as `WouldBlock` or `TimedOut`).
    Io(io::Error),
    /// The server sent bytes that are not a valid frame.
    Protocol(DecodeError),
    /// The server refused a request or closed the connection with an error.
    Server {
        /// The wire code.
        code: u16,
        /// The server's text.
        text: String,
    },
    /// The server closed the connection.
    Closed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error from server: {e}"),
            Self::Server { code, text } => match ErrorCode::from_u16(*code) {
                Some(known) => write!(f, "server error {known}: {text}"),
                None => write!(f, "server error {code}: {text}"),
            },
            Self::Closed => write!(f, "the server closed the connection"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// What a client receives, besides replies it waits for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message published by someone else (or by us, with echo).
    Message(Message),
    /// An `ERROR` frame: fatal codes are followed by the server closing.
    Error {
        /// The wire code.
        code: u16,
        /// The server's text.
        text: String,
    },
    /// A `JOINED` that nobody waited for.
    Joined(Bytes),
    /// A `LEFT` that nobody waited for.
    Left(Bytes),
    /// The answer to a [`Sender::ping`].
    Pong(u64),
    /// A room's members: the answer to [`Sender::who`], or sent after a join with presence.
    Members(Members),
    /// The rooms: the answer to [`Sender::rooms`].
    Rooms(RoomList),
    /// Someone joined, left or was renamed in a room joined with presence.
    Presence(PresenceEvent),
}

/// How to say `HELLO`.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Ask for our own publishes back.
    pub echo: bool,
    /// Authentication token (empty when unused).
    pub token: Vec<u8>,
    /// Bound on connecting and on waiting for `WELCOME` (`None`: the OS default, no bound).
    pub connect_timeout: Option<Duration>,
    /// Connect over TLS with these settings (the TLS handshake counts against
    /// `connect_timeout`); `None`: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

/// The connection under a client: plain TCP, or TLS over it. Writes from any thread are whole.
#[derive(Debug, Clone)]
enum Wire {
    Plain(Arc<Mutex<TcpStream>>),
    #[cfg(feature = "tls")]
    Tls(crate::tls::BlockingTls),
}

impl Wire {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Wire::Plain(stream) => stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write_all(bytes),
            #[cfg(feature = "tls")]
            Wire::Tls(tls) => tls.write_all(bytes),
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        match self {
            Wire::Plain(stream) => {
                stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).shutdown(std::net::Shutdown::Both)
            }
            #[cfg(feature = "tls")]
            Wire::Tls(tls) => tls.shutdown(),
        }
    }

    /// Reads what arrives into `input` (`reader` is the socket, for plain TCP); 0 at the end.
    fn read_into(&self, reader: &mut TcpStream, input: &mut BytesMut) -> io::Result<usize> {
        match self {
            Wire::Plain(_) => {
                let mut chunk = [0u8; 16 * 1024];
                let n = reader.read(&mut chunk)?;
                input.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            #[cfg(feature = "tls")]
            Wire::Tls(tls) => tls.read_into(input),
        }
    }
}

/// The writing half: every method sends one frame and returns without waiting for a reply.
#[derive(Debug, Clone)]
pub struct Sender {
    wire: Wire,
}

impl Sender {
    /// Sends raw bytes as they are (tests use it to send broken frames).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.wire.write_all(bytes)
    }

    /// Sends one frame.
    pub fn send(&self, frame: &ClientFrame) -> io::Result<()> {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        self.send_raw(&buf)
    }

    /// Publishes `payload` to `room`.
    pub fn publish(&self, room: &str, payload: &[u8]) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(6 + room.len() + payload.len());
        encode_publish(&mut buf, room.as_bytes(), payload);
        self.send_raw(&buf)
    }

    /// Sends `PING` with `nonce`; the `PONG` arrives as [`Event::Pong`].
    pub fn ping(&self, nonce: u64) -> io::Result<()> {
        self.send(&ClientFrame::Ping(nonce))
    }

    /// Asks who is in `room`; the answer arrives as [`Event::Members`].
    pub fn who(&self, room: &str) -> io::Result<()> {
        self.send(&ClientFrame::Who { room: Bytes::copy_from_slice(room.as_bytes()) })
    }

    /// Asks which rooms exist; the answer arrives as [`Event::Rooms`].
    pub fn rooms(&self) -> io::Result<()> {
        self.send(&ClientFrame::Rooms)
    }

    /// Closes both directions of the connection (over TLS, after `close_notify`).
    pub fn shutdown(&self) -> io::Result<()> {
        self.wire.shutdown()
    }
}

/// A connected, greeted client: the reading half plus a [`Sender`].
#[derive(Debug)]
pub struct Client {
    reader: TcpStream,
    sender: Sender,
    input: BytesMut,
    decoder: FrameDecoder,
    pending: VecDeque<ServerFrame>,
    welcome: Welcome,
}

impl Client {
    /// Connects to `addr` and says `HELLO` as `name`, with default options.
    pub fn connect(addr: impl ToSocketAddrs, name: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, name, &ClientOptions::default())
    }

    /// Connects to `addr`, says `HELLO` and waits for `WELCOME`.
    pub fn connect_with(addr: impl ToSocketAddrs, name: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let stream = match options.connect_timeout {
            Some(timeout) => connect_within(addr, timeout)?,
            None => TcpStream::connect(addr)?,
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(options.connect_timeout)?;
        let mut input = BytesMut::with_capacity(64 * 1024);
        let sender = Sender { wire: Self::wire(&stream, options, &mut input)? };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            flags: if options.echo { HELLO_FLAG_ECHO } else { 0 },
            name: Bytes::copy_from_slice(name.as_bytes()),
            token: Bytes::copy_from_slice(&options.token),
        };
        sender.send(&ClientFrame::Hello(hello))?;
        let mut client = Self {
            reader: stream,
            sender,
            input,
            decoder: FrameDecoder::default(),
            pending: VecDeque::new(),
            welcome: Welcome { version: 0, node_id: 0, core_id: 0, session_id: 0, max_body: 0 },
        };
        client.welcome = match client.read_frame()? {
            ServerFrame::Welcome(welcome) => welcome,
            ServerFrame::Error { code, text } => return Err(server_error(code, &text)),
            other => return Err(ClientError::Protocol(DecodeError::UnexpectedFrame(frame_kind(&other)))),
        };
        client.reader.set_read_timeout(None)?;
        Ok(client)
    }

    /// The writing side over `stream`: itself, or TLS after the handshake (whose last records
    /// may bring plaintext, put in `input`).
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn wire(stream: &TcpStream, options: &ClientOptions, input: &mut BytesMut) -> Result<Wire, ClientError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            let layer = tls.layer_for(stream.peer_addr()?).map_err(io::Error::from)?;
            let tls = crate::tls::BlockingTls::handshake(stream.try_clone()?, layer, options.connect_timeout, input)?;
            return Ok(Wire::Tls(tls));
        }
        Ok(Wire::Plain(Arc::new(Mutex::new(stream.try_clone()?))))
    }

    /// Connects to the first of `addrs` that accepts and greets us.
    pub fn connect_any(addrs: &[SocketAddr], name: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let mut last = ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, "no address given"));
        for addr in addrs {
            match Self::connect_with(addr, name, options) {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// What the server said in `WELCOME`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A writing handle that can move to another thread.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Bounds how long [`Client::next_event`] and the waiting calls block (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.set_read_timeout(timeout)
    }

    /// Joins `room` and waits until the server confirms it.
    pub fn join(&mut self, room: &str) -> Result<(), ClientError> {
        self.join_with(room, 0)
    }

    /// Joins `room` as a publisher that receives nothing, and waits for the confirmation.
    pub fn join_send_only(&mut self, room: &str) -> Result<(), ClientError> {
        self.join_with(room, JOIN_FLAG_SEND_ONLY)
    }

    /// Joins `room` asking for presence, and waits for the confirmation and the room's
    /// members; later joins and leaves in the room arrive as [`Event::Presence`].
    pub fn join_with_presence(&mut self, room: &str) -> Result<Members, ClientError> {
        self.join_watching(room)?;
        self.members_of(room)
    }

    /// Joins `room` asking for presence and waits for `JOINED` only: the room's members then
    /// arrive as [`Event::Members`], later changes as [`Event::Presence`].
    pub fn join_watching(&mut self, room: &str) -> Result<(), ClientError> {
        self.join_with(room, JOIN_FLAG_PRESENCE)
    }

    /// Asks who is in `room` and waits for the answer.
    pub fn who(&mut self, room: &str) -> Result<Members, ClientError> {
        self.sender.who(room)?;
        self.members_of(room)
    }

    /// Waits for the `MEMBERS` of `room`.
    fn members_of(&mut self, room: &str) -> Result<Members, ClientError> {
        let room = room.as_bytes();
        match self.wait_for(|frame| matches!(frame, ServerFrame::Members(m) if m.room == room))? {
            ServerFrame::Members(members) => Ok(members),
            other => Err(ClientError::Protocol(DecodeError::UnexpectedFrame(frame_kind(&other)))),
        }
    }

    /// Asks which rooms exist and waits for the answer.
    pub fn rooms(&mut self) -> Result<RoomList, ClientError> {
        self.sender.rooms()?;
        match self.wait_for(|frame| matches!(frame, ServerFrame::RoomList(_)))? {
            ServerFrame::RoomList(list) => Ok(list),
            other => Err(ClientError::Protocol(DecodeError::UnexpectedFrame(frame_kind(&other)))),
        }
    }

    /// Joins `room` with `flags` (`JOIN_FLAG_*`) like [`Client::join`], but retries a `JOIN`
    /// refused with `NAME_TAKEN` for up to [`crate::limits::NAME_TAKEN_RETRY_MAX`], backing
    /// off: what a client that reconnects under its name does, while the server finds its old
    /// session dead (a half-open connection is probed and closed) or hears that it left.
    pub fn join_retrying(&mut self, room: &str, flags: u8) -> Result<(), ClientError> {
        use crate::limits::{NAME_TAKEN_RETRY_DELAY_MAX, NAME_TAKEN_RETRY_DELAY_MIN, NAME_TAKEN_RETRY_MAX};
        let started = std::time::Instant::now();
        let mut delay = NAME_TAKEN_RETRY_DELAY_MIN;
        loop {
            match self.join_with(room, flags) {
                Err(ClientError::Server { code, .. })
                    if code == ErrorCode::NameTaken as u16 && started.elapsed() + delay <= NAME_TAKEN_RETRY_MAX =>
                {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(NAME_TAKEN_RETRY_DELAY_MAX);
                }
                other => return other,
            }
        }
    }

    fn join_with(&mut self, room: &str, flags: u8) -> Result<(), ClientError> {
        let room = Bytes::copy_from_slice(room.as_bytes());
        self.sender.send(&ClientFrame::Join { flags, room: room.clone() })?;
        self.wait_for(|frame| matches!(frame, ServerFrame::Joined(r) if *r == room)).map(|_| ())
    }

    /// Leaves `room` and waits until the server confirms it.
    pub fn leave(&mut self, room: &str) -> Result<(), ClientError> {
        let room = Bytes::copy_from_slice(room.as_bytes());
        self.sender.send(&ClientFrame::Leave { room: room.clone() })?;
        self.wait_for(|frame| matches!(frame, ServerFrame::Left(r) if *r == room)).map(|_| ())
    }

    /// Publishes `payload` to `room` (see [`Sender::publish`]).
    pub fn publish(&self, room: &str, payload: &[u8]) -> io::Result<()> {
        self.sender.publish(room, payload)
    }

    /// Sends a `PING` and waits for its `PONG`: afterwards, everything sent before has been
    /// handled by the server.
    pub fn round_trip(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.sender.ping(nonce)?;
        self.wait_for(|frame| matches!(frame, ServerFrame::Pong(n) if *n == nonce)).map(|_| ())
    }

    /// The next event, blocking up to the read timeout; `PING`s are answered on the way.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        let frame = match self.pending.pop_front() {
            Some(frame) => frame,
            None => self.read_frame()?,
        };
        Ok(match frame {
            ServerFrame::Message(m) => Event::Message(m),
            ServerFrame::Error { code, text } => {
                Event::Error { code, text: String::from_utf8_lossy(&text).into_owned() }
            }
            ServerFrame::Joined(room) => Event::Joined(room),
            ServerFrame::Left(room) => Event::Left(room),
            ServerFrame::Pong(nonce) => Event::Pong(nonce),
            ServerFrame::Members(m) => Event::Members(m),
            ServerFrame::RoomList(list) => Event::Rooms(list),
            ServerFrame::Presence(p) => Event::Presence(p),
            ServerFrame::Welcome(_) | ServerFrame::Ping(_) => {
                return Err(ClientError::Protocol(DecodeError::UnexpectedFrame(frame_kind(&frame))))
            }
        })
    }

    /// The next message, treating any other event as an error.
    pub fn next_message(&mut self) -> Result<Message, ClientError> {
        match self.next_event()? {
            Event::Message(m) => Ok(m),
            Event::Error { code, text } => Err(ClientError::Server { code, text }),
            other => Err(ClientError::Io(io::Error::other(format!("expected a message, got {other:?}")))),
        }
    }

    /// Reads frames until `wanted` matches one, keeping deliveries for [`Client::next_event`].
    fn wait_for(&mut self, wanted: impl Fn(&ServerFrame) -> bool) -> Result<ServerFrame, ClientError> {
        loop {
            let frame = self.read_frame()?;
            if wanted(&frame) {
                return Ok(frame);
            }
            match frame {
                ServerFrame::Error { code, text } => return Err(server_error(code, &text)),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Reads one frame off the socket, answering `PING`s.
    fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            if let Some(raw) = self.decoder.decode(&mut self.input).map_err(ClientError::Protocol)? {
                match ServerFrame::parse(raw).map_err(ClientError::Protocol)? {
                    ServerFrame::Ping(nonce) => self.sender.send(&ClientFrame::Pong(nonce))?,
                    frame => return Ok(frame),
                }
                continue;
            }
            let n = self.sender.wire.read_into(&mut self.reader, &mut self.input)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

/// Connects to the first address of `addr` that answers within `timeout`.
fn connect_within(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for one in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&one, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn server_error(code: u16, text: &[u8]) -> ClientError {
    ClientError::Server { code, text: String::from_utf8_lossy(text).into_owned() }
}

fn frame_kind(frame: &ServerFrame) -> u8 {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf[4]
}
