//! Replays every checked-in fuzz corpus file (`fuzz/corpus/<target>/*`) through the same check
//! its fuzz target runs, as an ordinary test on stable: no nightly, no libFuzzer.
//!
//! The checks are not copied here: each lives in `fuzz/checks/<target>.rs`, which both the
//! libFuzzer entry point (`fuzz/fuzz_targets/<target>.rs`) and this file include with `#[path]`.
//! So a seed that the fuzzer once found interesting, or a crash that was fixed and then added to
//! the corpus, is re-checked by every `cargo test`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/client_frame.rs"]
mod client_frame;
#[path = "../fuzz/checks/line_splitter.rs"]
mod line_splitter;
#[path = "../fuzz/checks/metrics_http.rs"]
mod metrics_http;
#[path = "../fuzz/checks/peer_frame.rs"]
mod peer_frame;
#[path = "../fuzz/checks/peer_link.rs"]
mod peer_link;
#[path = "../fuzz/checks/session.rs"]
mod session;

/// The corpus files of `target`, sorted by name so failures are reported in a stable order.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("list {}: {e}", dir.display())).path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every corpus file of `target`, then fails with the name of each file whose
/// check panicked (the panic messages are printed above it). Returns how many files ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ holds no seed: nothing would be replayed");
    let mut failed = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files fail the check: {failed:#?}",
        failed.len(),
        files.len()
    );
    eprintln!("{target}: replayed {} corpus files", files.len());
    files.len()
}

#[test]
fn client_frame_corpus_passes_its_check() {
    assert!(replay("client_frame", client_frame::check) > 0);
}

#[test]
fn line_splitter_corpus_passes_its_check() {
    assert!(replay("line_splitter", line_splitter::check) > 0);
}

#[test]
fn peer_frame_corpus_passes_its_check() {
    assert!(replay("peer_frame", peer_frame::check) > 0);
}

#[test]
fn metrics_http_corpus_passes_its_check() {
    assert!(replay("metrics_http", metrics_http::check) > 0);
}

#[test]
fn peer_link_corpus_passes_its_check() {
    assert!(replay("peer_link", peer_link::check) > 0);
}

#[test]
fn session_corpus_passes_its_check() {
    assert!(replay("session", session::check) > 0);
}

/// Every target in `fuzz/fuzz_targets/` has a corpus replayed above, so a new target cannot be
/// added without its seeds being checked on stable.
#[test]
fn every_fuzz_target_has_a_replayed_corpus() {
    let replayed = ["client_frame", "line_splitter", "metrics_http", "peer_frame", "peer_link", "session"];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    targets.sort();
    assert_eq!(targets, replayed, "fuzz targets and replayed corpora differ: add the new target here");
}
