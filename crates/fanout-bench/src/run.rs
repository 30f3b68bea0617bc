//! The coordinating thread: starts the client threads, moves the run through its phases
//! (set-up, warm-up, measure, drain), prints progress, and collects the reports.

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::args::{BenchArgs, Plan};
use super::cpu::cpu_seconds;
use super::report::{expected_deliveries, group_f, Report, Timing};
use super::shared::{Phase, Shared};
use super::sweep;
use super::worker::{ConnSpec, ThreadReport, Worker};

/// Longest set-up (connect, join, subscribe) before the run is abandoned.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait after publishing stops for the deliveries still in flight.
const DRAIN_MAX: Duration = Duration::from_secs(3);

/// How often the coordinator looks at the shared counters.
const TICK: Duration = Duration::from_millis(5);

/// How often a progress line is printed (on stderr, when it is a terminal).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs `fanout bench`: prints the summary table on stdout, or with `--json` only the JSON line
/// on stdout (the table and progress then go to stderr, so `| jq` works); errors on stderr.
/// With `--sweep`, a series of runs at rising rates instead (see the `sweep` module).
pub fn run(args: BenchArgs) -> ExitCode {
    if args.sweep.sweep {
        return sweep::run(&args);
    }
    match measure(&args) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report.table());
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fanout bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench described by `args` and returns its findings without printing anything
/// (for tests and tools); the error says why the run could not be made.
pub fn measure(args: &BenchArgs) -> Result<Report, String> {
    execute(Plan::new(args)?)
}

fn execute(plan: Plan) -> Result<Report, String> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new(plan.publishers));
    let mut shares = vec![Vec::new(); plan.threads];
    let subscribers = (0..plan.subscribers).map(|index| ConnSpec { publisher: false, index });
    let publishers = (0..plan.publishers).map(|index| ConnSpec { publisher: true, index });
    for (n, spec) in subscribers.chain(publishers).enumerate() {
        shares[n % plan.threads].push(spec);
    }
    let mut handles = Vec::with_capacity(plan.threads);
    let mut started = Ok(());
    for (i, share) in shares.iter().enumerate() {
        started = start_thread(i, &plan, &shared, share).map(|handle| handles.push(handle));
        if started.is_err() {
            break;
        }
    }
    let timing = started.and_then(|()| drive(&plan, &shared));
    shared.set_phase(Phase::Stop);
    let mut reports = Vec::with_capacity(handles.len());
    for handle in handles {
        reports.push(handle.join().map_err(|_| "a client thread panicked".to_string())?);
    }
    let timing = timing?;
    Ok(Report::new(&plan, &shared, &reports, timing))
}

fn start_thread(
    i: usize,
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    share: &[ConnSpec],
) -> Result<JoinHandle<ThreadReport>, String> {
    let worker =
        Worker::new(Arc::clone(plan), Arc::clone(shared), share).map_err(|e| format!("cannot set up a poll: {e}"))?;
    thread::Builder::new()
        .name(format!("bench-{i}"))
        .spawn(move || worker.run())
        .map_err(|e| format!("cannot start a client thread: {e}"))
}

/// Takes the run from set-up to the end of the drain.
fn drive(plan: &Plan, shared: &Shared) -> Result<Timing, String> {
    let mut progress = Progress::new(shared);
    let setup_started = Instant::now();
    let total = plan.connections();
    loop {
        check(shared)?;
        let ready = shared.ready.load(Ordering::Acquire);
        if ready >= total {
            break;
        }
        if setup_started.elapsed() > SETUP_TIMEOUT {
            return Err(format!(
                "only {ready} of {total} connections were set up within {} s",
                SETUP_TIMEOUT.as_secs()
            ));
        }
        progress.tick(shared, Phase::Setup);
        thread::sleep(TICK);
    }
    let setup = setup_started.elapsed();
    shared.start_ns.store(shared.now_ns(), Ordering::Release);
    if !plan.warmup.is_zero() {
        shared.set_phase(Phase::Warmup);
        wait(plan.warmup, shared, &mut progress, Phase::Warmup)?;
    }
    let bench_cpu_before = cpu_seconds(None);
    let server_cpu_before = plan.server_pid.and_then(|pid| cpu_seconds(Some(pid)));
    let measure_started = Instant::now();
    shared.set_phase(Phase::Measure);
    wait(plan.duration, shared, &mut progress, Phase::Measure)?;
    shared.set_phase(Phase::Drain);
    let measured = measure_started.elapsed();
    let drain_started = Instant::now();
    // Every thread must have stopped publishing before the expected count is final.
    while shared.stopped_publishing.load(Ordering::Acquire) < plan.threads && drain_started.elapsed() < DRAIN_MAX {
        check(shared)?;
        thread::sleep(Duration::from_millis(1));
    }
    let expected = expected_deliveries(plan, shared);
    while shared.unique_measured.load(Ordering::Acquire) < expected && drain_started.elapsed() < DRAIN_MAX {
        check(shared)?;
        progress.tick(shared, Phase::Drain);
        thread::sleep(Duration::from_millis(1));
    }
    let drain = drain_started.elapsed();
    let bench_cpu_s = bench_cpu_before.zip(cpu_seconds(None)).map(|(before, after)| after - before);
    let server_cpu_s = server_cpu_before
        .zip(plan.server_pid.and_then(|pid| cpu_seconds(Some(pid))))
        .map(|(before, after)| after - before);
    Ok(Timing { setup, measured, drain, bench_cpu_s, server_cpu_s })
}

/// Sleeps through a phase of length `span`, printing progress.
fn wait(span: Duration, shared: &Shared, progress: &mut Progress, phase: Phase) -> Result<(), String> {
    let until = Instant::now() + span;
    loop {
        check(shared)?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        progress.tick(shared, phase);
        thread::sleep(TICK.min(until - now));
    }
}

/// The run's failure, if a thread reported one.
fn check(shared: &Shared) -> Result<(), String> {
    match shared.failure() {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Once-a-second progress lines, only when stdout is a terminal.
struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    last_sent: u64,
    last_delivered: u64,
}

impl Progress {
    fn new(shared: &Shared) -> Self {
        let now = Instant::now();
        Self {
            enabled: io::stderr().is_terminal(),
            started: now,
            last: now,
            last_sent: shared.sent_total(),
            last_delivered: shared.delivered_total(),
        }
    }

    fn tick(&mut self, shared: &Shared, phase: Phase) {
        let now = Instant::now();
        let span = now - self.last;
        if !self.enabled || span < PROGRESS_EVERY {
            return;
        }
        let (sent, delivered) = (shared.sent_total(), shared.delivered_total());
        let secs = span.as_secs_f64();
        eprintln!(
            "{:6.1} s  {:<8} ready {:>6}  published {:>12} msgs/s  delivered {:>14} msgs/s",
            (now - self.started).as_secs_f64(),
            phase.name(),
            shared.ready.load(Ordering::Relaxed),
            group_f((sent - self.last_sent) as f64 / secs),
            group_f((delivered - self.last_delivered) as f64 / secs),
        );
        self.last = now;
        self.last_sent = sent;
        self.last_delivered = delivered;
    }
}
