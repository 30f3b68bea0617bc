//! The seeded generator of the tests, so a failing schedule can be replayed from its seed: the
//! crate's own `fanout::rng::Rng`, with helpers.

#![allow(dead_code)] // each test crate uses some of it

/// The tests' view of the crate's one generator (`fanout::rng::Rng`, splitmix64), with the
/// helpers schedules need.
pub struct Rng(fanout::rng::Rng);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(fanout::rng::Rng::new(seed))
    }

    /// A generator for one of several independent streams of one seed.
    pub fn stream(seed: u64, stream: u64) -> Self {
        Self::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.next() % denominator < numerator
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// How many of `available` bytes to move: often all, else a random cut.
    pub fn cut(&mut self, available: usize) -> usize {
        if self.chance(1, 2) {
            available
        } else {
            1 + self.below(available)
        }
    }
}
