//! Peer-link frames: what cores and nodes say to each other over a peer link (the server's
//! `link` module).
//!
//! They use the client frames' header and decoder (types `0x40`..=`0x7F`), so one framing path
//! serves every connection kind. A `FORWARD` body is byte for byte a `MESSAGE` body: the
//! receiving side prepends a `MESSAGE` header and delivers, with no re-encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{frame_type, put_header, PresenceKind, RawFrame};
use crate::error::DecodeError;
use crate::limits::{HEADER_BYTES, ROOM_NAME_BYTES_MAX, USER_NAME_BYTES_MAX};

/// Peer frame type bytes.
pub mod peer_type {
    /// Opens a link: who is speaking.
    pub const LINK_HELLO: u8 = 0x40;
    /// The sender gained (`add = 1`) or lost (`add = 0`) local interest in a room.
    pub const INTEREST: u8 = 0x41;
    /// The receiver has applied the `INTEREST` with this token.
    pub const INTEREST_ACK: u8 = 0x42;
    /// One publish, forwarded once to a peer with interest in its room.
    pub const FORWARD: u8 = 0x43;
    /// Node links only: proof of the cluster secret, bound to the peer's `LINK_HELLO` nonce.
    pub const LINK_AUTH: u8 = 0x44;
    /// Node links only: the nodes the sender is linked to (gossip), so everyone meshes.
    pub const NODES: u8 = 0x45;
    /// A member joined, left or was renamed (or is there, when a link forms): presence.
    pub const PRESENCE: u8 = 0x46;
}

/// Bytes of the random nonce in `LINK_HELLO`.
pub const NONCE_BYTES: usize = 16;

/// Bytes of the MAC in `LINK_AUTH` (HMAC-SHA-256).
pub const MAC_BYTES: usize = 32;

/// Most nodes one `NODES` frame lists.
pub const NODES_PER_FRAME_MAX: usize = 1024;

/// Version of the peer-link frames.
pub const LINK_VERSION: u8 = 2;

/// The fields of `LINK_HELLO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHello {
    /// Link protocol version.
    pub version: u8,
    /// Sender's node.
    pub node_id: u16,
    /// Sender's core.
    pub core_id: u16,
    /// Random per process: tells a restarted node, or a second node with the same id, apart.
    pub instance: u64,
    /// Fresh random bytes the peer must MAC with the cluster secret.
    pub nonce: [u8; NONCE_BYTES],
    /// Where the sender accepts node links (empty between cores).
    pub cluster_addr: Bytes,
}

/// A parsed peer-link frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// Opens a link.
    Hello(LinkHello),
    /// Proves the sender knows the cluster secret.
    Auth([u8; MAC_BYTES]),
    /// Nodes the sender is linked to: (node id, cluster address).
    Nodes(Vec<(u16, Bytes)>),
    /// Interest in a room changed at the sender.
    Interest {
        /// True when the sender's room gained its first member, false when it lost its last.
        add: bool,
        /// Echoed in the `INTEREST_ACK`.
        token: u64,
        /// The room.
        room: Bytes,
    },
    /// The receiver applied the `INTEREST` with `token`.
    InterestAck(u64),
    /// One publish: `body` is a complete `MESSAGE` body and `room` a slice of it.
    Forward {
        /// The room (a slice of `body`).
        room: Bytes,
        /// The `MESSAGE` body to deliver.
        body: Bytes,
    },
    /// A presence change at the sender (or relayed by it), with its owner's version.
    Presence(PeerPresence),
    /// Keepalive probe.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
}

