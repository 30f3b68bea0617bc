//! One backoff for everything that retries: a gateway redialing a node, a client failing over.
//!
//! Exponential with "equal jitter": the pause before retry `n` (1 = before the second attempt)
//! is the step `min · 2^(n-1)`, capped at `max`, of which a random half is kept — between 50% and
//! 100% of the step — so peers that failed together do not retry in lockstep, yet none waits
//! longer than the cap.

use std::time::Duration;

use crate::rng::Rng;

/// The shape of a retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step before the first retry.
    pub min: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Backoff {
    /// The pause before retry number `retry` (1-based; 0 is treated as 1), drawing its jitter
    /// from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut Rng) -> Duration {
        let doubling = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        let step = self.min.saturating_mul(doubling).min(self.max);
        let step = u64::try_from(step.as_micros()).unwrap_or(u64::MAX);
        let half = step / 2;
        Duration::from_micros(half + rng.below(step - half + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_and_caps() {
        let backoff = Backoff { min: Duration::from_millis(50), max: Duration::from_secs(2) };
        let mut rng = Rng::new(42);
        for retry in 1..40 {
            let step = Duration::from_millis(50).saturating_mul(1u32.checked_shl(retry - 1).unwrap_or(u32::MAX));
            let step = step.min(Duration::from_secs(2));
            for _ in 0..100 {
                let pause = backoff.delay(retry, &mut rng);
                assert!(pause >= step / 2 && pause <= step, "retry {retry}: {pause:?} outside {step:?}/2..={step:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_and_a_zero_schedule_is_zero() {
        let backoff = Backoff { min: Duration::from_millis(50), max: Duration::from_secs(2) };
        let mut rng = Rng::new(0);
        let pauses: std::collections::HashSet<Duration> = (0..50).map(|_| backoff.delay(3, &mut rng)).collect();
        assert!(pauses.len() > 10, "jitter should spread pauses, got {pauses:?}");
        let zero = Backoff { min: Duration::ZERO, max: Duration::ZERO };
        assert_eq!(zero.delay(5, &mut rng), Duration::ZERO);
    }
}
