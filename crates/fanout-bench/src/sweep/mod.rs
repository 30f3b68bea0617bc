//! `fanout bench --sweep`: a capacity figure to plan with. The total publish rate is raised
//! step by step (each step `--sweep-factor` times the one before), each step a whole bench run
//! of its own at that fixed rate (fresh connections, warm-up, measured window, drain). A step
//! passes when its p99 is under `--sweep-p99-ms`, nothing was lost, and the publishers reached
//! the offered rate; a step that fails is tried once more, and the sweep stops at the first
//! step that fails twice. The highest passing rate is the load the server sustains.
//!
//! ```text
//! fanout bench --sweep --subscribers 1000 --publishers 10 --sweep-start 200 --server-pid $PID
//! ```
//!
//! Bounded in every direction: at most `--sweep-steps` rates, two attempts each, and no attempt
//! is started that would take the sweep past `--sweep-seconds` (judged by the longest attempt so
//! far). The table goes to stdout; with `--json` it goes to stderr and stdout gets one JSON line
//! per attempt and a closing one with the sustained rate.

mod steps;
mod table;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::args::{BenchArgs, Plan};
use super::run::measure;
use steps::{step_rates, StepFigures, Sweep, Verdict};
use table::Row;

/// Smallest factor between steps: finer than the run-to-run noise of a shared machine is
/// not worth the time.
pub const FACTOR_MIN: f64 = 1.05;

/// Largest factor between steps.
const FACTOR_MAX: f64 = 10.0;

/// Most steps (distinct rates) of one sweep.
const STEPS_MAX: usize = 64;

/// Highest rate a sweep offers, msgs/s over all publishers.
const RATE_MAX: u64 = 100_000_000;

/// Longest sweep, in seconds.
const SWEEP_SECONDS_MAX: f64 = 4.0 * 3600.0;

/// First step's rate unless told, msgs/s: a twentieth of the rate at which every server here
/// saturates a core on a 1,000-subscriber room (about 2,000 msgs/s on a quiet 2-core VM).
const START_DEFAULT: u64 = 100;

/// Factor between steps unless told: a 25 % resolution, ten steps per decade.
const FACTOR_DEFAULT: f64 = 1.25;

/// Most steps unless told: from the default start, up to about 17,000 msgs/s.
const STEPS_DEFAULT: usize = 24;

/// The p99 a step must stay under unless told, ms: what a chat user does not notice.
const P99_MS_DEFAULT: f64 = 10.0;

/// Longest sweep unless told, seconds.
const SECONDS_DEFAULT: f64 = 900.0;

/// The flags of `--sweep`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sweep")]
pub struct SweepArgs {
    /// Raise the fixed --rate step by step (each step a run of --warmup + --duration) and report
    /// the highest one with p99 under --sweep-p99-ms and nothing lost.
    #[arg(long)]
    pub sweep: bool,
    /// Total publish rate of the first step, msgs/s over all publishers.
    #[arg(long, default_value_t = START_DEFAULT)]
    pub sweep_start: u64,
    /// Each step offers this many times the rate of the one before.
    #[arg(long, default_value_t = FACTOR_DEFAULT)]
    pub sweep_factor: f64,
    /// Most steps (distinct rates).
    #[arg(long, default_value_t = STEPS_DEFAULT)]
    pub sweep_steps: usize,
    /// A step passes only with its p99 under this many milliseconds.
    #[arg(long, default_value_t = P99_MS_DEFAULT)]
    pub sweep_p99_ms: f64,
    /// Longest whole sweep in seconds; no step is started that would end after it.
    #[arg(long, default_value_t = SECONDS_DEFAULT)]
    pub sweep_seconds: f64,
    /// The server's name in the sweep's table and JSON (default: the protocol's name).
    #[arg(long)]
    pub label: Option<String>,
}

impl Default for SweepArgs {
    /// No sweep, and the flags' defaults.
    fn default() -> Self {
        Self {
            sweep: false,
            sweep_start: START_DEFAULT,
            sweep_factor: FACTOR_DEFAULT,
            sweep_steps: STEPS_DEFAULT,
            sweep_p99_ms: P99_MS_DEFAULT,
            sweep_seconds: SECONDS_DEFAULT,
            label: None,
        }
    }
}

/// A sweep, checked.
#[derive(Debug, Clone)]
struct SweepPlan {
    rates: Vec<u64>,
    p99_ms_max: f64,
    time_max: Duration,
    label: String,
    /// Deliveries one published message makes, averaged over the publishers.
    fan_out: f64,
}

