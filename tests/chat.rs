//! Fan-out through the real binary: one message byte for byte, echo, and 50 clients publishing
//! to each other at once with per-publisher order checked on every receiver. Then `fanout chat`
//! itself, driven through pipes: its commands, `--token`, `--send-only`, and failing over to a
//! second server when the first one dies.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fanout::client::{Client, ClientOptions};
use support::{
    assert_nothing_before_pong, connect_joined, connect_with, Progress, RawConn, Server, StreamCheck, IO_TIMEOUT,
};

/// A `MESSAGE` body as `protocol.md` lays it out.
fn message_body(stream: u64, seq: u64, room: &[u8], name: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&stream.to_be_bytes());
    body.extend_from_slice(&seq.to_be_bytes());
    body.push(room.len() as u8);
    body.extend_from_slice(room);
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    body
}

#[test]
fn message_reaches_the_other_client_byte_exact_and_never_its_publisher() {
    let server = Server::start(&[]);
    let mut alice = connect_joined(server.addr(), "alice", "lobby");
    let mut bob = RawConn::greeted(server.addr(), "bob");
    bob.join("lobby");

    let payload = b"hi bob \x00\x01\xff\n\r binary is fine";
    alice.publish("lobby", payload).unwrap();

    let (kind, body) = bob.read_raw().expect("bob reads the MESSAGE");
    assert_eq!(kind, 0x11, "frame type MESSAGE");
    assert!(body.len() >= 16, "MESSAGE body too short: {body:02x?}");
    let stream = u64::from_be_bytes(body[..8].try_into().unwrap());
    assert_ne!(stream, 0, "stream ids start at 1");
    assert_eq!(body, message_body(stream, 1, b"lobby", b"alice", payload));

    // Bob has it; alice's own publish was handled before her PING, so an echo would come first.
    assert_nothing_before_pong(&mut alice, 7);

    // A second publish continues the same stream.
    alice.publish("lobby", b"again").unwrap();
    let (_, body) = bob.read_raw().unwrap();
    assert_eq!(body, message_body(stream, 2, b"lobby", b"alice", b"again"));
    assert_nothing_before_pong(&mut alice, 8);
}

#[test]
fn echo_option_delivers_own_messages_too() {
    let server = Server::start(&[]);
    let mut alice = connect_with(server.addr(), "alice", &ClientOptions { echo: true, ..Default::default() });
    alice.join("lobby").unwrap();
    let mut bob = connect_joined(server.addr(), "bob", "lobby");

    alice.publish("lobby", b"to myself as well").unwrap();
    let own = alice.next_message().expect("alice gets her own message");
    let theirs = bob.next_message().expect("bob gets it");
    assert_eq!(own, theirs, "echo and delivery are the same MESSAGE");
    assert_eq!(
        (own.seq, &own.room[..], &own.name[..], &own.payload[..]),
        (1, &b"lobby"[..], &b"alice"[..], &b"to myself as well"[..])
    );

    // Without echo, bob does not get his own.
    bob.publish("lobby", b"from bob").unwrap();
    let m = alice.next_message().unwrap();
    assert_eq!((&m.name[..], &m.payload[..], m.seq), (&b"bob"[..], &b"from bob"[..], 1));
    assert_nothing_before_pong(&mut bob, 1);
    assert_nothing_before_pong(&mut alice, 2);
}

#[test]
fn payloads_from_empty_to_the_limit_arrive_exact() {
    let server = Server::start(&[]);
    let alice = connect_joined(server.addr(), "alice", "sizes");
    let mut bob = connect_joined(server.addr(), "bob", "sizes");
    let sizes = [0usize, 1, 1023, 1024, 1025, 4096, 65_535, 65_536];
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        alice.publish("sizes", &payload).unwrap();
        let m = bob.next_message().unwrap_or_else(|e| panic!("payload of {size} bytes: {e}"));
        assert_eq!(m.seq, i as u64 + 1);
        assert!(m.payload == payload, "payload of {size} bytes differs");
    }
}

const CROWD: usize = 50;
const MESSAGES_EACH: u64 = 100;

