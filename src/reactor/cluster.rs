//! The gateway reactor's network side of the cluster: the node listener, dialing known nodes
//! with backoff, and resolving host names (on a helper thread: the event loop never waits for
//! DNS). A node link, once connected, is a [`Transport`] like a client connection: the reactor
//! reads and flushes both through one path. What the bytes mean is the hub's business, exactly
//! as for sibling links.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Waker};
use slab::Slab;

use super::token::Source;
use super::transport::{Acceptor, Transport};
use super::Reactor;
use crate::cluster::Dialer;
use crate::interest::PeerId;
use crate::limits::{NODE_LINKS_PENDING_MAX, NODE_LINK_UNSENT_BYTES_MAX};
use crate::mailbox::{MailLink, Sent};
use crate::tls::{ClusterTls, TlsLayer};

/// What a peer link runs over: in-memory mail to a sibling core, or TCP to another node.
#[derive(Debug)]
pub enum LinkIo {
    /// A sibling core in this process.
    Mail(MailLink),
    /// Another node.
    Tcp(Transport),
}

/// The gateway's cluster networking.
#[derive(Debug)]
pub(super) struct NodeNet {
    acceptor: Acceptor,
    dialer: Dialer,
    /// Dials in progress: the address and the connecting socket.
    dials: Slab<(String, TcpStream)>,
    /// Resolves host names of node addresses; started at the first name.
    resolver: Option<Resolver>,
    /// Names handed to the resolver and not answered yet (each is asked once at a time).
    resolving: BTreeSet<String>,
    /// Node-link TLS, if on: every link accepted or dialed runs it.
    tls: Option<ClusterTls>,
}

/// A thread that resolves host names for the gateway: names go in through a channel, each
/// answer comes back through another and wakes the reactor. One thread, one name at a time:
/// resolutions are rare (a dial, every few seconds at most per name) and the thread is the
/// only place that may block on DNS.
#[derive(Debug)]
struct Resolver {
    names: mpsc::Sender<String>,
    answers: mpsc::Receiver<(String, io::Result<Vec<SocketAddr>>)>,
}

impl Resolver {
    /// Starts the thread; `own` is the cluster listener's address, whose addresses are left
    /// out of every answer (a headless service lists this node too).
    fn start(waker: Arc<Waker>, own: Option<SocketAddr>) -> io::Result<Self> {
        let (names, names_rx) = mpsc::channel::<String>();
        let (answers_tx, answers) = mpsc::channel();
        std::thread::Builder::new().name("fanout-resolver".into()).spawn(move || {
            // Ends when the reactor drops its end.
            for name in names_rx {
                let answer = name.to_socket_addrs().map(|addrs| addrs.filter(|a| !is_own(*a, own)).collect());
                if answers_tx.send((name, answer)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?;
        Ok(Self { names, answers })
    }
}

/// Whether `addr` is this node's cluster listener `own`: the same address, or, for a listener
/// on every interface (0.0.0.0, ::), the same port on an address of this host (one a socket
/// can be bound to).
fn is_own(addr: SocketAddr, own: Option<SocketAddr>) -> bool {
    let Some(own) = own else {
        return false;
    };
    if addr == own {
        return true;
    }
    own.ip().is_unspecified() && addr.port() == own.port() && UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

/// ` (resolved from NAME)` after an address that came from a host name.
struct ResolvedFrom<'a>(Option<&'a str>);

impl fmt::Display for ResolvedFrom<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, " (resolved from {name})"),
            None => Ok(()),
        }
    }
}

