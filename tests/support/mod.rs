//! Shared scaffolding for the loopback tests: start the real `fanout` binary on a free port,
//! connect binary, raw and line-mode clients to it, and synchronise threads without sleeping.
//!
//! Every blocking read has a timeout ([`IO_TIMEOUT`]) and every wait has a deadline, so a server
//! bug fails a test instead of hanging it. Order is established through the protocol itself:
//! `JOINED` (via [`Client::join`]) and `PING`/`PONG` (via [`Client::round_trip`]) prove that
//! the server has handled everything a connection sent before.

// Each test file compiles this module separately and uses only part of it.
#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod json;
pub mod proxy;
pub mod rng;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::client::{Client, ClientError, ClientOptions, Event};
use fanout::codec::{ClientFrame, FrameDecoder, Hello, ServerFrame, PROTOCOL_VERSION};

/// How long any single blocking read or wait may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Log lines kept for diagnostics and for [`Server::wait_for_log`].
#[derive(Default)]
struct LogBook {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// A running `fanout serve`, killed when dropped.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<LogBook>,
    drain: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `fanout serve --listen 127.0.0.1:0` with `extra` flags and waits until it listens.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_listening_on("127.0.0.1:0", extra)
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set size in KiB, from `/proc/PID/status` (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS value in kB")
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Waits until a log line contains `needle`; returns that line, or `None` at the deadline.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.log.grew.wait_timeout(lines, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait on the server").is_none()
    }

    /// Sends SIGTERM with the `kill` command (no libc in the tests).
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid());
    }

    /// Polls for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling a process for exit has no event to wait on without libc; this is not
            // synchronisation between test and server, only a bounded poll of `waitpid`.
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        if thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- last server log lines (newest last) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `fanout` with `args` until it exits, at most `timeout` (then kills it): its exit
/// status (`None` if it had to be killed) and everything it wrote to stderr.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the fanout binary");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Read while it runs, so a chatty process cannot block on a full pipe.
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on fanout") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // A bounded poll of `waitpid`, as in `Server::wait_exit`: no event to wait on.
        thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap_or_default())
}

fn drain_stderr(stderr: ChildStderr, log: &LogBook, addr_tx: mpsc::Sender<SocketAddr>) {
    let mut addr_tx = Some(addr_tx);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(at) = line.find("listening on ") {
            if let (Some(tx), Ok(addr)) = (addr_tx.as_ref(), line[at + "listening on ".len()..].trim().parse()) {
                let _ = tx.send(addr);
                addr_tx = None;
            }
        }
        log.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        log.grew.notify_all();
    }
}

/// Connects a binary client as `name` with the default options and the test read timeout.
pub fn connect(addr: SocketAddr, name: &str) -> Client {
    connect_with(addr, name, &ClientOptions::default())
}

/// Connects a binary client with `options` and the test read timeout.
pub fn connect_with(addr: SocketAddr, name: &str, options: &ClientOptions) -> Client {
    let client = Client::connect_with(addr, name, options).unwrap_or_else(|e| panic!("connect {name}: {e}"));
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
    client
}

/// Connects `name` and joins `room`.
pub fn connect_joined(addr: SocketAddr, name: &str, room: &str) -> Client {
    let mut client = connect(addr, name);
    client.join(room).unwrap_or_else(|e| panic!("{name} join {room}: {e}"));
    client
}

/// Asserts that nothing reached `client` before the answer to a fresh `PING`: the server
/// queues replies in order, so anything it had queued earlier would come out first.
pub fn assert_nothing_before_pong(client: &mut Client, nonce: u64) {
    client.sender().ping(nonce).expect("send PING");
    match client.next_event() {
        Ok(Event::Pong(n)) if n == nonce => {}
        other => panic!("expected only PONG {nonce}, got {other:?}"),
    }
}

/// Most deliveries skipped while waiting for an error, so a wrong server cannot keep a test busy.
const SKIPPED_MESSAGES_MAX: usize = 1_000_000;

