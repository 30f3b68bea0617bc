//! Hostile clients against the real binary: slowloris, half-open connections, a 4 GiB frame
//! declaration, join floods and a publisher flooding slow consumers.
//!
//! Each attack is bounded by a documented limit (`protocol.md`, "Limits"): the attacker is cut
//! with the documented error code (a silent connection is not an attacker but a listener: it is
//! greeted in text and kept, and costs only its fixed state), good clients in the same server (in the same room where the
//! attack allows it) get every message in order, and the server's resident memory stays within
//! a stated bound of where it started. Every wait has a deadline; each test takes a few seconds.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fanout::client::{Client, Event};
use fanout::codec::{ClientFrame, FrameDecoder, ServerFrame};
use fanout::error::ErrorCode;
use support::{
    assert_nothing_before_pong, connect, connect_joined, encode, hello, Bystander, LineConn, Progress, RawConn,
    RawRead, Server, IO_TIMEOUT,
};

const FRAME_TOO_LARGE: u16 = ErrorCode::FrameTooLarge as u16;
const SLOW_CONSUMER: u16 = ErrorCode::SlowConsumer as u16;
const TIMEOUT: u16 = ErrorCode::Timeout as u16;
const TOO_MANY_ROOMS: u16 = ErrorCode::TooManyRooms as u16;

/// Growth of the server's resident memory tolerated during the attacks that queue nothing
/// big: their cost per attacker is a connection's fixed state, or nothing once it is closed.
const RSS_GROWTH_KIB_MAX: u64 = 16 * 1024;

/// Growth tolerated during the publisher flood: the output limit (1 MiB) per slow consumer
/// plus frames in flight, with room for allocator slack.
const FLOOD_RSS_GROWTH_KIB_MAX: u64 = 64 * 1024;

/// Longest wait for an attacker's fatal error once it is due: well above the timeouts the tests
/// set, well below the defaults a missing protection would fall back to (10 s and more).
const FATAL_WITHIN: Duration = Duration::from_secs(5);

/// The handshake timeout the slowloris and half-open tests run with.
const HANDSHAKE_TIMEOUT_MS: u64 = 500;

/// Tracks the server's RSS against a bound from a starting point.
struct RssWatch<'a> {
    server: &'a Server,
    start_kib: u64,
    max_kib: u64,
    growth_kib_max: u64,
}

impl<'a> RssWatch<'a> {
    fn start(server: &'a Server, growth_kib_max: u64) -> Self {
        let start_kib = server.rss_kib();
        Self { server, start_kib, max_kib: start_kib, growth_kib_max }
    }

    /// Samples the RSS and fails the test at once if it is over the bound.
    fn sample(&mut self, when: &str) {
        let now = self.server.rss_kib();
        self.max_kib = self.max_kib.max(now);
        assert!(
            now <= self.start_kib + self.growth_kib_max,
            "{when}: server RSS grew from {} KiB to {now} KiB (bound: +{} KiB)",
            self.start_kib,
            self.growth_kib_max
        );
    }

    fn report(&mut self, what: &str) {
        self.sample(what);
        eprintln!("{what}: RSS start {} KiB, max {} KiB", self.start_kib, self.max_kib);
    }
}

/// Reads `conn` until `ERROR code` then end of stream, skipping well-formed deliveries and
/// keepalive `PING`s; returns how long that took. Fails if that takes over [`FATAL_WITHIN`]
/// (deliveries keep coming to a member of a busy room, so the read timeout alone is no bound).
fn expect_fatal_within(conn: &mut RawConn, code: u16, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < FATAL_WITHIN, "{what}: no ERROR {code} within {FATAL_WITHIN:?}");
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Error { code: got, .. })) if got == code => break,
            Ok(RawRead::Frame(ServerFrame::Message(_) | ServerFrame::Ping(_))) => {}
            other => panic!("{what}: expected ERROR {code}, got {other:?} after {:?}", started.elapsed()),
        }
    }
    let took = started.elapsed();
    match conn.read() {
        Ok(RawRead::Eof) => {}
        // The server closes for good after a short linger; unread bytes of ours mean a reset.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected end of stream after ERROR {code}, got {other:?}"),
    }
    took
}

