//! TLS over loopback, with certificates generated in the test: TLS and plain clients in one room,
//! line mode over TLS, clients that do not trust the server (or that the server does not trust)
//! refused, a certificate renewed by SIGHUP without dropping anyone, a handshake that stalls cut
//! at the handshake timeout, garbage on the TLS port closed without harm to others; and node
//! links over TLS: a three-node cluster delivering exactly once in order, a node with a
//! certificate from another CA (or no TLS at all) refused and told nothing.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::client::{Client, ClientError};
use fanout::tls::{BlockingTls, ClientTls};
use support::certs::{text, tls_options, CertDir, TestCa};
use support::cluster::{
    assert_intruder_receives_nothing, cluster_addr, connect_clients, exchange, secret_file, Node, MESH_TIMEOUT,
};
use support::{connect_joined, connect_with, Server, IO_TIMEOUT};

/// What the server logs before the TLS listener's address.
const TLS_LISTENING: &str = "TLS clients connect to ";

/// A server with a plain listener and a TLS one presenting a certificate for 127.0.0.1 issued by
/// `ca` (written into `dir`), with `extra` flags; returns it and the TLS address.
fn tls_server(dir: &CertDir, ca: &TestCa, extra: &[&str]) -> (Server, SocketAddr) {
    let (cert, key) = dir.identity("server", &ca.issue(&["127.0.0.1"]));
    let mut args = vec!["--tls-listen", "127.0.0.1:0", "--tls-cert", text(&cert), "--tls-key", text(&key)];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let tls_addr = tls_addr(&server);
    (server, tls_addr)
}

fn tls_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log(TLS_LISTENING, IO_TIMEOUT).expect("the server names its TLS address");
    let at = line.find(TLS_LISTENING).expect("the prefix") + TLS_LISTENING.len();
    line[at..].trim().parse().expect("a TLS address")
}

/// Reads what the server sends until it closes the connection (EOF or reset), within the IO
/// timeout; returns the bytes.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..1024 {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e} (got {got:?})"),
        }
    }
    panic!("the server kept sending");
}

/// The first records of a TLS client's handshake (its ClientHello), trusting `ca`.
fn client_hello(ca: &TestCa, server: SocketAddr) -> Vec<u8> {
    let mut layer = ClientTls::new(ca.roots(), None).unwrap().layer_for(server).unwrap();
    let mut hello = Vec::new();
    layer.write_records(&mut hello).unwrap();
    hello
}

#[test]
fn a_tls_client_and_a_plain_client_chat_in_one_room() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &[]);
    let mut secure = connect_with(tls_at, "alice", &tls_options(&ca, None));
    secure.join("r").unwrap();
    let mut plain = connect_joined(server.addr(), "bob", "r");
    secure.publish("r", b"over TLS").unwrap();
    plain.publish("r", b"in the clear").unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    secure.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let to_plain = plain.next_message().unwrap();
    assert_eq!((&to_plain.name[..], &to_plain.payload[..]), (&b"alice"[..], &b"over TLS"[..]));
    let to_secure = secure.next_message().unwrap();
    assert_eq!((&to_secure.name[..], &to_secure.payload[..]), (&b"bob"[..], &b"in the clear"[..]));
    // Big messages cross TLS records whole and in order.
    let big: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 60_000]).collect();
    for payload in &big {
        plain.publish("r", payload).unwrap();
    }
    for payload in &big {
        assert_eq!(&secure.next_message().unwrap().payload[..], &payload[..]);
    }
}

#[test]
fn a_person_with_a_tls_terminal_gets_line_mode() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &[]);
    let mut listener = connect_joined(server.addr(), "bob", "lobby");
    // What `openssl s_client` does: a handshake, then silence until the person types.
    let socket = TcpStream::connect(tls_at).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let layer = ClientTls::new(ca.roots(), None).unwrap().layer_for(tls_at).unwrap();
    let mut input = BytesMut::new();
    let terminal = BlockingTls::handshake(socket, layer, Some(IO_TIMEOUT), &mut input).unwrap();
    for _ in 0..64 {
        if input.contains(&b'\n') {
            break;
        }
        assert!(terminal.read_into(&mut input).unwrap() > 0, "closed before the greeting");
    }
    let greeting = String::from_utf8(input.to_vec()).unwrap();
    assert!(
        greeting.starts_with("* welcome guest")
            && greeting.ends_with(": you are in lobby with 1 other; type to chat, /help for commands\n"),
        "{greeting:?}"
    );
    terminal.write_all(b"typed over TLS\n").unwrap();
    listener.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(&listener.next_message().unwrap().payload[..], b"typed over TLS");
}

