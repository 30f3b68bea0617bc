//! When a reactor flushes its clients: at once while it is idle, and at most once per linger
//! while it is busy, so that under load several messages leave in one `write` per recipient.
//!
//! At chat rates a server is pinned by one `write` per recipient per message (~0.5 µs each),
//! whatever else it does: 2,000 messages a second into a room of 1,000 is 2 M writes a second,
//! a full core, and latency is then set by queueing. Holding a recipient's bytes briefly lets the
//! next messages join them, as Nagle's algorithm or Kafka's `linger.ms` do, but in user space, on
//! the loop's own clock, and only when it pays:
//!
//! * the hold after a flush pass is as long as that pass took, at most [`Linger::new`]'s bound:
//!   a pass of a few connections takes microseconds, so an idle server flushes every message at
//!   once; a pass over a thousand recipients takes about as long as the writes it would save;
//! * the bound is small (1 ms by default, [`crate::limits::FLUSH_LINGER_MAX`]) against the
//!   latency it replaces: the queueing of a saturated loop.
//!
//! Plain data: the reactor tells it when a pass began and ended and asks whether to flush now.
//! The reactor sleeps until a hold ends with a `timerfd` (`fanout-timer`): mio's poll timeout
//! counts whole milliseconds, and a 100 µs hold that slept 1 ms halved a closed-loop
//! publisher's throughput.

use std::time::{Duration, Instant};

/// A reactor's flush timing (see the module documentation).
#[derive(Debug, Clone)]
pub struct Linger {
    max: Duration,
    /// When the last flush pass ended and how long it took.
    last: Option<(Instant, Duration)>,
}

impl Linger {
    /// Holds for at most `max` after a flush pass; `Duration::ZERO` flushes every turn.
    pub fn new(max: Duration) -> Self {
        Self { max, last: None }
    }

    /// `None` to flush now, else when to: the end of the last pass plus as long as it took,
    /// capped at the bound.
    pub fn hold_until(&self, now: Instant) -> Option<Instant> {
        let (ended, took) = self.last?;
        let until = ended + took.min(self.max);
        (now < until).then_some(until)
    }

    /// When bytes held since the last pass are due, for the loop's timeout: `None` when nothing
    /// is `pending`, the end of the hold while it lasts, and `now` once it is over — a hold may
    /// end while a turn runs, and the bytes are then due at once, not at the next event.
    pub fn due_at(&self, now: Instant, pending: bool) -> Option<Instant> {
        pending.then(|| self.hold_until(now).unwrap_or(now))
    }

    /// A flush pass ran from `started` to `ended`.
    pub fn flushed(&mut self, started: Instant, ended: Instant) {
        self.last = Some((ended, ended.saturating_duration_since(started)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_message_and_a_lone_message_after_a_short_pass_go_at_once() {
        let t0 = Instant::now();
        let mut linger = Linger::new(MAX);
        assert_eq!(linger.hold_until(t0), None, "nothing flushed yet: no reason to wait");
        linger.flushed(t0, t0 + Duration::from_micros(3));
        let later = t0 + Duration::from_micros(10);
        assert_eq!(linger.hold_until(later), None, "a 3 µs pass holds for 3 µs, long over");
    }

    #[test]
    fn after_a_long_pass_the_next_waits_as_long_as_it_took() {
        let t0 = Instant::now();
        let mut linger = Linger::new(MAX);
        let ended = t0 + Duration::from_micros(400);
        linger.flushed(t0, ended);
        let soon = ended + Duration::from_micros(100);
        assert_eq!(linger.hold_until(soon), Some(ended + Duration::from_micros(400)));
        assert_eq!(linger.hold_until(ended + Duration::from_micros(400)), None);
    }

    #[test]
    fn the_hold_never_exceeds_the_bound() {
        let t0 = Instant::now();
        let mut linger = Linger::new(MAX);
        let ended = t0 + Duration::from_millis(30);
        linger.flushed(t0, ended);
        assert_eq!(linger.hold_until(ended), Some(ended + MAX));
        assert_eq!(linger.hold_until(ended + MAX), None);
    }

    #[test]
    fn held_bytes_are_due_when_the_hold_ends_or_at_once_if_it_already_has() {
        let t0 = Instant::now();
        let mut linger = Linger::new(MAX);
        let ended = t0 + Duration::from_micros(400);
        linger.flushed(t0, ended);
        let during = ended + Duration::from_micros(100);
        assert_eq!(linger.due_at(during, true), Some(ended + Duration::from_micros(400)));
        assert_eq!(linger.due_at(during, false), None, "nothing held, nothing due");
        let after = ended + Duration::from_micros(500);
        assert_eq!(linger.due_at(after, true), Some(after), "a hold that ended while the turn ran");
    }

    #[test]
    fn a_zero_bound_never_holds() {
        let t0 = Instant::now();
        let mut linger = Linger::new(Duration::ZERO);
        linger.flushed(t0, t0 + Duration::from_millis(30));
        assert_eq!(linger.hold_until(t0 + Duration::from_millis(30)), None);
    }
}