/// Joins `room` on a raw connection and waits for `JOINED`, skipping deliveries from `room`
/// that come before it. On a multi-core server a `JOIN` that creates the room on its core holds
/// `JOINED` until the other cores acknowledge the room, but the connection is a member already,
/// so a message forwarded meanwhile can reach it first (support's `RawConn::join` refuses that;
/// see protocol.md, routing). Messages before `JOINED` are outside the delivery guarantees.
fn join_room(conn: &mut RawConn, room: &str) {
    conn.send_frame(&ClientFrame::Join { flags: 0, room: Bytes::copy_from_slice(room.as_bytes()) });
    loop {
        match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Joined(r))) if r == room.as_bytes() => return,
            Ok(RawRead::Frame(ServerFrame::Message(m))) if m.room == room.as_bytes() => {}
            other => panic!("expected JOINED {room}, got {other:?}"),
        }
    }
}

// ----- (a) slowloris -----

/// Slowloris clients run at once.
const SLOWLORIS_CLIENTS: usize = 20;
/// A slowloris sends one byte of its `HELLO` this often: its 18-byte `HELLO` would take 3.6 s,
/// far beyond the handshake timeout.
const SLOWLORIS_BYTE_EVERY: Duration = Duration::from_millis(200);

/// One slowloris: drips its `HELLO` from a second thread while this one waits for the verdict.
/// Returns the time from connecting to the `TIMEOUT` error and the bytes it managed to send.
fn slowloris(addr: SocketAddr, name: &str) -> (Duration, usize) {
    let mut conn = RawConn::connect(addr);
    let connected = Instant::now();
    let mut writer = conn.stream.try_clone().expect("clone the slowloris socket");
    let cut = Arc::new(AtomicBool::new(false));
    let dripper = {
        let (cut, hello) = (cut.clone(), encode(&hello(name)));
        thread::spawn(move || {
            let mut sent = 0;
            for byte in hello {
                if cut.load(Ordering::Acquire) || writer.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                thread::sleep(SLOWLORIS_BYTE_EVERY);
            }
            sent
        })
    };
    let verdict = match conn.read() {
        Ok(RawRead::Frame(ServerFrame::Error { code: TIMEOUT, .. })) => connected.elapsed(),
        other => panic!("{name}: expected ERROR {TIMEOUT} TIMEOUT, got {other:?} after {:?}", connected.elapsed()),
    };
    cut.store(true, Ordering::Release);
    match conn.read() {
        Ok(RawRead::Eof) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{name}: expected end of stream after TIMEOUT, got {other:?}"),
    }
    (verdict, dripper.join().expect("dripper thread"))
}

#[test]
fn slowloris_dripping_its_hello_is_cut_by_the_handshake_timeout() {
    let timeout = HANDSHAKE_TIMEOUT_MS.to_string();
    let server = Server::start(&["--handshake-timeout-ms", &timeout]);
    let addr = server.addr();
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);

    let attackers: Vec<_> =
        (0..SLOWLORIS_CLIENTS).map(|i| thread::spawn(move || slowloris(addr, &format!("slowloris{i}")))).collect();
    let hello_len = encode(&hello("slowloris0")).len();
    for (i, attacker) in attackers.into_iter().enumerate() {
        let (took, sent) = attacker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        assert!(took >= timeout, "slowloris{i} was cut after {took:?}, before the {timeout:?} timeout");
        assert!(took < timeout + Duration::from_secs(2), "slowloris{i} was cut only after {took:?}");
        assert!(sent < hello_len, "slowloris{i} sent its whole HELLO ({sent} bytes) before the cut");
    }
    rss.report("slowloris");
    bystander.finish();
}

// ----- (b) half-open connections -----

/// Connections that connect and never send a byte.
const SILENT_CONNECTIONS: usize = 200;

