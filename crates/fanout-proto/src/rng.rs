//! Randomness, always passed in: a seeded generator for jitter and simulations, and a
//! [`RandomSource`] for what must be unpredictable (link nonces), which the server fills from
//! the operating system and a simulation from a seed — so a simulated run replays exactly.

use std::fmt;
use std::io::Read;

/// A small deterministic generator (splitmix64): backoff jitter, simulations. Not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed` (every seed, 0 included, gives a good sequence).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }
}

/// Where unpredictable bytes come from: the OS for a server, a seed for a simulation.
pub trait RandomSource: fmt::Debug + Send {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]);

    /// Eight random bytes as a number.
    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes);
        u64::from_be_bytes(bytes)
    }
}

/// The operating system's randomness (`/dev/urandom`), for nonces an attacker must not predict.
#[derive(Debug, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(out));
        if read.is_err() {
            // Only weakens replay protection, never correctness: mix the clock and the pid.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let mut rng = Rng::new(nanos as u64 ^ u64::from(std::process::id()).rotate_left(32));
            for byte in out {
                *byte = rng.next_u64() as u8;
            }
        }
    }
}

/// Deterministic "randomness" from a seed, for simulations and tests that must replay.
#[derive(Debug, Clone)]
pub struct SeededRandom(Rng);

impl SeededRandom {
    /// A source that always yields the same bytes for the same seed.
    pub fn new(seed: u64) -> Self {
        Self(Rng::new(seed))
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.0.next_u64().to_be_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_replay_and_differ_by_seed() {
        let (mut a, mut b, mut c) = (SeededRandom::new(7), SeededRandom::new(7), SeededRandom::new(8));
        let (mut x, mut y, mut z) = ([0u8; 13], [0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn os_randomness_differs() {
        assert_ne!(OsRandom.next_u64(), OsRandom.next_u64());
    }

    #[test]
    fn below_stays_below() {
        let mut rng = Rng::new(0);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
