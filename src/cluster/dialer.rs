//! Which nodes a gateway dials, and when: a state machine with no sockets and no clock.
//!
//! The dialer knows node addresses (from `--peer` and from gossip), each with its redial
//! schedule. The reactor asks it for due dials ([`Dialer::poll_dial`]), reports how each ended
//! ([`Dialer::connected`], [`Dialer::failed`]) and when a link goes down ([`Dialer::link_down`]),
//! and sleeps until [`Dialer::next_timeout`]. A dial that neither connects nor fails is given up
//! after [`LINK_HANDSHAKE_TIMEOUT`] ([`Dialer::poll_expired`]). Time and jitter seeds are passed
//! in, so a simulation drives it exactly as the reactor does.
//!
//! **Host names.** An address whose host is a name (`localhost:7501`, a Kubernetes headless
//! service) is not dialed but *resolved* ([`Dial::resolve`]): the reactor resolves it off its
//! thread and reports every address found ([`Dialer::resolved`]), each of which becomes a target
//! of its own, *derived* from the name. A derived target lives only while it works: when its dial
//! fails or its link goes down it is dropped and the name is resolved again (after the backoff),
//! so the dial after a failure goes to whatever the name means by then. A resolved name is
//! resolved again every [`RESOLVE_INTERVAL`] to find nodes added behind it.
//!
//! **Failures an operator hears about.** [`Dialer::failed`] says which failures to log at
//! `warn`: the first of a run to one address, then at most one per [`DIAL_WARN_INTERVAL`] with
//! the count since, so a dead peer does not flood the log; none for an address of a name whose
//! node is reachable through another of its addresses (`localhost` is 127.0.0.1 and ::1).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Redial, LINK_HANDSHAKE_TIMEOUT};
use crate::interest::PeerId;
pub use crate::limits::DIAL_WARN_INTERVAL;
pub use crate::limits::RESOLVE_INTERVAL;
use crate::limits::WARN_RUNS_MAX;
use crate::rng::Rng;

/// A dial the reactor is to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The address to connect to, as given or gossiped (`host:port`).
    pub addr: String,
    /// The host is a name: resolve it (off the event loop) and report [`Dialer::resolved`] or
    /// [`Dialer::failed`], instead of connecting.
    pub resolve: bool,
    /// For a dial [`Dialer::poll_expired`] gave up: the failures to report in a warning now, as
    /// [`Dialer::failed`] would return them (`None` from [`Dialer::poll_dial`]).
    pub warn: Option<u64>,
}

impl Dial {
    /// Whether `addr` names its host by a name (to resolve) rather than an IP address.
    pub fn is_name(addr: &str) -> bool {
        is_host_name(addr)
    }
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
    /// The host name this address was resolved from: dropped, not redialed, when it fails.
    origin: Option<String>,
    /// Idle because its node is linked through another link (it dialed us, say): no timeout
    /// of its own until a link goes down (an overdue one would have the reactor spin).
    linked_elsewhere: bool,
}

impl Target {
    fn new(redial: Redial, now: Instant, origin: Option<String>) -> Self {
        Self { redial, next_at: now, state: State::Idle, node_id: None, origin, linked_elsewhere: false }
    }
}

/// Failed dials to one address since its last warning.
#[derive(Debug, Clone, Copy)]
struct WarnRun {
    warned_at: Instant,
    unreported: u64,
}

/// Whether an address names its host by a name rather than an IP address.
fn is_host_name(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_err()
}

/// The gateway's dialing schedule.
#[derive(Debug)]
pub struct Dialer {
    own_addr: String,
    /// By address; ordered, so that what is due first is dialed first and a run replays.
    targets: BTreeMap<String, Target>,
    seeds: Rng,
    /// Addresses whose dials failed since they last connected: for rate-limited warnings.
    warnings: BTreeMap<String, WarnRun>,
}

impl Dialer {
    /// A dialer for the node that accepts links at `own_addr` (never dialed), with `seed` for
    /// the redial jitter.
    pub fn new(own_addr: String, seed: u64) -> Self {
        Self { own_addr, targets: BTreeMap::new(), seeds: Rng::new(seed), warnings: BTreeMap::new() }
    }

