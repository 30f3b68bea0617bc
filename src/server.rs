//! A whole node: one `Reactor` per core, linked pairwise by peer links.
//!
//! Each reactor is a thread with its own `Poll`, its own listener on the shared address
//! (SO_REUSEPORT: the kernel spreads new connections over the listeners) and its own hub.
//! Sibling reactors are linked by `MailLink`s carrying peer frames — the same
//! framing and the same `link::Link` type that will link nodes, so routing cannot tell
//! a sibling core from a remote node. The README has the measurements behind both choices.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::peer::is_valid_cluster_addr;
use crate::config::{ClusterConfig, ServerConfig};
use crate::error::bind_error;
use crate::hub::{Gateway, MAX_CORE_ID};
use crate::interest::PeerId;
use crate::mailbox::MailLink;
pub use crate::metrics::{Health, HealthState};
use crate::reactor::{refuse_taken_address, Reactor, StopHandle, CLIENT_LISTENER_NAME, TLS_LISTENER_NAME};
use crate::rng::{OsRandom, RandomSource};

/// Names the cluster listener in its bind errors.
const CLUSTER_LISTENER_NAME: &str = "cluster listener (--cluster-listen)";

/// Every reactor of one server, built and linked, ready to run.
pub struct Server {
    reactors: Vec<Reactor>,
    stop: StopHandle,
    health: Arc<Health>,
}