/// Logs a failed dial to (or resolution of) `addr`, resolved from `origin`, because of `why`:
/// at `warn` when the dialer says so (`warn`: failures since the last warning), else at `debug`.
fn log_dial_failure(addr: &str, origin: Option<&str>, why: &dyn fmt::Display, warn: Option<u64>) {
    let from = ResolvedFrom(origin);
    let resolving = crate::cluster::Dial::is_name(addr);
    match warn {
        Some(1) if resolving => log::warn!("cluster: cannot resolve node address {addr}: {why}; retrying"),
        Some(n) if resolving => {
            log::warn!("cluster: still cannot resolve node address {addr}: {why} ({n} failures since the last warning)")
        }
        Some(1) => log::warn!("cluster: cannot reach node at {addr}{from}: {why}; retrying"),
        Some(n) => {
            log::warn!(
                "cluster: still cannot reach node at {addr}{from}: {why} ({n} failed dials since the last warning)"
            )
        }
        None if resolving => log::debug!("cluster: resolve {addr}: {why}"),
        None => log::debug!("cluster: dial {addr}{from}: {why}"),
    }
}

impl NodeNet {
    /// A dial to (or the resolution of) `addr` failed at `now` because of `why`: logged at
    /// `warn` as the dialer rate-limits it, else at `debug`; redialed after the backoff.
    fn dial_failed(&mut self, addr: &str, why: &dyn fmt::Display, now: Instant) {
        let origin = self.dialer.origin(addr).map(str::to_string);
        let warn = self.dialer.failed(addr, now);
        log_dial_failure(addr, origin.as_deref(), why, warn);
    }

    /// Hands `name` to the resolver thread (started now if need be).
    fn resolve(&mut self, name: String, waker: &Arc<Waker>, now: Instant) {
        if self.resolving.contains(&name) {
            return; // The answer to the earlier request will do.
        }
        if self.resolver.is_none() {
            match Resolver::start(waker.clone(), self.acceptor.local_addr().ok()) {
                Ok(resolver) => self.resolver = Some(resolver),
                Err(e) => return self.dial_failed(&name, &format_args!("cannot start a resolver thread: {e}"), now),
            }
        }
        let sent = self.resolver.as_ref().is_some_and(|r| r.names.send(name.clone()).is_ok());
        if sent {
            self.resolving.insert(name);
        } else {
            self.resolver = None;
            self.dial_failed(&name, &"the resolver thread is gone", now);
        }
    }

    /// Takes the resolver's answers: every address found becomes a target to dial.
    fn take_resolved(&mut self, now: Instant) {
        while let Some((name, answer)) = self.resolver.as_ref().and_then(|r| r.answers.try_recv().ok()) {
            self.resolving.remove(&name);
            match answer {
                Ok(addrs) => {
                    let found: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                    log::debug!("cluster: {name} resolves to [{}]", found.join(", "));
                    for addr in self.dialer.resolved(&name, found, now) {
                        log::info!("cluster: will link to node at {addr} (resolved from {name})");
                    }
                }
                Err(e) => self.dial_failed(&name, &e, now),
            }
        }
    }
}

impl Reactor {
    /// Makes this reactor its node's gateway: listen for node links on `listen` and keep
    /// dialing `peers` (and every node gossip tells of) until linked.
    pub(crate) fn enable_cluster(
        &mut self,
        mut listener: TcpListener,
        own_addr: String,
        peers: &[String],
        tls: Option<ClusterTls>,
    ) -> io::Result<()> {
        self.poll.registry().register(&mut listener, Source::ClusterListener.token(), Interest::READABLE)?;
        let seed = self.hub.random_u64();
        let mut net = NodeNet {
            acceptor: Acceptor::new(listener, "cluster listener"),
            dialer: Dialer::new(own_addr, seed),
            dials: Slab::new(),
            resolver: None,
            resolving: BTreeSet::new(),
            tls,
        };
        let now = Instant::now();
        for peer in peers {
            if net.dialer.add_target(peer.clone(), now) {
                log::info!("cluster: will link to node at {peer}");
            }
        }
        self.node_net = Some(net);
        Ok(())
    }

