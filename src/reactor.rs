//! One core's mio event loop, and nothing else: readiness → read → [`Hub`] → flush.
//!
//! A `Reactor` owns one `Poll`, one listener and one [`Hub`] whose slab holds every
//! connection's socket; [`crate::server::Server`] runs one per core and links them.
//!
//! Each turn it reads from every readable connection (at most [`READ_BYTES_PER_TURN_MAX`]
//! each, so a flooder cannot starve the rest), takes the mail its sibling reactors sent, lets
//! the hub route what arrived, then flushes every connection that got bytes — once, with
//! vectored writes — and hands each sibling one batch of frames. WRITABLE interest is
//! registered only while a connection has bytes the kernel refused.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Waker};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::interest::PeerId;
use crate::limits::{READ_CHUNK_BYTES, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_PROBES};
use crate::linger::Linger;
use crate::mailbox::{MailLink, Mailbox};

mod cluster;
mod token;
mod transport;
use crate::error::bind_error;
use crate::limits::EVENTS_PER_POLL;
use crate::metrics::Health;
use crate::metrics::{ConnRow, CoreReport, IntrospectionAsk, ReactorMetrics, Snapshot};
use crate::metrics_server::{CoreHandle, MetricsEndpoint};
use crate::outbox::Flush;
use crate::router::ConnKey;
use crate::tls::ListenerTls;
pub use cluster::LinkIo;
use fanout_timer::FineTimer;
use token::Source;
pub use transport::Transport;
use transport::{Acceptor, Endpoint, TlsFailure};

/// A connection's socket, what the reactor knows of its registration, and what `/connz` shows
/// that only the reactor sees (counted in the read path, once per read, not per message).
#[derive(Debug)]
pub struct ConnSocket {
    transport: Transport,
    write_shut: bool,
    /// Bytes read from the connection.
    bytes_in: u64,
    /// When it was accepted and when it last sent bytes, in whole seconds since the reactor
    /// started (4 bytes each, not an `Instant`'s 16: every connection carries them).
    opened_at_s: u32,
    last_read_s: u32,
}

/// Stops running reactors from another thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    health: Option<Arc<Health>>,
}

impl StopHandle {
    /// A handle that sets `stop` and wakes every one of `wakers`.
    pub(crate) fn new(stop: Arc<AtomicBool>, wakers: Vec<Arc<Waker>>) -> Self {
        Self { stop, wakers, health: None }
    }

    /// The same handle, able to drain the server whose health it is given.
    pub(crate) fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Takes the server out of service (lame duck, SIGUSR2): `/healthz` answers 503, the
    /// reactors stop accepting and close their clients with `DRAINING` over the drain period,
    /// then return.
    pub fn drain(&self) {
        let Some(health) = &self.health else {
            return;
        };
        health.set_draining();
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("could not wake a reactor to drain it: {e}");
            }
        }
    }

    /// Asks every reactor to close its connections with `SHUTTING_DOWN` and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("could not wake a reactor to stop it: {e}");
            }
        }
    }
}

/// One event loop with its listener and connections.
pub struct Reactor {
    poll: Poll,
    /// The plain client listener (none with `--tls-only`).
    acceptor: Option<Acceptor>,
    /// The client TLS listener and the certificate it serves, if TLS is on.
    tls_acceptor: Option<(Acceptor, ListenerTls)>,
    hub: Hub<ConnSocket, LinkIo>,
    siblings: Vec<PeerId>,
    node_net: Option<cluster::NodeNet>,
    mailbox: Mailbox,
    config: ServerConfig,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// When to flush the clients: at once when idle, at most once per linger when busy.
    linger: Linger,
    /// Wakes the poll for waits under a millisecond (a flush hold), which its timeout rounds up.
    timer: FineTimer,
    /// Sockets to read this turn: readiness came, or the last read used the turn's budget.
    read_queue: Vec<Endpoint>,
    scratch: Vec<u8>,
    metrics: Arc<ReactorMetrics>,
    metrics_endpoint: Option<MetricsEndpoint>,
    counters: Counters,
    /// The clock's origin for the connections' times.
    started: Instant,
    /// The generation of the last introspection ask answered.
    introspection_answered: u64,
    /// The server's health, watched for draining (set by the server).
    health: Option<Arc<Health>>,
    /// On the reactor that takes signals: what SIGUSR2 drains.
    lifecycle: Option<StopHandle>,
    /// When this reactor began draining.
    drained_since: Option<Instant>,
}