/// Asserts that `client` gets an `ERROR` with `code` (after any number of well-formed
/// deliveries from its rooms, which were queued before the fault), then end of stream.
pub fn assert_fatal_error_then_eof(client: &mut Client, code: u16) {
    let mut skipped = 0;
    loop {
        match client.next_event() {
            Ok(Event::Error { code: got, .. }) if got == code => break,
            Ok(Event::Message(_)) if skipped < SKIPPED_MESSAGES_MAX => skipped += 1,
            other => panic!("expected ERROR {code} (after {skipped} messages), got {other:?}"),
        }
    }
    match client.next_event() {
        Err(ClientError::Closed) => {}
        other => panic!("expected end of stream after ERROR {code}, got {other:?}"),
    }
}

/// What a raw read produced.
#[derive(Debug)]
pub enum RawRead {
    /// One whole, parsed frame.
    Frame(ServerFrame),
    /// The server closed its side (FIN).
    Eof,
}

/// A version-1 `HELLO` as `name`, no flags, no token.
pub fn hello(name: &str) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: 0,
        name: bytes::Bytes::copy_from_slice(name.as_bytes()),
        token: bytes::Bytes::new(),
    })
}

/// One frame's bytes, header included.
pub fn encode(frame: &ClientFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

/// A binary connection driven byte by byte, for broken input and for readers that must see
/// exactly what the server wrote.
pub struct RawConn {
    pub stream: TcpStream,
    input: BytesMut,
    decoder: FrameDecoder,
}

impl RawConn {
    /// Connects without sending anything.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect raw");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, input: BytesMut::new(), decoder: FrameDecoder::default() }
    }

    /// Connects, says `HELLO` as `name` and checks the `WELCOME`.
    pub fn greeted(addr: SocketAddr, name: &str) -> Self {
        let mut conn = Self::connect(addr);
        conn.send_frame(&hello(name));
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Welcome(_))) => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
        conn
    }

    /// Joins `room` and waits for `JOINED` (nothing else may come first).
    pub fn join(&mut self, room: &str) {
        self.send_frame(&ClientFrame::Join { flags: 0, room: bytes::Bytes::copy_from_slice(room.as_bytes()) });
        match self.read() {
            Ok(RawRead::Frame(ServerFrame::Joined(r))) if r == room.as_bytes() => {}
            other => panic!("expected JOINED {room}, got {other:?}"),
        }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Encodes and writes one frame.
    pub fn send_frame(&mut self, frame: &ClientFrame) {
        self.send(&encode(frame));
    }

    /// Reads the next frame or end of stream. A decode error means the server wrote bytes that
    /// are not a frame; it is returned with the bytes it was found in.
    pub fn read(&mut self) -> io::Result<RawRead> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(raw)) => {
                    let kind = raw.kind;
                    return ServerFrame::parse(raw).map(RawRead::Frame).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("bad frame of type 0x{kind:02x}: {e}"))
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    let shown = &self.input[..self.input.len().min(32)];
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("server sent a broken frame ({e}); next bytes: {shown:02x?}"),
                    ));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                if !self.input.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame; {} bytes left over", self.input.len()),
                    ));
                }
                return Ok(RawRead::Eof);
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next frame without parsing it: its type byte and its exact body bytes.
    pub fn read_raw(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(raw)) => return Ok((raw.kind, raw.body.to_vec())),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// Bytes received but not yet cut into a frame.
    pub fn leftover(&self) -> &[u8] {
        &self.input
    }

    /// Expects an `ERROR` with `code` (after any number of well-formed deliveries from the
    /// connection's rooms), then end of stream.
    pub fn expect_fatal(&mut self, code: u16) {
        let mut skipped = 0;
        loop {
            match self.read() {
                Ok(RawRead::Frame(ServerFrame::Error { code: got, .. })) if got == code => break,
                Ok(RawRead::Frame(ServerFrame::Message(_))) if skipped < SKIPPED_MESSAGES_MAX => skipped += 1,
                other => panic!("expected ERROR {code} (after {skipped} messages), got {other:?}"),
            }
        }
        match self.read() {
            Ok(RawRead::Eof) => {}
            other => panic!("expected end of stream after ERROR {code}, got {other:?}"),
        }
    }
}

