//! Which nodes a gateway dials, and when: a state machine with no sockets and no clock.
//!
//! The dialer knows node addresses (from `--peer` and from gossip), each with its redial
//! schedule. The reactor asks it for due dials ([`Dialer::poll_dial`]), reports how each ended
//! ([`Dialer::connected`], [`Dialer::failed`]) and when a link goes down ([`Dialer::link_down`]),
//! and sleeps until [`Dialer::next_timeout`]. A dial that neither connects nor fails is given up
//! after [`LINK_HANDSHAKE_TIMEOUT`] ([`Dialer::poll_expired`]). Time and jitter seeds are passed
//! in, so a simulation drives it exactly as the reactor does.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Redial, LINK_HANDSHAKE_TIMEOUT};
use crate::interest::PeerId;
use crate::rng::Rng;

/// A dial the reactor is to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The address to connect to, as given or gossiped (`host:port`).
    pub addr: String,
}

/// Where one address is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; dial at `Target::next_at`.
    Idle,
    /// A dial is in progress since this moment.
    Dialing(Instant),
    /// Connected: the link is this peer (until it goes down).
    Linked(PeerId),
}

/// A node address the gateway should be linked to.
#[derive(Debug)]
struct Target {
    redial: Redial,
    next_at: Instant,
    state: State,
    /// The node behind this address, once a handshake told us: an address that leads to an
    /// already linked node (linked through another address) is not dialed again.
    node_id: Option<u16>,
}

/// The gateway's dialing schedule.
#[derive(Debug)]
pub struct Dialer {
    own_addr: String,
    /// By address; ordered, so that what is due first is dialed first and a run replays.
    targets: BTreeMap<String, Target>,
    seeds: Rng,
}

impl Dialer {
    /// A dialer for the node that accepts links at `own_addr` (never dialed), with `seed` for
    /// the redial jitter.
    pub fn new(own_addr: String, seed: u64) -> Self {
        Self { own_addr, targets: BTreeMap::new(), seeds: Rng::new(seed) }
    }

    /// Learns a node address (a `--peer`, or gossip) to dial from `now` on; known ones and our
    /// own are ignored. True if it is new.
    pub fn add_target(&mut self, addr: String, now: Instant) -> bool {
        if addr == self.own_addr || self.targets.contains_key(&addr) {
            return false;
        }
        let redial = Redial::new(self.seeds.next_u64());
        self.targets.insert(addr, Target { redial, next_at: now, state: State::Idle, node_id: None });
        true
    }

    /// The next address due for a dial at `now`, marked as dialing; `is_linked(addr, node_id)`
    /// tells whether the node behind an address is already linked (through any address), which
    /// skips it and resets its backoff.
    pub fn poll_dial(&mut self, now: Instant, is_linked: impl Fn(&str, Option<u16>) -> bool) -> Option<Dial> {
        for (addr, target) in &mut self.targets {
            if target.state != State::Idle {
                continue;
            }
            if is_linked(addr, target.node_id) {
                target.redial.succeeded();
                continue;
            }
            if target.next_at <= now {
                target.state = State::Dialing(now);
                return Some(Dial { addr: addr.clone() });
            }
        }
        None
    }

    /// Dials that have been in progress too long: each is given up (and rescheduled); the
    /// reactor drops its socket.
    pub fn poll_expired(&mut self, now: Instant) -> Option<Dial> {
        let (addr, target) = self.targets.iter_mut().find(|(_, t)| {
            matches!(t.state, State::Dialing(since) if now.saturating_duration_since(since) > LINK_HANDSHAKE_TIMEOUT)
        })?;
        target.state = State::Idle;
        target.next_at = target.redial.failed(now);
        Some(Dial { addr: addr.clone() })
    }

    /// The dial to `addr` connected and became link `peer`.
    pub fn connected(&mut self, addr: &str, peer: PeerId) {
        if let Some(target) = self.targets.get_mut(addr) {
            target.state = State::Linked(peer);
        }
    }