/// A connection that never sends a byte is a person with `nc` who only listens: the server
/// greets it in text after the line-mode silence and keeps it, however long it stays silent —
/// the handshake timeout is for binary clients that started a `HELLO`. What protects the server
/// from many such connections is what bounds any reader: its fixed state, the connection limit,
/// the output limit. This test holds 200 of them past the handshake timeout, proves each is
/// greeted (text, never a binary byte) and still served, then hangs them all up and checks the
/// server let go of every one, within the memory bound.
#[test]
fn silent_connections_are_greeted_as_listeners_kept_past_the_handshake_timeout_and_released() {
    let timeout = HANDSHAKE_TIMEOUT_MS.to_string();
    let server = Server::start(&["--threads", "1", "--handshake-timeout-ms", &timeout, "--metrics", "127.0.0.1:0"]);
    let addr = server.addr();
    let metrics = metrics_addr(&server);
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);

    let opened = Instant::now();
    let mut silent: Vec<LineConn> = (0..SILENT_CONNECTIONS).map(|_| LineConn::connect(addr)).collect();
    let last_opened = Instant::now();
    rss.sample("with the silent connections open");
    // One core takes them in accept order, which is connect order: the i-th is greeted with i
    // others. The greeting is each one's first bytes: a binary frame before it fails the match.
    let names: Vec<String> = silent.iter_mut().enumerate().map(|(i, conn)| conn.expect_greeting(i)).collect();
    let greeted = opened.elapsed();
    for (i, conn) in silent.iter_mut().enumerate() {
        for later in &names[i + 1..] {
            conn.expect_exact(&format!("* {later} joined\n"));
        }
    }
    eprintln!("{SILENT_CONNECTIONS} silent connections greeted within {greeted:?}");

    // Let the handshake timeout pass for every one of them (this wait is the scenario: nothing
    // is to happen in it), then prove each is still open and still in the lobby.
    let quiet_until = last_opened + Duration::from_millis(2 * HANDSHAKE_TIMEOUT_MS);
    if let Some(wait) = quiet_until.checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
    let mut announcer = connect_joined(addr, "announcer", "lobby");
    announcer.publish("lobby", b"still there?").expect("publish");
    for conn in &mut silent {
        conn.expect_exact("* announcer joined\n");
        conn.expect_exact("announcer: still there?\n");
    }
    assert_nothing_before_pong(&mut announcer, 1);
    wait_for_metric(metrics, "fanout_connections", (SILENT_CONNECTIONS + 3) as u64);
    rss.sample("with the silent connections greeted and served");

    drop(silent);
    drop(announcer);
    // The server has let go of every one of them: only the two bystanders are left.
    wait_for_metric(metrics, "fanout_connections", 2);
    rss.report("silent listeners");
    bystander.finish();
}

/// Greeted connections that then go silent: never a byte, not even a `PONG`.
const SILENT_GREETED: usize = 50;
/// The keepalive the silent-after-HELLO test runs with: a silent client is cut after about 2 s,
/// and a good client may be stalled (by the scheduler) for up to 1 s without being cut.
const PING_INTERVAL_MS: u64 = 1000;
const PING_TIMEOUT_MS: u64 = 1000;

/// A greeted client whose sending side is dead: it reads (each in its own thread, so none
/// builds a backlog that the server would drop at its linger deadline) but never writes.
#[test]
fn greeted_connections_that_go_silent_are_pinged_then_closed() {
    let (interval, timeout) = (PING_INTERVAL_MS.to_string(), PING_TIMEOUT_MS.to_string());
    let server = Server::start(&["--ping-interval-ms", &interval, "--ping-timeout-ms", &timeout]);
    let addr = server.addr();
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);
    let started = Instant::now();
    let silent: Vec<_> = (0..SILENT_GREETED)
        .map(|i| {
            let mut conn = RawConn::greeted(addr, &format!("silent{i}"));
            join_room(&mut conn, "bystanders");
            thread::spawn(move || {
                // A PING comes first (deliveries from the room may come before it), then TIMEOUT.
                let deadline = Instant::now() + Duration::from_millis(PING_INTERVAL_MS) + FATAL_WITHIN;
                loop {
                    assert!(Instant::now() < deadline, "silent{i}: no PING after {PING_INTERVAL_MS} ms of silence");
                    match conn.read() {
                        Ok(RawRead::Frame(ServerFrame::Ping(_))) => break,
                        Ok(RawRead::Frame(ServerFrame::Message(_))) => {}
                        other => panic!("silent{i}: expected PING, got {other:?}"),
                    }
                }
                expect_fatal_within(&mut conn, TIMEOUT, &format!("silent{i}"));
            })
        })
        .collect();
    for reader in silent {
        reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    let took = started.elapsed();
    let bound = Duration::from_millis(PING_INTERVAL_MS + PING_TIMEOUT_MS) + Duration::from_secs(3);
    assert!(took < bound, "closing the silent clients took {took:?}");
    rss.report("half-open after HELLO");
    // The bystanders, pinged too, answered and were kept.
    bystander.finish();
}

