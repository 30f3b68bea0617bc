//! libFuzzer entry point of the `metrics_http` check. The check itself lives in `checks/metrics_http.rs`, shared
//! with `tests/fuzz_corpus.rs`, which replays `corpus/metrics_http/` with it on stable.

#![no_main]

#[path = "../checks/metrics_http.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
