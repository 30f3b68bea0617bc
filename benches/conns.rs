//! Connection scale: opens N idle, greeted client connections to a live server (from several
//! 127.x source addresses, past the ephemeral port range) and reports the server's resident
//! memory per connection from /proc.
//!
//! Not a criterion bench (it needs a live server): `cargo bench --bench conns -- ADDR PID N`.
//! This process needs N file descriptors and the server N more. Without arguments it prints
//! how to run it and exits, so `cargo bench` passes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use bytes::BytesMut;
use fanout::codec::{ClientFrame, Hello};
use socket2::{Domain, Socket, Type};

/// Connections per source address: well inside one address's ephemeral port range.
const PER_SOURCE: usize = 20_000;

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(addr), Some(pid), Some(count)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: cargo bench --bench conns -- ADDR SERVER_PID N");
        return;
    };
    let addr: SocketAddr = addr.parse().expect("a server address");
    let count: usize = count.parse().expect("a connection count");
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the descriptor limit: {e}");
    }
    let mut hello = BytesMut::new();
    ClientFrame::Hello(Hello { version: 1, flags: 0, name: "idle".into(), token: "".into() }).encode(&mut hello);
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    for i in 0..count {
        // A fresh source network per run: the last run's TIME_WAIT ports would slow bind().
        let net = 1 + std::process::id() % 200;
        let source: SocketAddr = format!("127.{net}.{}.{}:0", 1 + i / PER_SOURCE / 250, 2 + (i / PER_SOURCE) % 250)
            .parse()
            .expect("a source address");
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        socket.bind(&source.into()).expect("bind a source address");
        if let Err(e) = socket.connect(&addr.into()) {
            eprintln!("connection {i}: {e}; stopping");
            break;
        }
        let mut stream: TcpStream = socket.into();
        stream.write_all(&hello).expect("send HELLO");
        let mut welcome = [0u8; 5 + 18];
        stream.read_exact(&mut welcome).expect("read WELCOME");
        conns.push(stream);
    }
    let after = rss_kib(pid);
    let open = conns.len();
    println!(
        "conns: {open} idle greeted connections in {:.1} s; server RSS {before} KiB -> {after} KiB = {:.0} bytes per connection",
        started.elapsed().as_secs_f64(),
        (after.saturating_sub(before) * 1024) as f64 / open.max(1) as f64
    );
}
