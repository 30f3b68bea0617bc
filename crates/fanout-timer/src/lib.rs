//! A wake-up finer than a mio poll's own timeout.
//!
//! mio rounds a poll timeout up to whole milliseconds (`epoll_wait` takes milliseconds), so a
//! loop that means to wait 100 µs sleeps a whole millisecond whenever nothing else wakes it. In
//! the server that turned a 100 µs flush hold into a 1 ms one, and a closed-loop publisher then
//! waited on a server that sat idle; in the load generator it turned an even stream of
//! 10,000 msgs/s into bursts of ten every millisecond. A `timerfd` in the same poll wakes the
//! loop on time (within the kernel's timer slack, 50 µs by default); the poll's rounded timeout
//! stays as the backstop.
//!
//! The timer is armed only for waits under a millisecond, where the rounding is as large as the
//! wait itself, and re-armed only when the wake-up wanted is earlier than the one armed, so a
//! busy loop makes at most one `timerfd_settime` per wait.
//!
//! ```no_run
//! # use std::time::{Duration, Instant};
//! let mut poll = mio::Poll::new()?;
//! let mut timer = fanout_timer::FineTimer::new(poll.registry(), mio::Token(0))?;
//! let mut events = mio::Events::with_capacity(64);
//! let now = Instant::now();
//! let timeout = timer.timeout(now, now + Duration::from_micros(150))?;
//! poll.poll(&mut events, Some(timeout))?; // back after about 150 µs, not 1 ms
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

/// Waits shorter than this are timed by the timer, not by the poll's millisecond timeout.
const FINE_BELOW: Duration = Duration::from_millis(1);

/// A `timerfd` registered in a poll, for waits under a millisecond (see the crate documentation).
#[derive(Debug)]
pub struct FineTimer {
    #[cfg(target_os = "linux")]
    fd: nix::sys::timerfd::TimerFd,
    /// When the armed timer fires; in the past once it has.
    armed: Option<Instant>,
}

impl FineTimer {
    /// Creates the timer and registers it under `token`.
    #[cfg(target_os = "linux")]
    pub fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        use std::os::fd::{AsFd, AsRawFd};
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).map_err(io::Error::from)?;
        registry.register(&mut mio::unix::SourceFd(&fd.as_fd().as_raw_fd()), token, Interest::READABLE)?;
        Ok(Self { fd, armed: None })
    }

    /// Without `timerfd`, waits keep the poll's millisecond precision.
    #[cfg(not(target_os = "linux"))]
    pub fn new(_registry: &Registry, _token: Token) -> io::Result<Self> {
        Ok(Self { armed: None })
    }

    /// The poll timeout for waking at `at`, arming the timer first when the wait is under a
    /// millisecond. Re-arming resets the timer's count, so its readiness never needs a read; an
    /// event for its token only wakes the loop. After an error a caller can still poll for
    /// `at - now` and wake to the millisecond.
    pub fn timeout(&mut self, now: Instant, at: Instant) -> io::Result<Duration> {
        let wait = at.saturating_duration_since(now);
        if wait.is_zero() || wait >= FINE_BELOW || self.armed.is_some_and(|armed| armed > now && armed <= at) {
            return Ok(wait);
        }
        self.arm(wait)?;
        self.armed = Some(at);
        Ok(wait)
    }

    #[cfg(target_os = "linux")]
    fn arm(&self, wait: Duration) -> io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let expiration = Expiration::OneShot(TimeSpec::from_duration(wait));
        self.fd.set(expiration, TimerSetTimeFlags::empty()).map_err(io::Error::from)
    }

    #[cfg(not(target_os = "linux"))]
    fn arm(&self, _wait: Duration) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "no timerfd here"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    const TIMER: Token = Token(7);

    #[test]
    fn a_sub_millisecond_wait_wakes_the_poll_before_the_rounded_millisecond() {
        let mut poll = Poll::new().expect("poll");
        let mut timer = FineTimer::new(poll.registry(), TIMER).expect("timerfd");
        let mut events = Events::with_capacity(4);
        let start = Instant::now();
        // A 200 µs wait with a 50 ms poll timeout: only the timer can end the poll early.
        let at = start + Duration::from_micros(200);
        assert_eq!(timer.timeout(start, at).ok(), Some(Duration::from_micros(200)));
        poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
        assert!(events.iter().any(|e| e.token() == TIMER), "the timer woke the poll");
        assert!(Instant::now() >= at, "not before the wake-up asked for");
    }

    #[test]
    fn long_waits_are_left_to_the_poll_and_an_earlier_arming_is_kept() {
        let poll = Poll::new().expect("poll");
        let mut timer = FineTimer::new(poll.registry(), TIMER).expect("timerfd");
        let now = Instant::now();
        assert_eq!(timer.timeout(now, now + Duration::from_millis(5)).ok(), Some(Duration::from_millis(5)));
        assert_eq!(timer.armed, None, "a 5 ms wait loses little to the rounding");
        let first = now + Duration::from_micros(300);
        timer.timeout(now, first).ok();
        timer.timeout(now, now + Duration::from_micros(600)).ok();
        assert_eq!(timer.armed, Some(first), "the earlier wake-up still comes; no re-arm");
        let earlier = now + Duration::from_micros(100);
        timer.timeout(now, earlier).ok();
        assert_eq!(timer.armed, Some(earlier), "an earlier wake-up re-arms");
    }
}
