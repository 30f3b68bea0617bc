//! libFuzzer entry point of the `peer_link` check. The check itself lives in `checks/peer_link.rs`,
//! shared with `tests/fuzz_corpus.rs`, which replays `corpus/peer_link/` with it on stable.

#![no_main]

#[path = "../checks/peer_link.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
