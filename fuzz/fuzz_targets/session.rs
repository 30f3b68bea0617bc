//! libFuzzer entry point of the `session` check. The check itself lives in `checks/session.rs`, shared
//! with `tests/fuzz_corpus.rs`, which replays `corpus/session/` with it on stable.

#![no_main]

#[path = "../checks/session.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