impl SweepPlan {
    fn new(args: &BenchArgs) -> Result<Self, String> {
        let sweep = &args.sweep;
        if args.rate != 0 {
            return Err("--rate sets one fixed rate; --sweep chooses its own (see --sweep-start)".into());
        }
        if sweep.sweep_start == 0 || sweep.sweep_start > RATE_MAX {
            return Err(format!("--sweep-start must be in 1..={RATE_MAX} msgs/s"));
        }
        if !(FACTOR_MIN..=FACTOR_MAX).contains(&sweep.sweep_factor) {
            return Err(format!("--sweep-factor must be in {FACTOR_MIN}..={FACTOR_MAX}"));
        }
        if sweep.sweep_steps == 0 || sweep.sweep_steps > STEPS_MAX {
            return Err(format!("--sweep-steps must be in 1..={STEPS_MAX}"));
        }
        if !(sweep.sweep_p99_ms > 0.0 && sweep.sweep_p99_ms <= SWEEP_SECONDS_MAX * 1000.0) {
            return Err("--sweep-p99-ms must be positive".into());
        }
        if !(sweep.sweep_seconds > 0.0 && sweep.sweep_seconds <= SWEEP_SECONDS_MAX) {
            return Err(format!("--sweep-seconds must be in (0, {SWEEP_SECONDS_MAX}]"));
        }
        let plan = Plan::new(args)?;
        let deliveries: usize = (0..plan.publishers).map(|p| plan.subs_in_room(plan.pub_room(p))).sum();
        Ok(Self {
            rates: step_rates(sweep.sweep_start, sweep.sweep_factor, sweep.sweep_steps, RATE_MAX),
            p99_ms_max: sweep.sweep_p99_ms,
            time_max: Duration::from_secs_f64(sweep.sweep_seconds),
            label: sweep.label.clone().unwrap_or_else(|| args.protocol.name().to_string()),
            fan_out: deliveries as f64 / plan.publishers as f64,
        })
    }
}

/// Runs `fanout bench --sweep`, printing each attempt as it ends.
pub fn run(args: &BenchArgs) -> ExitCode {
    let plan = match SweepPlan::new(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("fanout bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let protocol = args.protocol.name();
    let table = |text: &str| {
        if args.json {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    };
    table(&table::header());
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    let mut sweep = Sweep::new(plan.rates.clone());
    while let Some((step, offered, attempt)) = sweep.next(started.elapsed(), longest, plan.time_max) {
        let attempt_started = Instant::now();
        let outcome = measure(&BenchArgs { rate: offered, json: false, ..args.clone() })
            .map(|report| StepFigures::from_report(offered, &report));
        longest = longest.max(attempt_started.elapsed());
        let verdict = Verdict::of(&outcome, plan.p99_ms_max * 1000.0);
        let row = Row {
            label: &plan.label,
            step,
            attempt,
            offered,
            fan_out: plan.fan_out,
            outcome: &outcome,
            verdict: &verdict,
        };
        table(&table::line(&row));
        if args.json {
            println!("{}", table::row_json(&row, protocol));
        }
        sweep.record(verdict.passed());
    }
    table("\n");
    table(&table::summary(&plan.label, sweep.sustained(), sweep.stop(), plan.fan_out, plan.p99_ms_max));
    if args.json {
        println!("{}", table::summary_json(&plan.label, protocol, sweep.sustained(), sweep.stop(), plan.fan_out));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Protocol;

    fn args() -> BenchArgs {
        BenchArgs {
            protocol: Protocol::Redis,
            rooms: 2,
            sweep: SweepArgs {
                sweep: true,
                sweep_start: 100,
                sweep_factor: 2.0,
                sweep_steps: 3,
                ..SweepArgs::default()
            },
            ..crate::args::test_args()
        }
    }

    #[test]
    fn a_plan_has_its_rates_its_fan_out_and_a_label() {
        let plan = SweepPlan::new(&args()).expect("valid");
        assert_eq!(plan.rates, [100, 200, 400]);
        // Publishers 0 and 2 publish to room 0 (5 subscribers), publisher 1 to room 1 (5).
        assert_eq!(plan.fan_out, 5.0);
        assert_eq!(plan.label, "redis");
        assert_eq!(plan.time_max, Duration::from_secs(900));
    }

    #[test]
    fn a_sweep_with_a_fixed_rate_or_bad_bounds_is_refused() {
        for change in [
            (|a: &mut BenchArgs| a.rate = 10) as fn(&mut BenchArgs),
            |a| a.sweep.sweep_start = 0,
            |a| a.sweep.sweep_factor = 1.01,
            |a| a.sweep.sweep_factor = f64::NAN,
            |a| a.sweep.sweep_steps = 0,
            |a| a.sweep.sweep_steps = STEPS_MAX + 1,
            |a| a.sweep.sweep_p99_ms = 0.0,
            |a| a.sweep.sweep_seconds = -1.0,
            |a| a.publishers = 0,
        ] {
            let mut a = args();
            change(&mut a);
            assert!(SweepPlan::new(&a).is_err());
        }
    }
}