#[test]
fn a_client_that_does_not_trust_the_servers_ca_is_refused() {
    let (dir, ca) = (CertDir::new(), TestCa::new("the server's CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &[]);
    let stranger = TestCa::new("another CA");
    match Client::connect_with(tls_at, "alice", &tls_options(&stranger, None)) {
        Err(ClientError::Io(e)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidData);
            assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        }
        Err(e) => panic!("expected a TLS verification error, got {e}"),
        Ok(_) => panic!("a client that does not trust the CA connected"),
    }
    // The server is unharmed.
    connect_with(tls_at, "bob", &tls_options(&ca, None)).round_trip(1).unwrap();
    connect_joined(server.addr(), "carol", "r").round_trip(2).unwrap();
}

#[test]
fn with_a_client_ca_only_clients_it_certified_are_served() {
    let (dir, ca, clients_ca) = (CertDir::new(), TestCa::new("server CA"), TestCa::new("clients' CA"));
    let clients_ca_file = dir.ca("clients-ca", &clients_ca);
    let (_server, tls_at) = tls_server(&dir, &ca, &["--tls-client-ca", text(&clients_ca_file)]);
    let certified = clients_ca.issue(&["alice"]);
    connect_with(tls_at, "alice", &tls_options(&ca, Some(&certified))).round_trip(1).unwrap();
    let uncertified = TestCa::new("another CA").issue(&["mallory"]);
    for identity in [None, Some(&uncertified)] {
        let refused = Client::connect_with(tls_at, "mallory", &tls_options(&ca, identity));
        assert!(
            refused.is_err(),
            "served a client with {} certificate",
            if identity.is_some() { "a foreign" } else { "no" }
        );
    }
}

#[test]
fn a_certificate_replaced_on_disk_is_used_after_sighup_without_dropping_connections() {
    let (dir, old_ca, new_ca) = (CertDir::new(), TestCa::new("old CA"), TestCa::new("new CA"));
    let (server, tls_at) = tls_server(&dir, &old_ca, &[]);
    let mut before = connect_with(tls_at, "before", &tls_options(&old_ca, None));
    before.join("r").unwrap();
    // A bad renewal first: refused, and the certificate in force stays.
    dir.write("server.key", "not a key");
    server.signal("HUP");
    server.wait_for_log("reload failed, nothing changed (the TLS certificate in force stays)", IO_TIMEOUT).unwrap();
    connect_with(tls_at, "still-old", &tls_options(&old_ca, None)).round_trip(1).unwrap();
    // The real renewal.
    dir.identity("server", &new_ca.issue(&["127.0.0.1"]));
    server.signal("HUP");
    server.wait_for_log("reload: client TLS certificate", IO_TIMEOUT).expect("the reload takes the new certificate");
    let mut after = connect_with(tls_at, "after", &tls_options(&new_ca, None));
    after.join("r").unwrap();
    assert!(Client::connect_with(tls_at, "late", &tls_options(&old_ca, None)).is_err(), "the old certificate");
    // The connection from before the reload is still up and chats with the new one.
    after.publish("r", b"renewed").unwrap();
    before.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let m = before.next_message().unwrap();
    assert_eq!((&m.name[..], &m.payload[..]), (&b"after"[..], &b"renewed"[..]));
}

#[test]
fn a_client_that_stalls_mid_handshake_is_cut_at_the_handshake_timeout() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let handshake = Duration::from_millis(500);
    let (_server, tls_at) = tls_server(&dir, &ca, &["--handshake-timeout-ms", "500"]);
    let hello = client_hello(&ca, tls_at);
    let mut stalled = TcpStream::connect(tls_at).unwrap();
    let started = Instant::now();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let got = read_until_closed(&mut stalled);
    assert!(started.elapsed() >= handshake, "cut after {:?}, before the handshake timeout", started.elapsed());
    // Nothing of the connection's plaintext (its TIMEOUT error) crossed: at most a TLS alert.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
    // A client that finishes its handshake and says HELLO in time is served.
    connect_with(tls_at, "prompt", &tls_options(&ca, None)).round_trip(1).unwrap();
}

#[test]
fn garbage_and_plain_protocol_on_the_tls_port_are_closed_without_harm_to_others() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &[]);
    let mut bystander = connect_with(tls_at, "bystander", &tls_options(&ca, None));
    bystander.join("r").unwrap();
    let plain_bystander = connect_joined(server.addr(), "plain", "r");
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &support::encode(&support::hello("eve")),
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0],
        &[0xff; 4096],
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(tls_at).unwrap();
        stream.write_all(bytes).unwrap();
        let got = read_until_closed(&mut stream);
        assert!(got.is_empty() || got[0] == 0x15, "only a TLS alert may come back: {got:?}");
    }
    assert!(server.wait_for_log("not TLS on the TLS port", IO_TIMEOUT).is_some());
    plain_bystander.publish("r", b"still here").unwrap();
    bystander.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(&bystander.next_message().unwrap().payload[..], b"still here");
    connect_with(tls_at, "newcomer", &tls_options(&ca, None)).round_trip(1).unwrap();
}

