//! The operator's endpoints on the `--metrics` listener through the real binary: `/healthz` and
//! `/readyz` (a lone server, a node with and without a reachable peer), `HEAD`, 404; `/connz`,
//! `/roomz` and `/routez` parsed as JSON and checked against exactly the traffic the test made;
//! and the metric names against the Prometheus naming rules (and `promtool check metrics` where
//! it is installed).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use fanout::codec::{ClientFrame, FrameDecoder, ServerFrame, Welcome};
use support::json::Json;
use support::{encode, hello, LineConn, Server, IO_TIMEOUT};

/// How long links may take to form (dial, handshake, redial with backoff).
const MESH_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn the_json_reader_reads_what_it_should() {
    let value = Json::parse(r#" {"a": [1, -2.5e1, true, null], "b": "x\"\\\n\u00e9", "c": {}} "#);
    assert_eq!(value.list("a"), [Json::Number(1.0), Json::Number(-25.0), Json::Bool(true), Json::Null]);
    assert_eq!(value.text("b"), "x\"\\\né");
    assert_eq!(value.get("c"), &Json::Object(BTreeMap::new()));
}

// ----- HTTP -----

fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("metrics on http://", IO_TIMEOUT).expect("the server announces its metrics address");
    let at = line.find("http://").expect("an http address") + "http://".len();
    let rest = &line[at..];
    rest[..rest.find('/').expect("a path")].parse().expect("a socket address")
}

/// A response: status code, head lines, body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

fn request(addr: SocketAddr, method: &str, target: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the whole response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {response:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head}"));
    Response { status, head: head.to_owned(), body: body.to_owned() }
}

fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target)
}

fn get_json(addr: SocketAddr, target: &str) -> Json {
    let response = get(addr, target);
    assert_eq!(response.status, 200, "GET {target}: {}\n{}", response.head, response.body);
    assert!(response.head.contains("Content-Type: application/json"), "{}", response.head);
    Json::parse(&response.body)
}

