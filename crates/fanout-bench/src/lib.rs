//! `fanout bench`: a load generator for pub/sub servers, in the spirit of `nats bench` and
//! `redis-benchmark`, that speaks fanout's protocol, NATS core and Redis pub/sub with the same
//! workload and the same payloads, so the three can be compared side by side.
//!
//! Subscribers are spread evenly over the rooms; publisher `p` publishes to room `p % rooms`.
//! Every payload carries its send time, publisher and sequence number, so each subscriber
//! measures end-to-end latency and counts lost, duplicated and reordered messages per
//! publisher. Connections are spread over a few client threads, each with its own mio poll.
//!
//! ```text
//! fanout serve --listen 127.0.0.1:7400 &
//! fanout bench --subscribers 100 --publishers 1 --size 64 --duration 5 --json --server-pid $!
//! ```
//!
//! A run goes through set-up (everyone connected and joined), warm-up (publishing, not
//! counted), the measured window (messages published in it are marked in their payload), and a
//! drain of at most 3 s in which nothing is published and what is in flight arrives. Only
//! messages published in the measured window count: `expected` is their number times the
//! subscribers of their room, `lost = expected - unique deliveries`.
//!
//! Without `--rate`, each publisher sends as fast as a window allows: at most `--window`
//! messages not yet delivered to every subscriber of its room (tracked with shared counters),
//! so no server is pushed into cutting slow consumers and queues stay bounded. With `--rate`,
//! the publishers' schedules are offset from one another (publisher `p` of `n` by `p / n` of its
//! period), so together they offer an even stream rather than `n` messages at once.
//!
//! With `--sweep`, the bench makes a series of fixed-rate runs at rising rates and reports the
//! highest one each server sustains with p99 under a bound and nothing lost (the `sweep`
//! module; `benches/sweep.sh` runs it against fanout, NATS and Redis and plots the result).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod cpu;
mod histogram;
mod json;
mod payload;
mod report;
mod run;
mod shared;
mod sweep;
mod track;
mod wire;
mod worker;

pub use args::{BenchArgs, Protocol};
pub use report::Report;
pub use run::{measure, run};
pub use sweep::SweepArgs;
