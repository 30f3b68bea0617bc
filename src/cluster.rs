//! Cluster plumbing that needs no sockets: the link handshake's proof of the shared secret,
//! node ids, the redial schedule (exponential backoff with jitter) and the [`Dialer`], which
//! decides which node addresses to dial and when, from injected time.
//!
//! How nodes are wired (see `protocol.md`): each node's core 0 is its *gateway* and holds one
//! TCP link to every other node's gateway; the other cores reach remote nodes through it. The
//! cost argument: N nodes of C cores need N(N−1)/2 node links this way instead of
//! (N·C)(N·C−1)/2 for core-to-core links, and a message crosses the network at most once per
//! node that wants it instead of once per remote core; the price is up to two extra in-node
//! hops (core → gateway, gateway → core), which are in-memory mail, and per-publisher order
//! survives because every hop is one ordered link.

use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::backoff::Backoff;
use crate::codec::peer::{MAC_BYTES, NONCE_BYTES};
pub use crate::limits::LINK_HANDSHAKE_TIMEOUT;
pub use crate::limits::LINK_PING_INTERVAL;
pub use crate::limits::LINK_SILENCE_MAX;
pub use crate::limits::REDIAL_DELAY_MAX;
pub use crate::limits::REDIAL_DELAY_MIN;
pub use crate::limits::SECRET_BYTES_MAX;
use crate::rng::Rng;

mod dialer;
pub use dialer::{Dial, Dialer};

type HmacSha256 = Hmac<Sha256>;

/// What a node proves it knows: `HMAC-SHA-256(secret, "fanout-link-v1" ‖ peer's nonce ‖ own
/// node id)`. Bound to the peer's fresh nonce, so a recorded proof is worthless later.
pub fn link_proof(secret: &[u8], peer_nonce: &[u8; NONCE_BYTES], own_node_id: u16) -> [u8; MAC_BYTES] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"fanout-link-v1");
    mac.update(peer_nonce);
    mac.update(&own_node_id.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// Checks a peer's proof in constant time.
pub fn check_link_proof(secret: &[u8], own_nonce: &[u8; NONCE_BYTES], peer_node_id: u16, proof: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"fanout-link-v1");
    mac.update(own_nonce);
    mac.update(&peer_node_id.to_be_bytes());
    mac.verify_slice(proof).is_ok()
}

/// A node id from the cluster address when the operator gives none: stable across restarts,
/// and distinct for distinct addresses with high probability (FNV-1a, folded to 16 bits, never 0).
pub fn default_node_id(cluster_addr: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in cluster_addr.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let folded = ((hash >> 16) ^ (hash & 0xFFFF)) as u16;
    folded.max(1)
}

/// When to dial a node again: the shared [`Backoff`] from [`REDIAL_DELAY_MIN`] to
/// [`REDIAL_DELAY_MAX`], so nodes that lost each other at once do not redial in lockstep.
#[derive(Debug, Clone)]
pub struct Redial {
    failures: u32,
    rng: Rng,
}

impl Redial {
    /// A schedule with its own jitter seed.
    pub fn new(seed: u64) -> Self {
        Self { failures: 0, rng: Rng::new(seed) }
    }

    /// A dial failed or a link went down at `now`: when to try next.
    pub fn failed(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        now + Backoff { min: REDIAL_DELAY_MIN, max: REDIAL_DELAY_MAX }.delay(self.failures, &mut self.rng)
    }

    /// The link came up: the next failure starts from the shortest delay again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_proof_checks_only_with_the_same_secret_nonce_and_id() {
        let nonce = [5u8; NONCE_BYTES];
        let proof = link_proof(b"s3cret", &nonce, 7);
        assert!(check_link_proof(b"s3cret", &nonce, 7, &proof));
        assert!(!check_link_proof(b"other", &nonce, 7, &proof), "wrong secret");
        assert!(!check_link_proof(b"s3cret", &[6u8; NONCE_BYTES], 7, &proof), "replayed to another nonce");
        assert!(!check_link_proof(b"s3cret", &nonce, 8, &proof), "claimed by another node");
        assert!(!check_link_proof(b"s3cret", &nonce, 7, &proof[..31]), "truncated");
    }

    #[test]
    fn default_node_ids_are_stable_nonzero_and_spread() {
        assert_eq!(default_node_id("127.0.0.1:7500"), default_node_id("127.0.0.1:7500"));
        let ids: std::collections::BTreeSet<u16> =
            (7500..7600).map(|port| default_node_id(&format!("127.0.0.1:{port}"))).collect();
        assert!(ids.len() >= 99, "100 addresses gave {} ids", ids.len());
        assert!(!ids.contains(&0));
    }

    #[test]
    fn redial_backs_off_with_jitter_up_to_the_cap_and_resets() {
        let now = Instant::now();
        let mut redial = Redial::new(42);
        let mut last = Duration::ZERO;
        for attempt in 0..12 {
            let wait = redial.failed(now) - now;
            let base = REDIAL_DELAY_MIN.saturating_mul(1 << attempt).min(REDIAL_DELAY_MAX);
            assert!(wait <= base && wait >= base / 2, "attempt {attempt}: {wait:?} outside [{:?}, {base:?}]", base / 2);
            last = wait;
        }
        assert!(last >= REDIAL_DELAY_MAX / 2);
        redial.succeeded();
        assert!(redial.failed(now) - now <= REDIAL_DELAY_MIN);
    }
}
