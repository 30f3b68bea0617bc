//! A client that knows several servers and fails over between them: [`FailoverClient`].
//!
//! It wraps one [`Client`] at a time. When that connection dies (end of stream, a socket error
//! other than a read timeout, bytes that are not frames, or a fatal server `ERROR` such as
//! `SHUTTING_DOWN`), it connects to the *next* address in its list (round-robin, so the dead one
//! is tried last), with exponential backoff and jitter between attempts and a bounded number of
//! attempts, and re-joins every room it had joined (waiting for each `JOINED`) before it returns.
//!
//! # Delivery across a failover: at most once
//!
//! Nothing is stored or replayed. Messages published to a room while the client is between two
//! connections, or in flight on the connection that died, are lost for this client, and a
//! publish the client sent on the dying connection may or may not have reached anyone. The
//! client says where such a gap may be: every failover shows up as
//! [`FailoverEvent::Reconnected`] in [`FailoverClient::next_event`], in order with the messages.
//! (A receiver can also see gaps in one publisher's stream from `MESSAGE.seq`; note that after a
//! failover this client's own publishes form a new stream, since it joined anew.)
//!
//! An operation interrupted by a failover is never redone on the new connection: it returns
//! [`FailoverError::Interrupted`] once the client is connected again, and the caller decides
//! whether to repeat it. Repeating a publish risks a duplicate; not repeating it risks a loss.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::client::{Client, ClientError, ClientOptions, Event, Sender};
use crate::codec::{Members, RoomList, Welcome, JOIN_FLAG_PRESENCE, JOIN_FLAG_SEND_ONLY};
use crate::rng::{OsRandom, RandomSource, Rng};

/// Codes below this are fatal: the server closes the connection after the `ERROR`.
const FIRST_REQUEST_ERROR_CODE: u16 = 256;

/// How long the connection that died is read for deliveries that already arrived.
const SALVAGE_READ_TIMEOUT: Duration = Duration::from_millis(20);

/// Most events kept from the connection that died.
const SALVAGE_EVENTS_MAX: usize = 65_536;

/// How a [`FailoverClient`] looks for a new connection after an outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Connection attempts per outage, each address tried counting as one (at least one is made).
    pub max_attempts: u32,
    /// Pause before the second attempt; it doubles before each further one.
    pub initial_backoff: Duration,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
    /// Bound on one attempt: TCP connect, `HELLO`/`WELCOME` and re-joining every room.
    pub attempt_timeout: Duration,
}

impl Default for ReconnectPolicy {
    /// 10 attempts, 50 ms doubling up to 2 s (jittered), 5 s per attempt.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

impl ReconnectPolicy {
    /// The pause before retry number `retry` (1 = before the second attempt): the shared
    /// [`Backoff`] from `initial_backoff` to `max_backoff`.
    pub fn backoff(&self, retry: u32, rng: &mut Rng) -> Duration {
        Backoff { min: self.initial_backoff, max: self.max_backoff }.delay(retry, rng)
    }
}

/// One failover: where the client is connected now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnected {
    /// The address of the new connection.
    pub addr: SocketAddr,
    /// The new connection's `session_id` from `WELCOME`.
    pub session_id: u64,
    /// The node the new connection landed on, from `WELCOME`.
    pub node_id: u16,
    /// Connection attempts this failover took.
    pub attempts: u32,
    /// Why the previous connection was given up, for humans.
    pub cause: String,
}

/// What [`FailoverClient::next_event`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverEvent {
    /// An event of the current connection (a message, a request error, …).
    Event(Event),
    /// The connection died and the client is connected again, rooms re-joined: messages may
    /// have been lost in between (at most once).
    Reconnected(Reconnected),
}

/// What can go wrong with a [`FailoverClient`].
#[derive(Debug)]
pub enum FailoverError {
    /// The connection is fine: a read timed out, or the server refused a request.
    Client(ClientError),
    /// The connection died during the operation; the client failed over (also reported as
    /// [`FailoverEvent::Reconnected`]) but did not redo the operation.
    Interrupted {
        /// What killed the old connection.
        cause: ClientError,
        /// Where the client is connected now.
        reconnected: Reconnected,
    },
    /// Every attempt of one outage failed; the client is disconnected, and its next operation
    /// starts a new round of attempts.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: ClientError,
    },
}

impl FailoverError {
    /// True for a read that timed out (the connection is still good).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Client(ClientError::Io(e)) if is_timeout_kind(e.kind()))
    }
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(e) => write!(f, "{e}"),
            Self::Interrupted { cause, reconnected } => write!(
                f,
                "connection lost during the operation ({cause}); reconnected to {} (session {}), operation not redone",
                reconnected.addr, reconnected.session_id
            ),
            Self::GaveUp { attempts, last } => write!(f, "gave up reconnecting after {attempts} attempts: {last}"),
        }
    }
}

