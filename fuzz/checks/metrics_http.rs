//! The `metrics_http` check: the metrics endpoint's request-head parser on arbitrary bytes, fed
//! whole and growing one byte at a time as a slow client would send it. It never panics, an
//! answer never changes once the head is complete, and a head over the limit is always `Bad`.
//!
//! Shared by `fuzz_targets/metrics_http.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`.

use fanout::metrics::{parse_request, HttpRequest, HTTP_REQUEST_BYTES_MAX};

/// Runs the check on one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let whole = parse_request(data);
    let mut settled: Option<HttpRequest> = None;
    for end in 0..=data.len().min(HTTP_REQUEST_BYTES_MAX + 16) {
        let answer = parse_request(&data[..end]);
        if let Some(first) = &settled {
            assert_eq!(&answer, first, "the answer changed after the head was complete (at {end} bytes)");
        } else if answer != HttpRequest::Incomplete {
            settled = Some(answer);
        }
    }
    if data.len() >= HTTP_REQUEST_BYTES_MAX && memchr::memmem::find(data, b"\r\n\r\n").is_none() {
        assert_eq!(whole, HttpRequest::Bad, "an oversize head without an end must be refused");
    }
    if let HttpRequest::Get(path) = &whole {
        assert!(path.starts_with('/') && !path.contains('?'), "a GET path must be absolute without a query");
    }
}