    /// Accepts node links, each as a [`Transport`] the hub authenticates.
    pub(super) fn accept_nodes(&mut self, now: Instant) {
        loop {
            let Some((stream, from)) = self.node_net.as_mut().and_then(|net| net.acceptor.accept(now)) else {
                return;
            };
            if self.hub.pending_node_links() >= NODE_LINKS_PENDING_MAX {
                // Nobody unauthenticated gets a link (or a handshake timer) beyond the cap: a
                // real node that meets it redials.
                log::debug!("node connection from {from} refused: {NODE_LINKS_PENDING_MAX} handshakes pending");
                self.hub.count_refused_node_link();
                drop(stream);
                continue;
            }
            log::debug!("node connection from {from}");
            let tls = match self.node_net.as_ref().and_then(|net| net.tls.as_ref()).map(ClusterTls::accept) {
                None => None,
                Some(Ok(layer)) => Some(layer),
                Some(Err(e)) => {
                    log::warn!("cluster: node connection from {from} refused: {e}");
                    continue;
                }
            };
            self.adopt_node_link(stream, false, tls, now);
        }
    }

    /// Hands a connected node socket to the hub as a link (through `tls`, if node links run it).
    fn adopt_node_link(
        &mut self,
        stream: TcpStream,
        dialed: bool,
        tls: Option<TlsLayer>,
        now: Instant,
    ) -> Option<PeerId> {
        let _ = stream.set_nodelay(true);
        // The backlog stays in the link's queues (where control frames pass it and its age is
        // measured), not in the kernel's send buffer.
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NODE_LINK_UNSENT_BYTES_MAX) {
            log::debug!("TCP_NOTSENT_LOWAT on a node link: {e}");
        }
        let remote = stream.peer_addr().ok();
        let transport = match tls {
            Some(tls) => Transport::with_tls(stream, tls),
            None => Transport::new(stream),
        };
        let peer = self.hub.add_node_link(LinkIo::Tcp(transport), dialed, remote, now);
        let link = self.hub.link_mut(peer)?;
        let LinkIo::Tcp(transport) = &mut link.io else {
            return None;
        };
        if let Err(e) = transport.register(self.poll.registry(), Source::Link(peer).token()) {
            log::warn!("register node link: {e}");
            self.hub.link_down(peer, now);
            return None;
        }
        self.flush_link(peer);
        Some(peer)
    }

    /// Starts dials that are due, gives up hung ones, learns new nodes from gossip, and resumes
    /// accepting after a pause.
    pub(super) fn poll_dialer(&mut self, now: Instant) {
        let Some(net) = self.node_net.as_mut() else {
            return;
        };
        if net.acceptor.resume_due(now) {
            self.accept_nodes(now);
        }
        let Some(net) = self.node_net.as_mut() else {
            return;
        };
        net.take_resolved(now);
        // A dial the network swallows (no answer at all) fails after the handshake timeout.
        while let Some(dial) = net.dialer.poll_expired(now) {
            if let Some(key) = net.dials.iter().find(|(_, (addr, _))| *addr == dial.addr).map(|(key, _)| key) {
                let (_, mut stream) = net.dials.remove(key);
                let _ = self.poll.registry().deregister(&mut stream);
            }
            // A resolution that hangs stays in `resolving`: its answer, when it comes, will do.
            let why = format_args!("no answer within {:?}", crate::cluster::LINK_HANDSHAKE_TIMEOUT);
            log_dial_failure(&dial.addr, None, &why, dial.warn);
        }
        let mut learned = Vec::new();
        self.hub.take_node_addresses(&mut learned);
        for node in learned {
            if net.dialer.add_target(node.addr.clone(), now) {
                log::info!("cluster: will link to node {} at {}", node.node_id, node.addr);
            }
        }
        let linked = self.hub.linked_node_addrs();
        let linked_ids = self.hub.linked_node_ids();
        let is_linked = |addr: &str, node: Option<u16>| {
            linked.iter().any(|a| a == addr) || node.is_some_and(|id| linked_ids.contains(&id))
        };
        while let Some(dial) = net.dialer.poll_dial(now, is_linked) {
            if dial.resolve {
                net.resolve(dial.addr, &self.waker, now);
                continue;
            }
            let dialed = dial.addr.parse::<SocketAddr>().map_err(io::Error::other).and_then(TcpStream::connect);
            match dialed {
                Ok(mut stream) => {
                    let key = net.dials.vacant_key();
                    let token = Source::Dial(key).token();
                    match self.poll.registry().register(&mut stream, token, Interest::WRITABLE) {
                        Ok(()) => {
                            net.dials.insert((dial.addr, stream));
                        }
                        Err(e) => net.dial_failed(&dial.addr, &e, now),
                    }
                }
                Err(e) => net.dial_failed(&dial.addr, &e, now),
            }
        }
    }

    /// When the dialer next has something to do.
    pub(super) fn next_dial_at(&self) -> Option<Instant> {
        let net = self.node_net.as_ref()?;
        let dial = net.dialer.next_timeout();
        match (dial, net.acceptor.paused_until()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A dial's socket became writable: connected (it becomes a link) or failed (redialed).
    pub(super) fn finish_dial(&mut self, key: usize, now: Instant) {
        let Some(net) = self.node_net.as_mut() else {
            return;
        };
        let Some((addr, mut stream)) = net.dials.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream);
        let failure = match (stream.take_error(), stream.peer_addr()) {
            (Ok(Some(e)) | Err(e), _) => Some(e),
            (Ok(None), Err(e)) => Some(e),
            (Ok(None), Ok(_)) => None,
        };
        if let Some(e) = failure {
            net.dial_failed(&addr, &e, now);
            return;
        }
        log::debug!("dialed node at {addr}");
        let tls = match net.tls.as_ref() {
            None => None,
            // The node must hold a certificate for the name it was dialed by: the host name the
            // address was resolved from, else the address itself.
            Some(tls) => match tls.dial(net.dialer.origin(&addr).unwrap_or(&addr)) {
                Ok(layer) => Some(layer),
                Err(e) => {
                    net.dial_failed(&addr, &format_args!("TLS: {e}"), now);
                    return;
                }
            },
        };
        let peer = self.adopt_node_link(stream, true, tls, now);
        if let Some(net) = self.node_net.as_mut() {
            match peer {
                Some(peer) => net.dialer.connected(&addr, peer),
                None => net.dial_failed(&addr, &"the link could not be registered", now),
            }
        }
    }

    /// Hands a link's queued frames to its transport: one mail batch, or vectored writes.
    pub(super) fn flush_link(&mut self, peer: PeerId) {
        let Some(link) = self.hub.link_mut(peer) else {
            return;
        };
        let (io, queues) = link.io_and_queues();
        let transport = match io {
            LinkIo::Mail(mail) => {
                if mail.send(queues.queued_bytes(), |batch| queues.flush_to(batch).map(|_| ())) == Sent::Blocked {
                    log::debug!("peer link {peer} is behind; holding frames back");
                }
                return;
            }
            LinkIo::Tcp(transport) => transport,
        };
        let token = Source::Link(peer).token();
        if let Err(e) = transport.flush(self.poll.registry(), token, |mut w| queues.flush_to(&mut w)) {
            log::debug!("write to node link {peer}: {e}");
            self.hub.link_down(peer, std::time::Instant::now());
        }
    }

    /// Removes links the hub declared down: closes node sockets and schedules redials.
    pub(super) fn reap_links(&mut self, now: Instant) {
        let mut down = Vec::new();
        self.hub.take_links_down(&mut down);
        for peer in down {
            let node_id = self.hub.link_mut(peer).and_then(|l| l.peer_node_id());
            if let Some(LinkIo::Tcp(mut transport)) = self.hub.remove_link(peer) {
                transport.deregister(self.poll.registry());
                transport.shutdown(Shutdown::Both);
            }
            if let Some(net) = self.node_net.as_mut() {
                net.dialer.link_down(peer, node_id, now);
            }
        }
    }
}
