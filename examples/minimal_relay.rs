//! The ceiling that issue 16 measures fanout against: a relay that does only what fan-out
//! cannot avoid. It copies each message to each other member of its room and writes each
//! recipient once per loop turn. It keeps no limits, sessions, presence, metrics, flush holds or
//! error handling beyond closing a connection, so it is not a server anyone should run.
//!
//! It speaks just enough of fanout's protocol for `fanout bench`: `HELLO` (ignored), `JOIN`
//! (answered `JOINED`; `SEND_ONLY` members get nothing), `PUBLISH` (sent on as `MESSAGE`),
//! `PONG` (ignored). `benches/reactors.py` runs it as the variant `minimal`:
//!
//! ```sh
//! cargo build --release --example minimal_relay
//! target/release/examples/minimal_relay 127.0.0.1:7400    # the default address
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use fanout_proto::codec::{
    encode_message, encode_room_reply, frame_type, ClientFrame, FrameDecoder, JOIN_FLAG_SEND_ONLY,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
    name: Bytes,
    dirty: bool,
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7400".into());
    let Ok(addr) = arg.parse::<SocketAddr>() else {
        eprintln!("usage: minimal_relay [ADDR]   (ADDR like 127.0.0.1:7400; got {arg:?})");
        return ExitCode::from(2);
    };
    match relay(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal_relay on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves on `addr` until an error.
fn relay(addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut rooms: HashMap<Bytes, Vec<usize>> = HashMap::new();
    let mut events = Events::with_capacity(1024);
    let mut dirty = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut frame = BytesMut::new();
    let decoder = FrameDecoder::default();
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(Conn {
                        stream,
                        input: BytesMut::new(),
                        output: Vec::new(),
                        name: Bytes::new(),
                        dirty: false,
                    });
                }
                continue;
            }
            let key = event.token().0;
            if event.is_writable() && conns.get(key).is_some_and(|c| !c.output.is_empty()) {
                mark(&mut conns, &mut dirty, key);
            }
            if !event.is_readable() {
                continue;
            }
            let mut closed = false;
            while let Some(conn) = conns.get_mut(key) {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !closed {
                closed = handle_input(key, &decoder, &mut conns, &mut rooms, &mut dirty, &mut frame).is_err();
            }
            if closed {
                conns.remove(key);
                for members in rooms.values_mut() {
                    members.retain(|&member| member != key);
                }
            }
        }
        // One write per recipient per turn.
        for key in dirty.drain(..) {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            match conn.stream.write(&conn.output) {
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => conn.output.clear(),
            }
        }
    }
}

/// Answers the whole frames in `key`'s input; an error closes the connection.
fn handle_input(
    key: usize,
    decoder: &FrameDecoder,
    conns: &mut Slab<Conn>,
    rooms: &mut HashMap<Bytes, Vec<usize>>,
    dirty: &mut Vec<usize>,
    frame: &mut BytesMut,
) -> Result<(), ()> {
    loop {
        let raw = match decoder.decode(&mut conns[key].input) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(()),
            Err(_) => return Err(()),
        };
        match ClientFrame::parse(raw).map_err(|_| ())? {
            ClientFrame::Hello(hello) => conns[key].name = hello.name,
            ClientFrame::Join { flags, room } => {
                frame.clear();
                encode_room_reply(frame, frame_type::JOINED, &room);
                conns[key].output.extend_from_slice(frame);
                mark(conns, dirty, key);
                if flags & JOIN_FLAG_SEND_ONLY == 0 {
                    rooms.entry(room).or_default().push(key);
                }
            }
            ClientFrame::Publish { room, payload } => {
                let Some(members) = rooms.get(&room) else {
                    continue;
                };
                frame.clear();
                encode_message(frame, 0, 0, &room, &conns[key].name, &payload);
                for &member in members {
                    if member != key {
                        conns[member].output.extend_from_slice(frame);
                        mark(conns, dirty, member);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Queues `key` for this turn's writes, once.
fn mark(conns: &mut Slab<Conn>, dirty: &mut Vec<usize>, key: usize) {
    let conn = &mut conns[key];
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}
