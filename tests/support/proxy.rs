//! A fault-injecting TCP proxy for the cluster tests: put one between two nodes and the test can
//! cut the link (partition), slow it down (delay) or make it swallow everything (blackhole) while
//! traffic flows.
//!
//! [`Proxy::start`] listens on `127.0.0.1:0`; every connection it accepts is dialled through to
//! the target and relayed in both directions, one thread per direction, each with a bounded queue
//! ([`QUEUE_MAX`] bytes) so a peer that stops reading pushes back on the sender as a real TCP link
//! would. Half-closes are passed on: when one side stops writing (FIN), the other side's write
//! half is shut down once everything queued before it has been delivered.
//!
//! Faults, all callable from any thread at any time:
//! - [`Proxy::partition`] closes every relayed connection at once (both sockets shut down and
//!   dropped, queued bytes discarded) so both ends see end of stream or a reset. While partitioned
//!   the proxy still *accepts* — the kernel completes the TCP handshake before user space sees a
//!   connection, so a dial cannot be made to hang without packet filtering — and then closes the
//!   connection immediately without dialling the target: a dialler's `connect` succeeds and its
//!   first read sees end of stream (or a reset) before any byte, so the link is down and fails
//!   fast. [`Proxy::heal`] relays new connections again; connections cut by the partition stay cut.
//! - [`Proxy::set_delay`] holds every chunk read from either side for that long before writing it
//!   on. Chunks are timestamped when read and queued, so the delay is latency, not a bandwidth
//!   limit (a round trip takes at least twice the delay); a change applies to chunks read after it.
//! - [`Proxy::set_blackhole`] `(true)` keeps every connection open and keeps reading from both
//!   sides (so writers never block) but delivers nothing — not even end of stream or a reset when
//!   one side goes away: the other side sees only silence and must detect it with a keepalive
//!   timeout. A connection that was open while the blackhole was on stays silent for the rest of
//!   its life, even after `set_blackhole(false)`: bytes were dropped from its middle, so resuming
//!   it would hand a peer a corrupt stream, which no real network does. Connections accepted after
//!   `set_blackhole(false)` flow normally.
//! - [`Proxy::set_rate`] limits each direction of every connection to that many bytes per second
//!   (a slow link: a bandwidth limit, on top of any delay); 0 lifts it.
//!
//! Every loop re-checks its flags at least every [`POLL`] (reads and writes carry that timeout),
//! so a partition or a drop is noticed within tens of milliseconds; dropping the [`Proxy`] closes
//! everything and joins every thread it started (bounded by [`DIAL_TIMEOUT`] for a dial in flight).

// The test crates that include `support` compile this module separately, and only the cluster
// tests use it: without this, every other test crate would warn about unused items.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a relay thread goes without re-checking its flags (read and write timeout).
pub const POLL: Duration = Duration::from_millis(20);

/// How long the accept loop sleeps when no connection is pending.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Longest a dial to the target may take before the accepted connection is closed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest single read.
const CHUNK: usize = 16 * 1024;

/// Bytes a direction holds (read, not yet written) before it stops reading.
pub const QUEUE_MAX: usize = 256 * 1024;

/// A running proxy in front of one target; stops and joins its threads when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the handle, the accept thread and the relay threads.
struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    partitioned: AtomicBool,
    blackhole: AtomicBool,
    delay_nanos: AtomicU64,
    /// Bytes per second per direction; 0 = unlimited.
    rate: AtomicU64,
    bytes: AtomicU64,
    next_id: AtomicU64,
    /// Connections being relayed. `partition`, `set_blackhole` and registration take this lock,
    /// so no connection slips past a fault that is being switched on.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// One thread per accepted connection (it runs one direction and joins the other).
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// One relayed connection: the accepted socket and the one dialled to the target.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Set by a partition, a drop or a fatal error: both directions stop at once.
    closed: AtomicBool,
    /// Set when the connection was open while the blackhole was on: it stays silent forever.
    blackholed: AtomicBool,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn workers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Acquire))
    }

    /// Closes every relayed connection and forgets it.
    fn close_all(&self) {
        let cut: Vec<Arc<Conn>> = self.conns().drain().map(|(_, conn)| conn).collect();
        for conn in cut {
            conn.close();
        }
    }
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and relays every connection to `target`. Panics if it cannot
    /// listen (a setup failure).
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local address");
        listener.set_nonblocking(true).expect("proxy: non-blocking listener");
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            partitioned: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            delay_nanos: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&shared, &listener))
                .expect("proxy: spawn the accept thread")
        };
        Self { addr, shared, acceptor: Some(acceptor) }
    }

    /// Where the proxy listens: give this to the dialling side instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy relays to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Cuts the link: closes every relayed connection (both sides see end of stream or a reset)
    /// and, until [`Proxy::heal`], closes new connections as soon as they are accepted.
    pub fn partition(&self) {
        {
            let _conns = self.shared.conns();
            self.shared.partitioned.store(true, Ordering::Release);
        }
        self.shared.close_all();
    }

    /// Ends a partition: new connections are relayed again.
    pub fn heal(&self) {
        self.shared.partitioned.store(false, Ordering::Release);
    }

    /// True between [`Proxy::partition`] and [`Proxy::heal`].
    pub fn is_partitioned(&self) -> bool {
        self.shared.partitioned.load(Ordering::Acquire)
    }

    /// Holds every chunk read from now on for `delay` before passing it on; zero turns it off.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Release);
    }

    /// Limits each direction of every connection to `bytes_per_second` (0: no limit).
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::Release);
    }

    /// `true`: every open and every new connection stays open but delivers nothing, not even a
    /// close. `false`: connections accepted from now on flow again; those that were open while
    /// the blackhole was on stay silent (see the module documentation).
    pub fn set_blackhole(&self, on: bool) {
        let conns = self.shared.conns();
        self.shared.blackhole.store(on, Ordering::Release);
        if on {
            for conn in conns.values() {
                conn.blackholed.store(true, Ordering::Release);
            }
        }
    }

    /// How many connections are being relayed right now (0 right after a partition).
    pub fn connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// Bytes delivered so far, both directions together (swallowed bytes are not counted).
    pub fn bytes_relayed(&self) -> u64 {
        self.shared.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.close_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The accept thread has exited, so no worker is added after this.
        let workers = std::mem::take(&mut *self.shared.workers());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.partitioned.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let spawned = {
                    let shared = shared.clone();
                    thread::Builder::new().name("proxy-conn".into()).spawn(move || serve(&shared, client))
                };
                let mut workers = shared.workers();
                // Join the workers whose connections have ended, so the list stays short.
                let (done, running): (Vec<_>, Vec<_>) = workers.drain(..).partition(|w| w.is_finished());
                *workers = running;
                for worker in done {
                    let _ = worker.join();
                }
                // A failed spawn drops the connection it was given: the dialler sees it close.
                if let Ok(worker) = spawned {
                    workers.push(worker);
                }
            }
            // Nothing pending (or a transient failure such as running out of descriptors): poll
            // the stop flag again shortly. Not synchronisation, only a bounded wait for work.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Dials the target for `client`, then relays until both directions have finished.