impl PeerFrame {
    /// Parses a raw frame that arrived on a peer link.
    pub fn parse(raw: RawFrame) -> Result<Self, DecodeError> {
        let mut body = raw.body;
        let frame = match raw.kind {
            peer_type::LINK_HELLO => {
                if body.len() < 1 + 2 + 2 + 8 + NONCE_BYTES + 1 {
                    return Err(DecodeError::Malformed("LINK_HELLO is too short"));
                }
                let (version, node_id, core_id, instance) =
                    (body.get_u8(), body.get_u16(), body.get_u16(), body.get_u64());
                let mut nonce = [0u8; NONCE_BYTES];
                body.copy_to_slice(&mut nonce);
                let addr_len = body.get_u8() as usize;
                if body.len() != addr_len {
                    return Err(DecodeError::Malformed("LINK_HELLO.cluster_addr length"));
                }
                Self::Hello(LinkHello { version, node_id, core_id, instance, nonce, cluster_addr: body })
            }
            peer_type::LINK_AUTH => {
                if body.len() != MAC_BYTES {
                    return Err(DecodeError::Malformed("LINK_AUTH must be 32 bytes"));
                }
                let mut mac = [0u8; MAC_BYTES];
                body.copy_to_slice(&mut mac);
                Self::Auth(mac)
            }
            peer_type::NODES => {
                if body.len() < 2 {
                    return Err(DecodeError::Malformed("NODES is too short"));
                }
                let count = body.get_u16() as usize;
                if count > NODES_PER_FRAME_MAX {
                    return Err(DecodeError::Malformed("NODES lists too many nodes"));
                }
                let mut nodes = Vec::with_capacity(count);
                for _ in 0..count {
                    if body.len() < 3 {
                        return Err(DecodeError::Malformed("NODES entry is too short"));
                    }
                    let node_id = body.get_u16();
                    let len = body.get_u8() as usize;
                    if body.len() < len {
                        return Err(DecodeError::Malformed("NODES address length"));
                    }
                    nodes.push((node_id, body.split_to(len)));
                }
                if !body.is_empty() {
                    return Err(DecodeError::Malformed("NODES has trailing bytes"));
                }
                Self::Nodes(nodes)
            }
            peer_type::INTEREST => {
                if body.len() < 9 {
                    return Err(DecodeError::Malformed("INTEREST is too short"));
                }
                let add = match body.get_u8() {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Malformed("INTEREST.add must be 0 or 1")),
                };
                let token = body.get_u64();
                if body.is_empty() || body.len() > ROOM_NAME_BYTES_MAX {
                    return Err(DecodeError::Malformed("INTEREST.room length"));
                }
                Self::Interest { add, token, room: body }
            }
            peer_type::INTEREST_ACK => Self::InterestAck(exact_u64(body, "INTEREST_ACK")?),
            peer_type::FORWARD => {
                let room = forward_room(&body)?;
                Self::Forward { room, body }
            }
            peer_type::PRESENCE => {
                if body.len() < 8 {
                    return Err(DecodeError::Malformed("PRESENCE is too short"));
                }
                let version = body.get_u64();
                let probe = body.first() == Some(&PROBE_KIND);
                let event = if probe {
                    // The client kinds end at 4: parse the rest as if it were one of them.
                    let mut body = BytesMut::from(&body[..]);
                    body[0] = PresenceKind::Joined as u8;
                    super::parse_presence(body.freeze())?
                } else {
                    super::parse_presence(body)?
                };
                if event.room.is_empty() || event.room.len() > ROOM_NAME_BYTES_MAX {
                    return Err(DecodeError::Malformed("PRESENCE.room length"));
                }
                if event.name.is_empty() || event.name.len() > USER_NAME_BYTES_MAX {
                    return Err(DecodeError::Malformed("PRESENCE.name length"));
                }
                let kind = if probe { PeerPresenceKind::Probe } else { PeerPresenceKind::Change(event.kind) };
                let (session_id, room, name) = (event.session_id, event.room, event.name);
                Self::Presence(PeerPresence { version, kind, session_id, room, name })
            }
            frame_type::PING => Self::Ping(exact_u64(body, "PING")?),
            frame_type::PONG => Self::Pong(exact_u64(body, "PONG")?),
            kind if super::is_assigned(kind) => return Err(DecodeError::UnexpectedFrame(kind)),
            kind => return Err(DecodeError::UnknownFrameType(kind)),
        };
        Ok(frame)
    }

    /// Appends this frame, header included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Hello(h) => {
                debug_assert!(h.cluster_addr.len() <= u8::MAX as usize);
                put_header(dst, peer_type::LINK_HELLO, 1 + 2 + 2 + 8 + NONCE_BYTES + 1 + h.cluster_addr.len());
                dst.put_u8(h.version);
                dst.put_u16(h.node_id);
                dst.put_u16(h.core_id);
                dst.put_u64(h.instance);
                dst.put_slice(&h.nonce);
                dst.put_u8(h.cluster_addr.len() as u8);
                dst.put_slice(&h.cluster_addr);
            }
            Self::Auth(mac) => {
                put_header(dst, peer_type::LINK_AUTH, MAC_BYTES);
                dst.put_slice(mac);
            }
            Self::Nodes(nodes) => {
                let len: usize = 2 + nodes.iter().map(|(_, addr)| 3 + addr.len()).sum::<usize>();
                put_header(dst, peer_type::NODES, len);
                dst.put_u16(nodes.len() as u16);
                for (node_id, addr) in nodes {
                    dst.put_u16(*node_id);
                    dst.put_u8(addr.len() as u8);
                    dst.put_slice(addr);
                }
            }
            Self::Interest { add, token, room } => encode_interest(dst, *add, *token, room),
            Self::InterestAck(token) => super::encode_nonce(dst, peer_type::INTEREST_ACK, *token),
            Self::Forward { body, .. } => encode_forward(dst, body),
            Self::Presence(p) => encode_presence(dst, p.version, p.kind, p.session_id, &p.room, &p.name),
            Self::Ping(nonce) => super::encode_nonce(dst, frame_type::PING, *nonce),
            Self::Pong(nonce) => super::encode_nonce(dst, frame_type::PONG, *nonce),
        }
    }
}

