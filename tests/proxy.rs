//! The fault-injecting proxy of the cluster tests, tested alone in front of an echo server:
//! exact relaying, partition and heal, delay, blackhole, and a bounded drop.

#[path = "support/proxy.rs"]
mod proxy;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use proxy::Proxy;

/// Longest any blocking read in these tests may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cut connection may take to see end of stream (the proxy polls every 20 ms).
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// Starts an echo server on a free port; its threads end when their connections end (the
/// listener thread lives as long as the test process).
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || echo(stream));
        }
    });
    addr
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Writes `message` and expects exactly it back.
fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("write through the proxy");
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).expect("read the echo through the proxy");
    assert_eq!(back, message, "echo through the proxy");
}

/// Polls `condition` until it holds or `timeout` passes. The proxy's counters have no event to
/// wait on; this is a bounded poll, not synchronisation.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Expects end of stream or a reset on `stream` within [`CUT_WITHIN`].
fn assert_cut(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(CUT_WITHIN * 2)).expect("set read timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("expected end of stream or a reset, got {other:?}"),
    }
    assert!(started.elapsed() < CUT_WITHIN, "cut seen only after {:?}", started.elapsed());
}

/// Expects a new connection through `addr` to be unable to exchange a byte.
fn assert_no_exchange(addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return };
    stream.set_read_timeout(Some(Duration::from_secs(1))).expect("set read timeout");
    let _ = stream.write_all(b"anyone there?");
    let mut buf = [0u8; 64];
    if let Ok(n @ 1..) = stream.read(&mut buf) {
        panic!("{n} bytes came back through a partitioned proxy");
    }
}

/// Expects nothing at all — no byte, no end of stream, no reset — on `stream` for `quiet`.
fn assert_silent(stream: &mut TcpStream, quiet: Duration) {
    stream.set_read_timeout(Some(quiet)).expect("set read timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("expected silence for {quiet:?}, got {other:?}"),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
}

/// Test data that differs per connection and per position.
fn pattern(conn: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + conn * 7 + i / 251) % 256) as u8).collect()
}

#[test]
fn relays_bytes_both_ways_exactly_on_several_connections() {
    const CONNS: usize = 4;
    const LEN: usize = 96 * 1024;
    let proxy = Proxy::start(echo_server());
    let streams: Vec<TcpStream> = (0..CONNS).map(|_| connect(proxy.addr())).collect();
    assert!(wait_until(IO_TIMEOUT, || proxy.connections() == CONNS), "{} connections open", proxy.connections());

    let (done_tx, done_rx) = mpsc::channel();
    let readers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(conn, mut stream)| {
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone stream");
                let sent = pattern(conn, LEN);
                let writing = thread::spawn(move || {
                    // Uneven writes, so chunk boundaries differ from the proxy's reads.
                    for piece in sent.chunks(7_000) {
                        writer.write_all(piece).expect("write through the proxy");
                    }
                    // Half-close: the echo server sees end of stream only through the proxy.
                    writer.shutdown(Shutdown::Write).expect("shut down the write half");
                });
                let mut back = Vec::new();
                stream.read_to_end(&mut back).expect("read the echo to end of stream");
                writing.join().expect("writer panicked");
                assert!(back == pattern(conn, LEN), "connection {conn}: {} bytes came back, not the same", back.len());
                let _ = done_tx.send(conn);
            })
        })
        .collect();
    for _ in 0..CONNS {
        done_rx.recv_timeout(IO_TIMEOUT * 2).expect("a connection did not finish in time");
    }
    for reader in readers {
        reader.join().expect("connection thread panicked");
    }
    assert!(proxy.bytes_relayed() >= (2 * CONNS * LEN) as u64, "bytes relayed: {}", proxy.bytes_relayed());
    assert!(wait_until(IO_TIMEOUT, || proxy.connections() == 0), "{} connections still open", proxy.connections());
}

