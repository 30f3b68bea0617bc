//! Nodes of a cluster for the loopback tests: a shared-secret file, a node started with the
//! cluster flags (its cluster address read from its log), and waiting for its links. One setup
//! for every multi-node test, so that each test says only what its cluster looks like.

// Each test crate that includes `support` compiles this module; not all of them start nodes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use fanout::client::Client;

use super::{Server, IO_TIMEOUT};

/// How long links may take to form (dial, handshake, gossip, redial with backoff).
pub const MESH_TIMEOUT: Duration = Duration::from_secs(15);

/// What a node logs once its cluster listener is bound, followed by the address.
const ACCEPTING: &str = "accepting node links on ";

/// Writes `secret` to a file named `name` in a directory of this test process; returns its path.
pub fn secret_file(name: &str, secret: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-cluster-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("write the secret");
    path
}

/// The serve flags of a node: `threads` reactors, cluster listener `cluster_listen`, the
/// secret, `node_id`, a `--peer` per peer, then `extra`.
pub fn node_args(
    threads: usize,
    cluster_listen: &str,
    secret: &Path,
    node_id: u16,
    peers: &[SocketAddr],
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--threads".into(),
        threads.to_string(),
        "--cluster-listen".into(),
        cluster_listen.into(),
        "--cluster-secret-file".into(),
        secret.display().to_string(),
        "--node-id".into(),
        node_id.to_string(),
    ];
    for peer in peers {
        args.extend(["--peer".to_string(), peer.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The cluster address `server` announced in its log.
pub fn cluster_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log(ACCEPTING, Duration::from_secs(10)).expect("the node announces its address");
    let at = line.find(ACCEPTING).expect("the prefix") + ACCEPTING.len();
    line[at..].trim().parse().expect("a cluster address")
}

/// After `a` refused the link of `intruder` (node `intruder_id`): a message published on `a`
/// reaches no client of the intruder, and `a` never logged the intruder's link as up.
pub fn assert_intruder_receives_nothing(a: &Node, intruder: &Node, intruder_id: u16) {
    let mut on_a = super::connect_joined(a.server.addr(), "alice", "r");
    let mut on_intruder = super::connect_joined(intruder.server.addr(), "eve", "r");
    on_a.publish("r", b"private").expect("publish on a");
    on_a.round_trip(1).expect("a answers");
    on_intruder.set_read_timeout(Some(Duration::from_millis(500))).expect("a read timeout");
    if let Ok(event) = on_intruder.next_event() {
        panic!("the intruder's client received {event:?}");
    }
    let up = format!("up: node {intruder_id}");
    assert!(!a.server.log_text().contains(&up), "a let node {intruder_id} up");
}

/// A running node: its server and where it accepts node links.
pub struct Node {
    /// The server process.
    pub server: Server,
    /// Its cluster listener.
    pub cluster: SocketAddr,
}

impl Node {
    /// A two-core node on a free cluster port.
    pub fn start(secret: &Path, node_id: u16, peers: &[SocketAddr], extra: &[&str]) -> Node {
        Self::start_with(2, "127.0.0.1:0", secret, node_id, peers, extra)
    }

    /// A node with `threads` reactors whose cluster listener is `cluster_listen`.
    pub fn start_with(
        threads: usize,
        cluster_listen: &str,
        secret: &Path,
        node_id: u16,
        peers: &[SocketAddr],
        extra: &[&str],
    ) -> Node {
        let args = node_args(threads, cluster_listen, secret, node_id, peers, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start(&refs);
        let cluster = cluster_addr(&server);
        Node { server, cluster }
    }

    /// A node with `threads` reactors on fixed client (`listen`) and cluster addresses: a
    /// restarted node comes back where its clients and peers found it before.
    pub fn start_on(
        threads: usize,
        listen: SocketAddr,
        cluster_listen: SocketAddr,
        secret: &Path,
        node_id: u16,
        peers: &[SocketAddr],
    ) -> Node {
        let args = node_args(threads, &cluster_listen.to_string(), secret, node_id, peers, &[]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_listening_on(&listen.to_string(), &refs);
        let cluster = cluster_addr(&server);
        Node { server, cluster }
    }

    /// Waits until the node's log shows `count` node links up (ups minus downs).
    pub fn wait_links_up(&self, count: usize) {
        let deadline = Instant::now() + MESH_TIMEOUT;
        loop {
            let text = self.server.log_text();
            let ups = text.lines().filter(|l| l.contains("node link") && l.contains(" up: node ")).count();
            let downs = text.lines().filter(|l| l.contains("node link") && l.contains(" is down")).count();
            if ups.saturating_sub(downs) >= count {
                return;
            }
            assert!(Instant::now() < deadline, "node never had {count} links up; log:\n{text}");
            // A bounded poll of the log: a link's state has no event a test can wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A free port on loopback: bound, read and released (a node binds it right after).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("its address")
}

/// Starts node `id` with two cores on `proxy.target()`, advertising `proxy.addr()`, so that
/// every link to it crosses the proxy (the fault tests cut, blackhole or slow it there).
pub fn start_behind(
    proxy: &super::proxy::Proxy,
    secret: &Path,
    id: u16,
    peers: &[SocketAddr],
    extra: &[&str],
) -> Server {
    let advertise = proxy.addr().to_string();
    let mut more = vec!["--cluster-advertise", advertise.as_str()];
    more.extend_from_slice(extra);
    let args = node_args(2, &proxy.target().to_string(), secret, id, peers, &more);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let line = server.wait_for_log(ACCEPTING, MESH_TIMEOUT).expect("the node announces itself");
    assert!(line.ends_with(&advertise), "node {id} advertises its proxy: {line}");
    server
}

/// Publishes `count` numbered messages from every client while all read; returns what each got,
/// by publisher name, in arrival order.
pub fn exchange(clients: &mut [Client], room: &str, count: usize) -> Vec<BTreeMap<String, Vec<u64>>> {
    let names: Vec<String> = (0..clients.len()).map(|i| format!("c{i}")).collect();
    let expected_each = (clients.len() - 1) * count;
    std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, client)| {
                let sender = client.sender();
                let room = room.to_string();
                scope.spawn(move || {
                    let publisher = std::thread::spawn(move || {
                        for seq in 1..=count as u64 {
                            sender.publish(&room, &seq.to_be_bytes()).expect("publish");
                        }
                    });
                    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    for _ in 0..expected_each {
                        let m = client.next_message().unwrap_or_else(|e| panic!("c{i}: {e}"));
                        let seq = u64::from_be_bytes(m.payload[..8].try_into().expect("8 bytes"));
                        got.entry(String::from_utf8_lossy(&m.name).into_owned()).or_default().push(seq);
                    }
                    publisher.join().expect("publisher");
                    got
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
        for (i, got) in results.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                if i == j {
                    assert!(!got.contains_key(name), "c{i} got its own messages");
                } else {
                    let seqs = got.get(name).unwrap_or_else(|| panic!("c{i} got nothing from {name}"));
                    assert_eq!(seqs, &(1..=count as u64).collect::<Vec<_>>(), "c{i} from {name}: loss, dup or reorder");
                }
            }
        }
        results
    })
}

/// `per_node` clients on each of `nodes`, named c0, c1, … in order, joined to `room`.
pub fn connect_clients(nodes: &[&Node], per_node: usize, room: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for node in nodes {
        for _ in 0..per_node {
            let name = format!("c{}", clients.len());
            clients.push(super::connect_joined(node.server.addr(), &name, room));
        }
    }
    clients
}
