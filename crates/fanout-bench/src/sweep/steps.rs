//! The pure rules of a sweep: which rates it tries, when a step passes, and when the sweep
//! stops. No sockets and no clock here: the driver passes in what it measured and how long
//! things took.

use std::time::Duration;

use crate::report::Report;

/// Times a step is tried before the sweep stops on it: a shared machine can spoil one run.
pub const ATTEMPTS_PER_STEP: u32 = 2;

/// Share of the offered rate the publishers must reach for a step to pass: below it the
/// server held them back (their in-flight windows were full) or the bench fell behind.
pub const OFFERED_SHARE_MIN: f64 = 0.95;

/// Significant digits of a step's rate (1,164.2 msgs/s becomes 1,160): readable tables, and
/// fine enough for factors down to [`super::FACTOR_MIN`].
const RATE_DIGITS: i32 = 3;

/// The rates of a sweep: `start`, then each one `factor` times the one before, rounded to
/// [`RATE_DIGITS`] significant digits and strictly rising; at most `steps` of them, none over
/// `rate_max`.
pub fn step_rates(start: u64, factor: f64, steps: usize, rate_max: u64) -> Vec<u64> {
    let mut rates: Vec<u64> = Vec::with_capacity(steps);
    let mut exact = start as f64;
    for _ in 0..steps {
        let floor = rates.last().map_or(1, |last| last + 1);
        let rate = round_significant(exact).max(floor);
        if rate > rate_max {
            break;
        }
        rates.push(rate);
        exact *= factor;
    }
    rates
}

/// `x` rounded to [`RATE_DIGITS`] significant digits.
fn round_significant(x: f64) -> u64 {
    let digits = x.max(1.0).log10().floor() as i32 + 1;
    let scale = 10f64.powi((digits - RATE_DIGITS).max(0));
    ((x / scale).round() * scale) as u64
}

/// What one step measured, taken from its [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    /// Messages per second the publishers were asked to send, all together.
    pub offered: u64,
    /// Messages per second they sent in the measured window.
    pub published_per_sec: f64,
    /// Deliveries per second in the measured window.
    pub delivered_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that were duplicated, reordered or misrouted.
    pub wrong: u64,
    /// Connections lost after set-up, and publisher windows reset after stalling.
    pub disconnects: u64,
    /// The server's CPU over the step, 1.0 = one core.
    pub server_cpu_share: Option<f64>,
    /// The bench's own CPU over the step.
    pub bench_cpu_share: Option<f64>,
}

impl StepFigures {
    /// The figures of a run at `offered` msgs/s.
    pub fn from_report(offered: u64, report: &Report) -> Self {
        Self {
            offered,
            published_per_sec: report.published_per_sec(),
            delivered_per_sec: report.delivered_per_sec(),
            p50_us: report.latency_us(0.5),
            p99_us: report.latency_us(0.99),
            lost: report.lost(),
            wrong: report.duplicated() + report.reordered() + report.misdelivered(),
            disconnects: report.disconnects() + report.window_stalls(),
            server_cpu_share: report.server_cpu_share(),
            bench_cpu_share: report.bench_cpu_share(),
        }
    }
}

/// Whether a step passed, and if not the first reason it did not.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// p99 under the bound, nothing lost, the offered rate reached.
    Pass,
    /// The run could not be made (set-up failed, the server went away).
    Error(String),
    /// Deliveries that never arrived.
    Lost(u64),
    /// Connections dropped or windows that stalled.
    Disconnects(u64),
    /// Duplicated, reordered or misrouted deliveries.
    Wrong(u64),
    /// The publishers reached only this share of the offered rate.
    Behind(f64),
    /// p99 at or over the bound, microseconds.
    SlowP99(f64),
}

impl Verdict {
    /// Judges one step's outcome against a p99 bound in microseconds.
    pub fn of(outcome: &Result<StepFigures, String>, p99_us_max: f64) -> Self {
        let figures = match outcome {
            Ok(figures) => figures,
            Err(e) => return Self::Error(e.clone()),
        };
        let share = figures.published_per_sec / figures.offered.max(1) as f64;
        if figures.lost > 0 {
            Self::Lost(figures.lost)
        } else if figures.disconnects > 0 {
            Self::Disconnects(figures.disconnects)
        } else if figures.wrong > 0 {
            Self::Wrong(figures.wrong)
        } else if share < OFFERED_SHARE_MIN {
            Self::Behind(share)
        } else if figures.p99_us >= p99_us_max {
            Self::SlowP99(figures.p99_us)
        } else {
            Self::Pass
        }
    }