    /// Learns a node address (a `--peer`, or gossip) to dial from `now` on; known ones and our
    /// own are ignored. True if it is new.
    pub fn add_target(&mut self, addr: String, now: Instant) -> bool {
        if addr == self.own_addr {
            return false;
        }
        if let Some(target) = self.targets.get_mut(&addr) {
            // Named on its own now (gossip, say): kept even when it fails.
            target.origin = None;
            return false;
        }
        let redial = Redial::new(self.seeds.next_u64());
        self.targets.insert(addr, Target::new(redial, now, None));
        true
    }

    /// The host name `name` resolved at `now` to `addrs`: each becomes a target derived from the
    /// name (returned when new), and the name is resolved again after `RESOLVE_INTERVAL` (10 s).
    pub fn resolved(&mut self, name: &str, addrs: Vec<String>, now: Instant) -> Vec<String> {
        let Some(target) = self.targets.get_mut(name) else {
            return Vec::new();
        };
        if matches!(target.state, State::Dialing(_)) {
            target.state = State::Idle;
        }
        target.next_at = now + RESOLVE_INTERVAL;
        self.warnings.remove(name);
        let mut added = Vec::new();
        for addr in addrs {
            if addr == self.own_addr || self.targets.contains_key(&addr) {
                continue;
            }
            let redial = Redial::new(self.seeds.next_u64());
            self.targets.insert(addr.clone(), Target::new(redial, now, Some(name.to_string())));
            added.push(addr);
        }
        added
    }

    /// The next address due for a dial at `now`, marked as dialing; `is_linked(addr, node_id)`
    /// tells whether the node behind an address is already linked (through any address), which
    /// skips it and resets its backoff.
    pub fn poll_dial(&mut self, now: Instant, is_linked: impl Fn(&str, Option<u16>) -> bool) -> Option<Dial> {
        for (addr, target) in &mut self.targets {
            if target.state != State::Idle {
                continue;
            }
            target.linked_elsewhere = is_linked(addr, target.node_id);
            if target.linked_elsewhere {
                target.redial.succeeded();
                continue;
            }
            if target.next_at <= now {
                target.state = State::Dialing(now);
                return Some(Dial { addr: addr.clone(), resolve: is_host_name(addr), warn: None });
            }
        }
        None
    }

    /// Dials (and resolutions) that have been in progress too long: each is given up as
    /// [`Dialer::failed`] would; the reactor drops its socket.
    pub fn poll_expired(&mut self, now: Instant) -> Option<Dial> {
        let addr = self.targets.iter().find_map(|(addr, t)| {
            let hung = matches!(t.state, State::Dialing(since) if now.saturating_duration_since(since) > LINK_HANDSHAKE_TIMEOUT);
            hung.then(|| addr.clone())
        })?;
        let warn = self.failed(&addr, now);
        Some(Dial { resolve: is_host_name(&addr), addr, warn })
    }

    /// The dial to `addr` connected and became link `peer`.
    pub fn connected(&mut self, addr: &str, peer: PeerId) {
        self.warnings.remove(addr);
        let Some(target) = self.targets.get_mut(addr) else {
            return;
        };
        target.state = State::Linked(peer);
        if let Some(name) = target.origin.clone() {
            if let Some(name) = self.targets.get_mut(&name) {
                name.redial.succeeded();
            }
        }
    }

    /// The dial to (or the resolution of) `addr` failed at `now`: try again after the backoff
    /// (an address derived from a name is dropped, and the name resolved again). Returns how many
    /// failures to report in a warning now (this one included), or `None` when this one is
    /// for the debug log only: warnings are rate-limited per address, and there are none for an
    /// address whose name leads to a linked node through another address.
    pub fn failed(&mut self, addr: &str, now: Instant) -> Option<u64> {
        let quiet = self.another_address_linked(addr);
        self.give_up(addr, now);
        if quiet {
            return None;
        }
        if self.warnings.len() >= WARN_RUNS_MAX && !self.warnings.contains_key(addr) {
            self.warnings.retain(|_, run| now.saturating_duration_since(run.warned_at) < DIAL_WARN_INTERVAL);
        }
        match self.warnings.get_mut(addr) {
            None => {
                self.warnings.insert(addr.to_string(), WarnRun { warned_at: now, unreported: 0 });
                Some(1)
            }
            Some(run) if now.saturating_duration_since(run.warned_at) >= DIAL_WARN_INTERVAL => {
                let failures = run.unreported + 1;
                *run = WarnRun { warned_at: now, unreported: 0 };
                Some(failures)
            }
            Some(run) => {
                run.unreported += 1;
                None
            }
        }
    }

