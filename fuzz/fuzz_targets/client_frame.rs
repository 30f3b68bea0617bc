//! libFuzzer entry point of the `client_frame` check. The check itself lives in `checks/client_frame.rs`, shared
//! with `tests/fuzz_corpus.rs`, which replays `corpus/client_frame/` with it on stable.

#![no_main]

#[path = "../checks/client_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
