//! Lame-duck drain for a rolling restart: SIGUSR2 takes a node out of service. Its `/healthz`
//! answers 503, it stops accepting, it tells its clients `DRAINING` spread over the drain period
//! (each `FailoverClient` moves to the next node at once and re-joins its rooms), then it exits 0.
//! Two clients that never left the surviving node lose nothing meanwhile.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fanout::client::{ClientOptions, Event};
use fanout::failover::{FailoverClient, FailoverEvent, ReconnectPolicy};
use support::cluster::{secret_file, Node};
use support::{connect_joined, IO_TIMEOUT};

const ROOM: &str = "rolling";
/// The drain period the drained node runs with.
const DRAIN_PERIOD: Duration = Duration::from_millis(1000);
/// Clients on the drained node.
const MOVERS: usize = 3;
/// Messages the survivor's publisher sends, one every [`PUBLISH_EVERY`].
const PUBLISHED: u64 = 1000;
const PUBLISH_EVERY: Duration = Duration::from_millis(3);
/// Slack for the machine on top of the drain period.
const MARGIN: Duration = Duration::from_secs(4);

fn metrics_addr(node: &Node) -> SocketAddr {
    let line = node.server.wait_for_log("metrics on http://", IO_TIMEOUT).expect("a metrics address");
    let at = line.find("http://").expect("an http address") + "http://".len();
    let rest = &line[at..];
    rest[..rest.find('/').expect("a path")].parse().expect("a socket address")
}

/// The status code of `GET /healthz`.
fn healthz(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send a request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[test]
fn a_drained_node_moves_its_clients_and_exits_zero_while_the_survivor_loses_nothing() {
    let secret = secret_file("drain", "rolling restarts");
    let drain_ms = DRAIN_PERIOD.as_millis().to_string();
    let mut a = Node::start(&secret, 1, &[], &["--metrics", "127.0.0.1:0", "--drain-period-ms", &drain_ms]);
    let b = Node::start(&secret, 2, &[a.cluster], &[]);
    a.wait_links_up(1);
    b.wait_links_up(1);
    let metrics = metrics_addr(&a);
    assert_eq!(healthz(metrics), 200, "serving");

    // Two clients that never leave the survivor, and clients of the drained node that can move.
    let mut receiver = connect_joined(b.server.addr(), "receiver", ROOM);
    let mut publisher = connect_joined(b.server.addr(), "publisher", ROOM);
    let policy = ReconnectPolicy { max_attempts: 20, ..ReconnectPolicy::default() };
    let mut movers: Vec<FailoverClient> = (0..MOVERS)
        .map(|i| {
            let addrs = [a.server.addr(), b.server.addr()];
            let mut mover =
                FailoverClient::connect(&addrs, &format!("mover{i}"), &ClientOptions::default(), policy.clone())
                    .expect("a mover connects to the node to be drained");
            mover.join(ROOM).expect("a mover joins");
            assert_eq!(mover.current_addr(), Some(a.server.addr()));
            mover
        })
        .collect();
    // The movers' node and the survivor know of each other's members before anything counts.
    let deadline = Instant::now() + IO_TIMEOUT;
    while publisher.who(ROOM).expect("WHO").total < (2 + MOVERS) as u32 {
        assert!(Instant::now() < deadline, "the survivor never listed the movers");
        thread::sleep(Duration::from_millis(20)); // A bounded poll: presence crosses the link.
    }

    // The survivor's publisher sends a numbered stream throughout the drain.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        thread::spawn(move || {
            for n in 1..=PUBLISHED {
                if stop.load(Ordering::Acquire) {
                    return n - 1;
                }
                publisher.publish(ROOM, &n.to_be_bytes()).expect("publish on the survivor");
                thread::sleep(PUBLISH_EVERY); // Pacing of the load, not synchronisation.
            }
            publisher.round_trip(1).expect("the publisher's last round trip");
            PUBLISHED
        })
    };
    thread::sleep(Duration::from_millis(200)); // Some of the stream before the drain.

    let drained_at = Instant::now();
    a.server.signal("USR2");
    let deadline = drained_at + IO_TIMEOUT;
    while healthz(metrics) != 503 {
        assert!(Instant::now() < deadline, "/healthz never said 503 while draining");
        thread::sleep(Duration::from_millis(10)); // A bounded poll of the endpoint.
    }

    // Every mover is told to move, lands on the survivor and hears the publisher there.
    for (i, mover) in movers.iter_mut().enumerate() {
        mover.set_read_timeout(Some(Duration::from_millis(100))).expect("a read timeout");
        let deadline = drained_at + DRAIN_PERIOD + MARGIN;
        let mut moved = false;
        loop {
            assert!(Instant::now() < deadline, "mover{i}: no failover and delivery within {:?}", DRAIN_PERIOD + MARGIN);
            match mover.next_event() {
                Ok(FailoverEvent::Reconnected(r)) => {
                    assert_eq!(r.addr, b.server.addr(), "mover{i} moved to the survivor");
                    assert!(r.cause.contains("DRAINING"), "mover{i} moved because of DRAINING: {}", r.cause);
                    moved = true;
                }
                Ok(FailoverEvent::Event(Event::Message(_))) if moved => break,
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(e) => panic!("mover{i}: {e}"),
            }
        }
    }
    let status = a.server.wait_exit(DRAIN_PERIOD + MARGIN).expect("the drained node exits");
    assert!(status.success(), "the drained node exited with {status}");
    assert!(a.server.log_text().contains("drained"), "log:\n{}", a.server.log_text());
    println!("MEASURED drain: node exited {:?} after SIGUSR2", drained_at.elapsed());

    // Nothing was lost between the two clients that stayed.
    stop.store(true, Ordering::Release);
    let sent = sender.join().expect("the publisher");
    for n in 1..=sent {
        let m = receiver.next_message().unwrap_or_else(|e| panic!("receiver after {}: {e}", n - 1));
        assert_eq!(m.seq, n, "the survivor's receiver got every message in order");
        assert_eq!(&m.payload[..], &n.to_be_bytes()[..]);
    }
    support::assert_nothing_before_pong(&mut receiver, 9);
}
