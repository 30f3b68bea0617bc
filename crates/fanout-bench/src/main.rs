//! `fanout-bench`: the load generator on its own (also run as `fanout bench`).

use std::process::ExitCode;

use clap::Parser;

/// Load-test a server (fanout, NATS or Redis pub/sub): throughput, latency, loss.
#[derive(Parser)]
#[command(name = "fanout-bench", version)]
struct Cli {
    #[command(flatten)]
    args: fanout_bench::BenchArgs,
}

fn main() -> ExitCode {
    fanout_bench::run(Cli::parse().args)
}
