//! Functions over host f32 slices on AVX-512, computed in f64 lanes; each returns `None` (or
//! `false`) where the CPU lacks AVX-512F, and its caller takes the scalar path.
//!
//! `exp` is Cody–Waite reduction by `ln 2`, the Taylor polynomial of degree 12 on
//! `|r| ≤ ln 2 / 2` (truncation below 2⁻⁵²) and `vscalefpd` for `2ⁿ`, which also takes care of
//! underflow and overflow: within a few f64 ulps of libm's. The softmax normaliser
//! ([`crate::softmax`]) and the tanh-approximated GELU below use it.

/// The tanh-approximated GELU (`gelu_pytorch_tanh`, `gelu_new`) of every element, in place:
/// `0.5·x·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`, computed as the identical
/// `x / (1 + exp(−2u))` in f64 and rounded once, so each result is the formula's value to
/// within one f32 ulp. `false`, and `x` untouched, where the CPU lacks AVX-512F.
pub fn gelu_tanh_in_place(x: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::matmul::available() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        unsafe { avx512::gelu_tanh(x) };
        return true;
    }
    let _ = x;
    false
}

/// `Σ exp(x − max)` over `logits`, in a fixed order: eight lane sums, then the lanes in
/// order, then the tail by libm.
pub fn exp_sum(logits: &[f32], max: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if crate::matmul::available() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return Some(unsafe { avx512::exp_sum(logits, max) });
    }
    let _ = (logits, max);
    None
}

/// √(2/π).
const SQRT_2_OVER_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;

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

    /// `exp(x)` in each lane: a NaN stays NaN, `−∞` and anything below −800 give 0, beyond
    /// 709.8 it overflows to `+∞`.
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

    /// [`super::exp_sum`] on AVX-512F.
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
        lanes.iter().sum::<f64>() + crate::softmax::exp_sum_scalar(tail, max)
    }

    /// [`super::gelu_tanh_in_place`] on AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_tanh(x: &mut [f32]) {
        let gelu8 = |v: __m512d| {
            let inner = _mm512_fmadd_pd(_mm512_mul_pd(_mm512_mul_pd(v, v), v), _mm512_set1_pd(0.044_715), v);
            let e = exp_pd(_mm512_mul_pd(inner, _mm512_set1_pd(-2.0 * super::SQRT_2_OVER_PI)));
            _mm512_div_pd(v, _mm512_add_pd(_mm512_set1_pd(1.0), e))
        };
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 8 f32s; the load and the store are unaligned.
            unsafe {
                let v = _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr()));
                _mm256_storeu_ps(c.as_mut_ptr(), _mm512_cvtpd_ps(gelu8(v)));
            }
        }
        let tail = chunks.into_remainder();
        let mut lanes = [0f64; 8];
        for (l, &t) in lanes.iter_mut().zip(tail.iter()) {
            *l = f64::from(t);
        }
        // SAFETY: `lanes` holds 8 f64s; the load and the store are unaligned.
        unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), gelu8(_mm512_loadu_pd(lanes.as_ptr()))) };
        for (t, l) in tail.iter_mut().zip(lanes) {
            *t = l as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Against the tanh formula evaluated in f64 with libm's exp: within one f32 ulp (or 1e-38) everywhere,
    /// the tail of a length that is not a multiple of 8 included; an overflowing `exp` gives 0.
    #[test]
    fn gelu_is_the_tanh_formula_to_one_f32_ulp() {
        let mut x: Vec<f32> = (0..200_003).map(|i| (i as f32 - 100_000.0) * 1e-4 * (1.0 + (i % 7) as f32)).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e4, -1e4, f32::NAN]);
        let mut y = x.clone();
        if !gelu_tanh_in_place(&mut y) {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for (&a, &g) in x.iter().zip(&y).take(x.len() - 1) {
            let a64 = f64::from(a);
            // 0.5·x·(1 + tanh u) by libm's exp, in the form without cancellation for each sign.
            let u = SQRT_2_OVER_PI * (a64 + 0.044_715 * a64 * a64 * a64);
            let want = if u < 0.0 { a64 * (2.0 * u).exp() / (1.0 + (2.0 * u).exp()) } else { a64 / (1.0 + (-2.0 * u).exp()) } as f32;
            let ulp = (want.abs() * f32::EPSILON).max(1e-38);
            assert!((g - want).abs() <= ulp, "gelu({a}) = {g}, want {want}");
        }
        assert!(y[y.len() - 1].is_nan());
        assert_eq!(y[y.len() - 2], 0.0);
    }
}