#[test]
fn fifty_clients_each_publishing_a_hundred_get_everyone_elses_in_order() {
    let server = Server::start(&[]);
    let addr = server.addr();
    // Slot i counts client i's arrival at each stage: 1 = joined, 2 = received everything.
    let stage = Progress::new(CROWD);
    let handles: Vec<_> = (0..CROWD)
        .map(|i| {
            let stage = Arc::clone(&stage);
            thread::spawn(move || {
                let name = format!("c{i:02}");
                let mut client = connect_joined(addr, &name, "crowd");
                stage.set(i, 1);
                // Nobody publishes before everyone is a member, or early messages would be missed.
                assert!(stage.wait_min(1, IO_TIMEOUT * 3), "{name}: not everyone joined");

                let sender = client.sender();
                let publisher = {
                    let name = name.clone();
                    thread::spawn(move || {
                        for seq in 1..=MESSAGES_EACH {
                            sender.publish("crowd", format!("{name} says {seq}").as_bytes()).expect("publish");
                        }
                    })
                };

                let mut check = StreamCheck::default();
                let expected = (CROWD as u64 - 1) * MESSAGES_EACH;
                for got in 0..expected {
                    let m = client.next_message().unwrap_or_else(|e| panic!("{name} after {got} messages: {e}"));
                    assert_eq!(&m.room[..], b"crowd");
                    assert_ne!(m.name, name.as_bytes(), "{name} got its own message");
                    let seq = check.record(m.stream, m.seq, &m.name);
                    let want = format!("{} says {seq}", String::from_utf8_lossy(&m.name));
                    assert_eq!(m.payload, want.as_bytes(), "{name}: payload of stream {}", m.stream);
                }
                publisher.join().expect("publisher thread");
                assert_eq!(check.stream_count(), CROWD - 1, "{name}: one stream per other client");
                assert!(
                    check.last_seq_by_name().values().all(|&last| last == MESSAGES_EACH),
                    "{name}: every stream complete"
                );
                stage.set(i, 2);
                // Every publish has now been delivered everywhere: nothing more may be queued.
                assert!(stage.wait_min(2, IO_TIMEOUT * 6), "{name}: the others did not finish");
                assert_nothing_before_pong(&mut client, i as u64);
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread panicked");
    }
}

// ----- `fanout chat` through pipes -----

/// A running `fanout chat` with piped stdin and stdout, killed when dropped.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Chat {
    /// Starts `fanout chat ARGS` (with `$FANOUT_TOKEN` unset unless `token_env` is given).
    fn start(args: &[&str], token_env: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
        command.arg("chat").args(args).env_remove("FANOUT_TOKEN");
        if let Some(token) = token_env {
            command.env("FANOUT_TOKEN", token);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fanout chat");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = Arc::new(Mutex::new(String::new()));
        {
            let errors = errors.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    errors.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
        }
        let stdin = child.stdin.take();
        Self { child, stdin, lines, seen: Vec::new(), stderr: errors }
    }

    /// Types one line.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to chat's stdin");
        stdin.flush().expect("flush chat's stdin");
    }

    /// Ends the input.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "chat printed no line containing {needle:?} ({e}); stdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr_text()
                ),
            }
        }
    }

    /// Waits for the line `* connected to ...`, which chat prints once it is in its room.
    fn expect_connected(&mut self) -> String {
        self.expect("* connected to ")
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Polls for the process to exit, at most [`IO_TIMEOUT`].
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on chat") {
                return status;
            }
            assert!(Instant::now() < deadline, "chat did not exit; stdout:\n{}", self.seen.join("\n"));
            // A bounded poll of `waitpid`, as in `Server::wait_exit`: no event to wait on.
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- chat stdout ---\n{}\n--- chat stderr ---\n{}", self.seen.join("\n"), self.stderr_text());
        }
    }
}

/// The next message `client` gets must be `payload` from `name`.
fn expect_from(client: &mut Client, name: &str, payload: &str) {
    match client.next_message() {
        Ok(m) => assert_eq!(
            (String::from_utf8_lossy(&m.name), String::from_utf8_lossy(&m.payload)),
            (name.into(), payload.into()),
            "message"
        ),
        Err(e) => panic!("expected {payload:?} from {name}: {e}"),
    }
}

