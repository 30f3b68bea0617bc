//! What each mio token names, in one place: every token the reactor registers is made by
//! [`Source::token`] and read back by [`Source::of`], so the ranges of client connections, node
//! links and dials cannot overlap or drift apart between the code that registers a socket and
//! the code that handles its readiness.
//!
//! | tokens | what |
//! |---|---|
//! | `0 .. 2^40` | client connections, by [`ConnKey`] (a slab index) |
//! | `2^40 .. 2^41` | node links, by [`PeerId`] (a link slab index) |
//! | `2^41 .. 2^41 + 2^20` | dials in progress |
//! | the top 4,096 | the listeners (plain, TLS, cluster), the waker, signals, the timer and the metrics endpoint |

use mio::Token;

use crate::interest::PeerId;
use crate::metrics_server::MetricsEndpoint;
use crate::router::ConnKey;

/// Client connections take tokens from 0 up to here.
const CONN_TOKEN_END: usize = 1 << 40;
/// Node links take tokens from the end of the connections' range up to here.
const LINK_TOKEN_END: usize = 1 << 41;
/// Dials in progress take tokens from the end of the links' range up to here.
const DIAL_TOKEN_END: usize = LINK_TOKEN_END + (1 << 20);

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const CLUSTER_LISTENER: Token = Token(usize::MAX - 5);
const TLS_LISTENER: Token = Token(usize::MAX - 6);
const TIMER: Token = Token(usize::MAX - 7);

// The ranges need a 64-bit usize, and the fixed tokens (and the metrics endpoint's, in the top
// 4,096) sit above every range.
const _: () = assert!(usize::BITS >= 64);
const _: () = assert!(DIAL_TOKEN_END < usize::MAX - 4096);

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The client listener.
    Listener,
    /// The client TLS listener.
    TlsListener,
    /// The reactor's waker (mail from siblings, stop, drain, resolver answers).
    Waker,
    /// SIGINT, SIGTERM, SIGHUP, SIGUSR2.
    Signals,
    /// The reactor's sub-millisecond wake-up (`fanout_timer::FineTimer`).
    Timer,
    /// The listener for node links.
    ClusterListener,
    /// The metrics endpoint's listener or one of its scrapes (it numbers its own).
    Metrics(Token),
    /// A client connection.
    Conn(ConnKey),
    /// A node link.
    Link(PeerId),
    /// A dial in progress, by its key in the dial slab.
    Dial(usize),
}

impl Source {
    /// The token to register this source's socket with.
    ///
    /// Panics when a key is outside its range: the slabs behind the keys are bounded far below
    /// (connections by `--max-connections`, links and dials by their own limits), so this is a
    /// programmer error, never a peer's.
    pub(super) fn token(self) -> Token {
        match self {
            Source::Listener => LISTENER,
            Source::TlsListener => TLS_LISTENER,
            Source::Waker => WAKER,
            Source::Signals => SIGNALS,
            Source::Timer => TIMER,
            Source::ClusterListener => CLUSTER_LISTENER,
            Source::Metrics(token) => token,
            Source::Conn(key) => {
                assert!(key.index() < CONN_TOKEN_END, "connection key {key} outside its token range");
                Token(key.index())
            }
            Source::Link(peer) => {
                assert!(peer.index() < LINK_TOKEN_END - CONN_TOKEN_END, "link {peer} outside its token range");
                Token(CONN_TOKEN_END + peer.index())
            }
            Source::Dial(key) => {
                assert!(key < DIAL_TOKEN_END - LINK_TOKEN_END, "dial {key} outside its token range");
                Token(LINK_TOKEN_END + key)
            }
        }
    }

    /// What `token` names; `None` for a token no range holds (never registered).
    pub(super) fn of(token: Token) -> Option<Source> {
        Some(match token {
            LISTENER => Source::Listener,
            TLS_LISTENER => Source::TlsListener,
            WAKER => Source::Waker,
            SIGNALS => Source::Signals,
            TIMER => Source::Timer,
            CLUSTER_LISTENER => Source::ClusterListener,
            token if MetricsEndpoint::owns(token) => Source::Metrics(token),
            Token(t) if t < CONN_TOKEN_END => Source::Conn(ConnKey::new(t)),
            Token(t) if t < LINK_TOKEN_END => Source::Link(PeerId::new(t - CONN_TOKEN_END)),
            Token(t) if t < DIAL_TOKEN_END => Source::Dial(t - LINK_TOKEN_END),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_reads_back_from_its_token() {
        let sources = [
            Source::Listener,
            Source::TlsListener,
            Source::Waker,
            Source::Signals,
            Source::Timer,
            Source::ClusterListener,
            Source::Conn(ConnKey::new(0)),
            Source::Conn(ConnKey::new(CONN_TOKEN_END - 1)),
            Source::Link(PeerId::new(0)),
            Source::Link(PeerId::new(LINK_TOKEN_END - CONN_TOKEN_END - 1)),
            Source::Dial(0),
            Source::Dial(DIAL_TOKEN_END - LINK_TOKEN_END - 1),
        ];
        for source in sources {
            assert_eq!(Source::of(source.token()), Some(source), "{source:?}");
        }
    }

    #[test]
    fn fixed_tokens_are_not_the_metrics_endpoints() {
        for token in [LISTENER, TLS_LISTENER, WAKER, SIGNALS, TIMER, CLUSTER_LISTENER] {
            assert!(!MetricsEndpoint::owns(token), "{token:?}");
        }
        assert_eq!(Source::of(Token(DIAL_TOKEN_END)), None);
    }

    #[test]
    #[should_panic(expected = "outside its token range")]
    fn a_connection_key_beyond_its_range_is_a_programmer_error() {
        let _ = Source::Conn(ConnKey::new(CONN_TOKEN_END)).token();
    }
}
