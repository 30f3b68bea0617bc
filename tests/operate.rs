//! Running fanout as an operator does: SIGHUP reloads tokens and the log level without
//! dropping a connection, and a bad file changes nothing; `--config` files with flags over them;
//! a host-name `--peer`; text and JSON log lines with RFC 3339 timestamps and the client's address
//! and name; the advertise and node-id checks; the descriptor warning only when asked for; and the
//! packaging files (example config, systemd unit, Dockerfile, completions, man page).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fanout::client::{Client, ClientError, ClientOptions};
use fanout::error::ErrorCode;
use support::{connect_joined, hello, run_to_exit, RawConn, Server, IO_TIMEOUT};

const UNAUTHORIZED: u16 = ErrorCode::Unauthorized as u16;
const SERVER_FULL: u16 = ErrorCode::ServerFull as u16;
const TOO_MANY_ROOMS: u16 = ErrorCode::TooManyRooms as u16;

/// Two nodes on loopback link within this long (dial, resolve, handshake).
const LINK_TIMEOUT: Duration = Duration::from_secs(15);

/// A file of this test run: unique per process and name, removed by nobody (temp dir).
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("fanout-operate-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write a temp file");
    path
}

fn text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Connects `name` presenting `token`; the server's refusal code, or the client.
fn connect_token(server: &Server, name: &str, token: &str) -> Result<Client, u16> {
    let options =
        ClientOptions { token: token.as_bytes().to_vec(), connect_timeout: Some(IO_TIMEOUT), ..Default::default() };
    match Client::connect_with(server.addr(), name, &options) {
        Ok(client) => {
            client.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
            Ok(client)
        }
        Err(ClientError::Server { code, .. }) => Err(code),
        Err(e) => panic!("{name}: expected WELCOME or an ERROR, got {e}"),
    }
}

fn expect_message(client: &mut Client, payload: &[u8]) {
    let message = client.next_message().expect("a message");
    assert_eq!(&message.payload[..], payload);
}

/// Whether `ts` is RFC 3339 as the server writes it: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_millis(ts: &str) -> bool {
    let digits = |range: std::ops::Range<usize>| ts.get(range).is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
    let punct = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')];
    ts.len() == 24
        && punct.iter().all(|(at, c)| ts.as_bytes()[*at] == *c)
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19, 20..23].into_iter().all(digits)
}

#[test]
fn sighup_swaps_the_tokens_without_dropping_a_connection_and_a_bad_file_changes_nothing() {
    let tokens = temp_file("tokens", "alpha\nbravo\n");
    let server = Server::start(&["--token-file", text(&tokens)]);
    let mut alice = connect_token(&server, "alice", "alpha").expect("alpha is a token");
    alice.join("r").unwrap();
    let mut bob = connect_token(&server, "bob", "bravo").expect("bravo is a token");
    bob.join("r").unwrap();

    std::fs::write(&tokens, "alpha\ncharlie\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("reload: 2 tokens", IO_TIMEOUT).expect("the reload is logged");
    let mut carol = connect_token(&server, "carol", "charlie").expect("the new token gets in");
    carol.join("r").unwrap();
    assert_eq!(connect_token(&server, "dave", "bravo").err(), Some(UNAUTHORIZED), "a removed token is refused");

    // Connected before the reload, with a token that is gone now: still in, still chatting.
    alice.publish("r", b"still here").unwrap();
    expect_message(&mut bob, b"still here");
    expect_message(&mut carol, b"still here");
    bob.publish("r", b"me too").unwrap();
    expect_message(&mut alice, b"me too");
    expect_message(&mut carol, b"me too");

    // A token file with no token: refused whole, the old set stays.
    std::fs::write(&tokens, "\n\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("reload failed, nothing changed", IO_TIMEOUT).expect("the bad file is an error");
    assert!(connect_token(&server, "erin", "charlie").is_ok(), "the set before the bad file stays");
    assert_eq!(connect_token(&server, "frank", "bravo").err(), Some(UNAUTHORIZED));
    carol.publish("r", b"after the bad file").unwrap();
    expect_message(&mut alice, b"after the bad file");
    expect_message(&mut bob, b"after the bad file");
    assert_eq!(server.log_count("SIGHUP: reloading"), 2);
    assert!(!server.log_text().contains("charlie"), "a token in the log");
}

#[test]
fn a_config_file_sets_the_flags_and_a_flag_given_overrides_it() {
    let config = temp_file(
        "limits.toml",
        "# two limits, one overridden by a flag\nmax_rooms_per_connection = 1\nmax_connections = 1\n",
    );
    let server = Server::start(&["--config", text(&config), "--max-connections", "3"]);
    server.wait_for_log("settings from ", IO_TIMEOUT).expect("the file is named in the log");

    let mut one = connect_joined(server.addr(), "one", "r1");
    match one.join("r2") {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, TOO_MANY_ROOMS, "the file's room limit"),
        other => panic!("a second room with max_rooms_per_connection = 1: {other:?}"),
    }
    // The flag's 3 connections, not the file's 1.
    let _two = support::connect(server.addr(), "two");
    let _three = support::connect(server.addr(), "three");
    match Client::connect_with(server.addr(), "four", &ClientOptions::default()) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, SERVER_FULL),
        Err(e) => panic!("four: expected SERVER_FULL, got {e}"),
        Ok(_) => panic!("four got in past --max-connections 3"),
    }
}

