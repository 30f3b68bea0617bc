//! libFuzzer entry point of the `line_splitter` check. The check itself lives in `checks/line_splitter.rs`, shared
//! with `tests/fuzz_corpus.rs`, which replays `corpus/line_splitter/` with it on stable.

#![no_main]

#[path = "../checks/line_splitter.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
