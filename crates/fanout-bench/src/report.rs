//! The end of a run: counts merged from every thread, a summary table for people and one JSON
//! line for scripts.

use std::fmt::Write;

use super::args::Plan;
use super::histogram::Histogram;
use super::json::JsonObject;
use super::shared::Shared;
use super::worker::{Counters, ThreadReport};
use std::time::Duration;

/// How long the phases took, and what they cost.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Connecting and joining everything.
    pub setup: Duration,
    /// The measured window as the coordinator saw it.
    pub measured: Duration,
    /// From the end of publishing until everything expected arrived (or the drain limit).
    pub drain: Duration,
    /// The bench's CPU seconds over the measured window and the drain.
    pub bench_cpu_s: Option<f64>,
    /// The server's CPU seconds over the same span, if its pid was given and readable.
    pub server_cpu_s: Option<f64>,
}

/// Messages the subscribers should receive: every measured publish times its room's
/// subscribers.
pub fn expected_deliveries(plan: &Plan, shared: &Shared) -> u64 {
    shared
        .publishers
        .iter()
        .enumerate()
        .map(|(p, counters)| counters.measured() * plan.subs_in_room(plan.pub_room(p)) as u64)
        .sum()
}

/// Everything a run found: counts, latency, CPU; printable as a table or one JSON line.
#[derive(Debug)]
pub struct Report {
    plan: Plan,
    timing: Timing,
    published: u64,
    expected: u64,
    counters: Counters,
    latency: Histogram,
    first_error: Option<String>,
}

impl Report {
    /// Merges the threads' reports.
    pub fn new(plan: &Plan, shared: &Shared, threads: &[ThreadReport], timing: Timing) -> Self {
        let mut counters = Counters::default();
        let mut latency = Histogram::default();
        let mut first_error = None;
        for thread in threads {
            counters.add(&thread.counters);
            latency.merge(&thread.latency);
            if first_error.is_none() {
                first_error.clone_from(&thread.first_error);
            }
        }
        Self {
            plan: plan.clone(),
            timing,
            published: shared.publishers.iter().map(|p| p.measured()).sum(),
            expected: expected_deliveries(plan, shared),
            counters,
            latency,
            first_error,
        }
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.timing.measured.as_secs_f64().max(1e-9)
    }

    /// Messages published in the measured window.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Deliveries the subscribers should have received: each measured publish times the
    /// subscribers of its room.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Deliveries of measured messages, duplicates included.
    pub fn delivered(&self) -> u64 {
        self.counters.delivered
    }

    /// Measured messages delivered at least once, counted once per subscriber.
    pub fn unique(&self) -> u64 {
        self.counters.unique
    }