/// What the reactor itself counts (the hub counts the rest).
#[derive(Debug, Default)]
struct Counters {
    bytes_in: u64,
    bytes_out: u64,
    loop_turns: u64,
    flushed_last_turn: u64,
}

impl Reactor {
    /// Binds a reactor that may share its address with siblings and stops with them.
    pub(crate) fn bind_shared(config: ServerConfig, reuse_port: bool, stop: Arc<AtomicBool>) -> io::Result<Self> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let acceptor = if config.tls.as_ref().is_some_and(|tls| tls.only) {
            None
        } else {
            let mut listener = listen(config.listen, config.backlog, reuse_port, CLIENT_LISTENER_NAME)?;
            poll.registry().register(&mut listener, Source::Listener.token(), Interest::READABLE)?;
            Some(Acceptor::new(listener, CLIENT_LISTENER_NAME))
        };
        let tls_acceptor = match &config.tls {
            Some(tls) => {
                let mut listener = listen(tls.listen, config.backlog, reuse_port, TLS_LISTENER_NAME)?;
                poll.registry().register(&mut listener, Source::TlsListener.token(), Interest::READABLE)?;
                Some((Acceptor::new(listener, TLS_LISTENER_NAME), tls.tls.clone()))
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        let linger = Linger::new(config.flush_linger_max);
        let timer = FineTimer::new(poll.registry(), Source::Timer.token())?;
        Ok(Self {
            linger,
            timer,
            poll,
            acceptor,
            tls_acceptor,
            hub: Hub::new(config.hub.clone()),
            mailbox: Mailbox::new(waker.clone()),
            siblings: Vec::new(),
            node_net: None,
            config,
            stop,
            waker,
            read_queue: Vec::new(),
            scratch: vec![0; READ_CHUNK_BYTES],
            metrics: Arc::new(ReactorMetrics::default()),
            metrics_endpoint: None,
            counters: Counters::default(),
            started: Instant::now(),
            introspection_answered: 0,
            health: None,
            lifecycle: None,
            drained_since: None,
        })
    }

    /// The address clients connect to (useful with port 0): the plain listener's, or with
    /// `--tls-only` the TLS listener's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match (&self.acceptor, self.local_tls_addr()) {
            (Some(acceptor), _) => acceptor.local_addr(),
            (None, Some(tls)) => tls,
            (None, None) => Err(io::Error::new(io::ErrorKind::NotFound, "no client listener")),
        }
    }

    /// The address the TLS listener is bound to, if there is one.
    pub fn local_tls_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.tls_acceptor.as_ref().map(|(acceptor, _)| acceptor.local_addr())
    }

    /// Watches `health` for draining; with `lifecycle`, this reactor's SIGUSR2 drains the server.
    pub(crate) fn set_lifecycle(&mut self, health: Arc<Health>, lifecycle: Option<StopHandle>) {
        self.health = Some(health);
        self.lifecycle = lifecycle;
    }

    /// The reactor's waker, for siblings that stop it.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The reactor's incoming mail, for siblings that link to it.
    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// How many peer links the reactor has: the id its next link will get.
    pub(crate) fn link_count(&self) -> usize {
        self.hub.link_count()
    }

    /// Adds a link to a sibling reactor.
    pub(crate) fn add_link(&mut self, link: MailLink) -> PeerId {
        let peer = self.hub.add_link(LinkIo::Mail(link), Instant::now());
        self.siblings.push(peer);
        peer
    }

    /// Makes this reactor's hub its node's gateway.
    pub(crate) fn set_gateway(&mut self, gateway: crate::hub::Gateway) {
        self.hub.set_gateway(gateway);
    }

    /// The reactor's core id.
    pub(crate) fn core_id(&self) -> u16 {
        self.config.hub.core_id
    }

    /// Runs until stopped by the handle or, with `catch_signals`, by SIGINT or SIGTERM; with
    /// `catch_signals`, SIGHUP runs the configured reload instead of killing the process.
    pub fn run(mut self, catch_signals: bool) -> io::Result<()> {
        let mut signals = if catch_signals {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])?;
            self.poll.registry().register(&mut signals, Source::Signals.token(), Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let tick = self.config.tick();
        let mut next_tick = Instant::now() + tick;
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut keys = Vec::new();
        let mut peers = Vec::new();
        loop {
            let now = Instant::now();
            let paused_until = self.acceptor.as_ref().and_then(Acceptor::paused_until);
            let tls_paused_until = self.tls_acceptor.as_ref().and_then(|(acceptor, _)| acceptor.paused_until());
            let flush_at = self.linger.due_at(now, self.hub.has_to_flush());
            let deadlines = [self.next_dial_at(), self.hub.next_deadline(), paused_until, tls_paused_until, flush_at];
            let wake_at = deadlines.into_iter().flatten().fold(next_tick, Instant::min);
            let timeout = if self.read_queue.is_empty() { self.fine_timeout(now, wake_at) } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let mut stopping = self.stop.load(Ordering::Acquire);
            for event in events.iter() {
                let Some(source) = Source::of(event.token()) else {
                    continue;
                };
                match source {
                    Source::Listener => self.accept_all(now, false),
                    Source::TlsListener => self.accept_all(now, true),
                    Source::ClusterListener => self.accept_nodes(now),
                    Source::Waker => self.take_mail(now),
                    Source::Timer => {} // Only wakes the loop; the deadlines are read below.
                    Source::Dial(key) => self.finish_dial(key, now),
                    Source::Metrics(token) => {
                        if let Some(endpoint) = self.metrics_endpoint.as_mut() {
                            endpoint.handle(self.poll.registry(), token, now, &mut self.hub);
                        }
                    }
                    Source::Signals => {
                        if let Some(signals) = signals.as_mut() {
                            for signal in signals.pending() {
                                if signal == signal_hook::consts::SIGHUP {
                                    self.reload();
                                } else if signal == signal_hook::consts::SIGUSR2 {
                                    log::info!("SIGUSR2: draining over {:?}", self.config.drain_period);
                                    if let Some(lifecycle) = &self.lifecycle {
                                        lifecycle.drain();
                                    }
                                } else {
                                    log::info!("signal {signal}: shutting down");
                                    stopping = true;
                                }
                            }
                        }
                    }
                    Source::Conn(key) => self.socket_ready(Endpoint::Conn(key), event),
                    Source::Link(peer) => self.socket_ready(Endpoint::Link(peer), event),
                }
            }
            if self.acceptor.as_mut().is_some_and(|acceptor| acceptor.resume_due(now)) {
                self.accept_all(now, false);
            }
            if self.tls_acceptor.as_mut().is_some_and(|(acceptor, _)| acceptor.resume_due(now)) {
                self.accept_all(now, true);
            }
            if self.drained_since.is_none() && self.health.as_ref().is_some_and(|h| h.is_draining()) {
                self.start_drain(now);
            }
            // Before reading: a silent connection due to join the room now gets this turn's messages.
            self.hub.expire_silent(now);
            self.hub.expire_drain(now);
            let mut reads = std::mem::take(&mut self.read_queue);
            for endpoint in reads.drain(..) {
                self.read(endpoint, now);
            }
            if self.read_queue.is_empty() {
                self.read_queue = reads; // Keeps the allocation.
            }
            self.poll_dialer(now);
            if now >= next_tick {
                self.hub.tick(now);
                if let Some(endpoint) = self.metrics_endpoint.as_mut() {
                    endpoint.tick(self.poll.registry(), now);
                }
                next_tick = now + tick;
            }
            if stopping {
                self.hub.shut_down(now);
            }
            self.hub.take_resumed(&mut keys);
            for key in keys.drain(..) {
                self.queue_read(Endpoint::Conn(key));
            }
            if stopping || self.linger.hold_until(now).is_none() {
                self.flush_queued(&mut keys);
            }
            self.hub.take_links_to_flush(&mut peers);
            for peer in peers.drain(..) {
                self.flush_link(peer);
            }
            self.remove_finished(&mut keys);
            self.reap_links(now);
            self.publish_metrics();
            if stopping {
                log::info!("stopped with {} connections closed", self.hub.len());
                return Ok(());
            }
            if self.drained_since.is_some_and(|since| now >= since + self.config.drain_period) && self.hub.is_empty() {
                log::info!("drained: every client was moved away");
                return Ok(());
            }
        }
    }

    /// The poll timeout to wake at `at`, to the microsecond (a flush hold) where it can be.
    fn fine_timeout(&mut self, now: Instant, at: Instant) -> Duration {
        self.timer.timeout(now, at).unwrap_or_else(|e| {
            log::warn!("could not arm the flush timer ({e}); this hold is timed to the millisecond");
            at.saturating_duration_since(now)
        })
    }

    /// Stops accepting and schedules every client's `DRAINING` over the drain period.
    fn start_drain(&mut self, now: Instant) {
        self.drained_since = Some(now);
        if let Some(acceptor) = self.acceptor.as_mut() {
            if let Err(e) = self.poll.registry().deregister(acceptor.listener()) {
                log::warn!("draining: could not stop accepting: {e}");
            }
        }
        if let Some((acceptor, _)) = self.tls_acceptor.as_mut() {
            if let Err(e) = self.poll.registry().deregister(acceptor.listener()) {
                log::warn!("draining: could not stop accepting TLS clients: {e}");
            }
        }
        log::info!("draining: {} connections to move within {:?}", self.hub.len(), self.config.drain_period);
        self.hub.start_drain(now, self.config.drain_period);
    }

    /// SIGHUP: runs the reload the server was configured with. It touches only what is shared
    /// with every reactor (the token set, the log level), so no reactor needs a message.
    fn reload(&self) {
        match &self.config.reload {
            Some(hook) => {
                log::info!("SIGHUP: reloading");
                hook.run();
            }
            None => log::info!("SIGHUP: nothing to reload"),
        }
    }

    /// Accepts every client waiting on the plain listener, or on the TLS one when `tls`.
    fn accept_all(&mut self, now: Instant, tls: bool) {
        loop {
            let accepted = match (tls, self.tls_acceptor.as_mut()) {
                (false, _) => self.acceptor.as_mut().and_then(|acceptor| acceptor.accept(now)),
                (true, Some((acceptor, _))) => acceptor.accept(now),
                (true, None) => None,
            };
            let Some((stream, peer)) = accepted else {
                return;
            };
            let transport = match self.tls_acceptor.as_ref().filter(|_| tls).map(|(_, config)| config.accept()) {
                None => Transport::new(stream),
                Some(Ok(layer)) => Transport::with_tls(stream, layer),
                Some(Err(e)) => {
                    // Drop this one, and go on: edge-triggered readiness will not tell us of the rest.
                    log::warn!("refusing TLS client {peer}: {e}");
                    continue;
                }
            };
            self.open_client(transport, peer, now);
        }
    }

    /// Hands an accepted client to the hub (a TLS one's line-mode silence waits for its
    /// handshake) and registers its socket.
    fn open_client(&mut self, transport: Transport, peer: SocketAddr, now: Instant) {
        if let Err(e) = tune_accepted(transport.stream()) {
            log::debug!("could not tune socket of {peer}: {e}");
        }
        let at = self.seconds_since_start(now);
        let handshaking = transport.is_handshaking();
        let socket = ConnSocket { transport, write_shut: false, bytes_in: 0, opened_at_s: at, last_read_s: at };
        let opened = if handshaking { self.hub.open_behind_handshake(socket, now) } else { self.hub.open(socket, now) };
        match opened {
            Ok(key) => {
                let conn = self.hub.conn_mut(key).expect("just opened");
                conn.set_remote(peer);
                let token = Source::Conn(key).token();
                if let Err(e) = conn.io.transport.register(self.poll.registry(), token) {
                    log::warn!("register {peer}: {e}");
                    self.hub.handle_hangup(key);
                } else {
                    log::debug!("connection {key} from {peer}");
                }
            }
            Err((socket, refusal)) => {
                log::warn!("refusing {peer}: connection limit reached");
                // Best effort: a fresh socket's send buffer takes a few bytes.
                socket.transport.write_once(&refusal);
            }
        }
    }

    /// Readiness of a connection's or node link's socket: flush what the kernel refused before,
    /// and queue a read.
    fn socket_ready(&mut self, endpoint: Endpoint, event: &mio::event::Event) {
        if event.is_writable() {
            match endpoint {
                Endpoint::Conn(key) => self.flush(key),
                Endpoint::Link(peer) => self.flush_link(peer),
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.queue_read(endpoint);
        }
    }

    /// The transport of a connection or node link, if it still exists.
    fn transport_mut(&mut self, endpoint: Endpoint) -> Option<&mut Transport> {
        match endpoint {
            Endpoint::Conn(key) => self.hub.conn_mut(key).map(|conn| &mut conn.io.transport),
            Endpoint::Link(peer) => match &mut self.hub.link_mut(peer)?.io {
                LinkIo::Tcp(transport) => Some(transport),
                LinkIo::Mail(_) => None,
            },
        }
    }

    fn queue_read(&mut self, endpoint: Endpoint) {
        if self.transport_mut(endpoint).is_some_and(Transport::queue_read) {
            self.read_queue.push(endpoint);
        }
    }

    /// Reads a socket into its input buffer and lets the hub handle what came: the same path
    /// for clients and node links, but a paused client is left alone (the hub lists it in
    /// `take_resumed` when it may go on; the bytes wait in the kernel) and a closing one's bytes
    /// are dropped.
    fn read(&mut self, endpoint: Endpoint, now: Instant) {
        let received = match endpoint {
            Endpoint::Conn(key) => {
                let Some(conn) = self.hub.conn_mut(key) else {
                    return;
                };
                if conn.is_paused() {
                    conn.io.transport.read_dequeued();
                    return;
                }
                let keep = !conn.is_closing();
                let (socket, input) = (&mut conn.io, &mut conn.input);
                let received = socket.transport.read(&mut self.scratch, input, keep);
                socket.bytes_in += received.bytes as u64;
                if received.bytes > 0 {
                    socket.last_read_s = seconds_since(self.started, now);
                }
                received
            }
            Endpoint::Link(peer) => {
                let Some(link) = self.hub.link_mut(peer) else {
                    return;
                };
                let LinkIo::Tcp(transport) = &mut link.io else {
                    return;
                };
                transport.read(&mut self.scratch, &mut link.input, true)
            }
        };
        self.counters.bytes_in += received.bytes as u64;
        if received.again {
            self.read_queue.push(endpoint);
        }
        if let Some(failure) = &received.tls_failure {
            self.log_tls_failure(endpoint, failure);
        }
        if received.wants_flush {
            // TLS handshake records: they go out now, whether or not the hub queues anything.
            match endpoint {
                Endpoint::Conn(key) => self.flush(key),
                Endpoint::Link(peer) => self.flush_link(peer),
            }
        }
        match endpoint {
            Endpoint::Conn(key) => {
                if received.secured {
                    self.hub.transport_ready(key, now);
                }
                if received.bytes > 0 {
                    self.hub.handle_input(key, now);
                }
                if received.closed {
                    self.hub.handle_hangup(key);
                }
            }
            Endpoint::Link(peer) => {
                if received.bytes > 0 {
                    self.hub.handle_link_input(peer, now);
                }
                if received.closed {
                    self.hub.link_down(peer, now);
                }
            }
        }
    }

    /// Says why a TLS connection or node link failed: at `debug` for clients (anyone can send
    /// garbage to a port), at `warn` for node links (a misconfigured node is the operator's to fix).
    fn log_tls_failure(&mut self, endpoint: Endpoint, failure: &TlsFailure) {
        let remote = self.transport_mut(endpoint).and_then(|t| t.stream().peer_addr().ok());
        let from = remote.map_or_else(|| "an unknown address".to_string(), |addr| addr.to_string());
        match (endpoint, failure) {
            (Endpoint::Conn(key), TlsFailure::NotTls) => {
                log::debug!("connection {key} from {from}: not TLS on the TLS port; closing it")
            }
            (Endpoint::Conn(key), TlsFailure::Failed(e)) => log::debug!("connection {key} from {from}: {e}"),
            (Endpoint::Link(_), TlsFailure::NotTls) => log::warn!(
                "cluster: refusing a plain node link from {from}: this node requires TLS on node links \
                 (--cluster-tls-cert); give that node --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca too"
            ),
            (Endpoint::Link(_), TlsFailure::Failed(e)) => {
                log::warn!("cluster: refusing the node link with {from}: {e}")
            }
        }
    }

    /// Flushes every connection with queued bytes, and times the pass for the linger.
    fn flush_queued(&mut self, keys: &mut Vec<ConnKey>) {
        self.hub.take_to_flush(keys);
        self.counters.flushed_last_turn = keys.len() as u64;
        if keys.is_empty() {
            return;
        }
        let started = Instant::now();
        for key in keys.drain(..) {
            self.flush(key);
        }
        self.linger.flushed(started, Instant::now());
    }

    /// Flushes a connection's outbox; once a closing connection's last bytes are out, sends FIN
    /// and waits for the peer to hang up.
    fn flush(&mut self, key: ConnKey) {
        let Some(conn) = self.hub.conn_mut(key) else {
            return;
        };
        let closing = conn.is_closing();
        let (socket, outbox) = conn.io_and_outbox();
        let queued = outbox.queued_bytes();
        let result =
            socket.transport.flush(self.poll.registry(), Source::Conn(key).token(), |mut w| outbox.flush_to(&mut w));
        self.counters.bytes_out += (queued - outbox.queued_bytes()) as u64;
        match result {
            Ok(Flush::Drained) if closing && !socket.write_shut => {
                socket.write_shut = true;
                socket.transport.shutdown(Shutdown::Write);
            }
            Ok(_) => {}
            Err(e) => {
                log::debug!("write to connection {key}: {e}");
                self.hub.handle_hangup(key);
            }
        }
    }

    /// Stores this turn's numbers where the metrics endpoint reads them, answers an
    /// introspection ask if one came (one atomic load when none did), and lets the endpoint, if
    /// it runs here, finish what waited for the cores.
    fn publish_metrics(&mut self) {
        use crate::link::LinkClass;
        self.counters.loop_turns += 1;
        let stats = self.hub.stats();
        self.metrics.publish(&Snapshot {
            connections: self.hub.len() as u64,
            connections_opened: stats.connections_opened,
            connections_refused: stats.refused_full,
            messages_received: stats.publishes,
            messages_delivered: stats.deliveries,
            received_bytes: self.counters.bytes_in,
            sent_bytes: self.counters.bytes_out,
            slow_consumers: stats.slow_consumers,
            errors: stats.errors,
            core_links_up: self.hub.links_up(LinkClass::Sibling) as u64,
            links_down: self.hub.links_down() as u64,
            forwards_sent: stats.forwards_sent,
            forwards_received: stats.forwards_received,
            forwards_dropped: stats.forwards_dropped,
            interest_ack_timeouts: stats.interest_acks_timed_out,
            loop_turns: self.counters.loop_turns,
            flush_queue_depth: self.counters.flushed_last_turn,
            link_queued_bytes: self.hub.link_queued_bytes() as u64,
        });
        if let Some(ask) = self.metrics.new_ask(&mut self.introspection_answered) {
            let report = self.introspect(&ask);
            self.metrics.answer(report);
        }
        if let Some(endpoint) = self.metrics_endpoint.as_mut() {
            endpoint.after_turn(self.poll.registry(), &mut self.hub);
        }
    }

    /// This core's answer to `/connz` and `/roomz`: its first connections by session id, and
    /// its members of the rooms asked about.
    fn introspect(&self, ask: &IntrospectionAsk) -> CoreReport {
        let now_s = self.seconds_since_start(Instant::now());
        let since = |at_s: u32| Duration::from_secs(u64::from(now_s.saturating_sub(at_s)));
        let core = self.core_id();
        let (conns_total, views) = self.hub.conn_views(ask.conns_max);
        let conns = views
            .into_iter()
            .map(|view| ConnRow {
                core,
                id: view.key.index(),
                session_id: view.session_id,
                remote: view.io.transport.stream().peer_addr().ok(),
                name: view.name.clone(),
                mode: view.mode,
                rooms: view.rooms,
                received_bytes: view.io.bytes_in,
                sent_bytes: view.output_bytes_written,
                pending_bytes: view.output_bytes_queued,
                age: since(view.io.opened_at_s),
                idle: since(view.io.last_read_s),
                closing: view.closing,
            })
            .collect();
        let room_members = ask.rooms.iter().map(|room| self.hub.local_room_members(room)).collect();
        CoreReport { generation: ask.generation, conns_total, conns, room_members }
    }

    fn seconds_since_start(&self, now: Instant) -> u32 {
        seconds_since(self.started, now)
    }

    /// This reactor's published metrics, for the reactor that serves them.
    pub(crate) fn metrics(&self) -> Arc<ReactorMetrics> {
        self.metrics.clone()
    }

    /// Serves the metrics endpoint on `addr` (see [`crate::metrics_server`]) with every one of
    /// `cores`, this reactor first, reporting `health`.
    pub(crate) fn serve_metrics(
        &mut self,
        addr: SocketAddr,
        cores: Vec<CoreHandle>,
        health: Arc<Health>,
        needs_node_link: bool,
    ) -> io::Result<()> {
        let endpoint = MetricsEndpoint::bind(addr, self.poll.registry(), cores, health, needs_node_link)?;
        log::info!("metrics on http://{}/metrics", endpoint.local_addr()?);
        self.metrics_endpoint = Some(endpoint);
        Ok(())
    }

    /// Drains the mailbox: peer frames from siblings, and wake-ups that mean "room again".
    fn take_mail(&mut self, now: Instant) {
        while let Some(mail) = self.mailbox.try_take() {
            let Some(link) = self.hub.link_mut(mail.from) else {
                continue;
            };
            if let LinkIo::Mail(mail_link) = &link.io {
                mail_link.taken(mail.bytes.len());
            }
            if link.input.is_empty() {
                link.input = bytes::BytesMut::from(&mail.bytes[..]);
            } else {
                link.input.extend_from_slice(&mail.bytes);
            }
            self.hub.handle_link_input(mail.from, now);
        }
        // A sibling that took our mail may have made room for what we held back.
        for i in 0..self.siblings.len() {
            self.flush_link(self.siblings[i]);
        }
    }

    fn remove_finished(&mut self, keys: &mut Vec<ConnKey>) {
        self.hub.take_finished(keys);
        for key in keys.drain(..) {
            if log::log_enabled!(log::Level::Debug) {
                if let Some(conn) = self.hub.conn_mut(key) {
                    log::debug!("connection {key} {} closed", conn.label());
                }
            }
            if let Some(mut socket) = self.hub.remove(key) {
                socket.transport.deregister(self.poll.registry());
            }
        }
    }
}

