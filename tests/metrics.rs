//! The `--metrics` endpoint over real HTTP: counters match the traffic sent, exactly, per-server
//! numbers are reported once, and bad requests get 400.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{connect_joined, RawConn, Server};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("metrics on http://", IO_TIMEOUT).expect("the server announces its metrics address");
    let at = line.find("http://").expect("an http address") + "http://".len();
    let rest = &line[at..];
    rest[..rest.find('/').expect("a path")].parse().expect("a socket address")
}

/// Sends `request` as is and returns the whole response.
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response to the end");
    String::from_utf8(response).expect("a text response")
}

fn value(body: &str, series: &str) -> u64 {
    let line = body.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    let line = line.unwrap_or_else(|| panic!("no series {series} in:\n{body}"));
    line[series.len() + 1..].parse().expect("an integer value")
}

#[test]
fn counters_match_the_traffic_and_bad_requests_get_400() {
    let server = Server::start(&["--threads", "1", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut a = connect_joined(server.addr(), "a", "r");
    let mut b = connect_joined(server.addr(), "b", "r");
    let mut c = connect_joined(server.addr(), "c", "r");
    for i in 0..5u8 {
        a.publish("r", &[i; 10]).unwrap();
    }
    for receiver in [&mut b, &mut c] {
        for i in 0..5u8 {
            assert_eq!(receiver.next_message().expect("a message").payload[..], [i; 10]);
        }
    }
    // One request error and one fatal error.
    a.publish("not-joined", b"x").unwrap();
    match a.next_event().expect("an error") {
        fanout::client::Event::Error { code, .. } => assert_eq!(code, 258),
        other => panic!("expected NOT_A_MEMBER, got {other:?}"),
    }
    let mut bad = RawConn::connect(server.addr());
    bad.send(&[0, 0, 0, 0, 0x3f]);
    bad.expect_fatal(3);
    a.round_trip(9).expect("a is still connected");

    let response = http(metrics, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
    assert_eq!(value(body, "fanout_messages_received_total{core=\"0\"}"), 5);
    assert_eq!(value(body, "fanout_messages_delivered_total{core=\"0\"}"), 10);
    assert_eq!(value(body, "fanout_connections_opened_total{core=\"0\"}"), 4);
    assert_eq!(value(body, "fanout_rooms"), 1);
    assert_eq!(value(body, "fanout_errors_total{core=\"0\",code=\"NOT_A_MEMBER\"}"), 1);
    assert_eq!(value(body, "fanout_errors_total{core=\"0\",code=\"UNKNOWN_FRAME_TYPE\"}"), 1);
    assert_eq!(value(body, "fanout_errors_total{core=\"0\",code=\"SLOW_CONSUMER\"}"), 0);
    assert_eq!(value(body, "fanout_slow_consumers_total{core=\"0\"}"), 0);
    assert_eq!(value(body, "fanout_core_links_up{core=\"0\"}"), 0);
    assert_eq!(value(body, "fanout_node_links_up"), 0);
    // a, b, c and the bad one, which lingers until it hangs up: once per server and per core.
    assert_eq!(value(body, "fanout_connections"), 4);
    assert_eq!(value(body, "fanout_core_connections{core=\"0\"}"), 4);
    assert!(value(body, "fanout_loop_turns_total{core=\"0\"}") > 0);
    assert!(value(body, "fanout_sent_bytes_total{core=\"0\"}") > 10 * 10);

    for garbage in [&b"garbage\r\n\r\n"[..], b"POST /metrics HTTP/1.1\r\n\r\n", b"GET /metrics SPDY/9\r\n\r\n"] {
        let response = http(metrics, garbage);
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbage:?} got {response}");
    }
    let oversize = [b'a'; 9000];
    assert!(http(metrics, &oversize).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert!(http(metrics, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found\r\n"));
}

/// Where a clustered node accepts node links, from its log.
fn cluster_addr(server: &Server) -> SocketAddr {
    let needle = "accepting node links on ";
    let line = server.wait_for_log(needle, IO_TIMEOUT).expect("the node announces its cluster address");
    line[line.find(needle).expect("the needle") + needle.len()..].trim().parse().expect("a cluster address")
}

fn scrape(metrics: SocketAddr) -> String {
    let response = http(metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response[response.find("\r\n\r\n").expect("a head") + 4..].to_string()
}

#[test]
fn half_open_connections_to_the_cluster_port_are_not_links_up() {
    const STRANGERS: usize = 200;
    let dir = std::env::temp_dir().join(format!("fanout-metrics-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, "metrics secret").expect("write the secret");
    let secret = secret.display().to_string();
    let cluster = ["--threads", "2", "--cluster-listen", "127.0.0.1:0", "--cluster-secret-file", &secret];
    let one = Server::start(&[&cluster[..], &["--node-id", "1", "--metrics", "127.0.0.1:0"]].concat());
    let one_cluster = cluster_addr(&one).to_string();
    let two = Server::start(&[&cluster[..], &["--node-id", "2", "--peer", &one_cluster]].concat());
    one.wait_for_log(" up: node 2 ", IO_TIMEOUT).expect("node 1 links to node 2");
    two.wait_for_log(" up: node 1 ", IO_TIMEOUT).expect("node 2 links to node 1");

    // Connections that never send a byte: links in their handshake until its 5 s timeout (as many
    // as the node takes; it closes the rest at accept).
    let accepts = |server: &Server| server.log_text().lines().filter(|l| l.contains("node connection from")).count();
    let before = accepts(&one);
    let strangers: Vec<TcpStream> = (0..STRANGERS)
        .map(|_| TcpStream::connect(one_cluster.as_str()).expect("connect to the cluster port"))
        .collect();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while accepts(&one) < before + STRANGERS {
        assert!(std::time::Instant::now() < deadline, "node 1 did not accept {STRANGERS} connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = scrape(metrics_addr(&one));
    assert_eq!(value(&body, "fanout_node_links_up"), 1, "only the real link, once per server:\n{body}");
    assert_eq!(value(&body, "fanout_core_links_up{core=\"0\"}"), 1, "core 0 to core 1");
    assert_eq!(value(&body, "fanout_core_links_up{core=\"1\"}"), 1, "core 1 to core 0");
    let series = "fanout_node_link_last_received_seconds{node=\"2\"}";
    let line = body.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in:\n{body}"));
    let age: f64 = line[series.len() + 1..].parse().expect("seconds");
    // Keepalive pings a link silent for 0.5 s, so a live link hears something well within 3 s.
    assert!((0.0..3.0).contains(&age), "node 2 last heard {age} s ago");
    assert_eq!(body.matches("fanout_node_link_last_received_seconds{").count(), 1, "one series per node link:\n{body}");
    drop(strangers);
}
