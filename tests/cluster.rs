//! A cluster of nodes on loopback: meshing from one peer, exactly-once per-publisher-ordered
//! delivery across nodes, crash and restart, partitions through a fault-injecting proxy, and
//! refusing a wrong secret.

mod support;

use std::time::Duration;

use fanout::client::{Client, ClientOptions, Event};
use fanout::failover::{FailoverClient, FailoverEvent, ReconnectPolicy};
use support::cluster::{assert_intruder_receives_nothing, connect_clients, exchange, secret_file, Node, MESH_TIMEOUT};
use support::connect_joined;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn three_nodes_mesh_from_one_peer_and_deliver_exactly_once_in_order() {
    let secret = secret_file("three", "correct horse battery staple");
    let a = Node::start(&secret, 1, &[], &[]);
    let b = Node::start(&secret, 2, &[a.cluster], &[]);
    // c knows only b, and must learn a from gossip.
    let c = Node::start(&secret, 3, &[b.cluster], &[]);
    for node in [&a, &b, &c] {
        node.wait_links_up(2);
    }
    let mut clients = connect_clients(&[&a, &b, &c], 3, "r");
    exchange(&mut clients, "r", 200);
}

#[test]
fn a_wrong_secret_is_refused_and_receives_nothing() {
    let good = secret_file("good", "the real secret");
    let bad = secret_file("bad", "a guess");
    let a = Node::start(&good, 1, &[], &[]);
    let intruder = Node::start(&bad, 9, &[a.cluster], &[]);
    a.server.wait_for_log("wrong cluster secret", MESH_TIMEOUT).expect("a refuses the intruder");
    assert_intruder_receives_nothing(&a, &intruder, 9);
}

#[test]
fn a_killed_node_leaves_the_others_chatting_and_rejoins_when_restarted() {
    let secret = secret_file("crash", "s");
    let a = Node::start(&secret, 1, &[], &[]);
    let b = Node::start(&secret, 2, &[a.cluster], &[]);
    let c = Node::start(&secret, 3, &[a.cluster], &[]);
    for node in [&a, &b, &c] {
        node.wait_links_up(2);
    }
    // A failover client starts on c, with a as its second address.
    let policy = ReconnectPolicy::default();
    let options = ClientOptions::default();
    let mut roamer = FailoverClient::connect(&[c.server.addr(), a.server.addr()], "roamer", &options, policy)
        .expect("the failover client connects to c");
    roamer.join("chat").expect("join on c");
    roamer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut friend = connect_joined(b.server.addr(), "friend", "chat");
    roamer.publish("chat", b"from c").unwrap();
    assert_eq!(&friend.next_message().expect("friend hears roamer via c").payload[..], b"from c");

    let c_cluster = c.cluster;
    drop(c); // kills the process
    a.server.wait_for_log("to node 3 is down", MESH_TIMEOUT).expect("a notices c is gone");
    match roamer.next_event().expect("the roamer notices and fails over") {
        FailoverEvent::Reconnected(r) => assert_eq!(r.addr, a.server.addr(), "failed over to a"),
        other => panic!("expected a failover, got {other:?}"),
    }
    roamer.publish("chat", b"from a").unwrap();
    assert_eq!(&friend.next_message().expect("friend hears roamer via a").payload[..], b"from a");
    friend.publish("chat", b"to roamer").unwrap();
    match roamer.next_event().expect("roamer hears friend") {
        FailoverEvent::Event(Event::Message(m)) => assert_eq!(&m.payload[..], b"to roamer"),
        other => panic!("expected friend's message, got {other:?}"),
    }
    let mut clients = connect_clients(&[&a, &b], 2, "r");
    exchange(&mut clients, "r", 100);
    // c comes back on the same address and id, with no peers given: the others redial it.
    let c = Node::start_with(2, &c_cluster.to_string(), &secret, 3, &[], &[]);
    c.wait_links_up(2);
    drop(clients);
    let mut clients = connect_clients(&[&a, &b, &c], 2, "r2");
    exchange(&mut clients, "r2", 100);
}