fn serve(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, DIAL_TIMEOUT) else {
        return; // Dropping `client` tells the dialler that the target is unreachable.
    };
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let conn = Arc::new(Conn { client, upstream, closed: AtomicBool::new(false), blackholed: AtomicBool::new(false) });
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.conns();
        if shared.stop.load(Ordering::Acquire) || shared.partitioned.load(Ordering::Acquire) {
            return; // Partitioned while dialling: both sockets close here.
        }
        conn.blackholed.store(shared.blackhole.load(Ordering::Acquire), Ordering::Release);
        conns.insert(id, conn.clone());
    }
    let back = {
        let (shared, conn) = (shared.clone(), conn.clone());
        thread::Builder::new()
            .name("proxy-relay".into())
            .spawn(move || relay(&shared, &conn, &conn.upstream, &conn.client))
    };
    match back {
        Ok(back) => {
            relay(shared, &conn, &conn.client, &conn.upstream);
            let _ = back.join();
        }
        Err(_) => conn.close(),
    }
    shared.conns().remove(&id);
}

/// Read errors that only mean "nothing yet".
fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// Relays `from` to `to` until `from` ends (then passes the half-close on), a socket fails (then
/// closes the whole connection), or the connection or proxy is closed.
fn relay(shared: &Shared, conn: &Conn, mut from: &TcpStream, mut to: &TcpStream) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut queued = 0usize;
    let mut eof = false;
    let mut buf = vec![0u8; CHUNK];
    // Under a rate limit, nothing more is written before this.
    let mut paced_until = Instant::now();
    if to.set_write_timeout(Some(POLL)).is_err() {
        conn.close();
        return;
    }
    loop {
        if shared.stop.load(Ordering::Acquire) || conn.closed.load(Ordering::Acquire) {
            return;
        }
        let silent = conn.blackholed.load(Ordering::Acquire);
        if silent {
            queue.clear();
            queued = 0;
        }
        let now = Instant::now();
        let rate = shared.rate.load(Ordering::Acquire);
        if rate > 0 && now < paced_until && !queue.is_empty() {
            thread::sleep((paced_until - now).min(POLL)); // Pacing: bounded by POLL.
            continue;
        }
        if let Some((due, chunk)) = queue.front_mut() {
            if *due <= now {
                // At most 20 ms worth of the rate per write, then pause for as long as it took.
                let limit = if rate > 0 { chunk.len().min((rate / 50).max(1) as usize) } else { chunk.len() };
                match to.write(&chunk[..limit]) {
                    Ok(0) => {
                        conn.close();
                        return;
                    }
                    Ok(n) => {
                        shared.bytes.fetch_add(n as u64, Ordering::AcqRel);
                        if rate > 0 {
                            paced_until = now + Duration::from_secs_f64(n as f64 / rate as f64);
                        }
                        queued -= n;
                        if n == chunk.len() {
                            queue.pop_front();
                        } else {
                            chunk.drain(..n);
                        }
                    }
                    Err(e) if is_transient(&e) => {}
                    Err(_) => {
                        conn.close();
                        return;
                    }
                }
                continue;
            }
        }
        let wait = queue
            .front()
            .map_or(POLL, |(due, _)| due.saturating_duration_since(now).clamp(Duration::from_millis(1), POLL));
        if eof {
            if queue.is_empty() {
                if !silent {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            thread::sleep(wait); // Until the next chunk is due; bounded by POLL.
            continue;
        }
        if queued >= QUEUE_MAX {
            thread::sleep(wait);
            continue;
        }
        if from.set_read_timeout(Some(wait)).is_err() {
            conn.close();
            return;
        }
        match from.read(&mut buf) {
            // A silent connection passes on no close: the other side keeps waiting.
            Ok(0) if silent => return,
            Ok(0) => eof = true,
            Ok(_) if silent => {}
            Ok(n) => {
                queue.push_back((Instant::now() + shared.delay(), buf[..n].to_vec()));
                queued += n;
            }
            Err(e) if is_transient(&e) => {}
            Err(_) if silent => return,
            Err(_) => {
                conn.close();
                return;
            }
        }
    }
}
