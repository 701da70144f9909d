//! The softmax of one vocabulary row, accumulated in f64.
//!
//! A probability read needs the normaliser `Σ exp(x − max)` over every logit. Called once per
//! logit, libm's scalar `exp` costs about as much as the row's projection itself (262,144
//! calls for Gemma), so on AVX-512 the sum runs eight f64 lanes at a time with an `exp` of its
//! own: Cody–Waite reduction by `ln 2`, the Taylor polynomial of degree 12 on `|r| ≤ ln 2 / 2`
//! (truncation below 2⁻⁵²), and `vscalefpd` for `2ⁿ`, which also takes care of underflow.
//! Each term is within a few f64 ulps of libm's, far below the f32 precision of the result.
//! The sum's order is fixed (eight lane sums, then the lanes in order, then the tail), so a
//! run is bitwise reproducible.

/// The maximum and `Σ exp(x − max)`, accumulated in f64 so that a 262,144-token vocabulary
/// adds no rounding of its own to the normaliser.
pub fn softmax_parts(logits: &[f32]) -> (f64, f64) {
    let max = f64::from(logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
    #[cfg(target_arch = "x86_64")]
    if crate::matmul::available() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return (max, unsafe { avx512::exp_sum(logits, max) });
    }
    (max, exp_sum_scalar(logits, max))
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

fn exp_sum_scalar(logits: &[f32], max: f64) -> f64 {
    logits.iter().map(|&x| (f64::from(x) - max).exp()).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    // fdlibm's split of ln 2: the high part's trailing zeros make `n · LN2_HI` exact.
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    /// `1/k!` for k = 12 down to 2: Horner's order.
    const INV_FACT: [f64; 11] = [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
    ];

    /// `exp(x)` in each lane, for `x ≤ 0` (a NaN stays NaN; `−∞` and anything below −800 give 0).
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_pd(x: __m512d) -> __m512d {
        // `max(floor, x)` returns `x` when it is NaN, so a NaN logit still poisons the sum.
        let x = _mm512_max_pd(_mm512_set1_pd(-800.0), x);
        let n = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_pd(x, _mm512_set1_pd(std::f64::consts::LOG2_E)));
        let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(LN2_HI), x);
        let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(LN2_LO), r);
        let mut p = _mm512_set1_pd(INV_FACT[0]);
        for c in &INV_FACT[1..] {
            p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(*c));
        }
        let one = _mm512_set1_pd(1.0);
        p = _mm512_fmadd_pd(p, r, one);
        p = _mm512_fmadd_pd(p, r, one);
        _mm512_scalef_pd(p, n)
    }

    /// `Σ exp(x − max)` over `logits`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_sum(logits: &[f32], max: f64) -> f64 {
        let chunks = logits.chunks_exact(8);
        let tail = chunks.remainder();
        let vmax = _mm512_set1_pd(max);
        let mut acc = _mm512_setzero_pd();
        for c in chunks {
            // SAFETY: `c` holds exactly 8 f32s; the load is unaligned.
            let x = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(c.as_ptr()) });
            acc = _mm512_add_pd(acc, exp_pd(_mm512_sub_pd(x, vmax)));
        }
        let mut lanes = [0f64; 8];
        // SAFETY: `lanes` holds 8 f64s; the store is unaligned.
        unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc) };
        lanes.iter().sum::<f64>() + super::exp_sum_scalar(tail, max)
    }
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

    /// The vector `exp` against libm's over the range a softmax meets (x − max ≤ 0), within
    /// 4 f64 ulps, and its edge cases.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_exp_is_libms_to_a_few_ulps() {
        use std::arch::x86_64::*;
        if !crate::matmul::available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let exp8 = |x: [f64; 8]| {
            let mut out = [0f64; 8];
            // SAFETY: AVX-512F checked above; both arrays hold 8 f64s.
            unsafe { _mm512_storeu_pd(out.as_mut_ptr(), avx512::exp_pd(_mm512_loadu_pd(x.as_ptr()))) };
            out
        };
        let mut worst = 0f64;
        for i in 0..200_000u32 {
            let xs: [f64; 8] = std::array::from_fn(|j| -f64::from(i * 8 + j as u32) * 7.1e-4 - f64::from(j as u32) * 1e-9);
            for (x, got) in xs.iter().zip(exp8(xs)) {
                let want = x.exp();
                if want > f64::MIN_POSITIVE {
                    worst = worst.max(((got - want) / want).abs() / f64::EPSILON);
                }
            }
        }
        assert!(worst <= 4.0, "worst error {worst} ulps");
        let edge = exp8([0.0, -0.0, f64::NEG_INFINITY, -800.0, -2000.0, f64::NAN, -745.2, -1e-300]);
        assert_eq!(edge[..5], [1.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(edge[5].is_nan(), "a NaN logit must poison the sum");
        assert!(edge[6] >= 0.0 && edge[6] < 1e-320);
        assert_eq!(edge[7], 1.0);
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
