//! libFuzzer entry point of the `peer_frame` check. The check itself lives in `checks/peer_frame.rs`, shared
//! with `tests/fuzz_corpus.rs`, which replays `corpus/peer_frame/` with it on stable.

#![no_main]

#[path = "../checks/peer_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
