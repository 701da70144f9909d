//! The softmax of one vocabulary row, accumulated in f64.
//!
//! A probability read needs the normaliser `Σ exp(x − max)` over every logit. Called once per
//! logit, libm's scalar `exp` costs about as much as the row's projection itself (262,144
//! calls for Gemma), so on AVX-512 the sum runs eight f64 lanes at a time
//! ([`crate::vmath::exp_sum`]). Each term is within a few f64 ulps of libm's, far below the
//! f32 precision of the result, and the sum's order is fixed, so a run is bitwise reproducible.

/// The maximum and `Σ exp(x − max)`, accumulated in f64 so that a 262,144-token vocabulary
/// adds no rounding of its own to the normaliser.
pub fn softmax_parts(logits: &[f32]) -> (f64, f64) {
    let max = f64::from(logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
    (max, crate::vmath::exp_sum(logits, max).unwrap_or_else(|| exp_sum_scalar(logits, max)))
}

/// `softmax(logits)[token]`.
pub fn softmax_at(logits: &[f32], token: usize) -> f32 {
    let (max, sum) = softmax_parts(logits);
    ((f64::from(logits[token]) - max).exp() / sum) as f32
}

/// The whole distribution.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let (max, sum) = softmax_parts(logits);
    logits.iter().map(|&x| ((f64::from(x) - max).exp() / sum) as f32).collect()
}

/// libm's `exp` term by term, summed in order.
pub(crate) fn exp_sum_scalar(logits: &[f32], max: f64) -> f64 {
    logits.iter().map(|&x| (f64::from(x) - max).exp()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_at_is_normalised_and_shift_invariant() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 7.0).collect();
        let total: f64 = (0..logits.len()).map(|t| f64::from(softmax_at(&logits, t))).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        let shifted: Vec<f32> = logits.iter().map(|x| x + 1000.0).collect();
        for t in [0, 17, 999] {
            assert!((softmax_at(&logits, t) - softmax_at(&shifted, t)).abs() < 1e-6);
        }
        assert_eq!(softmax_at(&[0.0, 0.0], 1), 0.5);
        assert_eq!(softmax(&[0.0; 8]), [0.125; 8]);
    }

    /// The f64 normaliser of the vector path and the sequential libm sum agree to 1e-12 relative
    /// (the sequential sum of 262,147 terms is itself only good to about 1e-14), so every
    /// probability rounds to the same f32 on a spread of logit rows.
    #[test]
    fn the_normaliser_agrees_with_libms() {
        let mut bits = crate::test_rng(0x2545_f491_4f6c_dd1d);
        let mut next = || (bits() >> 11) as f64 / (1u64 << 53) as f64;
        for (n, scale) in [(262_147usize, 8.0), (1001, 40.0), (7, 1.0), (50_000, 0.01)] {
            let logits: Vec<f32> = (0..n).map(|_| ((next() - 0.5) * 2.0 * scale) as f32).collect();
            let (max, sum) = softmax_parts(&logits);
            let reference = exp_sum_scalar(&logits, max);
            assert!(((sum - reference) / reference).abs() < 1e-12, "{n}: {sum} vs {reference}");
            let same = (0..n)
                .step_by(97)
                .filter(|&t| ((f64::from(logits[t]) - max).exp() / sum) as f32 == ((f64::from(logits[t]) - max).exp() / reference) as f32)
                .count();
            assert_eq!(same, n.div_ceil(97), "{n}");
        }
        let mut with_nan = vec![0.5f32; 100];
        with_nan[42] = f32::NAN;
        assert!(softmax_parts(&with_nan).1.is_nan());
    }
}
