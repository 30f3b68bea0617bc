//! Connection churn: how many connect → HELLO → WELCOME → close cycles per second a server
//! takes, and how it spreads them over its reactors.
//!
//! Not a criterion bench (it needs a live server): `cargo bench --bench churn -- ADDR [SECONDS]
//! [THREADS]`. Without an address it prints how to run it and exits, so `cargo bench` passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fanout::client::Client;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(addr) = args.first().cloned() else {
        eprintln!("usage: cargo bench --bench churn -- ADDR [SECONDS] [THREADS]");
        return;
    };
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut per_core: BTreeMap<u16, u64> = BTreeMap::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    match Client::connect(addr.as_str(), &format!("churn{t}")) {
                        Ok(client) => *per_core.entry(client.welcome().core_id).or_default() += 1,
                        Err(_) => failures += 1,
                    }
                }
                (per_core, failures)
            })
        })
        .collect();
    let mut per_core: BTreeMap<u16, u64> = BTreeMap::new();
    let mut failures = 0;
    for worker in workers {
        let (counts, failed) = worker.join().expect("churn worker");
        for (core, n) in counts {
            *per_core.entry(core).or_default() += n;
        }
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = per_core.values().sum();
    println!(
        "churn: {total} connections in {elapsed:.2} s = {:.0}/s, {failures} failed, per core {per_core:?}",
        total as f64 / elapsed
    );
}