impl std::error::Error for FailoverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Client(e) | Self::Interrupted { cause: e, .. } | Self::GaveUp { last: e, .. } => Some(e),
        }
    }
}

/// A room the client is a member of, as it joined it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    room: String,
    send_only: bool,
    /// Joined with presence: re-joined with it, so `MEMBERS` follows each reconnection.
    watching: bool,
}

/// A [`Client`] over a list of servers that reconnects to the next one when its server dies and
/// re-joins its rooms; at-most-once across failovers (see the module documentation).
#[derive(Debug)]
pub struct FailoverClient {
    addrs: Vec<SocketAddr>,
    name: String,
    options: ClientOptions,
    policy: ReconnectPolicy,
    rng: Rng,
    read_timeout: Option<Duration>,
    rooms: Vec<Membership>,
    conn: Option<Client>,
    /// Index in `addrs` of the current connection, or of the last address tried.
    current: usize,
    /// Events to hand out before reading: deliveries salvaged from a dead connection, failovers.
    queued: VecDeque<FailoverEvent>,
}

impl FailoverClient {
    /// Connects to the first of `addrs` that greets `name` (with backoff between attempts).
    pub fn connect(
        addrs: &[SocketAddr],
        name: &str,
        options: &ClientOptions,
        policy: ReconnectPolicy,
    ) -> Result<Self, FailoverError> {
        if addrs.is_empty() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "no server address given");
            return Err(FailoverError::GaveUp { attempts: 0, last: ClientError::Io(e) });
        }
        let mut client = Self {
            addrs: addrs.to_vec(),
            name: name.to_string(),
            options: options.clone(),
            policy,
            rng: Rng::new(OsRandom.next_u64()),
            read_timeout: None,
            rooms: Vec::new(),
            conn: None,
            current: 0,
            queued: VecDeque::new(),
        };
        client.connect_round(0)?;
        Ok(client)
    }

    /// The server addresses, in the order they are tried.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address of the current connection (`None` after giving up).
    pub fn current_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|_| self.addrs[self.current])
    }

    /// The current connection's `WELCOME` (`None` after giving up).
    pub fn welcome(&self) -> Option<&Welcome> {
        self.conn.as_ref().map(Client::welcome)
    }

    /// A writing handle of the current connection only: it does not follow a failover.
    pub fn sender(&self) -> Option<Sender> {
        self.conn.as_ref().map(Client::sender)
    }

    /// The rooms re-joined on failover, in join order, each with whether it is send-only.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, bool)> {
        self.rooms.iter().map(|m| (m.room.as_str(), m.send_only))
    }

    /// Bounds how long reads block (`None`: forever), on this and every later connection.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), FailoverError> {
        if timeout == Some(Duration::ZERO) {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "a zero read timeout is not allowed");
            return Err(FailoverError::Client(ClientError::Io(e)));
        }
        if let Some(conn) = &self.conn {
            conn.set_read_timeout(timeout).map_err(|e| FailoverError::Client(ClientError::Io(e)))?;
        }
        self.read_timeout = timeout;
        Ok(())
    }

    /// Joins `room`, remembered for failover once the server confirmed it.
    pub fn join(&mut self, room: &str) -> Result<(), FailoverError> {
        self.join_with(room, false)
    }

    /// Joins `room` send-only (receiving nothing from it), remembered once confirmed.
    pub fn join_send_only(&mut self, room: &str) -> Result<(), FailoverError> {
        self.join_with(room, true)
    }

    /// Joins `room` with presence (see [`Client::join_watching`]): its `MEMBERS` and later
    /// `PRESENCE` events arrive from [`FailoverClient::next_event`], and again after a failover.
    pub fn join_watching(&mut self, room: &str) -> Result<(), FailoverError> {
        self.with_conn(|conn| conn.join_retrying(room, JOIN_FLAG_PRESENCE))?;
        self.remember(Membership { room: room.to_string(), send_only: false, watching: true });
        Ok(())
    }

    /// Asks who is in `room` on the current connection and waits for the answer.
    pub fn who(&mut self, room: &str) -> Result<Members, FailoverError> {
        self.with_conn(|conn| conn.who(room))
    }

    /// Asks which rooms exist on the current connection and waits for the answer.
    pub fn list_rooms(&mut self) -> Result<RoomList, FailoverError> {
        self.with_conn(Client::rooms)
    }

    fn join_with(&mut self, room: &str, send_only: bool) -> Result<(), FailoverError> {
        let flags = if send_only { JOIN_FLAG_SEND_ONLY } else { 0 };
        self.with_conn(|conn| conn.join_retrying(room, flags))?;
        self.remember(Membership { room: room.to_string(), send_only, watching: false });
        Ok(())
    }

    fn remember(&mut self, membership: Membership) {
        if !self.rooms.iter().any(|m| m.room == membership.room) {
            self.rooms.push(membership);
        }
    }

    /// Leaves `room` and forgets it: even if interrupted, it is not re-joined on failover.
    pub fn leave(&mut self, room: &str) -> Result<(), FailoverError> {
        let position = self.rooms.iter().position(|m| m.room == room);
        let forgotten = position.map(|i| (i, self.rooms.remove(i)));
        let result = self.with_conn(|conn| conn.leave(room));
        if let (Err(FailoverError::Client(_)), Some((i, membership))) = (&result, forgotten) {
            // Refused (or timed out) on a live connection: still a member as far as we know.
            self.rooms.insert(i, membership);
        }
        result
    }

    /// Publishes `payload` to `room`; a publish on a dying connection is not retried.
    pub fn publish(&mut self, room: &str, payload: &[u8]) -> Result<(), FailoverError> {
        self.with_conn(|conn| conn.publish(room, payload).map_err(ClientError::Io))
    }

    /// `PING`/`PONG` on the current connection: everything sent on it before has been handled.
    pub fn round_trip(&mut self, nonce: u64) -> Result<(), FailoverError> {
        self.with_conn(|conn| conn.round_trip(nonce))
    }

    /// The next event, blocking up to the read timeout; fails over when the connection dies.
    pub fn next_event(&mut self) -> Result<FailoverEvent, FailoverError> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(event);
        }
        self.ensure_connected()?;
        if let Some(event) = self.queued.pop_front() {
            return Ok(event);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(FailoverError::Client(ClientError::Closed));
        };
        let cause = match conn.next_event() {
            Ok(Event::Error { code, text }) if code < FIRST_REQUEST_ERROR_CODE => ClientError::Server { code, text },
            Ok(event) => return Ok(FailoverEvent::Event(event)),
            Err(e) if !is_connection_failure(&e) => return Err(FailoverError::Client(e)),
            Err(e) => e,
        };
        self.fail_over(&cause)?;
        self.queued.pop_front().ok_or(FailoverError::Client(cause))
    }

    /// Runs `op` on the connection (connecting first after a give-up); fails over if it dies.
    fn with_conn<T>(&mut self, op: impl FnOnce(&mut Client) -> Result<T, ClientError>) -> Result<T, FailoverError> {
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(FailoverError::Client(ClientError::Closed));
        };
        match op(conn) {
            Ok(value) => Ok(value),
            Err(e) if !is_connection_failure(&e) => Err(FailoverError::Client(e)),
            Err(cause) => {
                let reconnected = self.fail_over(&cause)?;
                Err(FailoverError::Interrupted { cause, reconnected })
            }
        }
    }

    /// After a give-up, a new round of attempts, reported as a failover.
    fn ensure_connected(&mut self) -> Result<(), FailoverError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut reconnected = self.connect_round((self.current + 1) % self.addrs.len())?;
        reconnected.cause = "not connected: the previous round of attempts gave up".to_string();
        self.queued.push_back(FailoverEvent::Reconnected(reconnected));
        Ok(())
    }

    /// Drops the dead connection (keeping what it had already received) and connects to the
    /// next address; queues the failover as an event.
    fn fail_over(&mut self, cause: &ClientError) -> Result<Reconnected, FailoverError> {
        // No logging here (the client crate has no logger): the failover, its cause and its
        // attempts are reported to the caller as `FailoverEvent::Reconnected`.
        if let Some(dead) = self.conn.take() {
            self.salvage(dead);
        }
        let mut reconnected = self.connect_round((self.current + 1) % self.addrs.len())?;
        reconnected.cause = cause.to_string();
        self.queued.push_back(FailoverEvent::Reconnected(reconnected.clone()));
        Ok(reconnected)
    }

    /// Keeps the deliveries a dead connection had already received, up to its first error.
    fn salvage(&mut self, mut dead: Client) {
        if dead.set_read_timeout(Some(SALVAGE_READ_TIMEOUT)).is_err() {
            return;
        }
        for _ in 0..SALVAGE_EVENTS_MAX {
            match dead.next_event() {
                Ok(Event::Error { code, .. }) if code < FIRST_REQUEST_ERROR_CODE => break,
                Ok(event) => self.queued.push_back(FailoverEvent::Event(event)),
                Err(_) => break,
            }
        }
    }

    /// Tries the addresses round-robin from `start`, with backoff, until one greets us and takes
    /// every remembered room; `cause` of the result is left empty for the caller.
    fn connect_round(&mut self, start: usize) -> Result<Reconnected, FailoverError> {
        let attempts = self.policy.max_attempts.max(1);
        let mut last = ClientError::Closed;
        for attempt in 0..attempts {
            if attempt > 0 {
                thread::sleep(self.policy.backoff(attempt, &mut self.rng));
            }
            let index = (start + attempt as usize) % self.addrs.len();
            self.current = index;
            let addr = self.addrs[index];
            match self.attempt(addr) {
                Ok(conn) => {
                    let welcome = conn.welcome();
                    let reconnected = Reconnected {
                        addr,
                        session_id: welcome.session_id,
                        node_id: welcome.node_id,
                        attempts: attempt + 1,
                        cause: String::new(),
                    };
                    self.conn = Some(conn);
                    return Ok(reconnected);
                }
                Err(e) => last = e,
            }
        }
        Err(FailoverError::GaveUp { attempts, last })
    }

    /// One attempt at `addr`, bounded by the policy's attempt timeout. `Client::connect_with`
    /// has no timeout of its own, so the attempt runs on a helper thread; one that misses the
    /// deadline is abandoned, and its connection is closed when it finishes.
    fn attempt(&self, addr: SocketAddr) -> Result<Client, ClientError> {
        let (tx, rx) = mpsc::channel();
        let (name, options, rooms) = (self.name.clone(), self.options.clone(), self.rooms.clone());
        let timeout = self.policy.attempt_timeout.max(Duration::from_millis(1));
        let spawned = thread::Builder::new().name("fanout-failover".to_string()).spawn(move || {
            let _ = tx.send(connect_and_rejoin(addr, &name, &options, &rooms, timeout));
        });
        if let Err(e) = spawned {
            return Err(ClientError::Io(e));
        }
        let conn = match rx.recv_timeout(timeout) {
            Ok(result) => result?,
            Err(_) => {
                return Err(ClientError::Io(io::Error::new(io::ErrorKind::TimedOut, "connection attempt timed out")))
            }
        };
        conn.set_read_timeout(self.read_timeout)?;
        Ok(conn)
    }
}