// ----- (c) a 4 GiB frame declaration -----

/// Attackers that declare a 4 GiB frame and stall.
const HUGE_STALLERS: usize = 50;
/// Attackers that declare a 4 GiB frame and then keep sending "body" bytes.
const HUGE_STREAMERS: usize = 8;
/// Bytes each streamer tries to push after its header.
const HUGE_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// "At once": far below every timeout the server has by default (10 s and more).
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

#[test]
fn a_4_gib_frame_declaration_is_refused_at_once_and_costs_no_memory() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);
    let header = [0xff, 0xff, 0xff, 0xff, 0x04];

    for i in 0..HUGE_STALLERS {
        let mut mallory = RawConn::greeted(addr, &format!("mallory{i}"));
        join_room(&mut mallory, "bystanders");
        mallory.send(&header);
        // Then nothing: the server must not wait for the body.
        let took = expect_fatal_within(&mut mallory, FRAME_TOO_LARGE, &format!("mallory{i}"));
        assert!(took < REFUSED_WITHIN, "mallory{i} was refused only after {took:?}");
        rss.sample(&format!("after mallory{i}"));
    }

    // Streamers: the server reads and drops whatever follows a refused header.
    let streamers: Vec<_> = (0..HUGE_STREAMERS)
        .map(|i| {
            thread::spawn(move || {
                let mut mallory = RawConn::greeted(addr, &format!("streamer{i}"));
                join_room(&mut mallory, "bystanders");
                mallory.send(&header);
                let mut writer = mallory.stream.try_clone().expect("clone");
                let pusher = thread::spawn(move || {
                    let chunk = vec![0xee; 64 * 1024];
                    let mut pushed = 0;
                    while pushed < HUGE_STREAM_BYTES && writer.write_all(&chunk).is_ok() {
                        pushed += chunk.len();
                    }
                    pushed
                });
                expect_fatal_within(&mut mallory, FRAME_TOO_LARGE, &format!("streamer{i}"));
                drop(mallory);
                pusher.join().expect("pusher")
            })
        })
        .collect();
    let mut pushed_total = 0;
    for streamer in streamers {
        pushed_total += streamer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        rss.sample("while streamers push");
    }
    eprintln!("streamers pushed {pushed_total} bytes after their 4 GiB headers");
    rss.report("4 GiB declarations");
    bystander.finish();
}

// ----- (d) join floods -----

fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("metrics on http://", IO_TIMEOUT).expect("the server announces its metrics address");
    let at = line.find("http://").expect("an http address") + "http://".len();
    let rest = &line[at..];
    rest[..rest.find('/').expect("a path")].parse().expect("a socket address")
}

/// The value of `series` (name and labels, exactly) in a scrape of `/metrics`.
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: fanout\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the metrics response");
    let line = response.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    let line = line.unwrap_or_else(|| panic!("no series {series} in:\n{response}"));
    line[series.len() + 1..].parse().expect("an integer value")
}