/// The wire `kind` of a peer `PRESENCE` that asks for a probe (client kinds end at 4).
const PROBE_KIND: u8 = 5;

/// What a peer `PRESENCE` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPresenceKind {
    /// A member joined, left, was lost or renamed (the client `PRESENCE` kinds 1-4).
    Change(PresenceKind),
    /// Kind 5, peer links only: someone asked the sender for this member's name; the member's
    /// own core is to check it is alive (a `PING` it must answer in time). `version` is 0.
    Probe,
}

impl From<PresenceKind> for PeerPresenceKind {
    fn from(kind: PresenceKind) -> Self {
        Self::Change(kind)
    }
}

impl PeerPresenceKind {
    /// The byte on the wire.
    fn to_u8(self) -> u8 {
        match self {
            Self::Change(kind) => kind as u8,
            Self::Probe => PROBE_KIND,
        }
    }
}

/// The fields of a peer `PRESENCE`: the owner's version of the change, then exactly a client
/// `PRESENCE` body (flat, so code that reads `kind`, `room` and `name` reads either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPresence {
    /// The owner's version of this change: for one member, the highest version wins.
    pub version: u64,
    /// What happened (or a probe request).
    pub kind: PeerPresenceKind,
    /// The member's session id.
    pub session_id: u64,
    /// The room.
    pub room: Bytes,
    /// The member's name (the new one for a rename).
    pub name: Bytes,
}

/// Appends a peer `PRESENCE` frame: `version`, then a client `PRESENCE` body.
pub fn encode_presence(
    dst: &mut BytesMut,
    version: u64,
    kind: PeerPresenceKind,
    session_id: u64,
    room: &[u8],
    name: &[u8],
) {
    put_header(dst, peer_type::PRESENCE, 8 + 1 + 8 + 1 + room.len() + 1 + name.len());
    dst.put_u64(version);
    dst.put_u8(kind.to_u8());
    dst.put_u64(session_id);
    super::put_short_str(dst, room);
    super::put_short_str(dst, name);
}

/// Longest DNS name a cluster address may carry (RFC 1035), before its `:port`.
const DNS_NAME_BYTES_MAX: usize = 253;

/// Longest label of a DNS name.
const DNS_LABEL_BYTES_MAX: usize = 63;