#[test]
fn a_room_only_on_other_nodes_gets_messages_published_on_this_one() {
    let secret = secret_file("relay", "s");
    let a = Node::start(&secret, 1, &[], &[]);
    let b = Node::start(&secret, 2, &[a.cluster], &[]);
    a.wait_links_up(1);
    b.wait_links_up(1);
    let mut receivers: Vec<Client> = (0..4).map(|i| connect_joined(b.server.addr(), &format!("r{i}"), "x")).collect();
    let mut publishers: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::connect(a.server.addr(), &format!("p{i}")).unwrap();
            c.join_send_only("x").unwrap();
            c
        })
        .collect();
    for (i, p) in publishers.iter_mut().enumerate() {
        for seq in 1..=50u64 {
            p.publish("x", &[&seq.to_be_bytes()[..], &[i as u8]].concat()).unwrap();
        }
    }
    for r in &mut receivers {
        r.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut next = [1u64; 4];
        for _ in 0..200 {
            match r.next_event().unwrap() {
                Event::Message(m) => {
                    let p = m.payload[8] as usize;
                    let seq = u64::from_be_bytes(m.payload[..8].try_into().unwrap());
                    assert_eq!(seq, next[p], "publisher {p} out of order");
                    next[p] += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn an_incompatible_link_version_is_refused_and_receives_nothing() {
    use fanout::codec::peer::{peer_type, LinkHello, PeerFrame};
    use fanout::codec::FrameDecoder;
    use std::io::{Read, Write};

    let secret = secret_file("version", "s");
    let a = Node::start(&secret, 1, &[], &[]);
    let mut hello = bytes::BytesMut::new();
    PeerFrame::Hello(LinkHello {
        version: fanout::codec::peer::LINK_VERSION + 1,
        node_id: 7,
        core_id: 0,
        instance: 1,
        nonce: [0; 16],
        cluster_addr: "127.0.0.1:1".into(),
    })
    .encode(&mut hello);
    let mut stream = std::net::TcpStream::connect(a.cluster).expect("connect to the cluster port");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(&hello).unwrap();
    let mut got = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the node neither refused nor closed: {e}"),
        }
    }
    let mut kinds = Vec::new();
    while let Some(raw) = FrameDecoder::default().decode(&mut got).expect("whole frames") {
        kinds.push(raw.kind);
    }
    assert_eq!(kinds, vec![peer_type::LINK_HELLO], "only the node's own hello, then the close");
    a.server
        .wait_for_log(&format!("speaks link version {}", fanout::codec::peer::LINK_VERSION + 1), IO_TIMEOUT)
        .expect("a clear log line");
}

#[test]
fn a_second_node_with_a_taken_id_is_refused() {
    let secret = secret_file("dup", "s");
    let a = Node::start(&secret, 1, &[], &[]);
    let b = Node::start(&secret, 2, &[a.cluster], &[]);
    a.wait_links_up(1);
    // Another process claims node id 2, already live at b.
    let impostor = Node::start(&secret, 2, &[a.cluster], &[]);
    a.server.wait_for_log("already used by another node", MESH_TIMEOUT).expect("a refuses the duplicate id");
    // b's link stays up, and b's clients still reach a's.
    let mut on_a = connect_joined(a.server.addr(), "alice", "r");
    let on_b = connect_joined(b.server.addr(), "bob", "r");
    on_b.publish("r", b"still here").unwrap();
    assert_eq!(&on_a.next_message().expect("a hears b").payload[..], b"still here");
    assert!(!a.server.log_text().contains("to node 2 is down"), "the real node 2 was dropped");
    drop(impostor);
}

#[test]
fn a_forged_cluster_address_is_refused_and_never_logged_raw() {
    use fanout::codec::peer::{LinkHello, PeerFrame, MAC_BYTES};
    use std::io::{Read, Write};

    let secret = secret_file("forged", "s");
    let a = Node::start(&secret, 1, &[], &[]);
    // An unauthenticated stranger whose "cluster address" carries a log line of its own, then a
    // LINK_AUTH with a made-up MAC (the refusal of a wrong secret used to print the address too).
    let forged = "FORGED fanout::hub::peers: node link 9 up: node 7 at 10.6.6.6:7500";
    let mut frames = bytes::BytesMut::new();
    PeerFrame::Hello(LinkHello {
        version: fanout::codec::peer::LINK_VERSION,
        node_id: 7,
        core_id: 0,
        instance: 1,
        nonce: [0; 16],
        cluster_addr: format!("127.0.0.1:1\n{forged}").into(),
    })
    .encode(&mut frames);
    PeerFrame::Auth([0; MAC_BYTES]).encode(&mut frames);
    let mut stream = std::net::TcpStream::connect(a.cluster).expect("connect to the cluster port");
    let ours = stream.local_addr().expect("our address");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(&frames).unwrap();
    // The node closes the link; read until it does.
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the node neither refused nor closed: {e}"),
        }
    }
    // The link's "closed before it was up" line comes after its refusal and whatever it printed.
    a.server.wait_for_log(" closed before it was up", IO_TIMEOUT).expect("the link goes down");
    let text = a.server.log_text();
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "a forged log line:\n{text}");
    let refusal = text.lines().find(|l| l.contains("refusing")).expect("the stranger is refused");
    assert!(refusal.contains("node link ") && refusal.contains(&format!("({ours})")), "{refusal}");
    assert!(refusal.contains("\\nFORGED"), "the address is shown escaped: {refusal}");
}