#[test]
fn a_bad_config_file_is_refused_naming_the_line_and_the_key() {
    let config = temp_file("unknown.toml", "listen = \"127.0.0.1:0\"\n\nmax_conections = 5\n");
    let (status, stderr) = run_to_exit(&["serve", "--config", text(&config)], IO_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    let at = format!("{}:3", config.display());
    assert!(stderr.contains(&at) && stderr.contains("unknown key `max_conections`"), "{stderr}");

    let config = temp_file("badvalue.toml", "listen = \"nowhere\"\n");
    let (status, stderr) = run_to_exit(&["serve", "--config", text(&config)], IO_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains(":1: listen: invalid value 'nowhere'"), "{stderr}");

    let config = temp_file("syntax.toml", "peers = [\"a:1\",\n  \"b:2\"\nthreads = 2\n");
    let (status, stderr) = run_to_exit(&["serve", "--config", text(&config)], IO_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains(":3: expected `,` or `]`"), "{stderr}");
}

/// The log lines of a `fanout serve` started here, not through `Server` (which sets the log
/// level and reads text lines), one by one.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(args)
            .env_remove("FANOUT_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the fanout binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// The next line containing `needle` (every line read on the way is kept in `seen`).
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line with {needle:?} ({e}); lines:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address at the end of a `listening on ADDR` line (JSON: before the closing quote).
fn listening_addr(line: &str) -> std::net::SocketAddr {
    let at = line.find("listening on ").expect("a listening line") + "listening on ".len();
    line[at..].trim_end_matches(['"', '}']).trim().parse().expect("an address")
}

#[test]
fn json_log_lines_are_one_object_each_with_rfc3339_timestamps() {
    let mut server =
        Spawned::start(&["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"]);
    let listening = server.wait_for("listening on");
    let addr = listening_addr(&listening);
    let conn = RawConn::greeted(addr, "jason");
    drop(conn);
    server.wait_for("closed");
    assert!(server.seen.len() >= 3, "{:?}", server.seen);
    for line in &server.seen {
        assert!(line.starts_with("{\"ts\":\"") && line.ends_with("\"}"), "not one JSON object: {line}");
        for key in ["\"level\":\"", "\"target\":\"", "\"msg\":\""] {
            assert!(line.contains(key), "no {key} in {line}");
        }
        let ts = &line[7..7 + 24];
        assert!(is_rfc3339_millis(ts), "timestamp {ts:?} in {line}");
    }
}

#[test]
fn text_log_lines_start_with_rfc3339_and_name_the_client_address_and_name() {
    let server = Server::start(&[]);
    let mut conn = RawConn::greeted(server.addr(), "alice");
    let local = conn.stream.local_addr().unwrap();
    conn.send_frame(&hello("alice")); // a second HELLO: fatal
    conn.expect_fatal(ErrorCode::UnexpectedFrame as u16);
    let needle = format!("from {local} as alice (session ");
    let closing = server.wait_for_log(&needle, IO_TIMEOUT).expect("the close line names address and name");
    assert!(closing.contains("INFO") && closing.contains("UNEXPECTED_FRAME"), "{closing}");
    let closed = format!("from {local} as alice closed");
    server.wait_for_log(&closed, IO_TIMEOUT).expect("the connection's last line names it too");
    for line in server.log_text().lines() {
        let ts = line.split(' ').next().unwrap_or_default();
        assert!(is_rfc3339_millis(ts), "line without an RFC 3339 timestamp: {line}");
    }
}

#[test]
fn sighup_changes_the_log_level_from_the_config_file() {
    let config = temp_file("level.toml", "log_level = \"info\"\nlisten = \"127.0.0.1:0\"\n");
    let mut server = Spawned::start(&["serve", "--config", text(&config)]);
    let addr = listening_addr(&server.wait_for("listening on"));
    // Accepted (and its accept line skipped at info) before the WELCOME: before the reload.
    let quiet = RawConn::greeted(addr, "quiet");
    let quiet_addr = quiet.stream.local_addr().unwrap();

    std::fs::write(&config, "log_level = \"debug\"\nlisten = \"127.0.0.1:0\"\nmax_connections = 9\n").unwrap();
    server.signal("HUP");
    server.wait_for("reload: log level debug (was info)");
    let restart = server.wait_for("takes a restart");
    assert!(restart.contains("max_connections is 9 now"), "{restart}");
    let loud = RawConn::greeted(addr, "loud");
    let loud_addr = loud.stream.local_addr().unwrap();
    let accepted = server.wait_for(&format!("from {loud_addr}"));
    assert!(accepted.contains("DEBUG"), "{accepted}");
    let before = format!("from {quiet_addr}");
    assert!(!server.seen.iter().any(|l| l.contains(&before)), "a debug line before the reload: {:?}", server.seen);
    drop((quiet, loud));
}

#[test]
fn a_host_name_peer_links_two_nodes() {
    let secret = temp_file("secret", "operate-test-secret\n");
    let node = |id: &str, extra: &[&str]| {
        let base = ["--threads", "1", "--cluster-listen", "127.0.0.1:0", "--cluster-secret-file", text(&secret)];
        Server::start(&[&base[..], &["--node-id", id], extra].concat())
    };
    let one = node("1", &[]);
    let line = one.wait_for_log("accepting node links on ", IO_TIMEOUT).expect("node 1's cluster address");
    let port = line.rsplit(':').next().unwrap().trim().to_string();
    let two = node("2", &["--peer", &format!("localhost:{port}")]);
    two.wait_for_log(" up: node 1 ", LINK_TIMEOUT).expect("node 2 links to node 1 through localhost");
    one.wait_for_log(" up: node 2 ", LINK_TIMEOUT).expect("node 1 sees node 2");
    assert!(two.log_text().contains(&format!("(resolved from localhost:{port})")), "{}", two.log_text());

    let mut far = connect_joined(two.addr(), "far", "r");
    let near = connect_joined(one.addr(), "near", "r");
    near.publish("r", b"across a named link").unwrap();
    expect_message(&mut far, b"across a named link");
}

#[test]
fn a_node_that_would_advertise_nothing_reachable_or_shared_is_refused() {
    let secret = temp_file("secret2", "operate-test-secret\n");
    let cluster = |listen: &'static str| ["serve", "--listen", "127.0.0.1:0", "--cluster-listen", listen];
    let (status, stderr) = run_to_exit(
        &[&cluster("0.0.0.0:0")[..], &["--cluster-secret-file", text(&secret), "--node-id", "1"]].concat(),
        IO_TIMEOUT,
    );
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("0.0.0.0:") && stderr.contains("--cluster-advertise"), "{stderr}");

    let (status, stderr) =
        run_to_exit(&[&cluster("127.0.0.1:0")[..], &["--cluster-secret-file", text(&secret)]].concat(), IO_TIMEOUT);
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("--node-id is required"), "{stderr}");
}

