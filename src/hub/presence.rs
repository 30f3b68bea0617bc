//! The hub's side of presence: recording who is in each room, telling the members that watch,
//! and keeping peers in step.
//!
//! A core stamps each change of its own members with its next version and sends it to every
//! peer link, and a gateway relays changes (version unchanged) between its sibling cores and the
//! other nodes — never back to a link of the class a change came from, so each change reaches
//! each core once, like a `FORWARD`. A link that forms starts with every entry the sender may
//! tell it, each at its version; a link that goes down takes the entries it brought with it, the
//! members that watch are told those members are gone, and a gateway withdraws them from its
//! other peers at the version it had (see `crate::presence` for the merge rule).

use bytes::{Bytes, BytesMut};

use super::Hub;
use crate::codec::line::encode_presence_line;
use crate::codec::peer::{encode_presence as encode_peer_presence, PeerPresence, PeerPresenceKind};
use crate::codec::{encode_presence, PresenceKind};
use crate::interest::PeerId;
use crate::link::LinkClass;
use crate::presence::{Applied, Origin, Update};
use crate::session::Mode;

impl<T, L> Hub<T, L> {
    /// One of our members joined, left or was renamed in `room`: record it, tell the members
    /// that watch the room, tell every peer.
    pub(super) fn local_presence(&mut self, room: &[u8], kind: PresenceKind, session_id: u64, name: &Bytes) {
        let update = Update { kind, session_id, version: self.presence.next_version(), name: name.clone() };
        if self.apply_presence(room, &update, Origin::Local) {
            self.send_presence(None, room, &update);
        }
    }

    /// A peer told us of a presence change: record it, tell our watchers and, on a gateway,
    /// relay it to the peers of the other class.
    pub(super) fn peer_presence(&mut self, peer: PeerId, event: PeerPresence) {
        let PeerPresence { version, kind, session_id, room, name } = event;
        let kind = match kind {
            PeerPresenceKind::Change(kind) => kind,
            // Names are unique per node: only a sibling core asks (and is listened to).
            PeerPresenceKind::Probe if self.links[peer].class == LinkClass::Sibling => {
                return self.probe_member(&room, session_id)
            }
            PeerPresenceKind::Probe => return,
        };
        let update = Update { kind, session_id, version, name };
        if self.apply_presence(&room, &update, Origin::Peer(peer)) && self.gateway.is_some() {
            let from = self.links[peer].class;
            self.send_presence(Some(from), &room, &update);
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
                let (kind, id, version) = (PresenceKind::Joined, entry.session_id, entry.version);
                encode_peer_presence(&mut frames, version, kind.into(), id, room, &entry.name);
            }
        }
        if !frames.is_empty() {
            self.send_to_peer(peer, |dst| dst.extend_from_slice(&frames));
        }
    }

    /// A link went down: the members it told us of are gone from here, and from everything we
    /// relay to (withdrawn at the version we had, so they return with the next digest).
    pub(super) fn presence_link_down(&mut self, peer: PeerId) {
        let from = self.links[peer].class;
        for (room, entry) in self.presence.remove_origin(peer) {
            self.tell_watchers(&room, PresenceKind::Lost, entry.session_id, &entry.name, None);
            if self.gateway.is_some() {
                let (session_id, version, name) = (entry.session_id, entry.version, entry.name);
                let withdrawal = Update { kind: PresenceKind::Lost, session_id, version, name };
                self.send_presence(Some(from), &room, &withdrawal);
            }
        }
    }

    /// Records a change; tells the watchers and returns true if it is news to relay.
    fn apply_presence(&mut self, room: &[u8], update: &Update, origin: Origin) -> bool {
        let (kind, session_id, name) = (update.kind, update.session_id, &update.name);
        match self.presence.merge(room, update.clone(), origin) {
            Applied::Joined => {
                self.tell_watchers(room, PresenceKind::Joined, session_id, name, None);
                if origin != Origin::Local {
                    self.settle_name_race(room, (update.version, session_id), name);
                }
            }
            Applied::Renamed(old) => {
                self.tell_watchers(room, PresenceKind::Renamed, session_id, name, Some(&old));
                if origin != Origin::Local {
                    self.settle_name_race(room, (update.version, session_id), name);
                }
            }
            Applied::Removed(entry) => self.tell_watchers(room, kind, session_id, &entry.name, None),
            Applied::Buried | Applied::Restamped => {}
            Applied::Unchanged | Applied::Stale | Applied::Full => return false,
        }
        true
    }

    /// Queues the change for every peer link that carries traffic, except links of `except`.
    fn send_presence(&mut self, except: Option<LinkClass>, room: &[u8], update: &Update) {
        let peers: Vec<PeerId> =
            self.links.iter().filter(|(_, l)| l.carries_traffic() && Some(l.class) != except).map(|(p, _)| p).collect();
        let Update { kind, session_id, version, name } = update;
        for peer in peers {
            self.send_to_peer(peer, |dst| encode_peer_presence(dst, *version, (*kind).into(), *session_id, room, name));
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
