//! Ids after a restart: a node killed with SIGKILL and started again on the same address and
//! node id hands out session and stream ids its previous life never used, so a receiver on a
//! surviving node never sees one stream carry two publishers.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fanout::client::Client;
use support::cluster::{cluster_addr, secret_file, MESH_TIMEOUT};
use support::{connect, connect_joined, Server};

/// Cluster flags for one single-core node (one core: every id comes from the same counter, so
/// a reused id shows on every run, not only when the kernel picks the same core twice).
fn node_args(cluster_listen: &str, secret: &Path, node_id: u16, peers: &[SocketAddr]) -> Vec<String> {
    support::cluster::node_args(1, cluster_listen, secret, node_id, peers, &[])
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits until `server`'s log shows a node link up to node `node_id`.
fn wait_link_to(server: &Server, node_id: u16) {
    let needle = format!(" up: node {node_id} ");
    server.wait_for_log(&needle, MESH_TIMEOUT).unwrap_or_else(|| panic!("no link up to node {node_id}"));
}

/// Waits until `client` sees `name` among the members of `room`: presence of the other node
/// has arrived, and with it (earlier on the same link) that node's interest in the room.
fn wait_member(client: &mut Client, room: &str, name: &str) {
    let deadline = Instant::now() + MESH_TIMEOUT;
    loop {
        let members = client.who(room).expect("WHO");
        if members.members.iter().any(|m| m.name == name.as_bytes()) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never showed up in {room}: {members:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One life of node 2: two clients connect, one publishes three messages that the receiver on
/// node 1 gets; returns the session ids of both and the stream the receiver saw.
fn one_life(node2: &Server, receiver: &mut Client, seen: &mut HashSet<(u64, u64)>) -> (Vec<u64>, u64) {
    let mut publisher = connect_joined(node2.addr(), "publisher", "r");
    let other = connect(node2.addr(), "other");
    let sessions = vec![publisher.welcome().session_id, other.welcome().session_id];
    wait_member(&mut publisher, "r", "receiver");
    for i in 1..=3u8 {
        publisher.publish("r", &[i]).expect("publish");
    }
    let mut stream = None;
    for i in 1..=3u8 {
        let m = receiver.next_message().expect("the receiver on node 1 gets node 2's message");
        assert_eq!((&m.name[..], &m.payload[..]), (&b"publisher"[..], &[i][..]));
        assert_eq!(*stream.get_or_insert(m.stream), m.stream, "one publisher, one stream");
        assert!(seen.insert((m.stream, m.seq)), "stream {} carried seq {} twice", m.stream, m.seq);
    }
    (sessions, stream.expect("three messages"))
}

#[test]
fn a_restarted_node_hands_out_new_session_and_stream_ids() {
    let secret = secret_file("restart", "restart secret");
    let node1 = Server::start(&refs(&node_args("127.0.0.1:0", &secret, 1, &[])));
    let cluster1 = cluster_addr(&node1);
    let node2 = Server::start(&refs(&node_args("127.0.0.1:0", &secret, 2, &[cluster1])));
    let (client2, cluster2) = (node2.addr(), cluster_addr(&node2));
    wait_link_to(&node1, 2);
    wait_link_to(&node2, 1);

    let mut receiver = connect_joined(node1.addr(), "receiver", "r");
    let mut seen = HashSet::new();
    let (sessions_before, stream_before) = one_life(&node2, &mut receiver, &mut seen);

    drop(node2); // SIGKILL
    node1.wait_for_log("to node 2 is down", MESH_TIMEOUT).expect("node 1 notices node 2 is gone");
    let args = node_args(&cluster2.to_string(), &secret, 2, &[cluster1]);
    let node2 = Server::start_listening_on(&client2.to_string(), &refs(&args));
    assert_eq!(node2.addr(), client2, "the same client address");
    wait_link_to(&node2, 1);

    let (sessions_after, stream_after) = one_life(&node2, &mut receiver, &mut seen);
    for id in &sessions_after {
        assert!(!sessions_before.contains(id), "session id {id:#x} handed out again after the restart");
    }
    assert_ne!(stream_after, stream_before, "stream id {stream_before:#x} reused after the restart");
    for id in sessions_before.iter().chain(&sessions_after).chain([&stream_before, &stream_after]) {
        assert_eq!(id >> 48, 2, "id {id:#x} names node 2");
    }
}