#[test]
fn the_descriptor_limit_is_a_warning_only_when_max_connections_was_asked_for() {
    let (status, stderr) = run_to_exit(&["serve", "--check-config"], IO_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    assert!(!stderr.lines().any(|l| l.contains("WARN") && l.contains("descriptor")), "{stderr}");

    // More than any descriptor limit allows.
    let (status, stderr) = run_to_exit(&["serve", "--check-config", "--max-connections", "2000000000"], IO_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("WARN") && l.contains("needs about")), "{stderr}");
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_example_config_is_valid_and_lists_every_serve_flag() {
    let example = repo_file("dist/fanout.toml");
    let (status, stderr) = run_to_exit(&["serve", "--config", text(&example), "--check-config"], IO_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    let contents = std::fs::read_to_string(&example).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_fanout")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .filter(|flag| flag.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !flag.is_empty())
        .collect();
    assert!(flags.contains(&"max-connections"), "{help}");
    for flag in flags {
        if ["config", "check-config", "help"].contains(&flag) {
            continue;
        }
        let key = if flag == "peer" { "peers".to_string() } else { flag.replace('-', "_") };
        assert!(
            contents.contains(&format!("\n{key} = ")) || contents.contains(&format!("\n# {key} = ")),
            "dist/fanout.toml does not show `{key}` (--{flag})"
        );
    }
}

fn stdout_of(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout")).args(args).output().expect("run fanout");
    assert!(output.status.success(), "fanout {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn completions_and_man_pages_are_generated_from_the_cli() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains("fanout") && script.contains("max-connections"), "{shell}: {script}");
    }
    let page = stdout_of(&["manpage"]);
    assert!(page.starts_with(".ie") || page.contains(".TH fanout"), "{page}");
    assert!(page.contains("serve"), "{page}");
    let dir = std::env::temp_dir().join(format!("fanout-operate-{}-man", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    stdout_of(&["manpage", "--dir", text(&dir)]);
    for page in ["fanout.1", "fanout-serve.1", "fanout-chat.1"] {
        let contents = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(contents.contains(".TH"), "{page}: {contents}");
    }
    let serve = std::fs::read_to_string(dir.join("fanout-serve.1")).unwrap();
    assert!(serve.contains("config") && serve.contains("max\\-connections"), "{serve}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no systemd-analyze here");
        return;
    }
    let unit = std::fs::read_to_string(repo_file("dist/fanout.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("DynamicUser=yes"));
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let unit = unit.replace("/usr/local/bin/fanout", env!("CARGO_BIN_EXE_fanout"));
    let dir = std::env::temp_dir().join(format!("fanout-operate-{}-unit", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fanout.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !said.contains("fanout.service:"), "systemd-analyze verify: {said}");
}

#[test]
fn the_dockerfile_builds_where_a_docker_engine_runs() {
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no docker engine here (a client alone cannot build)");
        return;
    }
    let tag = format!("fanout-operate-test:{}", std::process::id());
    let status = Command::new("docker").args(["build", "-t", &tag]).arg(env!("CARGO_MANIFEST_DIR")).status().unwrap();
    assert!(status.success(), "docker build failed");
    let _ = Command::new("docker").args(["image", "rm", &tag]).output();
}