/// Whole seconds from `start` to `now`, saturating (a connection's times in 4 bytes each).
fn seconds_since(start: Instant, now: Instant) -> u32 {
    u32::try_from(now.saturating_duration_since(start).as_secs()).unwrap_or(u32::MAX)
}

/// Names the client listener in its bind errors.
pub(crate) const CLIENT_LISTENER_NAME: &str = "client listener (--listen)";

/// Fails with `AddrInUse` when a socket of another process already listens on `addr`, whether
/// or not it set SO_REUSEPORT. Call it before binding the reactors' shared listeners.
///
/// Why: SO_REUSEPORT cannot tell our sibling reactors from another `fanout` of the same user,
/// so a second server would join this port and the kernel would split new clients between two
/// servers that cannot hear each other. A probe bound with SO_REUSEADDR but *without*
/// SO_REUSEPORT conflicts with any listening socket on the address (EADDRINUSE), yet not with
/// the TIME_WAIT leftovers of a previous run (SO_REUSEADDR); it is dropped unlistened, before
/// our own listeners bind. The race it leaves: two servers started at the same instant may
/// both probe before either listens, and then share the port as before. Holding the probe
/// would not close it — two bound, unlistened SO_REUSEADDR sockets do not conflict.
pub(crate) fn refuse_taken_address(addr: SocketAddr, name: &str) -> io::Result<()> {
    let probe = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    probe().map(drop).map_err(|e| bind_error(name, addr, e))
}

/// Names the client TLS listener in its bind errors and logs.
pub(crate) const TLS_LISTENER_NAME: &str = "client TLS listener (--tls-listen)";

/// A non-blocking listener with SO_REUSEADDR (and SO_REUSEPORT when reactors share the
/// address) and an explicit backlog, built with socket2; errors name the listener (`name`).
fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool, name: &str) -> io::Result<TcpListener> {
    let bound = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket)
    };
    let socket = bound().map_err(|e| bind_error(name, addr, e))?;
    Ok(TcpListener::from_std(socket.into()))
}

/// TCP_NODELAY (we batch ourselves, once per turn) and keepalive (finds dead line-mode peers).
fn tune_accepted(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_PROBES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}