// ----- node links -----

/// Node-link TLS flags for a node certified by `issuer` for 127.0.0.1, trusting `cluster_ca`.
fn cluster_tls_args(dir: &CertDir, name: &str, issuer: &TestCa, cluster_ca: &Path) -> Vec<String> {
    let (cert, key) = dir.identity(name, &issuer.issue(&["127.0.0.1"]));
    ["--cluster-tls-cert", text(&cert), "--cluster-tls-key", text(&key), "--cluster-tls-ca", text(cluster_ca)]
        .map(String::from)
        .to_vec()
}

/// A two-core node with node-link TLS and no shared secret (the certificates alone prove
/// membership), dialing `peers`.
fn tls_node(tls_args: &[String], node_id: u16, peers: &[SocketAddr]) -> Node {
    let mut args: Vec<String> =
        ["--threads", "2", "--cluster-listen", "127.0.0.1:0", "--node-id"].map(String::from).to_vec();
    args.push(node_id.to_string());
    for peer in peers {
        args.extend(["--peer".to_string(), peer.to_string()]);
    }
    args.extend_from_slice(tls_args);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cluster = cluster_addr(&server);
    Node { server, cluster }
}

#[test]
fn three_tls_nodes_mesh_and_deliver_exactly_once_in_order() {
    let (dir, ca) = (CertDir::new(), TestCa::new("cluster CA"));
    let ca_file = dir.ca("cluster-ca", &ca);
    let a = tls_node(&cluster_tls_args(&dir, "a", &ca, &ca_file), 1, &[]);
    let b = tls_node(&cluster_tls_args(&dir, "b", &ca, &ca_file), 2, &[a.cluster]);
    // c knows only b, and must learn a from gossip.
    let c = tls_node(&cluster_tls_args(&dir, "c", &ca, &ca_file), 3, &[b.cluster]);
    for node in [&a, &b, &c] {
        node.wait_links_up(2);
    }
    let mut clients = connect_clients(&[&a, &b, &c], 3, "r");
    exchange(&mut clients, "r", 200);
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_and_receives_nothing() {
    let (dir, ca, rogue_ca) = (CertDir::new(), TestCa::new("cluster CA"), TestCa::new("rogue CA"));
    let ca_file = dir.ca("cluster-ca", &ca);
    // Both hold the secret too: the certificate alone keeps the intruder out.
    let secret = secret_file("tls-intruder", "the real secret");
    let with_secret = |mut args: Vec<String>| {
        args.extend(["--cluster-secret-file".to_string(), secret.display().to_string()]);
        args
    };
    let a = tls_node(&with_secret(cluster_tls_args(&dir, "a", &ca, &ca_file)), 1, &[]);
    let intruder = tls_node(&with_secret(cluster_tls_args(&dir, "intruder", &rogue_ca, &ca_file)), 9, &[a.cluster]);
    a.server.wait_for_log("cluster: refusing the node link with", MESH_TIMEOUT).expect("a refuses the intruder");
    assert_intruder_receives_nothing(&a, &intruder, 9);
}

#[test]
fn tls_and_plain_nodes_refuse_each_others_links_and_say_why() {
    let (dir, ca) = (CertDir::new(), TestCa::new("cluster CA"));
    let ca_file = dir.ca("cluster-ca", &ca);
    let secret = secret_file("plain-node", "a secret");
    // A TLS node dials a plain one: the plain one says what it got.
    let plain = Node::start(&secret, 2, &[], &[]);
    let a = tls_node(&cluster_tls_args(&dir, "a", &ca, &ca_file), 1, &[plain.cluster]);
    let line = plain.server.wait_for_log("speaks TLS", MESH_TIMEOUT).expect("the plain node says why");
    assert!(line.contains("--cluster-tls-cert"), "{line}");
    // A plain node dials the TLS one: the TLS one says why it refuses.
    let _other = Node::start(&secret, 3, &[a.cluster], &[]);
    let line = a.server.wait_for_log("refusing a plain node link", MESH_TIMEOUT).expect("the TLS node says why");
    assert!(line.contains("--cluster-tls-cert"), "{line}");
    let log = a.server.log_text();
    assert!(!log.contains("up: node 2") && !log.contains("up: node 3"), "a let a plain node up:\n{log}");
}

#[test]
fn fanout_chat_sends_over_tls_and_refuses_a_server_it_does_not_trust() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let ca_file = dir.ca("ca", &ca);
    let other_ca_file = dir.ca("other-ca", &TestCa::new("another CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &[]);
    let mut listener = connect_joined(server.addr(), "bob", "lobby");
    let chat = |ca: &Path| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["chat", &tls_at.to_string(), "--tls-ca", text(ca), "--name", "carol", "--send-only"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn fanout chat");
        child.stdin.take().expect("stdin").write_all(b"hi over TLS\n").unwrap();
        let output = child.wait_with_output().expect("chat exits");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, stderr) = chat(&ca_file);
    assert!(ok, "{stderr}");
    listener.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let m = listener.next_message().unwrap();
    assert_eq!((&m.name[..], &m.payload[..]), (&b"carol"[..], &b"hi over TLS"[..]));
    let (ok, stderr) = chat(&other_ca_file);
    assert!(!ok && stderr.contains("UnknownIssuer"), "{stderr}");
}

#[test]
fn fanout_bench_runs_over_tls_and_counts_exactly() {
    use support::json::{Json, Parser};
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let ca_file = dir.ca("ca", &ca);
    let (_server, tls_at) = tls_server(&dir, &ca, &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--addr", &tls_at.to_string(), "--tls-ca", text(&ca_file), "--subscribers", "6"])
        .args(["--publishers", "2", "--rooms", "2", "--size", "200", "--duration", "1", "--warmup", "0.2", "--json"])
        .output()
        .expect("run fanout bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().last().expect("some output");
    let Ok(Json::Object(report)) = Parser::parse(last) else { panic!("the last line is not a JSON object: {last}") };
    let count = |key: &str| match report.get(key) {
        Some(Json::Number(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as u64,
        other => panic!("{key} should be a count, is {other:?}"),
    };
    assert!(count("published") > 0, "nothing was published");
    // 2 rooms of 3 subscribers; publisher p publishes to room p % 2.
    assert_eq!(count("expected"), count("published") * 3);
    assert_eq!(count("delivered"), count("expected"));
    assert_eq!((count("lost"), count("duplicated"), count("reordered")), (0, 0, 0));
}

#[test]
fn bad_tls_files_stop_the_server_with_exit_1_and_the_flag_named() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let (cert, key) = dir.identity("server", &ca.issue(&["127.0.0.1"]));
    let (_, other_key) = dir.identity("other", &ca.issue(&["127.0.0.2"]));
    let not_pem = dir.write("notes.txt", "not a certificate\n");
    let missing = dir.write("gone.pem", "");
    std::fs::remove_file(&missing).unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-listen", "127.0.0.1:0", "--tls-cert", text(&missing), "--tls-key", text(&key)], "--tls-cert"),
        (
            &["--tls-listen", "127.0.0.1:0", "--tls-cert", text(&not_pem), "--tls-key", text(&key)],
            "holds no PEM certificate",
        ),
        (
            &["--tls-listen", "127.0.0.1:0", "--tls-cert", text(&cert), "--tls-key", text(&other_key)],
            "is not the key of the certificate in --tls-cert",
        ),
        (&["--tls-listen", "127.0.0.1:0", "--tls-cert", text(&cert)], "--tls-listen needs --tls-cert and --tls-key"),
        (
            &[
                "--cluster-listen",
                "127.0.0.1:0",
                "--node-id",
                "1",
                "--cluster-tls-cert",
                text(&cert),
                "--cluster-tls-key",
                text(&key),
            ],
            "go together",
        ),
    ];
    for (flags, needle) in cases {
        let args: Vec<&str> = ["serve", "--check-config"].iter().chain(flags).copied().collect();
        let (status, stderr) = support::run_to_exit(&args, IO_TIMEOUT);
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}

#[test]
fn with_tls_only_there_is_no_plain_port() {
    let (dir, ca) = (CertDir::new(), TestCa::new("fanout test CA"));
    let (server, tls_at) = tls_server(&dir, &ca, &["--tls-only"]);
    assert_eq!(server.addr(), tls_at, "`listening on` names the TLS port");
    assert!(!server.log_text().contains("client listener (--listen)"), "{}", server.log_text());
    connect_with(tls_at, "alice", &tls_options(&ca, None)).round_trip(1).unwrap();
    // Plain bytes on the one port are not served.
    let mut plain = TcpStream::connect(tls_at).unwrap();
    plain.write_all(&support::encode(&support::hello("eve"))).unwrap();
    let got = read_until_closed(&mut plain);
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
}