/// Polls `series` until it equals `wanted` (metrics are published once per loop turn).
fn wait_for_metric(addr: SocketAddr, series: &str, wanted: u64) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let value = metric(addr, series);
        if value == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {value}, expected {wanted}");
        // A bounded poll of a gauge the server updates on its own schedule.
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a `JOIN` for each room in one write from another thread (so that neither side waits
/// on the other's buffers), and returns the rooms joined and the count of `TOO_MANY_ROOMS`
/// refusals, in the order the replies came. Deliveries from rooms already joined are skipped.
fn join_all(client: &mut Client, rooms: &[String]) -> (Vec<String>, usize) {
    let mut batch = Vec::new();
    for room in rooms {
        batch.extend(encode(&ClientFrame::Join { flags: 0, room: Bytes::copy_from_slice(room.as_bytes()) }));
    }
    let sender = client.sender();
    let writer = thread::spawn(move || sender.send_raw(&batch).expect("send the JOINs"));
    let (mut joined, mut refused) = (Vec::new(), 0);
    while joined.len() + refused < rooms.len() {
        match client.next_event() {
            Ok(Event::Joined(room)) => joined.push(String::from_utf8(room.to_vec()).expect("ASCII room")),
            Ok(Event::Error { code: TOO_MANY_ROOMS, .. }) => refused += 1,
            Ok(Event::Message(_)) => {}
            other => panic!("after {} JOINED and {refused} refusals: unexpected {other:?}", joined.len()),
        }
    }
    writer.join().expect("writer thread");
    (joined, refused)
}

const FLOOD_ROOMS: usize = 10_000;

#[test]
fn a_client_joining_ten_thousand_rooms_is_held_to_the_per_connection_limit() {
    let server = Server::start(&["--threads", "1", "--metrics", "127.0.0.1:0"]);
    let addr = server.addr();
    let metrics = metrics_addr(&server);
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);
    wait_for_metric(metrics, "fanout_rooms", 1);

    // The flooder is in the bystanders' room too, and stays a good member of it.
    let mut flooder = connect_joined(addr, "flooder", "bystanders");
    let limit = fanout::limits::ROOMS_PER_CONNECTION_MAX;
    let rooms: Vec<String> = (0..FLOOD_ROOMS).map(|r| format!("flood-{r:05}")).collect();
    let (joined, refused) = join_all(&mut flooder, &rooms);
    assert_eq!((joined.len(), refused), (limit - 1, FLOOD_ROOMS - (limit - 1)), "JOINED vs TOO_MANY_ROOMS");
    assert_eq!(joined, rooms[..limit - 1], "the first rooms are the ones joined, in order");
    flooder.round_trip(1).expect("the flooder is still connected");
    // The server holds the bystanders' room and the flooder's 63, not 10,000.
    wait_for_metric(metrics, "fanout_rooms", limit as u64);
    rss.sample("after the join flood");

    // Its memberships work: a message to its last room reaches it.
    let mut neighbour = connect_joined(addr, "neighbour", &rooms[limit - 2]);
    neighbour.publish(&rooms[limit - 2], b"hello flooder").unwrap();
    loop {
        let m = flooder.next_message().expect("a message");
        if m.room == rooms[limit - 2].as_bytes() {
            assert_eq!(m.payload, &b"hello flooder"[..]);
            break;
        }
    }
    drop(flooder);
    neighbour.leave(&rooms[limit - 2]).unwrap();
    wait_for_metric(metrics, "fanout_rooms", 1);
    rss.report("join flood");
    bystander.finish();
}

/// Clients joining up to the limit each, with `--max-rooms-per-connection` of this.
const CROWD_CLIENTS: usize = 50;
const CROWD_ROOMS_PER_CONNECTION: usize = 16;
/// Distinct rooms each crowd client tries.
const CROWD_ROOMS_TRIED: usize = 40;

#[test]
fn many_clients_joining_up_to_the_limit_hold_at_most_clients_times_limit_rooms() {
    let limit = CROWD_ROOMS_PER_CONNECTION.to_string();
    let server = Server::start(&["--threads", "1", "--metrics", "127.0.0.1:0", "--max-rooms-per-connection", &limit]);
    let addr = server.addr();
    let metrics = metrics_addr(&server);
    let bystander = Bystander::start(addr, "bystanders");
    let mut rss = RssWatch::start(&server, RSS_GROWTH_KIB_MAX);

    let mut crowd = Vec::new();
    for c in 0..CROWD_CLIENTS {
        let mut client = connect(addr, &format!("crowd{c}"));
        let rooms: Vec<String> = (0..CROWD_ROOMS_TRIED).map(|r| format!("c{c}-r{r}")).collect();
        let (joined, refused) = join_all(&mut client, &rooms);
        let expected = (CROWD_ROOMS_PER_CONNECTION, CROWD_ROOMS_TRIED - CROWD_ROOMS_PER_CONNECTION);
        assert_eq!((joined.len(), refused), expected, "crowd{c}: JOINED vs TOO_MANY_ROOMS");
        assert_eq!(joined, rooms[..CROWD_ROOMS_PER_CONNECTION], "crowd{c}: joined rooms");
        crowd.push(client);
    }
    // clients x limit, plus the bystanders' room: every client holds exactly its limit.
    let bound = (CROWD_CLIENTS * CROWD_ROOMS_PER_CONNECTION) as u64 + 1;
    wait_for_metric(metrics, "fanout_rooms", bound);
    rss.sample("with the crowd's rooms");
    drop(crowd);
    wait_for_metric(metrics, "fanout_rooms", 1);
    rss.report("crowd of joiners");
    bystander.finish();
}