/// A line-mode connection (`nc` in a test).
pub struct LineConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineConn {
    /// Connects; the server decides line mode on the first byte written.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect line client");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        let writer = stream.try_clone().expect("clone stream");
        Self { reader: BufReader::new(stream), writer }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("line write");
    }

    /// Reads one line, newline included; `""` means end of stream. At most 64 KiB.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        (&mut self.reader).take(64 * 1024).read_until(b'\n', &mut line)?;
        String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Reads lines until one that is not a `* ` status line (the greeting, presence lines),
    /// unless `expected` is one itself, and fails the test if it is not exactly `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        loop {
            match self.read_line() {
                Ok(line) if line == expected => return,
                Ok(line) if line.starts_with("* ") && !expected.starts_with("* ") => continue,
                other => panic!("expected line {expected:?}, got {other:?}"),
            }
        }
    }

    /// Expects end of stream.
    pub fn expect_eof(&mut self) {
        match self.read_line() {
            Ok(line) if line.is_empty() => {}
            other => panic!("expected end of stream, got {other:?}"),
        }
    }
}

/// Counters that threads advance and others wait on, with deadlines: a barrier, a flow-control
/// window and a progress report in one.
#[derive(Debug)]
pub struct Progress {
    counts: Mutex<Vec<u64>>,
    changed: Condvar,
}

impl Progress {
    /// `slots` counters, all zero.
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self { counts: Mutex::new(vec![0; slots]), changed: Condvar::new() })
    }

    /// Sets counter `slot` to `value`.
    pub fn set(&self, slot: usize, value: u64) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())[slot] = value;
        self.changed.notify_all();
    }

    /// The smallest counter.
    pub fn min(&self) -> u64 {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().min().unwrap_or(0)
    }

    /// Waits until every counter is at least `target`; false at the deadline.
    pub fn wait_min(&self, target: u64, timeout: Duration) -> bool {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (counts, _) = self
            .changed
            .wait_timeout_while(counts, timeout, |c| c.iter().copied().min().unwrap_or(0) < target)
            .unwrap_or_else(|p| p.into_inner());
        counts.iter().copied().min().unwrap_or(0) >= target
    }
}

/// Payload of the bystander's `seq`-th message.
fn bystander_payload(seq: u64) -> Vec<u8> {
    format!("bystander message {seq:08}").into_bytes()
}

/// The bystander publisher never runs further ahead of its subscriber than this many messages,
/// so the subscriber is never anywhere near the slow-consumer limit.
const BYSTANDER_WINDOW: u64 = 64;

/// Upper bound on bystander messages, so a stuck test cannot publish forever.
const BYSTANDER_MESSAGES_MAX: u64 = 1_000_000;

/// A publisher and a subscriber in one room exchanging a numbered stream of messages in two
/// threads, before, during and after whatever a test does to the server; [`Bystander::finish`]
/// checks that every message arrived, complete and in order.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    received: Arc<Progress>,
    publisher: JoinHandle<u64>,
    subscriber: JoinHandle<u64>,
}

impl Bystander {
    /// Starts the pair in `room` and returns once some messages have gone through.
    pub fn start(addr: SocketAddr, room: &str) -> Self {
        let mut subscriber = connect_joined(addr, "bystander-sub", room);
        let publisher = connect_joined(addr, "bystander-pub", room);
        let stop = Arc::new(AtomicBool::new(false));
        let received = Progress::new(1);
        let publisher = {
            let (stop, received, room) = (stop.clone(), received.clone(), room.to_string());
            let mut publisher = publisher;
            thread::spawn(move || {
                let mut sent = 0;
                while sent < BYSTANDER_MESSAGES_MAX && !stop.load(Ordering::Acquire) {
                    assert!(
                        received.wait_min((sent + 1).saturating_sub(BYSTANDER_WINDOW), IO_TIMEOUT),
                        "bystander subscriber stalled at {} of {sent}",
                        received.min()
                    );
                    sent += 1;
                    publisher.publish(&room, &bystander_payload(sent)).expect("bystander publish");
                }
                publisher.publish(&room, b"end").expect("bystander publish end");
                // The server has handled the end marker before this connection goes away.
                publisher.round_trip(u64::MAX).expect("bystander publisher round trip");
                sent
            })
        };
        let subscriber = {
            let (received, room) = (received.clone(), room.to_string());
            thread::spawn(move || {
                let mut stream = None;
                let mut got = 0u64;
                loop {
                    let m = subscriber.next_message().unwrap_or_else(|e| panic!("bystander after {got} messages: {e}"));
                    assert_eq!(m.room, room.as_bytes(), "bystander room");
                    assert_eq!(m.name, &b"bystander-pub"[..], "bystander publisher name");
                    assert_eq!(*stream.get_or_insert(m.stream), m.stream, "bystander stream changed");
                    assert_eq!(m.seq, got + 1, "bystander seq after {got} messages");
                    if m.payload == b"end"[..] {
                        return got;
                    }
                    assert_eq!(m.payload, bystander_payload(got + 1), "bystander payload {}", got + 1);
                    got += 1;
                    received.set(0, got);
                }
            })
        };
        let bystander = Self { stop, received, publisher, subscriber };
        bystander.wait_more(20);
        bystander
    }