#[test]
fn partition_cuts_open_connections_refuses_new_ones_and_heal_restores() {
    let proxy = Proxy::start(echo_server());
    let mut old = connect(proxy.addr());
    round_trip(&mut old, b"before the partition");
    assert!(wait_until(IO_TIMEOUT, || proxy.connections() == 1));

    proxy.partition();
    assert!(proxy.is_partitioned());
    assert_eq!(proxy.connections(), 0, "partition forgets every connection at once");
    assert_cut(&mut old);
    assert_no_exchange(proxy.addr());
    assert_no_exchange(proxy.addr());
    assert_eq!(proxy.connections(), 0, "nothing is relayed while partitioned");

    proxy.heal();
    let mut new = connect(proxy.addr());
    round_trip(&mut new, b"after the heal");
    round_trip(&mut new, &pattern(1, 20_000));
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn partition_cuts_a_connection_in_full_flow() {
    let proxy = Proxy::start(echo_server());
    let mut stream = connect(proxy.addr());
    round_trip(&mut stream, b"warm up");
    let mut writer = stream.try_clone().expect("clone stream");
    writer.set_write_timeout(Some(Duration::from_millis(100))).expect("set write timeout");
    // Writes until the cut shows as an error, at most for a bounded time.
    let writing = thread::spawn(move || {
        let deadline = Instant::now() + IO_TIMEOUT;
        let piece = pattern(2, 8192);
        while Instant::now() < deadline {
            match writer.write(&piece) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0;
    while echoed < 256 * 1024 {
        match stream.read(&mut buf) {
            Ok(n @ 1..) => echoed += n,
            other => panic!("echo stopped before the partition: {other:?}"),
        }
    }
    proxy.partition();
    // Drain whatever was already in flight, then end of stream or a reset.
    let deadline = Instant::now() + CUT_WITHIN;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(Instant::now() < deadline, "bytes still flowing after the partition"),
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
            Err(e) => panic!("no end of stream after the partition: {e}"),
        }
    }
    assert!(writing.join().expect("writer panicked"), "the writer never saw the cut");
    assert_eq!(proxy.connections(), 0);
}

#[test]
fn delay_holds_every_chunk_in_each_direction() {
    const DELAY: Duration = Duration::from_millis(200);
    let proxy = Proxy::start(echo_server());
    let mut stream = connect(proxy.addr());
    round_trip(&mut stream, b"fast");

    proxy.set_delay(DELAY);
    let started = Instant::now();
    round_trip(&mut stream, b"slow");
    let rtt = started.elapsed();
    assert!(rtt >= 2 * DELAY, "round trip took {rtt:?}, less than twice the delay {DELAY:?}");

    proxy.set_delay(Duration::ZERO);
    round_trip(&mut stream, b"fast again");
    let mut other = connect(proxy.addr());
    round_trip(&mut other, &pattern(3, 10_000));
}

#[test]
fn blackhole_swallows_bytes_without_closing_and_new_connections_flow_after_it() {
    let proxy = Proxy::start(echo_server());
    let mut before = connect(proxy.addr());
    round_trip(&mut before, b"before the blackhole");

    proxy.set_blackhole(true);
    before.write_all(b"into the void").expect("writes still succeed in a blackhole");
    assert_silent(&mut before, Duration::from_millis(300));
    let mut during = connect(proxy.addr());
    during.write_all(b"also into the void").expect("writes succeed on a new connection too");
    assert_silent(&mut during, Duration::from_millis(300));
    assert_eq!(proxy.connections(), 2, "blackholed connections stay open");

    proxy.set_blackhole(false);
    let mut after = connect(proxy.addr());
    round_trip(&mut after, b"after the blackhole");
    // Connections that lost bytes stay silent rather than deliver a stream with a hole in it.
    before.write_all(b"still there?").expect("write");
    assert_silent(&mut before, Duration::from_millis(100));
    assert_eq!(proxy.connections(), 3);
}

#[test]
fn blackhole_hides_a_close_from_the_other_side() {
    let target = TcpListener::bind("127.0.0.1:0").expect("bind target");
    let proxy = Proxy::start(target.local_addr().expect("target address"));
    let client = connect(proxy.addr());
    let (mut upstream, _) = target.accept().expect("accept the proxied connection");
    assert!(wait_until(IO_TIMEOUT, || proxy.connections() == 1));

    proxy.set_blackhole(true);
    drop(client);
    upstream.write_all(b"hello?").expect("writing to a vanished peer through a blackhole succeeds");
    assert_silent(&mut upstream, Duration::from_millis(300));
    assert_eq!(proxy.connections(), 1, "the half the client closed is not passed on");

    proxy.partition();
    assert_cut(&mut upstream);
}

#[test]
fn unreachable_target_closes_the_accepted_connection() {
    let target = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    }; // Nothing listens there any more.
    let proxy = Proxy::start(target);
    let mut stream = connect(proxy.addr());
    assert_cut(&mut stream);
    assert_eq!(proxy.connections(), 0);
}

#[test]
fn drop_closes_connections_and_joins_its_threads_quickly() {
    let proxy = Proxy::start(echo_server());
    let mut idle = connect(proxy.addr());
    round_trip(&mut idle, b"idle");
    let mut busy = connect(proxy.addr());
    round_trip(&mut busy, b"busy");
    proxy.set_delay(Duration::from_secs(3));
    busy.write_all(&pattern(4, 50_000)).expect("write");
    assert!(wait_until(IO_TIMEOUT, || proxy.connections() == 2));

    let started = Instant::now();
    drop(proxy);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "dropping the proxy took {took:?}");
    assert_cut(&mut idle);
    assert_cut(&mut busy);
}