// ----- (e) a publisher flooding slow consumers -----

const FLOOD_OUTPUT_BYTES_MAX: usize = 1024 * 1024;
const FLOOD_PAYLOAD_BYTES: usize = 16 * 1024;
/// Most messages the flood publishes; it stops earlier once every slow consumer is cut.
const FLOOD_MESSAGES_MAX: u64 = 20_000;
/// The publisher stays this many messages ahead of the fast consumer at most (512 KiB), so
/// the fast consumer is never near the output limit however the threads are scheduled.
const FLOOD_WINDOW: u64 = (512 * 1024 / FLOOD_PAYLOAD_BYTES) as u64;
const SLOW_CONSUMERS: usize = 4;
/// A slow consumer reads this much, then sleeps: about 400 KiB/s.
const SLOW_READ_BYTES: usize = 4096;
const SLOW_READ_PAUSE: Duration = Duration::from_millis(10);

fn flood_payload(seq: u64) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((8..FLOOD_PAYLOAD_BYTES).map(|i| (i as u64 ^ seq) as u8));
    p
}

/// Ends the flood's readers if the publishing side fails, so a failing test fails fast instead
/// of leaving readers waiting for a flood that stopped.
struct AbortOnPanic<'a> {
    abort: &'a AtomicBool,
    fast: fanout::client::Sender,
}

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.abort.store(true, Ordering::Release);
            let _ = self.fast.shutdown();
        }
    }
}

/// What a slow consumer saw.
#[derive(Debug)]
struct SlowOutcome {
    messages: u64,
    cut: bool,
}