    /// The dial to `addr` failed at `now`: try again after the backoff.
    pub fn failed(&mut self, addr: &str, now: Instant) {
        if let Some(target) = self.targets.get_mut(addr) {
            target.state = State::Idle;
            target.next_at = target.redial.failed(now);
        }
    }

    /// Link `peer` (to node `node_id`, if it said hello) went down at `now`: its address is
    /// dialed again after the backoff.
    pub fn link_down(&mut self, peer: PeerId, node_id: Option<u16>, now: Instant) {
        for target in self.targets.values_mut() {
            if target.state == State::Linked(peer) {
                target.state = State::Idle;
                target.next_at = target.redial.failed(now);
                target.node_id = target.node_id.or(node_id);
            }
        }
    }

    /// When the dialer next has something to do: a redial, or a dial to give up.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter_map(|t| match t.state {
                State::Idle => Some(t.next_at),
                State::Dialing(since) => Some(since + LINK_HANDSHAKE_TIMEOUT),
                State::Linked(_) => None,
            })
            .min()
    }

    /// How many addresses it knows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when it knows no address to dial.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::{REDIAL_DELAY_MAX, REDIAL_DELAY_MIN};

    fn never_linked(_: &str, _: Option<u16>) -> bool {
        false
    }

    #[test]
    fn dials_each_address_once_and_redials_after_backoff() {
        let t0 = Instant::now();
        let mut d = Dialer::new("10.0.0.1:7500".into(), 1);
        assert!(!d.add_target("10.0.0.1:7500".into(), t0), "never our own address");
        assert!(d.add_target("10.0.0.2:7500".into(), t0));
        assert!(!d.add_target("10.0.0.2:7500".into(), t0));
        assert_eq!(d.poll_dial(t0, never_linked), Some(Dial { addr: "10.0.0.2:7500".into() }));
        assert_eq!(d.poll_dial(t0, never_linked), None, "one dial at a time per address");
        d.failed("10.0.0.2:7500", t0);
        let next = d.next_timeout().expect("a redial is scheduled");
        assert!(next > t0 && next <= t0 + REDIAL_DELAY_MIN);
        assert_eq!(d.poll_dial(next - Duration::from_millis(1), never_linked), None);
        assert!(d.poll_dial(next, never_linked).is_some());
    }

    #[test]
    fn a_hung_dial_is_given_up_at_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 2);
        d.add_target("10.0.0.2:7500".into(), t0);
        assert!(d.poll_dial(t0, never_linked).is_some());
        assert_eq!(d.next_timeout(), Some(t0 + LINK_HANDSHAKE_TIMEOUT));
        assert_eq!(d.poll_expired(t0 + LINK_HANDSHAKE_TIMEOUT), None);
        let late = t0 + LINK_HANDSHAKE_TIMEOUT + Duration::from_millis(1);
        assert_eq!(d.poll_expired(late).map(|d| d.addr), Some("10.0.0.2:7500".into()));
        assert!(d.next_timeout().is_some_and(|at| at > late && at <= late + REDIAL_DELAY_MAX));
    }

    #[test]
    fn a_linked_node_is_not_dialed_through_another_address() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 3);
        d.add_target("a:1".into(), t0);
        assert!(d.poll_dial(t0, never_linked).is_some());
        d.connected("a:1", 4);
        assert_eq!(d.next_timeout(), None, "nothing to do while linked");
        d.link_down(4, Some(9), t0);
        // Node 9 is linked again through another address: no redial of this one.
        let later = t0 + REDIAL_DELAY_MAX;
        assert_eq!(d.poll_dial(later, |_, node| node == Some(9)), None);
        assert!(d.poll_dial(later, never_linked).is_some());
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let t0 = Instant::now();
        let schedule = |seed| {
            let mut d = Dialer::new(String::new(), seed);
            d.add_target("a:1".into(), t0);
            (0..6)
                .map(|_| {
                    d.poll_dial(t0, never_linked);
                    d.failed("a:1", t0);
                    d.next_timeout()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(5), schedule(5));
    }
}