/// Whether a cluster address from a peer (`LINK_HELLO.cluster_addr`, a `NODES` entry) is fit to
/// be stored, gossiped, dialed and logged: `IP:port` (`[v6]:port` for IPv6) or `dns.name:port`,
/// with a port from 1 to 65535. Everything else — spaces, control bytes, newlines, non-ASCII,
/// other punctuation — is refused, so a peer cannot write its own log lines.
pub fn is_valid_cluster_addr(addr: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(addr) else {
        return false;
    };
    if text.is_empty() || text.len() > usize::from(u8::MAX) || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return socket.port() != 0;
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
    port_ok && is_dns_name(host)
}

/// Letters, digits and inner hyphens in dot-separated labels of 1 to 63 bytes.
fn is_dns_name(host: &str) -> bool {
    (1..=DNS_NAME_BYTES_MAX).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=DNS_LABEL_BYTES_MAX).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Peer-supplied bytes made safe for one log line: in quotes, printable ASCII as is, and
/// newlines, control bytes, quotes, backslashes and non-ASCII bytes escaped (`\n`, `\x1b`).
pub fn quoted(text: &[u8]) -> String {
    format!("\"{}\"", text.escape_ascii())
}

/// Appends an `INTEREST` frame.
pub fn encode_interest(dst: &mut BytesMut, add: bool, token: u64, room: &[u8]) {
    put_header(dst, peer_type::INTEREST, 9 + room.len());
    dst.put_u8(u8::from(add));
    dst.put_u64(token);
    dst.put_slice(room);
}

/// Appends a `FORWARD` frame carrying a `MESSAGE` body.
pub fn encode_forward(dst: &mut BytesMut, message_body: &[u8]) {
    put_header(dst, peer_type::FORWARD, message_body.len());
    dst.put_slice(message_body);
}

/// The `MESSAGE` body inside an encoded `MESSAGE` frame (what a `FORWARD` carries).
pub fn message_body(message_frame: &[u8]) -> &[u8] {
    &message_frame[HEADER_BYTES..]
}

/// The room field of a `MESSAGE` body, checked against the layout.
fn forward_room(body: &Bytes) -> Result<Bytes, DecodeError> {
    let room_len = *body.get(16).ok_or(DecodeError::Malformed("FORWARD is too short"))? as usize;
    let name_len_at = 17 + room_len;
    let name_len = *body.get(name_len_at).ok_or(DecodeError::Malformed("FORWARD.room"))? as usize;
    if room_len == 0 || body.len() < name_len_at + 1 + name_len {
        return Err(DecodeError::Malformed("FORWARD.name"));
    }
    Ok(body.slice(17..17 + room_len))
}

/// The publisher's name and the payload inside a `MESSAGE` body already checked by `parse`.
pub fn name_and_payload(body: &Bytes) -> Option<(&[u8], &[u8])> {
    let room_len = *body.get(16)? as usize;
    let name_at = 17 + room_len + 1;
    let name_len = *body.get(name_at - 1)? as usize;
    let payload_at = name_at + name_len;
    Some((body.get(name_at..payload_at)?, body.get(payload_at..)?))
}