    /// Whether the step counts as sustained.
    pub fn passed(&self) -> bool {
        *self == Self::Pass
    }
}

/// Why a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// This rate failed [`ATTEMPTS_PER_STEP`] times.
    FailedTwice(u64),
    /// Every rate passed: the server's limit lies above the last one.
    AllPassed,
    /// The next attempt, at this rate, would not have fitted in the sweep's time.
    OutOfTime(u64),
}

/// The progress of a sweep: the step and attempt to run next, the highest rate that passed,
/// and why it stopped. Each call to [`Sweep::record`] moves it on, so a sweep takes at most
/// `ATTEMPTS_PER_STEP` times its number of rates attempts.
#[derive(Debug, Clone)]
pub struct Sweep {
    rates: Vec<u64>,
    step: usize,
    attempt: u32,
    sustained: Option<u64>,
    stop: Option<Stop>,
}

impl Sweep {
    /// A sweep over `rates`, lowest first.
    pub fn new(rates: Vec<u64>) -> Self {
        Self { rates, step: 0, attempt: 1, sustained: None, stop: None }
    }

    /// The next attempt as (step index, rate, attempt number), or `None` once the sweep has
    /// stopped. `elapsed` is the sweep's time so far, `longest` the longest attempt so far:
    /// an attempt is not started when that much more would pass `limit`.
    pub fn next(&mut self, elapsed: Duration, longest: Duration, limit: Duration) -> Option<(usize, u64, u32)> {
        if self.stop.is_some() {
            return None;
        }
        let Some(&rate) = self.rates.get(self.step) else {
            self.stop = Some(Stop::AllPassed);
            return None;
        };
        if elapsed + longest > limit {
            self.stop = Some(Stop::OutOfTime(rate));
            return None;
        }
        Some((self.step, rate, self.attempt))
    }

    /// Records whether the attempt [`Sweep::next`] gave passed.
    pub fn record(&mut self, passed: bool) {
        let Some(&rate) = self.rates.get(self.step) else {
            return;
        };
        if passed {
            self.sustained = Some(rate);
            self.step += 1;
            self.attempt = 1;
        } else if self.attempt < ATTEMPTS_PER_STEP {
            self.attempt += 1;
        } else {
            self.stop = Some(Stop::FailedTwice(rate));
        }
    }

    /// The highest rate that passed, if any.
    pub fn sustained(&self) -> Option<u64> {
        self.sustained
    }

