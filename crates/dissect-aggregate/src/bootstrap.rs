//! The seeded percentile bootstrap behind every confidence interval.
//!
//! Method, for one cell (one statistic over the n examples of one condition at one layer):
//!
//! 1. The values are sorted by record id, so the result does not depend on how the input was
//!    sharded or in which order rows were read.
//! 2. A generator is seeded with [`stream_seed`]`(seed, key)`, `key` naming the cell (table,
//!    condition, layer). Each cell has its own stream, so adding a table or a layer never
//!    changes another cell's interval.
//! 3. For each of `resamples` resamples: draw n indices uniformly in `0..n` with
//!    [`SplitMix64::below`], in order, and compute the statistic (mean or median) of those
//!    values.
//! 4. The interval is the `(1-level)/2` and `(1+level)/2` quantiles of the resample
//!    statistics, with numpy's default ("linear", Hyndman–Fan type 7) interpolation
//!    ([`quantile_linear`]).
//!
//! Why a hand-written SplitMix64 rather than `rand`: the checked-in reference script
//! (`tests/fixtures/make_bootstrap_reference.py`) reimplements these ten lines in Python and
//! so reproduces every resample index exactly; `rand`'s `gen_range` algorithm is an
//! implementation detail that has changed between versions and would have to be ported too.
//! SplitMix64 passes BigCrush, which is far more than a bootstrap needs.

use serde::{Deserialize, Serialize};

/// SplitMix64 (Steele, Lea & Flood 2014; the generator of Java's `SplittableRandom`).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator in state `seed`; every value, 0 included, is a valid seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits; the reference Python script reproduces this sequence exactly.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by Lemire's multiply-high: `(x · n) >> 64`. The bias is below
    /// n / 2^64, far under anything a bootstrap can see, and it is one line in Python.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The seed of one cell's stream: FNV-1a (64 bit) of `key`, xor `seed`, passed through one
/// SplitMix64 step so nearby seeds give unrelated streams.
pub fn stream_seed(seed: u64, key: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    SplitMix64::new(h ^ seed).next_u64()
}

/// The statistic a bootstrap estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// The arithmetic mean: every summary table's `mean`, `ci_low`, `ci_high`.
    Mean,
    /// The median (numpy's linear interpolation between the two middle values for even n):
    /// the ranks table's `median`, `median_ci_low`, `median_ci_high`.
    Median,
}

impl Statistic {
    /// The statistic of `values` (NaN when empty); `values` is reordered (the median sorts it).
    pub fn of(self, values: &mut [f64]) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        match self {
            Statistic::Mean => values.iter().sum::<f64>() / values.len() as f64,
            Statistic::Median => {
                values.sort_by(f64::total_cmp);
                quantile_linear(values, 0.5)
            }
        }
    }
}

/// A point estimate with its bootstrap interval over `n` examples. With n = 0 every number is
/// NaN; with n = 1 the interval is the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Examples (distinct records) the estimate rests on.
    pub n: usize,
    /// The statistic over all `n` examples, in the metric's unit (percent for rates).
    pub value: f64,
    /// Lower end of the percentile interval, the `(1-level)/2` quantile of the resamples.
    pub ci_low: f64,
    /// Upper end of the percentile interval, the `(1+level)/2` quantile of the resamples.
    pub ci_high: f64,
}

/// Bootstrap settings: resample count, interval level (0.95) and the run's seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Resamples per cell; 0 gives NaN intervals.
    pub resamples: usize,
    /// Interval coverage, strictly between 0 and 1 (0.95 gives the 2.5th and 97.5th percentiles).
    pub level: f64,
    /// The run's seed, combined with each cell's key by [`stream_seed`].
    pub seed: u64,
}

impl Bootstrap {
    /// The estimate of `stat` over `values` (in the caller's canonical order) with the
    /// interval from the stream of `key`.
    pub fn estimate(&self, values: &[f64], stat: Statistic, key: &str) -> Estimate {
        bootstrap(values, stat, self.resamples, self.level, stream_seed(self.seed, key))
    }
}

/// The percentile bootstrap of the module docs with an explicit stream seed.
pub fn bootstrap(values: &[f64], stat: Statistic, resamples: usize, level: f64, stream_seed: u64) -> Estimate {
    let n = values.len();
    let value = stat.of(&mut values.to_vec());
    if n == 0 || resamples == 0 {
        return Estimate { n, value, ci_low: f64::NAN, ci_high: f64::NAN };
    }
    let mut rng = SplitMix64::new(stream_seed);
    let mut sample = vec![0.0; n];
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| {
            for s in sample.iter_mut() {
                *s = values[rng.below(n as u64) as usize];
            }
            stat.of(&mut sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Estimate { n, value, ci_low: quantile_linear(&stats, alpha), ci_high: quantile_linear(&stats, 1.0 - alpha) }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of ascending `sorted`, interpolated like numpy's default
/// `np.quantile(..., method="linear")`, including its two-sided lerp (so the results match it
/// to the last bit, not only to rounding).
pub fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // The first outputs for seed 1234567 from the reference C implementation (Vigna).
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0usize; 5];
        for _ in 0..10_000 {
            seen[r.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (1800..2200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile_linear(&v, 0.0), 1.0);
        assert_eq!(quantile_linear(&v, 1.0), 8.0);
        assert_eq!(quantile_linear(&v, 0.5), 3.0);
        // np.quantile([1, 2, 4, 8], [0.025, 0.975]) = [1.075, 7.7]
        assert!((quantile_linear(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((quantile_linear(&v, 0.975) - 7.7).abs() < 1e-12);
    }

    #[test]
    fn degenerate_inputs() {
        let e = bootstrap(&[], Statistic::Mean, 100, 0.95, 1);
        assert_eq!(e.n, 0);
        assert!(e.value.is_nan() && e.ci_low.is_nan());
        let e = bootstrap(&[3.5], Statistic::Mean, 100, 0.95, 1);
        assert_eq!((e.value, e.ci_low, e.ci_high), (3.5, 3.5, 3.5));
        let e = bootstrap(&[2.0; 10], Statistic::Median, 100, 0.95, 1);
        assert_eq!((e.value, e.ci_low, e.ci_high), (2.0, 2.0, 2.0));
    }

    #[test]
    fn same_seed_same_interval_other_key_other_stream() {
        let v: Vec<f64> = (0..50).map(|i| f64::from(i * i % 17)).collect();
        let b = Bootstrap { resamples: 500, level: 0.95, seed: 0 };
        assert_eq!(b.estimate(&v, Statistic::Mean, "a"), b.estimate(&v, Statistic::Mean, "a"));
        assert_ne!(stream_seed(0, "a"), stream_seed(0, "b"));
        assert_ne!(stream_seed(0, "a"), stream_seed(1, "a"));
        let e = b.estimate(&v, Statistic::Mean, "a");
        assert!(e.ci_low < e.value && e.value < e.ci_high, "{e:?}");
    }
}