impl Server {
    /// Binds `threads` reactors to `config.listen` and links each pair of them. Fails with
    /// `AddrInUse` when another process listens on any of the server's addresses; every bind
    /// error names its listener (`client listener (--listen)`, `metrics listener (--metrics)`,
    /// `cluster listener (--cluster-listen)`) and address.
    pub fn bind(config: ServerConfig, threads: usize) -> io::Result<Self> {
        if threads == 0 || threads > usize::from(MAX_CORE_ID) + 1 {
            let text = format!("--threads must be between 1 and {}", usize::from(MAX_CORE_ID) + 1);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, text));
        }
        // A node binds its cluster listener first: the bound address names the node when no
        // id is given, and every core's ids carry the node id.
        let cluster = match &config.cluster {
            Some(cluster) => {
                let listener = mio::net::TcpListener::bind(cluster.listen)
                    .map_err(|e| bind_error(CLUSTER_LISTENER_NAME, cluster.listen, e))?;
                let own = match &cluster.advertise {
                    Some(advertised) => advertised.clone(),
                    None => listener.local_addr()?.to_string(),
                };
                // Peers refuse a link whose LINK_HELLO carries anything else: say so at start-up.
                if !is_valid_cluster_addr(own.as_bytes()) {
                    let text = format!("--cluster-advertise {own:?} must be IP:port or dns.name:port");
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, text));
                }
                // No node id from an address many hosts share; no advertising 0.0.0.0.
                let node_id = ClusterConfig::node_identity(&own, cluster.node_id)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.0))?;
                Some((listener, own, node_id))
            }
            None => None,
        };
        let reuse_port = threads > 1;
        // Shared listeners set SO_REUSEPORT, which would let us join another process's port
        // silently: probe first. A lone listener needs no probe (the kernel refuses its bind),
        // nor does port 0 (the kernel picks a port no one listens on).
        let plain = !config.tls.as_ref().is_some_and(|tls| tls.only);
        if plain && reuse_port && config.listen.port() != 0 {
            refuse_taken_address(config.listen, CLIENT_LISTENER_NAME)?;
        }
        if let Some(tls) = config.tls.as_ref().filter(|tls| reuse_port && tls.listen.port() != 0) {
            refuse_taken_address(tls.listen, TLS_LISTENER_NAME)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        // Clustered ids must stay unique across restarts (a surviving node's receivers see the
        // ids of a restarted one); a lone server's die with all its connections, and it counts
        // from 1, as the worked example of protocol.md shows.
        let id_epoch = if config.cluster.is_some() { id_epoch_now() } else { 0 };
        let mut reactors: Vec<Reactor> = Vec::with_capacity(threads);
        let mut listen_on = config.listen;
        let mut tls_listen_on = config.tls.as_ref().map(|tls| tls.listen);
        for core in 0..threads {
            let mut core_config = config.clone();
            core_config.listen = listen_on;
            if let (Some(tls), Some(addr)) = (core_config.tls.as_mut(), tls_listen_on) {
                tls.listen = addr;
            }
            core_config.hub.core_id = core as u16;
            core_config.hub.id_epoch = id_epoch;
            if let Some((_, _, node_id)) = &cluster {
                core_config.hub.node_id = *node_id;
            }
            let reactor = Reactor::bind_shared(core_config, reuse_port, stop.clone())?;
            // With port 0 the first bind picks the port; the others share it.
            listen_on = reactor.local_addr()?;
            tls_listen_on = reactor.local_tls_addr().transpose()?;
            reactors.push(reactor);
        }
        for a in 0..threads {
            for b in a + 1..threads {
                // Each reactor's next link id is the next slot of its link slab.
                let (a_at_b, b_at_a) = (PeerId::new(reactors[b].link_count()), PeerId::new(reactors[a].link_count()));
                let (at_a, at_b) = MailLink::pair(reactors[a].mailbox(), a_at_b, reactors[b].mailbox(), b_at_a);
                let added_a = reactors[a].add_link(at_a);
                let added_b = reactors[b].add_link(at_b);
                debug_assert_eq!((added_a, added_b), (b_at_a, a_at_b), "peer ids are link indexes");
            }
        }
        if let (Some((listener, own, node_id)), Some(settings)) = (cluster, &config.cluster) {
            let gateway = &mut reactors[0];
            gateway.set_gateway(Gateway {
                secret: settings.secret.clone(),
                cluster_addr: own.clone(),
                instance: OsRandom.next_u64(),
            });
            gateway.enable_cluster(listener, own.clone(), &settings.peers, settings.tls.clone())?;
            log::info!("cluster: node {node_id} accepting node links on {own}");
        }
        let health = Arc::new(Health::new());
        let wakers: Vec<_> = reactors.iter().map(Reactor::waker).collect();
        if let Some(addr) = config.metrics {
            let cores = reactors.iter().zip(&wakers).map(|(r, w)| (r.metrics(), w.clone())).collect();
            // Ready once linked to the cluster, when there is a peer to link to.
            let needs_node_link = config.cluster.as_ref().is_some_and(|c| !c.peers.is_empty());
            reactors[0].serve_metrics(addr, cores, health.clone(), needs_node_link)?;
        }
        let stop = StopHandle::new(stop, wakers).with_health(health.clone());
        for (core, reactor) in reactors.iter_mut().enumerate() {
            reactor.set_lifecycle(health.clone(), (core == 0).then(|| stop.clone()));
        }
        Ok(Self { reactors, stop, health })
    }

    /// The address clients connect to: the plain listener's, or with `--tls-only` the TLS one's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reactors[0].local_addr()
    }

    /// The address TLS clients connect to, if the server has a TLS listener.
    pub fn local_tls_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.reactors[0].local_tls_addr()
    }

    /// A handle that stops every reactor from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs every reactor, the first on this thread (it also takes SIGINT/SIGTERM when
    /// `catch_signals`), until stopped; returns the first error any reactor hit.
    pub fn run(self, catch_signals: bool) -> io::Result<()> {
        let mut reactors = self.reactors.into_iter();
        let Some(first) = reactors.next() else {
            return Ok(());
        };
        let mut threads = Vec::new();
        for reactor in reactors {
            let stop = self.stop.clone();
            let name = format!("fanout-core-{}", reactor.core_id());
            let thread = std::thread::Builder::new().name(name).spawn(move || {
                let result = reactor.run(false);
                // One reactor failing stops the server rather than leaving it half up.
                stop.stop();
                result
            })?;
            threads.push(thread);
        }
        // Every listener is bound (the kernel queues connections) and every reactor's thread
        // is started: the server is up.
        self.health.set_serving();
        let mut result = first.run(catch_signals);
        self.stop.stop();
        for thread in threads {
            let joined = thread.join().unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            result = result.and(joined);
        }
        result
    }
}

/// Where this process's session and stream id counters start: the wall clock in microseconds
/// (the hub takes it modulo 2^40). A restarted node starts above every id its previous life
/// handed out, as long as that life issued fewer than one id per microsecond on average.
fn id_epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64)
}
