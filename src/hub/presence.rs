//! The hub's side of presence: recording who is in each room, telling the members that watch,
//! and keeping peers in step.
//!
//! A core sends each change of its own members to every peer link, and a gateway relays changes
//! between its sibling cores and the other nodes — never back to a link of the class a change
//! came from, so each change reaches each core once, like a `FORWARD`. A link that forms starts
//! with every entry the sender may tell it; a link that goes down takes the entries it brought
//! with it, and the members that watch are told those members are gone.

use bytes::{Bytes, BytesMut};

use super::Hub;
use crate::codec::line::encode_presence_line;
use crate::codec::peer::peer_type;
use crate::codec::{encode_presence, encode_presence_as, PresenceEvent, PresenceKind};
use crate::interest::PeerId;
use crate::link::LinkClass;
use crate::presence::{Added, Entry, Origin};
use crate::session::Mode;

impl<T, L> Hub<T, L> {
    /// One of our members joined, left or was renamed in `room`: record it, tell the members
    /// that watch the room, tell every peer.
    pub(super) fn local_presence(&mut self, room: &[u8], kind: PresenceKind, session_id: u64, name: &Bytes) {
        if self.apply_presence(room, kind, session_id, name, Origin::Local) {
            self.send_presence(None, room, kind, session_id, name);
        }
    }

    /// A peer told us of a presence change: record it, tell our watchers and, on a gateway,
    /// relay it to the peers of the other class.
    pub(super) fn peer_presence(&mut self, peer: PeerId, event: PresenceEvent) {
        let PresenceEvent { kind, session_id, room, name } = event;
        if self.apply_presence(&room, kind, session_id, &name, Origin::Peer(peer)) && self.gateway.is_some() {
            let from = self.links[peer].class;
            self.send_presence(Some(from), &room, kind, session_id, &name);
        }
    }

    /// A link that formed: tell it every entry it may hear from us — our own members and, on a
    /// gateway, those learned from links of the other class.
    pub(super) fn sync_presence(&mut self, peer: PeerId) {
        let class = self.links[peer].class;
        let gateway = self.gateway.is_some();
        let links = &self.links;
        let mut frames = BytesMut::new();
        for (room, entry) in self.presence.entries() {
            let tell = match entry.origin {
                Origin::Local => true,
                Origin::Peer(from) => gateway && links.get(from).is_some_and(|l| l.class != class),
            };
            if tell {
                let (kind, id) = (PresenceKind::Joined, entry.session_id);
                encode_presence_as(&mut frames, peer_type::PRESENCE, kind, id, room, &entry.name);
            }
        }
        if !frames.is_empty() {
            self.send_to_peer(peer, |dst| dst.extend_from_slice(&frames));
        }
    }

    /// A link went down: the members it told us of are gone from here, and from everything we
    /// relay to.
    pub(super) fn presence_link_down(&mut self, peer: PeerId) {
        let from = self.links[peer].class;
        for (room, entry) in self.presence.remove_origin(peer) {
            self.tell_watchers(&room, PresenceKind::Lost, entry.session_id, &entry.name, None);
            if self.gateway.is_some() {
                self.send_presence(Some(from), &room, PresenceKind::Lost, entry.session_id, &entry.name);
            }
        }
    }

    /// Records a change; tells the watchers and returns true if it changed anything.
    fn apply_presence(
        &mut self,
        room: &[u8],
        kind: PresenceKind,
        session_id: u64,
        name: &Bytes,
        origin: Origin,
    ) -> bool {
        match kind {
            PresenceKind::Joined | PresenceKind::Renamed => {
                let entry = Entry { session_id, name: name.clone(), origin };
                match self.presence.add(room, entry) {
                    Added::New => self.tell_watchers(room, PresenceKind::Joined, session_id, name, None),
                    Added::Renamed(old) => {
                        self.tell_watchers(room, PresenceKind::Renamed, session_id, name, Some(&old))
                    }
                    Added::Unchanged | Added::Full => return false,
                }
            }
            PresenceKind::Left | PresenceKind::Lost => {
                if self.presence.remove(room, session_id).is_none() {
                    return false;
                }
                self.tell_watchers(room, kind, session_id, name, None);
            }
        }
        true
    }

    /// Queues the change for every peer link that carries traffic, except links of `except`.
    fn send_presence(
        &mut self,
        except: Option<LinkClass>,
        room: &[u8],
        kind: PresenceKind,
        session_id: u64,
        name: &[u8],
    ) {
        let peers: Vec<PeerId> =
            self.links.iter().filter(|(_, l)| l.carries_traffic() && Some(l.class) != except).map(|(p, _)| p).collect();
        for peer in peers {
            self.send_to_peer(peer, |dst| encode_presence_as(dst, peer_type::PRESENCE, kind, session_id, room, name));
        }
    }

    /// Tells the watching members of `room` (but not the member itself) of a change.
    fn tell_watchers(&mut self, room: &[u8], kind: PresenceKind, session_id: u64, name: &[u8], old: Option<&[u8]>) {
        let watchers: Vec<_> = self.router.watchers(room).collect();
        let (mut frame, mut line) = (BytesMut::new(), BytesMut::new());
        for key in watchers {
            let conn = &self.conns[key];
            if conn.session.session_id() == session_id {
                continue;
            }
            if conn.session.mode() == Mode::Line {
                if line.is_empty() {
                    encode_presence_line(&mut line, kind, name, old);
                }
                self.push_line(key, &line);
            } else {
                if frame.is_empty() {
                    encode_presence(&mut frame, kind, session_id, room, name);
                }
                self.reply(key, |dst| dst.extend_from_slice(&frame));
            }
        }
    }
}