fn exact_u64(mut body: Bytes, what: &'static str) -> Result<u64, DecodeError> {
    if body.len() != 8 {
        return Err(DecodeError::Malformed(what));
    }
    Ok(body.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_message, FrameDecoder};

    fn round_trip(frame: &PeerFrame) -> PeerFrame {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let raw = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        PeerFrame::parse(raw).unwrap()
    }

    #[test]
    fn every_peer_frame_round_trips() {
        let mut message = BytesMut::new();
        encode_message(&mut message, 7, 9, b"room", b"alice", b"payload");
        let body = Bytes::copy_from_slice(message_body(&message));
        let frames = [
            PeerFrame::Hello(LinkHello {
                version: LINK_VERSION,
                node_id: 3,
                core_id: 1,
                instance: 99,
                nonce: [7; NONCE_BYTES],
                cluster_addr: Bytes::from_static(b"127.0.0.1:7500"),
            }),
            PeerFrame::Auth([9; MAC_BYTES]),
            PeerFrame::Nodes(vec![(1, Bytes::from_static(b"127.0.0.1:1")), (2, Bytes::new())]),
            PeerFrame::Nodes(vec![]),
            PeerFrame::Interest { add: true, token: 42, room: Bytes::from_static(b"room") },
            PeerFrame::Interest { add: false, token: 0, room: Bytes::from_static(b"r") },
            PeerFrame::InterestAck(42),
            PeerFrame::Presence(PeerPresence {
                version: 1 << 52 | 5,
                kind: PeerPresenceKind::Change(crate::codec::PresenceKind::Lost),
                session_id: 77,
                room: Bytes::from_static(b"room"),
                name: Bytes::from_static(b"bob"),
            }),
            PeerFrame::Presence(PeerPresence {
                version: 0,
                kind: PeerPresenceKind::Probe,
                session_id: 1 << 40 | 3,
                room: Bytes::from_static(b"den"),
                name: Bytes::from_static(b"alice"),
            }),
            PeerFrame::Forward { room: Bytes::from_static(b"room"), body },
            PeerFrame::Ping(1),
            PeerFrame::Pong(2),
        ];
        for frame in &frames {
            assert_eq!(&round_trip(frame), frame);
        }
    }

    #[test]
    fn malformed_peer_frames_are_refused() {
        let cases: [(u8, &[u8]); 10] = [
            (peer_type::LINK_HELLO, &[1, 0, 0, 0]),
            (peer_type::LINK_AUTH, &[0; 31]),
            (peer_type::NODES, &[0, 1, 0, 1, 5, b'a']),
            (peer_type::NODES, &[0, 0, 1]),
            (peer_type::INTEREST, &[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            (peer_type::INTEREST, &[2, 0, 0, 0, 0, 0, 0, 0, 0, b'r']),
            (peer_type::INTEREST_ACK, &[0; 7]),
            (peer_type::FORWARD, &[0; 16]),
            (peer_type::FORWARD, &[0; 17]),
            (peer_type::FORWARD, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'r', 3, b'a']),
        ];
        for (kind, body) in cases {
            let raw = RawFrame { kind, body: Bytes::copy_from_slice(body) };
            assert!(matches!(PeerFrame::parse(raw), Err(DecodeError::Malformed(_))), "type {kind:#x} {body:?}");
        }
    }

    #[test]
    fn cluster_addresses_must_be_host_and_port() {
        // The longest that fits LINK_HELLO's u8 length: a 250-byte name and a port.
        let long_name = format!("{}:7500", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(58)].join("."));
        assert_eq!(long_name.len(), 255);
        assert!(!is_valid_cluster_addr(format!("e{long_name}").as_bytes()), "256 bytes");
        for good in ["127.0.0.1:7500", "[::1]:7500", "node-2.example.org:7500", "localhost:1", &long_name] {
            assert!(is_valid_cluster_addr(good.as_bytes()), "{good}");
        }
        let bad: [&[u8]; 17] = [
            b"",
            b"127.0.0.1",
            b"127.0.0.1:0",
            b"127.0.0.1:65536",
            b"127.0.0.1:+80",
            b"host:",
            b":7500",
            b"::1:7500",
            b"127.0.0.1:1\nERROR fanout: forged",
            b"127.0.0.1:1\r",
            b"a b:7500",
            b"under_score:7500",
            b"-leading.example:7500",
            b"double..dot:7500",
            b"\xc3\xa9t\xc3\xa9:7500",
            b"\"quoted\":7500",
            b"\x1b[31mred:7500",
        ];
        for bad in bad {
            assert!(!is_valid_cluster_addr(bad), "{}", quoted(bad));
        }
    }

    #[test]
    fn quoted_peer_text_stays_on_one_line() {
        let forged = b"1.2.3.4:5\nERROR fanout: node 9 \"up\"\x1b[0m\xff";
        let shown = quoted(forged);
        assert_eq!(shown, r#""1.2.3.4:5\nERROR fanout: node 9 \"up\"\x1b[0m\xff""#);
        assert!(shown.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{shown}");
    }

    #[test]
    fn client_frames_are_unexpected_on_a_link() {
        let raw = RawFrame { kind: frame_type::PUBLISH, body: Bytes::new() };
        assert_eq!(PeerFrame::parse(raw), Err(DecodeError::UnexpectedFrame(frame_type::PUBLISH)));
    }
}