/// Connects, greets and joins `rooms` in order, each read bounded by `timeout`.
fn connect_and_rejoin(
    addr: SocketAddr,
    name: &str,
    options: &ClientOptions,
    rooms: &[Membership],
    timeout: Duration,
) -> Result<Client, ClientError> {
    let mut conn = Client::connect_with(addr, name, options)?;
    conn.set_read_timeout(Some(timeout))?;
    for m in rooms {
        // Under the same name: the old session may still hold it for a moment.
        let flags = if m.send_only {
            JOIN_FLAG_SEND_ONLY
        } else if m.watching {
            JOIN_FLAG_PRESENCE
        } else {
            0
        };
        conn.join_retrying(&m.room, flags)?;
    }
    Ok(conn)
}

fn is_timeout_kind(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// True when `e` means the connection is unusable (as opposed to a timeout or a refused request).
fn is_connection_failure(e: &ClientError) -> bool {
    match e {
        ClientError::Io(e) => !is_timeout_kind(e.kind()),
        ClientError::Protocol(_) | ClientError::Closed => true,
        ClientError::Server { code, .. } => *code < FIRST_REQUEST_ERROR_CODE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_backs_off_between_its_bounds() {
        let policy = ReconnectPolicy::default();
        let mut rng = Rng::new(42);
        assert!(policy.backoff(1, &mut rng) <= policy.initial_backoff);
        assert!(policy.backoff(30, &mut rng) >= policy.max_backoff / 2);
        assert!(policy.backoff(30, &mut rng) <= policy.max_backoff);
    }

    #[test]
    fn failures_are_told_from_timeouts_and_request_errors() {
        assert!(is_connection_failure(&ClientError::Closed));
        assert!(is_connection_failure(&ClientError::Io(io::ErrorKind::BrokenPipe.into())));
        assert!(is_connection_failure(&ClientError::Server { code: 10, text: String::new() }));
        assert!(!is_connection_failure(&ClientError::Io(io::ErrorKind::WouldBlock.into())));
        assert!(!is_connection_failure(&ClientError::Io(io::ErrorKind::TimedOut.into())));
        assert!(!is_connection_failure(&ClientError::Server { code: 258, text: String::new() }));
    }

    #[test]
    fn no_address_is_an_error() {
        let result = FailoverClient::connect(&[], "x", &ClientOptions::default(), ReconnectPolicy::default());
        assert!(matches!(result, Err(FailoverError::GaveUp { attempts: 0, .. })));
    }
}