    /// Waits until the subscriber has received `more` messages beyond what it has now.
    pub fn wait_more(&self, more: u64) {
        let target = self.received.min() + more;
        assert!(self.received.wait_min(target, IO_TIMEOUT), "bystander stuck at {} (wanted {target})", {
            self.received.min()
        });
    }

    /// Lets some messages flow after the attack, stops, and checks that the subscriber got
    /// every message the publisher sent; returns that count.
    pub fn finish(self) -> u64 {
        self.wait_more(20);
        self.stop.store(true, Ordering::Release);
        let sent = self.publisher.join().expect("bystander publisher panicked");
        let got = self.subscriber.join().expect("bystander subscriber panicked");
        assert_eq!(got, sent, "bystander subscriber got {got} of {sent} messages");
        got
    }
}

/// Checks a receiver's view of several publishers: per stream, `seq` counts up from 1 with no
/// gap, and each stream belongs to one name.
#[derive(Debug, Default)]
pub struct StreamCheck {
    streams: HashMap<u64, (Vec<u8>, u64)>,
}

impl StreamCheck {
    /// Records one message; returns its position in its stream. Panics on a gap or a
    /// duplicate or a stream that changed its name.
    pub fn record(&mut self, stream: u64, seq: u64, name: &[u8]) -> u64 {
        let entry = self.streams.entry(stream).or_insert_with(|| (name.to_vec(), 0));
        assert_eq!(entry.0, name, "stream {stream} changed publisher name");
        assert_eq!(seq, entry.1 + 1, "stream {stream} ({}) jumped", String::from_utf8_lossy(name));
        entry.1 = seq;
        seq
    }

    /// How many streams were seen.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The last `seq` of each stream, by name.
    pub fn last_seq_by_name(&self) -> HashMap<Vec<u8>, u64> {
        self.streams.values().map(|(name, seq)| (name.clone(), *seq)).collect()
    }
}

// ----- line mode: greetings, guest names, presence lines -----

/// How a greeting counts the others in the room: `nobody else`, `1 other`, `N others`.
pub fn others_text(others: usize) -> String {
    match others {
        0 => "nobody else".to_string(),
        1 => "1 other".to_string(),
        n => format!("{n} others"),
    }
}

/// The exact greeting a line-mode client named `name` gets, newline included.
pub fn greeting(name: &str, room: &str, others: usize) -> String {
    let others = others_text(others);
    format!("* welcome {name}: you are in {room} with {others}; type to chat, /help for commands\n")
}

/// Where a guest name says its connection sits, as (node, core): `guest5` is (0, 0), `guest5-1`
/// is (0, 1), `guest5-2.1` is (2, 1); `None` if `name` is not a guest name.
pub fn guest_location(name: &str) -> Option<(u16, u16)> {
    fn number<T: std::str::FromStr>(digits: &str) -> Option<T> {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
    }
    let rest = name.strip_prefix("guest")?;
    let (counter, place) = rest.split_once('-').unwrap_or((rest, ""));
    number::<u64>(counter)?;
    match place.split_once('.') {
        _ if place.is_empty() => Some((0, 0)),
        None => Some((0, number(place)?)),
        Some((node, core)) => Some((number(node)?, number(core)?)),
    }
}