/// Reads slowly (the behaviour under test, hence the sleeps) until the server logs that it cut
/// this session, then drains at full speed: a gap-free prefix of the flood, `SLOW_CONSUMER`,
/// end of stream.
fn slow_consumer(
    server: &Server,
    mut conn: TcpStream,
    session_id: u64,
    cut_count: &AtomicUsize,
    abort: &AtomicBool,
) -> SlowOutcome {
    let needle = format!("(session {session_id}): SLOW_CONSUMER");
    let decoder = FrameDecoder::default();
    let mut input = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut messages = 0;
    let mut stream_id = None;
    let mut cut_seen = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if abort.load(Ordering::Acquire) {
            return SlowOutcome { messages, cut: false };
        }
        if !cut_seen && server.wait_for_log(&needle, Duration::ZERO).is_some() {
            cut_seen = true;
            cut_count.fetch_add(1, Ordering::AcqRel);
        }
        let want = if cut_seen { chunk.len() } else { SLOW_READ_BYTES };
        let n = match conn.read(&mut chunk[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("slow consumer {session_id} after {messages} messages: {e}"),
        };
        if n == 0 {
            assert!(input.is_empty(), "slow consumer {session_id}: stream ended inside a frame");
            return SlowOutcome { messages, cut: false };
        }
        input.extend_from_slice(&chunk[..n]);
        while let Some(raw) = decoder.decode(&mut input).expect("a well-formed stream") {
            match ServerFrame::parse(raw).expect("a well-formed frame") {
                ServerFrame::Message(m) => {
                    assert_eq!(*stream_id.get_or_insert(m.stream), m.stream, "slow consumer: stream changed");
                    assert_eq!(m.seq, messages + 1, "slow consumer {session_id}: gap after {messages}");
                    assert!(m.payload == flood_payload(m.seq), "slow consumer: payload {} corrupted", m.seq);
                    messages += 1;
                }
                ServerFrame::Error { code: SLOW_CONSUMER, .. } => {
                    let mut rest = Vec::new();
                    match conn.read_to_end(&mut rest) {
                        Ok(_) => assert!(input.is_empty() && rest.is_empty(), "bytes after SLOW_CONSUMER"),
                        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "after SLOW_CONSUMER: {e}"),
                    }
                    return SlowOutcome { messages, cut: true };
                }
                other => panic!("slow consumer {session_id}: unexpected {other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "slow consumer {session_id} still reading after 15 s");
        if !cut_seen {
            thread::sleep(SLOW_READ_PAUSE);
        }
    }
}

#[test]
fn a_publisher_flooding_slow_consumers_gets_them_cut_and_the_fast_one_gets_everything() {
    let limit = FLOOD_OUTPUT_BYTES_MAX.to_string();
    let server = Server::start(&["--threads", "1", "--max-output-bytes", &limit]);
    let addr = server.addr();
    // Good clients in another room must not notice either.
    let bystander = Bystander::start(addr, "bystanders");

    let mut slow = Vec::new();
    for i in 0..SLOW_CONSUMERS {
        let mut conn = RawConn::connect(addr);
        conn.send_frame(&hello(&format!("slow{i}")));
        let session_id = match conn.read() {
            Ok(RawRead::Frame(ServerFrame::Welcome(w))) => w.session_id,
            other => panic!("slow{i}: expected WELCOME, got {other:?}"),
        };
        conn.join("flood");
        assert!(conn.leftover().is_empty());
        slow.push((conn.stream, session_id));
    }
    let mut fast = connect_joined(addr, "fast", "flood");
    let publisher = connect_joined(addr, "firehose", "flood");
    let mut rss = RssWatch::start(&server, FLOOD_RSS_GROWTH_KIB_MAX);
    let progress = Progress::new(1);
    let cut_count = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let fast_sender = fast.sender();

    let (sent, slow_outcomes) = thread::scope(|scope| {
        let _abort_on_panic = AbortOnPanic { abort: &abort, fast: fast_sender };
        let fast_reader = scope.spawn(|| {
            let mut stream_id = None;
            let mut got = 0u64;
            loop {
                let m = fast.next_message().unwrap_or_else(|e| panic!("fast consumer after {got}: {e}"));
                assert_eq!(*stream_id.get_or_insert(m.stream), m.stream, "fast consumer: stream changed");
                assert_eq!(m.seq, got + 1, "fast consumer: out of order or lost");
                if m.payload == b"end"[..] {
                    return got;
                }
                assert!(m.payload == flood_payload(m.seq), "fast consumer: payload {} differs", m.seq);
                got += 1;
                progress.set(0, got);
            }
        });
        let slow_readers: Vec<_> = slow
            .drain(..)
            .map(|(conn, session_id)| {
                let (server, cut_count, abort) = (&server, &cut_count, &abort);
                scope.spawn(move || slow_consumer(server, conn, session_id, cut_count, abort))
            })
            .collect();

        let mut sent = 0;
        while sent < FLOOD_MESSAGES_MAX && cut_count.load(Ordering::Acquire) < SLOW_CONSUMERS {
            assert!(
                progress.wait_min((sent + 1).saturating_sub(FLOOD_WINDOW), IO_TIMEOUT),
                "fast consumer stalled at {} of {sent}",
                progress.min()
            );
            sent += 1;
            publisher.publish("flood", &flood_payload(sent)).expect("publish");
            if sent % 64 == 0 {
                rss.sample(&format!("after {sent} flood messages"));
            }
        }
        publisher.publish("flood", b"end").expect("publish end");
        let got = fast_reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        assert_eq!(got, sent, "the fast consumer got {got} of {sent} messages");
        let outcomes: Vec<SlowOutcome> =
            slow_readers.into_iter().map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect();
        (sent, outcomes)
    });

    eprintln!("flood: {sent} messages of {FLOOD_PAYLOAD_BYTES} bytes; slow consumers: {slow_outcomes:?}");
    for (i, outcome) in slow_outcomes.iter().enumerate() {
        assert!(outcome.cut, "slow consumer {i} was not cut with SLOW_CONSUMER: {outcome:?}");
        assert!(outcome.messages < sent, "slow consumer {i} got everything, so it was not slow");
    }
    rss.report("publisher flood");
    bystander.finish();
}