fn token_server() -> (Server, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("fanout-chat-token-{}", std::process::id()));
    std::fs::write(&path, "chat-s3cret\n").expect("write the token file");
    let server = Server::start(&["--token-file", path.to_str().expect("utf-8 temp path")]);
    (server, path)
}

#[test]
fn chat_help_lists_the_commands_and_an_unknown_command_sends_nothing() {
    let server = Server::start(&[]);
    let mut bob = connect_joined(server.addr(), "bob", "lobby");
    let mut chat = Chat::start(&[&server.addr().to_string(), "--name", "alice"], None);
    chat.expect_connected();

    chat.send("/help");
    for command in ["/join ROOM", "/leave", "/nick NAME", "/who", "/rooms", "/help", "/quit", "//text"] {
        chat.expect(command);
    }
    chat.send("/frobnicate now");
    chat.expect("* unknown command /frobnicate");
    chat.send("/who");
    chat.expect("* 2 in lobby: bob, alice (you)");
    chat.send("/rooms");
    chat.expect("* 1 room: lobby (2)");
    // `//` sends one slash: the first thing bob gets.
    chat.send("//slash is literal");
    expect_from(&mut bob, "alice", "/slash is literal");
    // And what bob says shows up as `name: text`, line breaks as spaces.
    bob.publish("lobby", b"two\nlines").unwrap();
    chat.expect("bob: two lines");
    // Presence: the chat joined with it, so it sees others come and go.
    let mut carol = connect_joined(server.addr(), "carol", "lobby");
    chat.expect("* carol joined");
    carol.leave("lobby").unwrap();
    chat.expect("* carol left");
}

#[test]
fn chat_nick_reconnects_under_the_new_name_and_refuses_a_bad_one() {
    let server = Server::start(&[]);
    let mut watcher = connect_joined(server.addr(), "watcher", "lobby");
    let mut chat = Chat::start(&[&server.addr().to_string(), "--name", "bob"], None);
    chat.expect_connected();

    chat.send("/nick no spaces");
    chat.expect("* usage: /nick NAME");
    chat.send("/nick b@d");
    chat.expect("* name unchanged");
    chat.send("as bob");
    expect_from(&mut watcher, "bob", "as bob");

    chat.send("/nick bob2");
    chat.expect("* you are now bob2");
    let gone = chat.expect("bob left");
    assert_eq!(gone.trim_start_matches("> "), "* bob left", "the old name leaves, not 'connection lost'");
    chat.send("as bob2");
    expect_from(&mut watcher, "bob2", "as bob2");
}

#[test]
fn chat_join_moves_to_the_other_room_and_leave_stops_sending() {
    let server = Server::start(&[]);
    let mut lobby = connect_joined(server.addr(), "in-lobby", "lobby");
    let mut other = connect_joined(server.addr(), "in-other", "other");
    let mut chat = Chat::start(&[&server.addr().to_string(), "--name", "mover"], None);
    chat.expect_connected();

    chat.send("/join other");
    chat.expect("* now in other");
    chat.send("for other");
    expect_from(&mut other, "mover", "for other");

    chat.send("/leave");
    chat.expect("* left other; not in a room");
    chat.send("for nobody");
    chat.expect("* not in a room: /join ROOM");

    chat.send("/join lobby");
    chat.expect("* now in lobby");
    chat.send("back in lobby");
    // Had anything after the first /join reached the lobby, it would come before this.
    expect_from(&mut lobby, "mover", "back in lobby");
    assert_nothing_before_pong(&mut other, 1);
}

#[test]
fn chat_quit_exits_zero_after_sending_what_came_before_and_is_never_sent() {
    let server = Server::start(&[]);
    let mut watcher = connect_joined(server.addr(), "watcher", "lobby");
    let mut chat = Chat::start(&[&server.addr().to_string(), "--name", "quitter"], None);
    chat.expect_connected();

    chat.send("last words");
    chat.send("/quit");
    chat.send("never read");
    let status = chat.wait_exit();
    assert!(status.success(), "chat exited with {status}");
    expect_from(&mut watcher, "quitter", "last words");
    // Nothing else (no `/quit`, no later line) reached the room.
    assert_nothing_before_pong(&mut watcher, 1);
}