/// True for a name the server gives a line-mode client: `guest<N>`, `guest<N>-<core>` or
/// `guest<N>-<node>.<core>`.
pub fn is_guest_name(name: &str) -> bool {
    guest_location(name).is_some()
}

/// The exact `/who` answer for `room` whose members are `names` in the order the server
/// learned of them, `you` being the asker's index.
pub fn who_line(room: &str, names: &[&str], you: Option<usize>) -> String {
    let listed: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| if Some(i) == you { format!("{n} (you)") } else { n.to_string() })
        .collect();
    format!("* {} in {room}: {}\n", names.len(), listed.join(", "))
}

impl LineConn {
    /// Bounds each blocking read (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.reader.get_ref().set_read_timeout(timeout).expect("set read timeout");
    }

    /// Reads the greeting, checks that it is exactly the one of a guest in the lobby with
    /// `others` others, and returns the guest's name.
    pub fn expect_greeting(&mut self, others: usize) -> String {
        let line = self.read_line().unwrap_or_else(|e| panic!("waiting for the greeting: {e}"));
        let name = line
            .strip_prefix("* welcome ")
            .and_then(|rest| rest.split_once(':'))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| panic!("expected a greeting, got {line:?}"));
        assert!(is_guest_name(&name), "greeting names {name:?}, not a guest name: {line:?}");
        assert_eq!(line, greeting(&name, "lobby", others), "greeting");
        name
    }

    /// Reads exactly one line and fails the test if it is not exactly `expected`: unlike
    /// [`LineConn::expect_line`], no status line may come first (tests of presence and commands
    /// must see every line the server sends).
    pub fn expect_exact(&mut self, expected: &str) {
        match self.read_line() {
            Ok(line) if line == expected => {}
            other => panic!("expected exactly the line {expected:?}, got {other:?}"),
        }
    }

    /// Reads one `/who` answer and checks it lists exactly `names` (with `(you)` on the one at
    /// `you`), in any order: each core lists members in the order *it* learned of them, which
    /// for members of other cores is not the order they joined.
    pub fn expect_who(&mut self, room: &str, names: &[&str], you: Option<usize>) {
        let line = self.read_line().unwrap_or_else(|e| panic!("waiting for /who: {e}"));
        let want = who_line(room, names, you);
        let entries = |text: &str| -> Option<(String, Vec<String>)> {
            let (head, list) = text.trim_end().split_once(": ")?;
            let mut entries: Vec<String> = list.split(", ").map(str::to_string).collect();
            entries.sort();
            Some((head.to_string(), entries))
        };
        assert_eq!(entries(&line), entries(&want), "/who: got {line:?}, want {want:?} in any order");
    }

    /// Closes both directions, as a person pressing Ctrl-C in `nc`.
    pub fn hang_up(&self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

// ----- restarts: a server on a chosen client address -----

impl Server {
    /// Starts `fanout serve --listen <listen>` with `extra` flags and waits until it listens:
    /// like [`Server::start`], but on a fixed address, so a test can restart a server where
    /// its clients found it before.
    pub fn start_listening_on(listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["serve", "--listen", listen, "--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the fanout binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(LogBook::default());
        let (addr_tx, addr_rx) = mpsc::channel();
        let drain = {
            let log = log.clone();
            thread::spawn(move || drain_stderr(stderr, &log, addr_tx))
        };
        let mut server = Self { child, addr: "127.0.0.1:1".parse().unwrap(), log, drain: Some(drain) };
        match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(e) => panic!("server did not report `listening on` within {START_TIMEOUT:?} ({e}); log:\n{}", {
                server.log_text()
            }),
        }
        server
    }
}

// ----- operating: signals, and a server's log as it was written -----

impl Server {
    /// Sends `signal` (a name `kill` knows: HUP, USR2, ...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed: {status}", self.pid());
    }

    /// How many log lines so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lines.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|l| l.contains(needle)).count()
    }
}
