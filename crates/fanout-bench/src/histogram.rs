//! A log-linear histogram in the manner of HdrHistogram: values below 512 are counted exactly,
//! larger ones in 256 buckets per power of two, so any value is reported within 0.4% of what
//! was recorded, over the whole `u64` range, in a fixed 114 KiB. Each client thread records
//! into its own; they are merged at the end.

/// Values below `1 << LINEAR_BITS` get a bucket each.
const LINEAR_BITS: u32 = 9;

/// Buckets per power of two above the linear range.
const SUB_BUCKETS: usize = 1 << (LINEAR_BITS - 1);

/// Buckets in all: the linear range, then one row of [`SUB_BUCKETS`] per remaining exponent.
const BUCKETS: usize = (1 << LINEAR_BITS) + (64 - LINEAR_BITS as usize) * SUB_BUCKETS;

/// Counts of `u64` values (the bench records nanoseconds).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0, min: u64::MAX, max: 0, sum: 0 }
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds `other`'s counts to this one.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), 0 if none.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value recorded (exact), 0 if none.
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// The mean of the recorded values (exact), 0 if none.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at `quantile` (0.0..=1.0): the highest value of the bucket holding that rank,
    /// never above the exact maximum; 0 if nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest_in(bucket).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket `value` is counted in.
fn bucket_of(value: u64) -> usize {
    if value < 1 << LINEAR_BITS {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - (LINEAR_BITS - 1);
    let mantissa = (value >> shift) as usize;
    (1 << LINEAR_BITS) + (exponent - LINEAR_BITS) as usize * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
}

/// The highest value counted in `bucket`.
fn highest_in(bucket: usize) -> u64 {
    if bucket < 1 << LINEAR_BITS {
        return bucket as u64;
    }
    let above = bucket - (1 << LINEAR_BITS);
    let exponent = (above / SUB_BUCKETS) as u32 + LINEAR_BITS;
    let mantissa = (above % SUB_BUCKETS + SUB_BUCKETS) as u64;
    let shift = exponent - (LINEAR_BITS - 1);
    (mantissa << shift) + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_in_order_and_within_precision() {
        let mut values: Vec<u64> =
            (0..5000u64).chain((10..64).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 12345])).collect();
        values.sort_unstable();
        let mut last = 0;
        for value in values {
            let bucket = bucket_of(value);
            assert!(bucket < BUCKETS);
            assert!(bucket >= last, "buckets must not go backwards at {value}");
            last = bucket;
            let high = highest_in(bucket);
            assert!(high >= value, "{value} is above its bucket's top {high}");
            assert!((high - value) as f64 <= value as f64 / 256.0, "{value} reported as {high}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(highest_in(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100_000);
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.005, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(1_000_000);
        b.record(5);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, 5, 1_000_000));
        assert_eq!(a.quantile(0.5), 10);
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }
}