    /// The host name `addr` was resolved from, if it is a derived address.
    pub fn origin(&self, addr: &str) -> Option<&str> {
        self.targets.get(addr)?.origin.as_deref()
    }

    /// Whether `addr` was resolved from a name another of whose addresses is linked.
    fn another_address_linked(&self, addr: &str) -> bool {
        let Some(name) = self.origin(addr) else {
            return false;
        };
        self.targets
            .iter()
            .any(|(other, t)| other != addr && t.origin.as_deref() == Some(name) && matches!(t.state, State::Linked(_)))
    }

    /// Ends a dial or link of `addr` at `now`: a derived address is dropped and its name resolved
    /// again after the name's backoff; any other address is redialed after its own.
    fn give_up(&mut self, addr: &str, now: Instant) {
        let Some(target) = self.targets.get_mut(addr) else {
            return;
        };
        let Some(name) = target.origin.clone() else {
            target.state = State::Idle;
            target.next_at = target.redial.failed(now);
            return;
        };
        // While the name's node is reachable through another address, the name keeps its
        // resolve interval; otherwise it is resolved again after its backoff.
        let hurry = !self.another_address_linked(addr);
        self.targets.remove(addr);
        if let Some(name) = self.targets.get_mut(&name).filter(|_| hurry) {
            if name.state == State::Idle {
                name.next_at = name.next_at.min(name.redial.failed(now));
            }
        }
    }

    /// Link `peer` (to node `node_id`, if it said hello) went down at `now`: its address is
    /// dialed again after the backoff (or, derived from a name, dropped and the name resolved
    /// again).
    pub fn link_down(&mut self, peer: PeerId, node_id: Option<u16>, now: Instant) {
        let down: Vec<String> =
            self.targets.iter().filter(|(_, t)| t.state == State::Linked(peer)).map(|(a, _)| a.clone()).collect();
        for target in self.targets.values_mut() {
            // Whatever was linked through this link is due for a look again.
            target.linked_elsewhere = false;
        }
        for addr in down {
            if let Some(target) = self.targets.get_mut(&addr) {
                target.node_id = target.node_id.or(node_id);
            }
            self.give_up(&addr, now);
        }
    }

