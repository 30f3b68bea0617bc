//! How a sweep is shown: one markdown table row per attempt (rows of several servers can be
//! put under one header), a closing line with the sustained load, and the same as JSON lines
//! for scripts.

use std::fmt::Write;

use super::steps::{StepFigures, Stop, Verdict};
use crate::json::JsonObject;
use crate::report::{group, group_f};

/// One attempt of a sweep, as shown.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The server's name in the table.
    pub label: &'a str,
    /// Step index, from 0.
    pub step: usize,
    /// Attempt at this step, from 1.
    pub attempt: u32,
    /// The offered rate, msgs/s.
    pub offered: u64,
    /// Deliveries each message makes (subscribers of its room, averaged over publishers).
    pub fan_out: f64,
    /// What was measured, or why nothing was.
    pub outcome: &'a Result<StepFigures, String>,
    /// The judgement.
    pub verdict: &'a Verdict,
}

/// The two header lines of the markdown table.
pub fn header() -> String {
    concat!(
        "| server | offered msgs/s | offered deliveries/s | delivered msgs/s | p50 ms | p99 ms | lost ",
        "| server CPU | bench CPU | verdict |\n",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    .to_string()
}

/// One table line for `row`.
pub fn line(row: &Row) -> String {
    let offered_deliveries = group_f(row.offered as f64 * row.fan_out);
    let figures = match row.outcome {
        Ok(f) => format!(
            "{} | {:.2} | {:.2} | {} | {} | {}",
            group_f(f.delivered_per_sec),
            f.p50_us / 1000.0,
            f.p99_us / 1000.0,
            group(f.lost),
            percent(f.server_cpu_share),
            percent(f.bench_cpu_share)
        ),
        Err(_) => "- | - | - | - | - | -".to_string(),
    };
    format!(
        "| {} | {} | {offered_deliveries} | {figures} | {} |\n",
        row.label,
        group(row.offered),
        verdict_text(row.verdict, row.attempt)
    )
}

/// A CPU share as a percentage of one core, or `-` when unknown.
fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_string(), |s| format!("{:.0} %", s * 100.0))
}

/// The verdict in a few words; a retry says which attempt it was.
fn verdict_text(verdict: &Verdict, attempt: u32) -> String {
    let text = match verdict {
        Verdict::Pass => "pass".to_string(),
        Verdict::Error(e) => format!("fail: {}", e.replace('|', "/")),
        Verdict::Lost(n) => format!("fail: {} lost", group(*n)),
        Verdict::Disconnects(n) => format!("fail: {} disconnects or stalled windows", group(*n)),
        Verdict::Wrong(n) => format!("fail: {} duplicated, reordered or misrouted", group(*n)),
        Verdict::Behind(share) => format!("fail: published {:.0} % of offered", share * 100.0),
        Verdict::SlowP99(us) => format!("fail: p99 {:.1} ms", us / 1000.0),
    };
    if attempt > 1 {
        format!("{text} (try {attempt})")
    } else {
        text
    }
}

/// The sentence after the table: the sustained load and why the sweep stopped.
pub fn summary(label: &str, sustained: Option<u64>, stop: Option<Stop>, fan_out: f64, p99_ms_max: f64) -> String {
    let mut out = match sustained {
        Some(rate) => format!(
            "{label} sustains {} msgs/s ({} deliveries/s) with p99 under {p99_ms_max} ms and nothing lost",
            group(rate),
            group_f(rate as f64 * fan_out)
        ),
        None => format!("{label} sustains none of the rates tried with p99 under {p99_ms_max} ms and nothing lost"),
    };
    let _ = match stop {
        Some(Stop::FailedTwice(rate)) => write!(out, "; {} msgs/s failed twice", group(rate)),
        Some(Stop::AllPassed) => write!(out, "; every step passed, so its limit lies higher"),
        Some(Stop::OutOfTime(rate)) => {
            write!(out, "; the sweep ran out of time before {} msgs/s, so its limit may lie higher", group(rate))
        }
        None => Ok(()),
    };
    out.push('\n');
    out
}

/// One JSON line for `row`.
pub fn row_json(row: &Row, protocol: &str) -> String {
    let mut o = JsonObject::default();
    o.str("label", row.label)
        .str("protocol", protocol)
        .int("step", row.step as u64)
        .int("attempt", u64::from(row.attempt))
        .int("offered_per_sec", row.offered)
        .num("offered_deliveries_per_sec", row.offered as f64 * row.fan_out);
    if let Ok(f) = row.outcome {
        o.num("published_per_sec", f.published_per_sec)
            .num("delivered_per_sec", f.delivered_per_sec)
            .num("p50_us", f.p50_us)
            .num("p99_us", f.p99_us)
            .int("lost", f.lost)
            .int("wrong", f.wrong)
            .int("disconnects", f.disconnects)
            .opt_num("server_cpu_percent", f.server_cpu_share.map(|s| s * 100.0))
            .opt_num("bench_cpu_percent", f.bench_cpu_share.map(|s| s * 100.0));
    }
    o.bool("pass", row.verdict.passed()).str("verdict", &verdict_text(row.verdict, row.attempt));
    o.finish()
}

