//! Limits of the cluster port against connections that never authenticate: at most
//! `NODE_LINKS_PENDING_MAX` handshakes are held at once, the rest are closed at accept, and a real
//! node still links.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fanout::limits::NODE_LINKS_PENDING_MAX;
use support::Server;

/// Half-open connections the test opens to the cluster port (well over the cap).
const SILENT: usize = 200;

/// How soon a connection over the cap must be closed: before the 3 s silence cut (and the 5 s
/// handshake timeout) could be what closes it, with room for a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_millis(2500);

fn node(secret: &std::path::Path, id: u16, peers: &[SocketAddr]) -> (Server, SocketAddr) {
    let args = support::cluster::node_args(1, "127.0.0.1:0", secret, id, peers, &[]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = support::cluster::cluster_addr(&server);
    (server, addr)
}

/// Whether the server has closed `conn` (end of stream or reset), without waiting; bytes it
/// sent (its `LINK_HELLO`, for a handshake it holds) are read and dropped.
fn is_closed(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn pending_node_handshakes_are_capped_and_a_real_node_still_links() {
    let secret = support::cluster::secret_file("limits", "limits everywhere");
    let (one, cluster) = node(&secret, 1, &[]);

    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT).map(|_| TcpStream::connect(cluster).expect("connect")).collect();
    for conn in &silent {
        conn.set_nonblocking(true).expect("non-blocking");
    }
    // Scans until enough are closed or the time is up (bounded in count by the deadline).
    let mut closed = 0;
    while opened.elapsed() < CLOSED_WITHIN {
        closed = silent.iter_mut().map(is_closed).filter(|c| *c).count();
        if closed >= SILENT - NODE_LINKS_PENDING_MAX {
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // Between scans of a non-blocking poll.
    }
    println!("MEASURED {closed} of {SILENT} silent connections closed within {CLOSED_WITHIN:?}");
    assert!(
        closed >= SILENT - NODE_LINKS_PENDING_MAX,
        "only {closed} of {SILENT} closed: more than {NODE_LINKS_PENDING_MAX} handshakes held; log:\n{}",
        one.log_text()
    );

    // The cap costs a real node nothing once the flood is gone: it links.
    drop(silent);
    let (two, _) = node(&secret, 2, &[cluster]);
    let up = two.wait_for_log(" up: node 1 at ", Duration::from_secs(15));
    assert!(up.is_some(), "node 2 never linked to node 1; log:\n{}", two.log_text());
}