    /// When the dialer next has something to do: a redial, or a dial to give up.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter_map(|t| match t.state {
                State::Idle if t.linked_elsewhere => None,
                State::Idle => Some(t.next_at),
                State::Dialing(since) => Some(since + LINK_HANDSHAKE_TIMEOUT),
                State::Linked(_) => None,
            })
            .min()
    }

    /// How many addresses it knows.
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when it knows no address to dial.
    #[cfg(any(test, feature = "testing"))]
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
        assert_eq!(
            d.poll_dial(t0, never_linked),
            Some(Dial { addr: "10.0.0.2:7500".into(), resolve: false, warn: None })
        );
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
        d.connected("a:1", PeerId::new(4));
        assert_eq!(d.next_timeout(), None, "nothing to do while linked");
        d.link_down(PeerId::new(4), Some(9), t0);
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

    #[test]
    fn a_target_linked_elsewhere_sets_no_timeout_until_a_link_goes_down() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 6);
        d.add_target("a:1".into(), t0);
        assert_eq!(d.poll_dial(t0, |_, _| true), None, "linked through a link it made to us");
        assert_eq!(d.next_timeout(), None, "nothing due: a timeout in the past would spin the reactor");
        d.link_down(PeerId::new(3), Some(4), t0);
        assert_eq!(d.next_timeout(), Some(t0), "due again once some link went down");
        assert!(d.poll_dial(t0, never_linked).is_some());
    }

    #[test]
    fn a_name_is_resolved_and_each_of_its_addresses_dialed() {
        let t0 = Instant::now();
        let mut d = Dialer::new("10.0.0.1:7501".into(), 7);
        d.add_target("svc.local:7501".into(), t0);
        assert_eq!(
            d.poll_dial(t0, never_linked),
            Some(Dial { addr: "svc.local:7501".into(), resolve: true, warn: None })
        );
        let found = vec!["10.0.0.1:7501".into(), "10.0.0.2:7501".into(), "10.0.0.3:7501".into()];
        let added = d.resolved("svc.local:7501", found, t0);
        assert_eq!(added, vec!["10.0.0.2:7501".to_string(), "10.0.0.3:7501".into()], "never our own address");
        let dials: Vec<Dial> = std::iter::from_fn(|| d.poll_dial(t0, never_linked)).collect();
        assert_eq!(
            dials.iter().map(|d| (d.addr.as_str(), d.resolve)).collect::<Vec<_>>(),
            [("10.0.0.2:7501", false), ("10.0.0.3:7501", false)]
        );
        assert_eq!(d.origin("10.0.0.2:7501"), Some("svc.local:7501"));
        d.connected("10.0.0.2:7501", PeerId::new(1));
        d.connected("10.0.0.3:7501", PeerId::new(2));
        assert_eq!(d.next_timeout(), Some(t0 + RESOLVE_INTERVAL), "resolved again to find new nodes");
        assert!(d.poll_dial(t0 + RESOLVE_INTERVAL, never_linked).is_some_and(|dial| dial.resolve));
    }

    #[test]
    fn a_failed_address_of_a_name_is_dropped_and_the_name_resolved_again() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 8);
        d.add_target("svc:1".into(), t0);
        d.poll_dial(t0, never_linked);
        d.resolved("svc:1", vec!["10.0.0.2:1".into()], t0);
        d.poll_dial(t0, never_linked);
        assert_eq!(d.failed("10.0.0.2:1", t0), Some(1), "the first failure is a warning");
        assert_eq!(d.origin("10.0.0.2:1"), None, "dropped");
        assert_eq!(d.len(), 1);
        let next = d.next_timeout().expect("the name is resolved again");
        assert!(next <= t0 + REDIAL_DELAY_MIN, "after the name's backoff, not the resolve interval");
        assert!(d.poll_dial(next, never_linked).is_some_and(|dial| dial.resolve && dial.addr == "svc:1"));
        // A name that does not resolve: backoff, like a failed dial.
        assert_eq!(d.failed("svc:1", next), Some(1));
        assert!(d.next_timeout().is_some_and(|at| at > next && at <= next + REDIAL_DELAY_MAX));
    }

    #[test]
    fn an_address_of_a_reachable_name_fails_quietly() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 9);
        d.add_target("localhost:7501".into(), t0);
        d.poll_dial(t0, never_linked);
        d.resolved("localhost:7501", vec!["127.0.0.1:7501".into(), "[::1]:7501".into()], t0);
        d.poll_dial(t0, never_linked);
        d.poll_dial(t0, never_linked);
        d.connected("127.0.0.1:7501", PeerId::new(1));
        assert_eq!(d.failed("[::1]:7501", t0), None, "the node is linked through 127.0.0.1");
        assert_eq!(d.next_timeout(), Some(t0 + RESOLVE_INTERVAL), "no hurry to resolve again");
    }

    #[test]
    fn warnings_come_at_the_first_failure_then_at_most_once_per_interval_with_a_count() {
        let t0 = Instant::now();
        let mut d = Dialer::new(String::new(), 10);
        d.add_target("10.0.0.2:1".into(), t0);
        let mut warned = Vec::new();
        for second in 0..95 {
            let at = t0 + Duration::from_secs(second);
            if d.poll_dial(at, never_linked).is_some() {
                if let Some(count) = d.failed("10.0.0.2:1", at) {
                    warned.push((second, count));
                }
            }
        }
        assert_eq!(warned.first(), Some(&(0, 1)));
        assert_eq!(warned.iter().map(|w| w.0).collect::<Vec<_>>(), [0, 30, 60, 90]);
        assert!(warned[1..].iter().all(|w| w.1 > 1), "later warnings count the failures since: {warned:?}");
        d.poll_dial(t0 + Duration::from_secs(100), never_linked);
        d.connected("10.0.0.2:1", PeerId::new(1));
        d.link_down(PeerId::new(1), None, t0 + Duration::from_secs(101));
        d.poll_dial(t0 + Duration::from_secs(110), never_linked);
        assert_eq!(d.failed("10.0.0.2:1", t0 + Duration::from_secs(110)), Some(1), "a new run warns at once");
    }
}