#[test]
fn chat_send_only_exits_zero_at_the_end_of_input_once_the_server_has_everything() {
    let server = Server::start(&[]);
    let mut watcher = connect_joined(server.addr(), "watcher", "lobby");
    let mut chat = Chat::start(&[&server.addr().to_string(), "--name", "script", "--send-only"], None);
    chat.send("one");
    chat.send("two");
    chat.close_stdin();
    let status = chat.wait_exit();
    assert!(status.success(), "chat --send-only exited with {status}");
    expect_from(&mut watcher, "script", "one");
    expect_from(&mut watcher, "script", "two");
}

#[test]
fn chat_token_gets_in_and_a_wrong_one_is_refused_with_a_clear_error() {
    let (server, token_file) = token_server();
    let options = ClientOptions { token: b"chat-s3cret".to_vec(), ..Default::default() };
    let mut watcher = connect_with(server.addr(), "watcher", &options);
    watcher.join("lobby").unwrap();
    let addr = server.addr().to_string();

    let mut chat = Chat::start(&[&addr, "--name", "flagged", "--token", "chat-s3cret"], None);
    chat.expect_connected();
    chat.send("with --token");
    expect_from(&mut watcher, "flagged", "with --token");

    let mut from_env = Chat::start(&[&addr, "--name", "envy"], Some("chat-s3cret"));
    from_env.expect_connected();
    from_env.send("with FANOUT_TOKEN");
    expect_from(&mut watcher, "envy", "with FANOUT_TOKEN");

    let mut wrong = Chat::start(&[&addr, "--name", "eve", "--token", "guess"], None);
    let status = wrong.wait_exit();
    assert!(!status.success(), "a wrong token must fail chat");
    let stderr = wrong.stderr_text();
    assert!(stderr.contains("refused the token") && stderr.contains("UNAUTHORIZED"), "unclear error: {stderr}");
    assert!(!stderr.contains("guess"), "the error repeats the token: {stderr}");
    let _ = std::fs::remove_file(token_file);
}

#[test]
fn chat_fails_over_to_the_second_server_when_the_first_is_killed() {
    let first = Server::start(&[]);
    let second = Server::start(&[]);
    let mut bob = connect_joined(second.addr(), "bob", "lobby");
    let mut chat = Chat::start(&[&first.addr().to_string(), &second.addr().to_string(), "--name", "roamer"], None);
    let connected = chat.expect_connected();
    assert!(connected.contains(&first.addr().to_string()), "chat should start on the first server: {connected}");

    drop(first); // SIGKILL: no goodbye, the connection just ends
    let reconnected = chat.expect("* reconnected to ");
    assert_eq!(reconnected, format!("* reconnected to {} (messages may have been missed)", second.addr()));

    chat.send("made it across");
    expect_from(&mut bob, "roamer", "made it across");
    bob.publish("lobby", b"welcome to the second").unwrap();
    chat.expect("bob: welcome to the second");
}

/// A `fanout serve` at a given address (support's `Server` always picks a free port), killed when
/// dropped.
struct ServerAt(Child);

impl ServerAt {
    fn start(addr: SocketAddr) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["serve", "--listen", &addr.to_string(), "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fanout serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, listening) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on ") {
                    let _ = tx.send(());
                }
            }
        });
        let server = Self(child);
        listening.recv_timeout(IO_TIMEOUT).expect("the server did not start listening");
        server
    }
}

impl Drop for ServerAt {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with the `kill` command.
fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), pid]).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

#[test]
fn chat_keeps_retrying_while_no_server_is_up_and_then_sends_what_was_typed_meanwhile() {
    let first = Server::start(&[]);
    // An address where nothing listens yet: the port was free a moment ago.
    let later = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let mut chat = Chat::start(&[&first.addr().to_string(), &later.to_string(), "--name", "patient"], None);
    chat.expect_connected();

    drop(first);
    chat.expect("* connection lost; retrying");
    chat.send("typed while down");
    // Hold chat still while the second server starts and someone joins, so that the line
    // cannot be sent before anyone is there to get it.
    signal(&chat.pid(), "STOP");
    let _second = ServerAt::start(later);
    let mut watcher = connect_joined(later, "watcher", "lobby");
    signal(&chat.pid(), "CONT");

    chat.expect(&format!("* reconnected to {later} (messages may have been missed)"));
    expect_from(&mut watcher, "patient", "typed while down");
}