/// The closing JSON line: the sustained rate (`null` if none) and why the sweep stopped.
pub fn summary_json(label: &str, protocol: &str, sustained: Option<u64>, stop: Option<Stop>, fan_out: f64) -> String {
    let stop = match stop {
        Some(Stop::FailedTwice(_)) => "failed_twice",
        Some(Stop::AllPassed) => "all_passed",
        Some(Stop::OutOfTime(_)) => "out_of_time",
        None => "unknown",
    };
    let mut o = JsonObject::default();
    o.str("label", label)
        .str("protocol", protocol)
        .opt_num("sustained_per_sec", sustained.map(|r| r as f64))
        .opt_num("sustained_deliveries_per_sec", sustained.map(|r| r as f64 * fan_out))
        .str("stop", stop);
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> StepFigures {
        StepFigures {
            offered: 1250,
            published_per_sec: 1249.6,
            delivered_per_sec: 1_249_600.0,
            p50_us: 412.0,
            p99_us: 12_346.0,
            lost: 0,
            wrong: 0,
            disconnects: 0,
            server_cpu_share: Some(0.873),
            bench_cpu_share: None,
        }
    }

    #[test]
    fn a_row_shows_rates_grouped_latency_in_ms_and_cpu_in_percent() {
        let outcome = Ok(figures());
        let verdict = Verdict::SlowP99(12_346.0);
        let row = Row {
            label: "fanout-mt",
            step: 5,
            attempt: 2,
            offered: 1250,
            fan_out: 1000.0,
            outcome: &outcome,
            verdict: &verdict,
        };
        assert_eq!(
            line(&row),
            "| fanout-mt | 1,250 | 1,250,000 | 1,249,600 | 0.41 | 12.35 | 0 | 87 % | - | fail: p99 12.3 ms (try 2) |\n"
        );
        assert_eq!(
            row_json(&row, "fanout"),
            concat!(
                r#"{"label":"fanout-mt","protocol":"fanout","step":5,"attempt":2,"offered_per_sec":1250,"#,
                r#""offered_deliveries_per_sec":1250000,"published_per_sec":1249.6,"delivered_per_sec":1249600,"#,
                r#""p50_us":412,"p99_us":12346,"lost":0,"wrong":0,"disconnects":0,"server_cpu_percent":87.3,"#,
                r#""bench_cpu_percent":null,"pass":false,"verdict":"fail: p99 12.3 ms (try 2)"}"#
            )
        );
        let columns = header().lines().map(|l| l.matches('|').count()).collect::<Vec<_>>();
        assert_eq!(columns, [11, 11]);
        assert_eq!(line(&row).matches('|').count(), 11);
    }

    #[test]
    fn a_failed_run_keeps_the_columns_and_says_why() {
        let outcome = Err("only 3 of 1010 connections | were set up".to_string());
        let verdict = Verdict::of(&outcome, 10_000.0);
        let row = Row {
            label: "nats",
            step: 0,
            attempt: 1,
            offered: 100,
            fan_out: 10.0,
            outcome: &outcome,
            verdict: &verdict,
        };
        assert_eq!(
            line(&row),
            "| nats | 100 | 1,000 | - | - | - | - | - | - | fail: only 3 of 1010 connections / were set up |\n"
        );
        assert_eq!(
            row_json(&row, "nats"),
            concat!(
                r#"{"label":"nats","protocol":"nats","step":0,"attempt":1,"offered_per_sec":100,"#,
                r#""offered_deliveries_per_sec":1000,"pass":false,"#,
                r#""verdict":"fail: only 3 of 1010 connections / were set up"}"#
            )
        );
    }

    #[test]
    fn the_summary_names_the_sustained_load_and_why_the_sweep_stopped() {
        assert_eq!(
            summary("redis", Some(931), Some(Stop::FailedTwice(1160)), 1000.0, 10.0),
            "redis sustains 931 msgs/s (931,000 deliveries/s) with p99 under 10 ms and nothing lost; \
             1,160 msgs/s failed twice\n"
        );
        assert_eq!(
            summary("nats", None, Some(Stop::FailedTwice(100)), 1000.0, 10.0),
            "nats sustains none of the rates tried with p99 under 10 ms and nothing lost; 100 msgs/s failed twice\n"
        );
        assert_eq!(
            summary("fanout", Some(8000), Some(Stop::AllPassed), 100.0, 5.0),
            "fanout sustains 8,000 msgs/s (800,000 deliveries/s) with p99 under 5 ms and nothing lost; \
             every step passed, so its limit lies higher\n"
        );
        assert_eq!(
            summary_json("redis", "redis", Some(931), Some(Stop::FailedTwice(1160)), 1000.0),
            r#"{"label":"redis","protocol":"redis","sustained_per_sec":931,"sustained_deliveries_per_sec":931000,"stop":"failed_twice"}"#
        );
        assert_eq!(
            summary_json("nats", "nats", None, Some(Stop::OutOfTime(100)), 1000.0),
            r#"{"label":"nats","protocol":"nats","sustained_per_sec":null,"sustained_deliveries_per_sec":null,"stop":"out_of_time"}"#
        );
    }
}