    /// Expected deliveries that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.counters.unique)
    }

    /// Deliveries a subscriber had already received.
    pub fn duplicated(&self) -> u64 {
        self.counters.duplicated
    }

    /// Deliveries with a sequence number below one already received from the same publisher.
    pub fn reordered(&self) -> u64 {
        self.counters.reordered
    }

    /// Deliveries that broke room isolation or were not bench payloads.
    pub fn misdelivered(&self) -> u64 {
        self.counters.misrouted + self.counters.malformed
    }

    /// Connections lost after set-up.
    pub fn disconnects(&self) -> u64 {
        self.counters.disconnects
    }

    /// Unique deliveries beyond what was expected: always 0 unless the bench itself is wrong.
    pub fn surplus(&self) -> u64 {
        self.counters.unique.saturating_sub(self.expected)
    }

    /// Latency at `quantile` (0.5 for the median), in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.quantile(quantile) as f64 / 1000.0
    }

    /// Messages published per second of the measured window.
    pub fn published_per_sec(&self) -> f64 {
        self.per_second(self.published)
    }

    /// Deliveries per second of the measured window, duplicates included.
    pub fn delivered_per_sec(&self) -> f64 {
        self.per_second(self.counters.delivered)
    }

    /// Publisher windows reset after stalling: their messages were lost or very late.
    pub fn window_stalls(&self) -> u64 {
        self.counters.window_stalls
    }

    /// The server's CPU time over the measured window and the drain, as a share of that span
    /// (1.0 = one core busy); `None` without a readable `--server-pid`.
    pub fn server_cpu_share(&self) -> Option<f64> {
        self.timing.server_cpu_s.map(|s| s / self.cpu_span_s())
    }

    /// The bench's own CPU share over the same span as [`Report::server_cpu_share`].
    pub fn bench_cpu_share(&self) -> Option<f64> {
        self.timing.bench_cpu_s.map(|s| s / self.cpu_span_s())
    }

    /// Seconds over which the CPU times were taken: the measured window and the drain.
    fn cpu_span_s(&self) -> f64 {
        (self.timing.measured + self.timing.drain).as_secs_f64().max(1e-9)
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let plan = &self.plan;
        let c = &self.counters;
        let mut out = String::new();
        let rate = if plan.rate == 0 { "unbounded".to_string() } else { format!("{} msgs/s", group(plan.rate)) };
        let _ = writeln!(
            out,
            "fanout bench: {} at {}, {} subscribers, {} publishers, {} rooms, {} B payloads",
            plan.protocol.name(),
            plan.addr_text,
            plan.subscribers,
            plan.publishers,
            plan.rooms,
            plan.size
        );
        let _ = writeln!(
            out,
            "rate {rate}, window {} msgs/publisher, {} client threads; set up in {:.2} s, measured {:.2} s after {:.2} s warm-up, drained in {:.2} s",
            plan.window,
            plan.threads,
            self.timing.setup.as_secs_f64(),
            self.timing.measured.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            self.timing.drain.as_secs_f64()
        );
        let _ = writeln!(out, "  {:<12} {:>15} {:>15}", "", "messages", "msgs/s");
        let _ = writeln!(
            out,
            "  {:<12} {:>15} {:>15}",
            "published",
            group(self.published),
            group_f(self.per_second(self.published))
        );
        let mb_per_sec = self.per_second(c.delivered) * plan.size as f64 / 1e6;
        let _ = writeln!(
            out,
            "  {:<12} {:>15} {:>15}   {mb_per_sec:.1} MB/s of payload",
            "delivered",
            group(c.delivered),
            group_f(self.per_second(c.delivered))
        );
        for (name, value) in [
            ("expected", self.expected),
            ("lost", self.lost()),
            ("duplicated", c.duplicated),
            ("reordered", c.reordered),
        ] {
            let _ = writeln!(out, "  {name:<12} {:>15}", group(value));
        }
        let _ = writeln!(
            out,
            "  {:<12} p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples)",
            "latency us",
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max() as f64 / 1000.0,
            group(self.latency.count())
        );
        let server = match (self.timing.server_cpu_s, plan.server_pid) {
            (Some(s), _) => format!("{s:.2}"),
            (None, Some(pid)) => format!("unknown (cannot read /proc/{pid}/stat)"),
            (None, None) => "unknown (no --server-pid)".to_string(),
        };
        let bench = self.timing.bench_cpu_s.map_or_else(|| "unknown".to_string(), |s| format!("{s:.2}"));
        let per_read = (c.delivered + c.unmeasured) as f64 / c.reads.max(1) as f64;
        let _ = writeln!(
            out,
            "  {:<12} bench {bench}  server {server}  (measured window + drain; /proc ticks taken as 100/s; \
             {per_read:.1} deliveries per bench read)",
            "cpu s"
        );
        for (what, value) in [
            ("deliveries from a publisher of another room (isolation broken)", c.misrouted),
            ("deliveries that are not bench payloads", c.malformed),
            ("connections lost after set-up", c.disconnects),
            ("publisher windows reset after stalling 2 s (messages lost or very late)", c.window_stalls),
            ("unique deliveries beyond expected (bench bug)", self.surplus()),
        ] {
            if value > 0 {
                let _ = writeln!(out, "  warning: {} {what}", group(value));
            }
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "  first connection error: {e}");
        }
        out
    }

    /// The JSON object, on one line.
    pub fn json(&self) -> String {
        let plan = &self.plan;
        let c = &self.counters;
        let mut latency = JsonObject::default();
        latency
            .num("p50", self.latency_us(0.5))
            .num("p90", self.latency_us(0.9))
            .num("p99", self.latency_us(0.99))
            .num("p999", self.latency_us(0.999))
            .num("max", self.latency.max() as f64 / 1000.0)
            .num("min", self.latency.min() as f64 / 1000.0)
            .num("mean", self.latency.mean() / 1000.0)
            .int("count", self.latency.count());
        let mut o = JsonObject::default();
        o.str("protocol", plan.protocol.name())
            .str("addr", &plan.addr_text)
            .int("subscribers", plan.subscribers as u64)
            .int("publishers", plan.publishers as u64)
            .int("rooms", plan.rooms as u64)
            .int("size", plan.size as u64)
            .int("rate", plan.rate)
            .int("window", plan.window)
            .int("threads", plan.threads as u64)
            .num("warmup_s", plan.warmup.as_secs_f64())
            .num("measured_s", self.timing.measured.as_secs_f64())
            .num("drain_s", self.timing.drain.as_secs_f64())
            .num("setup_s", self.timing.setup.as_secs_f64())
            .int("published", self.published)
            .num("published_per_sec", self.per_second(self.published))
            .int("delivered", c.delivered)
            .num("delivered_per_sec", self.per_second(c.delivered))
            .num("mb_per_sec", self.per_second(c.delivered) * plan.size as f64 / 1e6)
            .int("expected", self.expected)
            .int("unique", c.unique)
            .int("lost", self.lost())
            .int("duplicated", c.duplicated)
            .int("reordered", c.reordered)
            .int("surplus", self.surplus())
            .int("misrouted", c.misrouted)
            .int("malformed", c.malformed)
            .int("disconnects", c.disconnects)
            .int("window_stalls", c.window_stalls)
            .int("warmup_deliveries", c.unmeasured)
            .int("bench_reads", c.reads)
            .object("latency_us", latency)
            .opt_num("bench_cpu_s", self.timing.bench_cpu_s)
            .opt_num("server_cpu_s", self.timing.server_cpu_s)
            .opt_str("error", self.first_error.as_deref());
        o.finish()
    }
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A rate, rounded and grouped.
pub fn group_f(x: f64) -> String {
    if x.is_finite() && x >= 0.0 {
        group(x.round() as u64)
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group_f(2.6), "3");
    }
}
