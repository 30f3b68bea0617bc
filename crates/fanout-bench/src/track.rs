//! What one subscriber has seen of one publisher: the highest sequence number and which of the
//! 256 numbers below it arrived, so a repeat is told from a late arrival. Anything further back
//! than that is counted as reordered and assumed new (its duplicate-ness cannot be known in a
//! bounded memory); on a FIFO server neither ever happens.

/// Sequence numbers remembered below the highest.
const SEEN_BITS: u64 = 256;

/// How a delivery relates to what came before it from the same publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than anything seen: in order (possibly after a gap).
    InOrder,
    /// Lower than the highest seen, and not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// One (subscriber, publisher) pair's sequence state.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// Highest sequence number seen; 0 before the first (sequences start at 1).
    highest: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) is set if `highest - i` was seen.
    seen: [u64; 4],
}

impl SeqTracker {
    /// Notes the arrival of `seq` (at least 1) and classifies it.
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq > self.highest {
            shift_older(&mut self.seen, seq - self.highest);
            self.seen[0] |= 1;
            self.highest = seq;
            return Arrival::InOrder;
        }
        let behind = self.highest - seq;
        if behind >= SEEN_BITS {
            return Arrival::Reordered;
        }
        let (word, bit) = ((behind / 64) as usize, behind % 64);
        if self.seen[word] & (1 << bit) != 0 {
            return Arrival::Duplicate;
        }
        self.seen[word] |= 1 << bit;
        Arrival::Reordered
    }
}

/// Moves every remembered number `by` places further back, forgetting what falls off the end.
fn shift_older(seen: &mut [u64; 4], by: u64) {
    if by >= SEEN_BITS {
        *seen = [0; 4];
        return;
    }
    let words = (by / 64) as usize;
    let bits = (by % 64) as u32;
    for i in (0..seen.len()).rev() {
        let mut value = 0;
        if i >= words {
            value = seen[i - words] << bits;
            if bits > 0 && i > words {
                value |= seen[i - words - 1] >> (64 - bits);
            }
        }
        seen[i] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gaps_late_and_repeats() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::Reordered);
        assert_eq!(t.observe(4), Arrival::Duplicate);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(3), Arrival::Reordered);
        assert_eq!(t.observe(200), Arrival::InOrder);
        assert_eq!(t.observe(5), Arrival::Duplicate, "195 back is still remembered");
        assert_eq!(t.observe(6), Arrival::Reordered);
        assert_eq!(t.observe(1000), Arrival::InOrder);
        assert_eq!(t.observe(200), Arrival::Reordered, "beyond the memory: assumed new");
    }

    #[test]
    fn matches_a_naive_oracle() {
        // A fixed pseudo-random walk of sequence numbers near a rising front.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut t = SeqTracker::default();
        let mut seen = std::collections::HashSet::new();
        let mut highest = 0u64;
        for step in 0..20_000u64 {
            let seq = (step / 2 + 1).saturating_sub(next() % 200).max(1);
            let want = if seen.contains(&seq) {
                Arrival::Duplicate
            } else if seq > highest {
                Arrival::InOrder
            } else {
                Arrival::Reordered
            };
            seen.insert(seq);
            highest = highest.max(seq);
            assert_eq!(t.observe(seq), want, "step {step} seq {seq}");
        }
    }
}