    /// Why the sweep stopped, once it has.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn figures() -> StepFigures {
        StepFigures {
            offered: 1000,
            published_per_sec: 999.0,
            delivered_per_sec: 999_000.0,
            p50_us: 400.0,
            p99_us: 2_500.0,
            lost: 0,
            wrong: 0,
            disconnects: 0,
            server_cpu_share: Some(0.5),
            bench_cpu_share: None,
        }
    }

    /// Runs a sweep whose attempts pass as `outcomes` says, with no time limit; returns the
    /// attempts made and the sweep.
    fn drive(rates: Vec<u64>, outcomes: &[bool]) -> (Vec<(u64, u32)>, Sweep) {
        let mut sweep = Sweep::new(rates);
        let mut attempts = Vec::new();
        let mut outcomes = outcomes.iter();
        while let Some((_, rate, attempt)) = sweep.next(Duration::ZERO, Duration::ZERO, MINUTE) {
            attempts.push((rate, attempt));
            sweep.record(*outcomes.next().expect("an outcome for every attempt"));
        }
        (attempts, sweep)
    }

    #[test]
    fn rates_rise_geometrically_with_three_significant_digits() {
        assert_eq!(step_rates(100, 1.25, 12, u64::MAX), [100, 125, 156, 195, 244, 305, 381, 477, 596, 745, 931, 1160]);
        assert_eq!(step_rates(1000, 2.0, 4, u64::MAX), [1000, 2000, 4000, 8000]);
    }

    #[test]
    fn rates_always_rise_and_stay_under_the_maximum() {
        assert_eq!(step_rates(1, 1.05, 5, u64::MAX), [1, 2, 3, 4, 5], "rounding never repeats a rate");
        assert_eq!(step_rates(100, 2.0, 10, 1000), [100, 200, 400, 800]);
        assert_eq!(step_rates(5000, 2.0, 10, 1000), Vec::<u64>::new());
    }

    #[test]
    fn a_step_that_fails_once_is_retried_and_the_sweep_goes_on_if_the_retry_passes() {
        let (attempts, sweep) = drive(vec![10, 20, 40, 80], &[true, false, true, true, false, false]);
        assert_eq!(attempts, [(10, 1), (20, 1), (20, 2), (40, 1), (80, 1), (80, 2)]);
        assert_eq!(sweep.sustained(), Some(40));
        assert_eq!(sweep.stop(), Some(Stop::FailedTwice(80)));
    }

    #[test]
    fn a_first_step_that_fails_twice_sustains_nothing() {
        let (attempts, sweep) = drive(vec![10, 20], &[false, false]);
        assert_eq!(attempts, [(10, 1), (10, 2)]);
        assert_eq!(sweep.sustained(), None);
        assert_eq!(sweep.stop(), Some(Stop::FailedTwice(10)));
    }

    #[test]
    fn a_sweep_that_passes_every_step_says_so() {
        let (attempts, sweep) = drive(vec![10, 20], &[true, true]);
        assert_eq!(attempts, [(10, 1), (20, 1)]);
        assert_eq!(sweep.sustained(), Some(20));
        assert_eq!(sweep.stop(), Some(Stop::AllPassed));
    }

    #[test]
    fn no_attempt_starts_that_would_overrun_the_time_limit() {
        let mut sweep = Sweep::new(vec![10, 20, 40]);
        let step = Duration::from_secs(25);
        assert_eq!(sweep.next(Duration::ZERO, Duration::ZERO, MINUTE), Some((0, 10, 1)));
        sweep.record(true);
        assert_eq!(sweep.next(step, step, MINUTE), Some((1, 20, 1)));
        sweep.record(true);
        assert_eq!(sweep.next(2 * step, step, MINUTE), None, "50 s + 25 s > 60 s");
        assert_eq!(sweep.stop(), Some(Stop::OutOfTime(40)));
        assert_eq!(sweep.sustained(), Some(20));
        assert_eq!(sweep.next(Duration::ZERO, Duration::ZERO, MINUTE), None, "a stopped sweep stays stopped");
    }

    #[test]
    fn a_step_passes_only_with_p99_under_the_bound_nothing_lost_and_the_rate_reached() {
        let bound = 10_000.0;
        assert_eq!(Verdict::of(&Ok(figures()), bound), Verdict::Pass);
        let judge = |change: fn(&mut StepFigures)| {
            let mut f = figures();
            change(&mut f);
            Verdict::of(&Ok(f), bound)
        };
        assert_eq!(judge(|f| f.p99_us = 10_000.0), Verdict::SlowP99(10_000.0));
        assert_eq!(judge(|f| f.lost = 3), Verdict::Lost(3));
        assert_eq!(judge(|f| f.disconnects = 1), Verdict::Disconnects(1));
        assert_eq!(judge(|f| f.wrong = 2), Verdict::Wrong(2));
        assert_eq!(judge(|f| f.published_per_sec = 900.0), Verdict::Behind(0.9));
        assert_eq!(judge(|f| f.published_per_sec = 950.0), Verdict::Pass, "95 % of the offered rate is enough");
        assert_eq!(
            judge(|f| {
                f.lost = 1;
                f.p99_us = 50_000.0;
            }),
            Verdict::Lost(1),
            "loss is named before latency"
        );
        assert_eq!(Verdict::of(&Err("refused".into()), bound), Verdict::Error("refused".into()));
        assert!(!Verdict::Error("refused".into()).passed());
    }
}