/// Polls `GET target` until `done` holds of its JSON, failing at the deadline: for what the
/// server learns on its own schedule (presence across cores and nodes, a line client's room).
fn wait_for_json(addr: SocketAddr, target: &str, what: &str, done: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let json = get_json(addr, target);
        if done(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{what}: never came; last {target}: {json:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----- a binary client that counts every byte -----

/// A binary connection that counts the bytes it sent and read, to check `/connz` exactly.
struct Counted {
    stream: TcpStream,
    input: BytesMut,
    decoder: FrameDecoder,
    sent: u64,
    read: u64,
    welcome: Welcome,
}

impl Counted {
    fn connect(addr: SocketAddr, name: &str) -> Counted {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
        let welcome = Welcome { version: 0, node_id: 0, core_id: 0, session_id: 0, max_body: 0 };
        let mut conn =
            Counted { stream, input: BytesMut::new(), decoder: FrameDecoder::default(), sent: 0, read: 0, welcome };
        conn.send(&hello(name));
        match conn.next_frame() {
            ServerFrame::Welcome(welcome) => conn.welcome = welcome,
            other => panic!("expected WELCOME, got {other:?}"),
        }
        conn
    }

    fn send(&mut self, frame: &ClientFrame) {
        let bytes = encode(frame);
        self.stream.write_all(&bytes).expect("send");
        self.sent += bytes.len() as u64;
    }

    fn next_frame(&mut self) -> ServerFrame {
        loop {
            if let Some(raw) = self.decoder.decode(&mut self.input).expect("a well-formed frame") {
                return ServerFrame::parse(raw).expect("a known frame");
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the server hung up");
            self.read += n as u64;
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    fn join(&mut self, room: &str) {
        self.send(&ClientFrame::Join { flags: 0, room: Bytes::copy_from_slice(room.as_bytes()) });
        match self.next_frame() {
            ServerFrame::Joined(joined) if joined == room.as_bytes() => {}
            other => panic!("expected JOINED {room}, got {other:?}"),
        }
    }

    fn publish(&mut self, room: &str, payload: &[u8]) {
        let (room, payload) = (Bytes::copy_from_slice(room.as_bytes()), Bytes::copy_from_slice(payload));
        self.send(&ClientFrame::Publish { room, payload });
    }

    /// A PING answered: the server handled everything sent before and wrote everything queued
    /// before its PONG, so both byte counts are settled (nothing else is in flight).
    fn settle(&mut self, nonce: u64) {
        self.send(&ClientFrame::Ping(nonce));
        loop {
            match self.next_frame() {
                ServerFrame::Pong(got) if got == nonce => break,
                ServerFrame::Message(_) => {}
                other => panic!("expected PONG {nonce}, got {other:?}"),
            }
        }
        assert!(self.input.is_empty(), "nothing after the PONG");
    }
}

// ----- health, readiness, HEAD, 404 -----

#[test]
fn a_lone_server_is_healthy_and_ready_and_answers_head_and_unknown_paths() {
    let server = Server::start(&["--threads", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let health = get(metrics, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "{}", health.head);
    let ready = get(metrics, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"), "{}", ready.head);
    for path in ["/healthz", "/readyz", "/metrics", "/connz", "/roomz", "/routez"] {
        let got = get(metrics, path);
        let head = request(metrics, "HEAD", path);
        assert_eq!(head.status, 200, "HEAD {path}: {}", head.head);
        assert_eq!(head.body, "", "HEAD {path} gets no body");
        let length = format!("Content-Length: {}\r\n", got.body.len());
        // /metrics and /connz change between the two requests (loop turns, ages): only lengths
        // of answers that do not change are compared.
        if matches!(path, "/healthz" | "/readyz" | "/roomz" | "/routez") {
            assert!(format!("{}\r\n", head.head).contains(&length), "HEAD {path}: {} vs {length}", head.head);
        }
    }
    for path in ["/varz", "/", "/metrics/", "/healthz/x"] {
        let got = get(metrics, path);
        assert_eq!(got.status, 404, "{path}: {}", got.head);
        assert_eq!(request(metrics, "HEAD", path).status, 404);
    }
    assert_eq!(request(metrics, "POST", "/healthz").status, 400);
    assert_eq!(get(metrics, "/connz?offset=-1").status, 400);
}

fn secret_file(name: &str) -> PathBuf {
    support::cluster::secret_file(name, "introspection secret")
}

/// A node of a cluster, with metrics; `threads` reactors.
fn node(secret: &std::path::Path, id: u16, threads: usize, peers: &[&str]) -> (Server, SocketAddr, String) {
    let mut extra = vec!["--metrics", "127.0.0.1:0"];
    for peer in peers {
        extra.extend(["--peer", peer]);
    }
    let args = support::cluster::node_args(threads, "127.0.0.1:0", secret, id, &[], &extra);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cluster = support::cluster::cluster_addr(&server).to_string();
    let metrics = metrics_addr(&server);
    (server, metrics, cluster)
}

#[test]
fn a_node_with_a_peer_is_ready_only_once_it_has_a_node_link() {
    let secret = secret_file("ready");
    // A port nobody listens on: bound, then released.
    let nobody = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").to_string();
    let (_seed, seed_metrics, seed_cluster) = node(&secret, 1, 1, &[]);
    let (_lonely, lonely_metrics, _) = node(&secret, 2, 1, &[&nobody]);
    let (joiner, joiner_metrics, _) = node(&secret, 3, 1, &[&seed_cluster]);

    assert_eq!(get(seed_metrics, "/readyz").status, 200, "a node without peers is ready at once");
    assert_eq!(get(lonely_metrics, "/healthz").status, 200, "up, serving its own clients");
    let lonely = get(lonely_metrics, "/readyz");
    assert_eq!((lonely.status, lonely.body.as_str()), (503, "no node link yet\n"));
    joiner.wait_for_log(" up: node 1 ", MESH_TIMEOUT).expect("node 3 links to node 1");
    let deadline = Instant::now() + IO_TIMEOUT;
    while get(joiner_metrics, "/readyz").status != 200 {
        assert!(Instant::now() < deadline, "node 3 never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----- /connz and /roomz -----

/// The one connection named `name` in a `/connz` answer.
fn conn_named<'j>(connz: &'j Json, name: &str) -> &'j Json {
    let mut found = connz.list("connections").iter().filter(|c| c.text("name") == name);
    let conn = found.next().unwrap_or_else(|| panic!("no connection named {name} in {connz:?}"));
    assert!(found.next().is_none(), "two connections named {name}");
    conn
}

#[test]
fn connz_and_roomz_show_exactly_the_clients_rooms_and_bytes() {
    let server = Server::start(&["--threads", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut alice = Counted::connect(server.addr(), "alice");
    alice.join("r1");
    alice.join("r2");
    let mut bob = Counted::connect(server.addr(), "bob");
    bob.join("r1");
    for i in 0..3u8 {
        alice.publish("r1", &[b'x', i]);
    }
    for _ in 0..3 {
        assert!(matches!(bob.next_frame(), ServerFrame::Message(_)), "bob gets alice's messages");
    }
    alice.settle(1);
    bob.settle(2);
    // A person with nc: line mode, renamed, in the default room.
    let mut carol = LineConn::connect(server.addr());
    carol.send(b"/nick carol\n");
    let connz = wait_for_json(metrics, "/connz", "carol in lobby", |connz| {
        connz.list("connections").iter().any(|c| c.text("name") == "carol" && c.texts("rooms") == ["lobby"])
    });

    assert_eq!((connz.int("total"), connz.int("offset"), connz.int("limit")), (3, 0, 256), "{connz:?}");
    let sessions: Vec<u64> =
        connz.list("connections").iter().map(|c| c.text("session_id").parse().expect("a session id")).collect();
    assert!(sessions.windows(2).all(|w| w[0] < w[1]), "in session id order: {sessions:?}");
    for (client, name, rooms) in [(&alice, "alice", &["r1", "r2"][..]), (&bob, "bob", &["r1"][..])] {
        let conn = conn_named(&connz, name);
        assert_eq!(conn.text("session_id"), client.welcome.session_id.to_string());
        assert_eq!(conn.int("core"), u64::from(client.welcome.core_id));
        assert_eq!(conn.text("remote"), client.stream.local_addr().expect("local address").to_string());
        assert_eq!(conn.text("mode"), "binary");
        let mut joined = conn.texts("rooms");
        joined.sort();
        assert_eq!(joined, rooms, "{name}'s rooms");
        assert_eq!(conn.int("bytes_in"), client.sent, "{name}: every byte it sent");
        assert_eq!(conn.int("bytes_out"), client.read, "{name}: every byte it read");
        assert_eq!(conn.int("pending_bytes"), 0);
        assert!(conn.int("idle_seconds") <= conn.int("age_seconds") && conn.int("age_seconds") < 60, "{conn:?}");
        assert_eq!(conn.get("closing"), &Json::Bool(false));
    }
    let carol_conn = conn_named(&connz, "carol");
    assert_eq!(carol_conn.text("mode"), "line");
    assert!(carol_conn.int("bytes_in") >= "/nick carol\n".len() as u64);

    // Pages.
    let first = get_json(metrics, "/connz?limit=1");
    assert_eq!((first.int("total"), first.int("limit"), first.list("connections").len()), (3, 1, 1));
    assert_eq!(first.list("connections")[0].text("session_id"), sessions[0].to_string());
    let second = get_json(metrics, "/connz?offset=1&limit=1");
    assert_eq!(second.list("connections")[0].text("session_id"), sessions[1].to_string());
    let past = get_json(metrics, "/connz?offset=3");
    assert_eq!((past.int("total"), past.list("connections").len()), (3, 0));
    assert_eq!(get_json(metrics, "/connz?limit=100000").int("limit"), 1024, "limit is cut to its maximum");

    // Rooms: each once, local members over both cores, the sibling that wants each room.
    let core_of: HashMap<String, u64> =
        connz.list("connections").iter().map(|c| (c.text("name").to_owned(), c.int("core"))).collect();
    let members: [(&str, &[&str]); 3] = [("lobby", &["carol"]), ("r1", &["alice", "bob"]), ("r2", &["alice"])];
    let roomz = wait_for_json(metrics, "/roomz", "presence of every member", |roomz| {
        roomz.list("rooms").len() == 3
            && roomz
                .list("rooms")
                .iter()
                .zip(members)
                .all(|(room, (_, names))| room.int("cluster_members") == names.len() as u64)
    });
    assert_eq!((roomz.int("total"), roomz.int("offset")), (3, 0));
    for (room, (name, names)) in roomz.list("rooms").iter().zip(members) {
        assert_eq!(room.text("name"), name);
        assert_eq!(room.int("local_members"), names.len() as u64, "{room:?}");
        // Core 0 serves the endpoint: a room is wanted by core 1 when core 1 has a member in it.
        let wanted: BTreeSet<String> =
            names.iter().map(|n| core_of[*n]).filter(|core| *core != 0).map(|core| format!("core {core}")).collect();
        assert_eq!(room.texts("interested_peers"), wanted.into_iter().collect::<Vec<_>>(), "{room:?}");
    }
    let page = get_json(metrics, "/roomz?offset=1&limit=1");
    assert_eq!((page.int("total"), page.list("rooms").len()), (3, 1));
    assert_eq!(page.list("rooms")[0].text("name"), "r1");

    // The same numbers in the metrics: once per server, whichever cores hold them.
    let text = get(metrics, "/metrics").body;
    assert_eq!(series(&text, "fanout_rooms"), 3.0, "each room once, not once per core");
    assert_eq!(series(&text, "fanout_connections"), 3.0);
    let per_core =
        series(&text, "fanout_core_connections{core=\"0\"}") + series(&text, "fanout_core_connections{core=\"1\"}");
    assert_eq!(per_core, 3.0);
    let routez = get_json(metrics, "/routez");
    assert_eq!((routez.int("node_id"), routez.list("routes").len()), (0, 0), "a lone server has no node links");
}

// ----- /routez and /roomz across two nodes -----

#[test]
fn routez_and_roomz_show_the_node_link_and_the_rooms_across_it() {
    let secret = secret_file("routez");
    let (one, one_metrics, one_cluster) = node(&secret, 1, 1, &[]);
    let (two, two_metrics, two_cluster) = node(&secret, 2, 2, &[&one_cluster]);
    one.wait_for_log(" up: node 2 ", MESH_TIMEOUT).expect("node 1 links to node 2");
    two.wait_for_log(" up: node 1 ", MESH_TIMEOUT).expect("node 2 links to node 1");
    let mut x = Counted::connect(one.addr(), "x");
    x.join("shared");
    let mut y = Counted::connect(two.addr(), "y");
    y.join("shared");
    let mut z = Counted::connect(two.addr(), "z");
    z.join("far");
    y.publish("shared", b"across");
    assert!(matches!(x.next_frame(), ServerFrame::Message(_)), "x gets y's message over the link");

    let routez = get_json(one_metrics, "/routez");
    assert_eq!(routez.int("node_id"), 1);
    let routes = routez.list("routes");
    assert_eq!(routes.len(), 1, "{routez:?}");
    let route = &routes[0];
    assert_eq!((route.int("node_id"), route.text("state"), route.text("direction")), (2, "up", "in"));
    assert_eq!(route.text("cluster_addr"), two_cluster);
    assert!(route.text("remote").starts_with("127.0.0.1:"), "{route:?}");
    assert_eq!((route.int("queued_bytes"), route.num("oldest_queued_seconds")), (0, 0.0), "nothing waits: {route:?}");
    assert!(route.num("last_received_seconds") < 3.0 && route.num("age_seconds") < 60.0, "{route:?}");
    assert_eq!(route.int("rooms"), 2, "node 2 wants shared and far");
    let back = get_json(two_metrics, "/routez");
    let back = &back.list("routes")[0];
    assert_eq!(
        (back.int("node_id"), back.text("direction"), back.text("cluster_addr")),
        (1, "out", one_cluster.as_str())
    );

    let roomz = wait_for_json(one_metrics, "/roomz", "presence from node 2", |roomz| {
        roomz.list("rooms").iter().map(|r| r.int("cluster_members")).collect::<Vec<_>>() == [1, 2]
    });
    let rooms = roomz.list("rooms");
    let names: Vec<&str> = rooms.iter().map(|r| r.text("name")).collect();
    assert_eq!(names, ["far", "shared"], "rooms node 1 knows of, its own or not");
    assert_eq!((rooms[0].int("local_members"), rooms[1].int("local_members")), (0, 1));
    for room in rooms {
        assert_eq!(room.texts("interested_peers"), ["node 2"], "{room:?}");
    }
    let text = get(one_metrics, "/metrics").body;
    check_naming_rules(&text);
    assert_eq!(series(&text, "fanout_rooms"), 1.0, "only shared has a member on node 1");
    assert_eq!(series(&text, "fanout_node_links_up"), 1.0);
    assert!(series(&text, "fanout_node_link_last_received_seconds{node=\"2\"}") < 3.0);
    x.settle(1);
    y.settle(2);
    z.settle(3);
}

// ----- the naming rules -----

/// The value of the one sample `series` (name and labels exactly) in a scrape.
fn series(text: &str, series: &str) -> f64 {
    let mut found = text.lines().filter(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    let line = found.next().unwrap_or_else(|| panic!("no series {series} in:\n{text}"));
    assert!(found.next().is_none(), "{series} twice");
    line[series.len() + 1..].parse().expect("a number")
}

/// One sample: name, labels, value.
fn sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
    let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_owned(), BTreeMap::new(), value);
    };
    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
    let mut parsed = BTreeMap::new();
    for pair in labels.split(',') {
        let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("a label without = in {line:?}"));
        let text = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'));
        let text = text.unwrap_or_else(|| panic!("an unquoted label value in {line:?}"));
        assert!(is_name(key) && !key.starts_with("__"), "label name {key:?} in {line:?}");
        assert!(parsed.insert(key.to_owned(), text.to_owned()).is_none(), "label {key} twice in {line:?}");
    }
    (name.to_owned(), parsed, value)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Families that mean one thing per server: no `core` label.
const PER_SERVER: [&str; 12] = [
    "fanout_build_info",
    "fanout_start_time_seconds",
    "fanout_connections",
    "fanout_rooms",
    "fanout_node_links_up",
    "fanout_node_links_refused_total",
    "fanout_node_links_too_slow_total",
    "fanout_node_link_last_received_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
];

/// Checks a scrape against the Prometheus naming guide and text format; returns family → type.
fn check_naming_rules(text: &str) -> BTreeMap<String, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut seen_series = BTreeSet::new();
    let mut finished_families = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty() && helps.insert(name.to_owned()), "one non-empty HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helps.contains(name), "HELP before TYPE for {name}");
            assert!(matches!(kind, "counter" | "gauge"), "{name} is a {kind}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} has two TYPE lines");
            if let Some(previous) = current.replace(name.to_owned()) {
                finished_families.insert(previous);
            }
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "an unexpected line {line:?}");
        let (name, labels, value) = sample(line);
        assert_eq!(current.as_deref(), Some(name.as_str()), "{name}'s samples follow its TYPE, together");
        assert!(!finished_families.contains(&name), "{name} split in two groups");
        assert!(is_name(&name), "metric name {name:?}");
        assert!(value.is_finite() && value >= 0.0, "{line}");
        assert!(seen_series.insert((name.clone(), labels.clone())), "a duplicate series: {line}");
        assert_eq!(labels.contains_key("core"), !PER_SERVER.contains(&name.as_str()), "the core label on {line}");
    }
    for (name, kind) in &types {
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}: counters, and only they, end in _total"
        );
        let words: Vec<&str> = name.trim_end_matches("_total").split('_').collect();
        for unit in ["bytes", "seconds"] {
            if let Some(at) = words.iter().position(|w| *w == unit) {
                assert_eq!(at, words.len() - 1, "{name}: the unit {unit} comes last (before _total)");
            }
        }
        for not_base in ["ms", "millis", "milliseconds", "us", "ns", "kb", "kib", "mb", "mib", "minutes", "hours"] {
            assert!(!words.contains(&not_base), "{name}: base units only");
        }
        assert!(!words.contains(&"in") && !words.contains(&"out"), "{name}: received/sent, not in/out");
    }
    types
}

#[test]
fn metric_names_follow_the_prometheus_rules_and_promtool_agrees() {
    let server = Server::start(&["--threads", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut a = Counted::connect(server.addr(), "a");
    a.join("room");
    a.publish("room", b"hello");
    a.settle(1);
    let response = get(metrics, "/metrics");
    assert!(response.head.contains("Content-Type: text/plain; version=0.0.4"), "{}", response.head);
    let text = response.body;
    let types = check_naming_rules(&text);

    // The renames, and the per-server numbers.
    for old in
        ["fanout_bytes_in_total", "fanout_bytes_out_total", "fanout_messages_in_total", "fanout_messages_out_total"]
    {
        assert!(!types.contains_key(old), "{old} was renamed");
    }
    for new in ["fanout_received_bytes_total", "fanout_sent_bytes_total", "fanout_messages_received_total"] {
        assert_eq!(types.get(new).map(String::as_str), Some("counter"), "{new}");
    }
    let build = format!("fanout_build_info{{version=\"{}\",commit=\"", env!("CARGO_PKG_VERSION"));
    let line = text.lines().find(|l| l.starts_with(&build)).unwrap_or_else(|| panic!("no {build} in\n{text}"));
    let commit = &line[build.len()..line.find("\"}").expect("the commit's end")];
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "commit {commit:?}");
    assert!(line.ends_with("\"} 1"), "{line}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let started = series(&text, "fanout_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 600.0, "started at {started}, now {now}");
    if cfg!(target_os = "linux") {
        let rss_bytes = series(&text, "process_resident_memory_bytes");
        assert!(rss_bytes > 1024.0 * 1024.0, "{rss_bytes} bytes resident");
        let (open, max) = (series(&text, "process_open_fds"), series(&text, "process_max_fds"));
        // Listeners, pollers, wakers, the client, the scrape itself.
        assert!(open >= 5.0 && open < max, "{open} of {max} descriptors");
        assert!(series(&text, "process_cpu_seconds_total") >= 0.0);
    }
    promtool_check(&text);
}

/// `promtool check metrics` on the scrape, where promtool is installed; skipped otherwise.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("promtool is not installed: skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("run promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let output = child.wait_with_output().expect("promtool's verdict");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}
