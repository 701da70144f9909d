//! Screened exact projections: ranks and top-k lists of the vocabulary view equal to the f32
//! path's, from a bf16 screen of every logit and f32 recomputation of the few logits the screen
//! cannot place.
//!
//! # What is exact
//! The f32 path ([`crate::matmul`]) computes logit `t` of row `h` as `l_t`, the sequential FMA
//! sum `Σ_k W[t,k]·h[k]` in index order (then `+ bias_t` in f32 for a logit-lens head with a
//! bias). The answers here — the number of tokens with `l_t > l_target`, and the `k` largest
//! `l_t` ordered by value then by lower index, as [`crate::predict::rank_of`] and
//! [`crate::predict::top_k`] define them — are those of the f32 logits, bit for bit: every
//! logit that decides an answer is recomputed by that same sequential FMA sum.
//!
//! # The screen and its bound
//! `l̃_t = Ŵ_t · ĥ`, with `Ŵ` and `ĥ` rounded to bf16 (subnormals flushed) and f32
//! accumulation ([`crate::amx`]). For every token, with `‖·‖` the Euclidean norm, `ΔW = W − Ŵ`,
//! `Δh = h − ĥ`, `d` the hidden size, `u = 2⁻²⁴` and `γ_n = n·u/(1 − n·u)`:
//!
//! ```text
//! |l_t − l̃_t| ≤ |l_t − W_t·h| + |ΔW_t·h| + |Ŵ_t·Δh| + |Ŵ_t·ĥ − l̃_t|
//!             ≤ γ_d‖W_t‖‖h‖ + ‖ΔW_t‖‖h‖ + ‖Ŵ_t‖‖Δh‖ + γ_2d‖Ŵ_t‖‖ĥ‖
//!             ≤ ‖ΔW_t‖·X + ‖Ŵ_t‖·Y,  X = (1 + γ_d)‖h‖,  Y = γ_d‖h‖ + ‖Δh‖ + γ_2d‖ĥ‖
//! ```
//!
//! The first term is the f32 path's own rounding (each FMA rounds once: the standard bound
//! `γ_d Σ|W_t,k h_k|`, then Cauchy–Schwarz); the middle two are the bf16 roundings, exact
//! identities bounded by Cauchy–Schwarz; the last is the screen's accumulation, allowed two
//! roundings per term (the AMX unit adds products in pairs; however it orders them, no more).
//! `‖ΔW_t‖` and `‖Ŵ_t‖` are computed once per model in f64 and rounded up; `X` and `Y` once
//! per row. Evaluating `l̃_t ± b_t` in f32 rounds too, so the bound used is inflated by
//! `2⁻¹⁸·b_t + 2⁻²¹·|l̃_t|`, far above those roundings, plus `10⁻³⁰` for the products the
//! units flush to zero. This gives `lo_t ≤ l_t ≤ hi_t` for every token; a bias is added to
//! both ends in f32, which keeps the order because rounding is monotone.
//!
//! # The decisions
//! - **Rank of `target`:** `l_target` is recomputed; tokens with `lo_t > l_target` are above,
//!   tokens with `hi_t ≤ l_target` are not, the rest are recomputed and compared.
//! - **Top `k`:** `τ` is the `k`-th largest `lo_t`; a token with `hi_t < τ` has `k` tokens
//!   strictly above it and cannot be in the list. The others are recomputed and sorted as
//!   [`crate::predict::top_k`] sorts.
//!
//! Probabilities are not screened: the softmax normaliser needs every logit to about 10⁻⁷,
//! and a screen loose enough to be cheap places almost none that finely. They take the f32 path.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::amx;

/// Which reads [`crate::project::read_rows`] answers from the screen; written `top-k`, `all` or
/// `off` in configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Screening {
    /// Top-k lists alone (enrichment, sublayer knockout): the screen answers them in about two
    /// thirds of the f32 path's time. A read that also asks for a rank takes the f32 path: the
    /// targets' ranks lie deep in the dense middle of the distribution, where the screen's bound
    /// leaves thousands of logits per row to narrow, each a separate read of the token's
    /// weights, which costs more than the f32 matmul saves (`screen_bench`: 0.6–0.9× the f32
    /// path's speed on Gemma 3 270M).
    #[default]
    TopK,
    /// Every read, ranks included.
    All,
    /// None: the f32 path answers everything.
    Off,
}

impl Screening {
    /// Whether this policy screens `ask`.
    pub fn screens(self, ask: &Ask) -> bool {
        match self {
            Screening::TopK => ask.rank_of.is_none(),
            Screening::All => true,
            Screening::Off => false,
        }
    }
}

/// Which vocabulary facts a row is read for ([`crate::project::read_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ask {
    /// The token whose 0-based rank ([`crate::predict::rank_of`]) is wanted.
    pub rank_of: Option<usize>,
    /// How many of the top tokens ([`crate::predict::top_k`]) are wanted, best first.
    pub top: usize,
}

/// A row's answers to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The rank of [`Ask::rank_of`], when it was asked.
    pub rank: Option<usize>,
    /// The top [`Ask::top`] token ids, best first.
    pub top: Vec<usize>,
}

impl Ask {
    /// The answers from a row's full logits: the f32 path's definition.
    pub fn answer(&self, logits: &[f32]) -> Answer {
        Answer { rank: self.rank_of.map(|t| crate::predict::rank_of(logits, t)), top: crate::predict::top_k(logits, self.top) }
    }
}

/// The f32 unembedding `[vocab, d]` as the exact recomputation reads it: token `t`'s weight `k`
/// is `data[t·stride_vocab + k·stride_hidden]`.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    /// The storage.
    pub data: &'a [f32],
    /// Elements between consecutive tokens.
    pub stride_vocab: usize,
    /// Elements between consecutive hidden units.
    pub stride_hidden: usize,
}

impl Weights<'_> {
    /// `l_t`: the sequential FMA sum over `k` in index order, as the f32 kernel computes it.
    fn dot(&self, t: usize, h: &[f32]) -> f32 {
        let row = &self.data[t * self.stride_vocab..];
        h.iter().enumerate().fold(0f32, |acc, (k, &x)| x.mul_add(row[k * self.stride_hidden], acc))
    }

    /// [`Weights::dot`] for every token of `tokens` into `out`, sixteen tokens at a time when
    /// the CPU has AVX-512F (one gather per hidden unit, the same FMA per lane).
    fn dots(&self, tokens: &[u32], h: &[f32], out: &mut Vec<f32>) {
        out.clear();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && self.fits_i32(h.len()) {
            for group in tokens.chunks(16) {
                let mut idx = [0i32; 16];
                for (i, slot) in idx.iter_mut().enumerate() {
                    // Padding lanes repeat the group's first token; their results are dropped.
                    *slot = (group.get(i).copied().unwrap_or(group[0]) as usize * self.stride_vocab) as i32;
                }
                // SAFETY: AVX-512F checked; every index `t·sv + k·sd` is a valid element of
                // `data` (t < vocab, k < d) and fits an i32 (`fits_i32`).
                let lanes = unsafe { gather_dots(self.data.as_ptr(), &idx, self.stride_hidden as i32, h) };
                out.extend_from_slice(&lanes[..group.len()]);
            }
            return;
        }
        out.extend(tokens.iter().map(|&t| self.dot(t as usize, h)));
    }

    /// `Σ_k W[t,k]·h[k]` in f32 for every token of `tokens`, summed in whatever order is
    /// fastest: sixteen partial sums over contiguous weights when the CPU has AVX-512F and the
    /// weights are row-major, else [`Weights::dot`]'s order.
    fn fast_dots(&self, tokens: &[u32], h: &[f32], out: &mut Vec<f32>) {
        out.clear();
        #[cfg(target_arch = "x86_64")]
        if self.stride_hidden == 1 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F checked; token t's weights are `data[t·sv..t·sv + d]`, in bounds.
            out.extend(tokens.iter().map(|&t| unsafe { contiguous_dot(&self.data[t as usize * self.stride_vocab..][..h.len()], h) }));
            return;
        }
        out.extend(tokens.iter().map(|&t| self.dot(t as usize, h)));
    }

    /// Whether every element index of the unembedding fits an i32 gather index.
    fn fits_i32(&self, d: usize) -> bool {
        self.data.len() <= i32::MAX as usize && d.saturating_mul(self.stride_hidden) <= i32::MAX as usize
    }
}

/// Sixteen sequential FMA dot products of `h` with the rows starting at `base[i]`.
///
/// # Safety
/// AVX-512F; `base[i] + k·sd` is an in-bounds index of `data` for every lane and `k < h.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_dots(data: *const f32, base: &[i32; 16], sd: i32, h: &[f32]) -> [f32; 16] {
    use std::arch::x86_64::*;
    // SAFETY: per the contract.
    unsafe {
        let mut off = _mm512_loadu_si512(base.as_ptr().cast());
        let step = _mm512_set1_epi32(sd);
        let mut acc = _mm512_setzero_ps();
        for &x in h {
            let w = _mm512_i32gather_ps::<4>(off, data.cast());
            acc = _mm512_fmadd_ps(_mm512_set1_ps(x), w, acc);
            off = _mm512_add_epi32(off, step);
        }
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

/// `Σ a_k b_k` with sixteen FMA partial sums and a final reduction.
///
/// # Safety
/// AVX-512F; `a.len() == b.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn contiguous_dot(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let mut acc = _mm512_setzero_ps();
    let mut k = 0;
    // SAFETY: every load reads k..k+16 (or a masked tail) of both slices, both of length n.
    unsafe {
        while k + 16 <= n {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(k)), _mm512_loadu_ps(b.as_ptr().add(k)), acc);
            k += 16;
        }
        if k < n {
            let mask: __mmask16 = (1u16 << (n - k)) - 1;
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a.as_ptr().add(k)), _mm512_maskz_loadu_ps(mask, b.as_ptr().add(k)), acc);
        }
    }
    _mm512_reduce_add_ps(acc)
}

/// How the screen's values are computed.
enum Unit {
    /// Intel AMX ([`crate::amx`]).
    Amx(amx::TokenTiles),
    /// A plain f32 loop over the same bf16 values: far slower than the f32 path, for testing the
    /// decisions on CPUs without AMX.
    Emulated { w: Vec<u16> },
}

/// The unembedding prepared for screened answers: its bf16 copy and per-token norms.
pub struct Screen {
    vocab: usize,
    d: usize,
    unit: Unit,
    /// `‖W_t − Ŵ_t‖`, rounded up.
    delta_norm: Vec<f32>,
    /// `‖Ŵ_t‖`, rounded up.
    hat_norm: Vec<f32>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            Unit::Amx(_) => "amx",
            Unit::Emulated { .. } => "emulated",
        };
        write!(f, "Screen {{ vocab: {}, d: {}, unit: {unit} }}", self.vocab, self.d)
    }
}

/// Rows answered, logits narrowed and logits recomputed since the process started, for
/// profiling.
static ROWS: AtomicU64 = AtomicU64::new(0);
static NARROWED: AtomicU64 = AtomicU64::new(0);
static RECOMPUTED: AtomicU64 = AtomicU64::new(0);

/// Since the process started: rows answered by a screen, logits whose bounds were narrowed by
/// f32 dot products in any order, and logits recomputed exactly.
pub fn stats() -> [u64; 3] {
    [ROWS.load(Ordering::Relaxed), NARROWED.load(Ordering::Relaxed), RECOMPUTED.load(Ordering::Relaxed)]
}

/// `x` rounded up to an f32.
fn up(x: f64) -> f32 {
    let y = x as f32;
    if f64::from(y) >= x {
        y
    } else {
        y.next_up()
    }
}

impl Screen {
    /// Prepares `w` for screening on the AMX unit; `None` when this CPU has none or a weight is
    /// not finite.
    pub fn new(w: Weights<'_>, vocab: usize, d: usize) -> Option<Screen> {
        if !amx::available() {
            return None;
        }
        Screen::build(w, vocab, d, true)
    }

    /// [`Screen::new`] with the screen computed by a plain loop: for tests of the decisions on
    /// any CPU.
    pub fn emulated(w: Weights<'_>, vocab: usize, d: usize) -> Option<Screen> {
        Screen::build(w, vocab, d, false)
    }

    fn build(w: Weights<'_>, vocab: usize, d: usize, amx: bool) -> Option<Screen> {
        let at = |t: usize, k: usize| w.data[t * w.stride_vocab + k * w.stride_hidden];
        use rayon::prelude::*;
        let norms: Option<Vec<(f32, f32)>> = (0..vocab)
            .into_par_iter()
            .map(|t| {
                let (mut delta, mut hat) = (0f64, 0f64);
                for k in 0..d {
                    let x = at(t, k);
                    if !x.is_finite() {
                        return None;
                    }
                    let r = amx::from_bf16(amx::to_bf16(x));
                    delta += (f64::from(x) - f64::from(r)).powi(2);
                    hat += f64::from(r).powi(2);
                }
                // Each f64 operation above rounds by at most 2^-53 relative: a 1e-12 margin
                // covers d of them.
                Some((up(delta.sqrt() * (1.0 + 1e-12)), up(hat.sqrt() * (1.0 + 1e-12))))
            })
            .collect();
        let (delta_norm, hat_norm) = norms?.into_iter().unzip();
        let unit = if amx {
            Unit::Amx(amx::TokenTiles::pack(vocab, d, |t, k| amx::to_bf16(at(t, k))))
        } else {
            Unit::Emulated { w: (0..vocab * d).map(|i| amx::to_bf16(at(i / d, i % d))).collect() }
        };
        Some(Screen { vocab, d, unit, delta_norm, hat_norm })
    }

    /// Answers `ask` for every row of `h` (row-major `[n, d]`, the vector the f32 path
    /// multiplies), `w` being the weights this screen was made from and `bias` the bias the f32
    /// path adds after the product. `None` when a value of `h` is not finite.
    pub fn answer_rows(&self, w: Weights<'_>, bias: Option<&[f32]>, h: &[f32], n: usize, ask: &Ask, screen_buf: &mut Vec<f32>) -> Option<Vec<Answer>> {
        let d = self.d;
        assert_eq!(h.len(), n * d, "answer_rows: h is not [n, d]");
        if h.iter().any(|x| !x.is_finite()) {
            return None;
        }
        if let Some(t) = ask.rank_of {
            assert!(t < self.vocab, "answer_rows: target {t} is outside the vocabulary");
        }
        let hb: Vec<u16> = h.iter().map(|&x| amx::to_bf16(x)).collect();
        let stride = self.screen_into(&hb, n, screen_buf);
        let (gd, g2d) = (gamma(d), gamma(2 * d));
        let rows: Vec<RowBound> = (0..n)
            .map(|i| {
                let (row, rowb) = (&h[i * d..(i + 1) * d], &hb[i * d..(i + 1) * d]);
                let (mut nh, mut nhat, mut ndelta) = (0f64, 0f64, 0f64);
                for (&x, &b) in row.iter().zip(rowb) {
                    let r = f64::from(amx::from_bf16(b));
                    nh += f64::from(x).powi(2);
                    nhat += r * r;
                    ndelta += (f64::from(x) - r).powi(2);
                }
                let (nh, nhat, ndelta) = (nh.sqrt() * (1.0 + 1e-12), nhat.sqrt() * (1.0 + 1e-12), ndelta.sqrt() * (1.0 + 1e-12));
                RowBound {
                    x: up(nh * (1.0 + gd) * (1.0 + 1e-12)),
                    y: up((gd * nh + ndelta + g2d * nhat) * (1.0 + 1e-12)),
                    z: up(2.0 * gd * nh * (1.0 + 1e-12)),
                }
            })
            .collect();
        use rayon::prelude::*;
        let answers = (0..n)
            .into_par_iter()
            .map_init(RowScratch::default, |s, i| {
                let screened = &screen_buf[i * stride..i * stride + self.vocab];
                self.answer_row(w, bias, &h[i * d..(i + 1) * d], screened, rows[i], ask, s)
            })
            .collect();
        ROWS.fetch_add(n as u64, Ordering::Relaxed);
        Some(answers)
    }

    /// The screen's values for `n` rows of bf16 `hb` into `out`; returns the row stride.
    fn screen_into(&self, hb: &[u16], n: usize, out: &mut Vec<f32>) -> usize {
        match &self.unit {
            Unit::Amx(tiles) => {
                amx::screen_into(&amx::RowTiles::pack(hb, n, self.d), tiles, out);
                tiles.vocab_pad()
            }
            Unit::Emulated { w } => {
                let d = self.d;
                out.clear();
                for i in 0..n {
                    let row = &hb[i * d..(i + 1) * d];
                    out.extend(
                        (0..self.vocab)
                            .map(|t| row.iter().zip(&w[t * d..(t + 1) * d]).fold(0f32, |acc, (&a, &b)| amx::from_bf16(a).mul_add(amx::from_bf16(b), acc))),
                    );
                }
                self.vocab
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_row(&self, w: Weights<'_>, bias: Option<&[f32]>, h: &[f32], screened: &[f32], row: RowBound, ask: &Ask, s: &mut RowScratch) -> Answer {
        let v = self.vocab;
        s.lo.clear();
        s.hi.clear();
        for ((&l, &dn), &hn) in screened.iter().zip(&self.delta_norm).zip(&self.hat_norm) {
            let (lo, hi) = widen(l, dn * row.x + hn * row.y);
            s.lo.push(lo);
            s.hi.push(hi);
        }
        if let Some(bias) = bias {
            for ((lo, hi), b) in s.lo.iter_mut().zip(s.hi.iter_mut()).zip(bias) {
                *lo += b;
                *hi += b;
            }
        }
        let rank = ask.rank_of.map(|target| {
            let l_target = w.dot(target, h) + bias.map_or(0.0, |b| b[target]);
            let mut undecided = std::mem::take(&mut s.cand);
            let mut above = split_above(l_target, (0..v as u32).zip(s.lo.iter().zip(&s.hi)).filter(|&(t, _)| t as usize != target), &mut undecided);
            s.cand = undecided;
            // The same decision on the narrower bounds of the f32 dot products in any order.
            self.narrow(w, bias, h, row.z, s);
            let mut undecided = std::mem::take(&mut s.cand);
            above += split_above(l_target, s.narrowed.iter().copied().zip(s.lo2.iter().zip(&s.hi2)), &mut undecided);
            s.cand = undecided;
            self.exact_into(w, bias, h, s);
            above + s.exact.iter().filter(|&&x| x > l_target).count()
        });
        let top = if ask.top == 0 {
            Vec::new()
        } else {
            let k = ask.top.min(v);
            let tau = kth_largest(&s.lo, k, &mut s.sel);
            s.cand.clear();
            s.cand.extend((0..v).filter(|&t| s.hi[t] >= tau).map(|t| t as u32));
            // The k tokens whose lower ends reach τ are among the candidates, so again at least
            // k of them have lower ends at or above the new τ.
            self.narrow(w, bias, h, row.z, s);
            let tau = kth_largest(&s.lo2, k, &mut s.sel);
            s.cand.clear();
            s.cand.extend(s.narrowed.iter().zip(&s.hi2).filter(|&(_, &hi)| hi >= tau).map(|(&t, _)| t));
            self.exact_into(w, bias, h, s);
            let mut scored: Vec<(f32, u32)> = s.exact.iter().copied().zip(s.cand.iter().copied()).collect();
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.truncate(k);
            scored.into_iter().map(|(_, t)| t as usize).collect()
        };
        Answer { rank, top }
    }

    /// Bounds of the f32 path's logits of `s.cand` from f32 dot products summed in any order
    /// (`s.narrowed`, `s.lo2`, `s.hi2`): each such sum and the f32 path's are within
    /// `γ_d Σ_k |W_t,k h_k| ≤ γ_d ‖W_t‖‖h‖` of the exact value, so within `z·‖W_t‖` of each
    /// other, `z = 2γ_d‖h‖` — about 25 times narrower than the screen's bound on Gemma.
    fn narrow(&self, w: Weights<'_>, bias: Option<&[f32]>, h: &[f32], z: f32, s: &mut RowScratch) {
        s.narrowed.clear();
        s.narrowed.extend_from_slice(&s.cand);
        w.fast_dots(&s.narrowed, h, &mut s.fast);
        s.lo2.clear();
        s.hi2.clear();
        for (&t, &f) in s.narrowed.iter().zip(&s.fast) {
            let t = t as usize;
            let (mut lo, mut hi) = widen(f, (self.delta_norm[t] + self.hat_norm[t]) * z);
            if let Some(bias) = bias {
                lo += bias[t];
                hi += bias[t];
            }
            s.lo2.push(lo);
            s.hi2.push(hi);
        }
        NARROWED.fetch_add(s.narrowed.len() as u64, Ordering::Relaxed);
    }

    /// The f32 path's logits of `s.cand` into `s.exact`.
    fn exact_into(&self, w: Weights<'_>, bias: Option<&[f32]>, h: &[f32], s: &mut RowScratch) {
        w.dots(&s.cand, h, &mut s.exact);
        if let Some(bias) = bias {
            for (x, &t) in s.exact.iter_mut().zip(&s.cand) {
                *x += bias[t as usize];
            }
        }
        RECOMPUTED.fetch_add(s.cand.len() as u64, Ordering::Relaxed);
    }
}

/// The number of tokens certainly above `x` (lower end above it); the tokens whose interval
/// holds `x` go to `undecided` (cleared first), the rest are certainly not above.
fn split_above<'a>(x: f32, tokens: impl Iterator<Item = (u32, (&'a f32, &'a f32))>, undecided: &mut Vec<u32>) -> usize {
    undecided.clear();
    let mut above = 0;
    for (t, (&lo, &hi)) in tokens {
        if lo > x {
            above += 1;
        } else if hi > x {
            undecided.push(t);
        }
    }
    above
}

/// `(x − b, x + b)` in f32 with `b` inflated by `2⁻¹⁸·b + 2⁻²¹·|x| + 10⁻³⁰`: more than the
/// roundings of computing `b` and of the two sums, so the interval holds what `x ± b` bounds.
fn widen(x: f32, b: f32) -> (f32, f32) {
    let b = b + b * (1.0 / 262_144.0) + x.abs() * (1.0 / 2_097_152.0) + 1e-30;
    (x - b, x + b)
}

/// `γ_n = n·u / (1 − n·u)` for f32.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * f64::from(f32::EPSILON) / 2.0;
    nu / (1.0 - nu)
}

/// Per-row factors of the bounds: the screen's `b_t = ‖ΔW_t‖·x + ‖Ŵ_t‖·y`, the narrowing's
/// `(‖ΔW_t‖ + ‖Ŵ_t‖)·z`.
#[derive(Debug, Clone, Copy)]
struct RowBound {
    x: f32,
    y: f32,
    z: f32,
}

/// Buffers reused across the rows a thread answers.
#[derive(Default)]
struct RowScratch {
    lo: Vec<f32>,
    hi: Vec<f32>,
    cand: Vec<u32>,
    narrowed: Vec<u32>,
    fast: Vec<f32>,
    lo2: Vec<f32>,
    hi2: Vec<f32>,
    exact: Vec<f32>,
    sel: Vec<f32>,
}

/// The `k`-th largest value of `xs` (`1 ≤ k ≤ xs.len()`), selecting among the values above a
/// threshold guessed from a strided sample, so that the selection sorts a few thousand values
/// rather than the whole vocabulary.
fn kth_largest(xs: &[f32], k: usize, sel: &mut Vec<f32>) -> f32 {
    let step = (xs.len() / 4096).max(1);
    let mut sample: Vec<f32> = xs.iter().step_by(step).copied().collect();
    // The sample's rank of the k-th value, with room to spare, so that usually at least k values
    // clear the guess.
    let j = (k / step + 8).min(sample.len() - 1);
    sample.select_nth_unstable_by(j, |a, b| b.total_cmp(a));
    let guess = sample[j];
    sel.clear();
    sel.extend(xs.iter().copied().filter(|&x| x >= guess));
    if sel.len() < k {
        sel.clear();
        sel.extend_from_slice(xs);
    }
    *sel.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: seeded, so every case is the same on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Roughly normal: the sum of four uniforms, centred.
        fn normal(&mut self) -> f32 {
            (0..4).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32).sum::<f32>() - 2.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    struct Case {
        name: &'static str,
        vocab: usize,
        d: usize,
        w: Vec<f32>,
        h: Vec<f32>,
        bias: Option<Vec<f32>>,
        targets: Vec<usize>,
    }

    /// Every unit this CPU has (the emulated one always) answers every case as the f32 path
    /// does: the rank of each target and the top 1, 10 and 500.
    fn check(case: &Case) {
        let w = Weights { data: &case.w, stride_vocab: case.d, stride_hidden: 1 };
        let n = case.h.len() / case.d;
        let exact: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let row = &case.h[i * case.d..(i + 1) * case.d];
                (0..case.vocab).map(|t| w.dot(t, row) + case.bias.as_ref().map_or(0.0, |b| b[t])).collect()
            })
            .collect();
        let units = [Screen::emulated(w, case.vocab, case.d), Screen::new(w, case.vocab, case.d)];
        let mut buf = Vec::new();
        for screen in units.iter().flatten() {
            for &target in &case.targets {
                for top in [1, 10, 500] {
                    let ask = Ask { rank_of: Some(target), top };
                    let got = screen.answer_rows(w, case.bias.as_deref(), &case.h, n, &ask, &mut buf).expect("finite inputs");
                    for (i, (got, logits)) in got.iter().zip(&exact).enumerate() {
                        assert_eq!(*got, ask.answer(logits), "{}: {screen:?}, row {i}, target {target}, top {top}", case.name);
                    }
                }
            }
        }
    }

    fn random_case(name: &'static str, seed: u64, vocab: usize, d: usize, rows: usize) -> (Case, Rng) {
        let mut rng = Rng(seed);
        let w = (0..vocab * d).map(|_| rng.normal() * 0.05).collect();
        let h = (0..rows * d).map(|_| rng.normal()).collect();
        let targets = (0..3).map(|_| rng.below(vocab)).collect();
        (Case { name, vocab, d, w, h, bias: None, targets }, rng)
    }

    #[test]
    fn random_rows() {
        check(&random_case("random", 1, 3001, 96, 5).0);
    }

    #[test]
    fn random_rows_with_a_bias() {
        let (mut case, mut rng) = random_case("bias", 2, 2048, 64, 4);
        case.bias = Some((0..case.vocab).map(|_| rng.normal()).collect());
        check(&case);
    }

    /// Exact ties: the second half of the vocabulary repeats the first, so every logit appears
    /// twice and the order falls to the lower index, at every rank and at the top-500 boundary.
    #[test]
    fn exact_ties() {
        let (mut case, _) = random_case("ties", 3, 2400, 64, 4);
        let d = case.d;
        let half = case.w[..1200 * d].to_vec();
        case.w[1200 * d..].copy_from_slice(&half);
        case.targets = vec![5, 1205, 2399];
        check(&case);
    }

    /// Near-ties at the top-500 boundary: tokens made from the 500th token of each row by moving
    /// one weight by one ulp, so that their logits differ from it by about 1e-7 relative, far
    /// inside the screen's bound.
    #[test]
    fn near_ties_at_the_top_500_boundary() {
        let (mut case, mut rng) = random_case("near ties", 4, 4096, 80, 3);
        let d = case.d;
        let w = Weights { data: &case.w, stride_vocab: d, stride_hidden: 1 };
        let mut edits = Vec::new();
        for i in 0..3 {
            let row = &case.h[i * d..(i + 1) * d];
            let logits: Vec<f32> = (0..case.vocab).map(|t| w.dot(t, row)).collect();
            let boundary = crate::predict::top_k(&logits, 500)[499];
            for _ in 0..40 {
                edits.push((boundary, rng.below(case.vocab), rng.below(d), rng.next() % 2 == 0));
            }
            case.targets.push(boundary);
        }
        for (from, to, k, upward) in edits {
            let src: Vec<f32> = case.w[from * d..(from + 1) * d].to_vec();
            let dst = &mut case.w[to * d..(to + 1) * d];
            dst.copy_from_slice(&src);
            dst[k] = if upward { dst[k].next_up() } else { dst[k].next_down() };
        }
        check(&case);
    }

    /// Ties that only rounding breaks: with `h` equal on each pair of hidden units, tokens made
    /// from one token by swapping weights within pairs have the same exact dot product, and
    /// the f32 path orders them by rounding alone — differently from any other summation order.
    #[test]
    fn ties_broken_by_rounding_only() {
        let (mut case, mut rng) = random_case("rounding ties", 11, 4096, 96, 3);
        let d = case.d;
        for row in case.h.chunks_mut(2) {
            row[1] = row[0];
        }
        let w = Weights { data: &case.w, stride_vocab: d, stride_hidden: 1 };
        let row = &case.h[..d];
        let logits: Vec<f32> = (0..case.vocab).map(|t| w.dot(t, row)).collect();
        let top = crate::predict::top_k(&logits, 1501);
        let mut swaps = Vec::new();
        for from in [top[0], top[9], top[499], top[1500]] {
            for _ in 0..60 {
                swaps.push((from, rng.below(case.vocab)));
            }
            case.targets.push(from);
        }
        for (from, to) in swaps {
            let mut src: Vec<f32> = case.w[from * d..(from + 1) * d].to_vec();
            for pair in src.chunks_mut(2) {
                if rng.next() % 2 == 0 {
                    pair.swap(0, 1);
                }
            }
            case.w[to * d..(to + 1) * d].copy_from_slice(&src);
        }
        check(&case);
    }

    /// Flat distributions: a zero row (every logit 0: the top is the first indices), a row of
    /// subnormals (flushed to zero by the screen), and a vocabulary of identical tokens.
    #[test]
    fn flat_distributions() {
        let (mut case, _) = random_case("flat rows", 5, 1500, 64, 3);
        case.h[..64].fill(0.0);
        case.h[64..128].iter_mut().enumerate().for_each(|(k, x)| *x = f32::from_bits(1 + k as u32));
        check(&case);
        let (mut case, _) = random_case("identical tokens", 6, 1500, 64, 2);
        let first = case.w[..64].to_vec();
        case.w.chunks_mut(64).for_each(|c| c.copy_from_slice(&first));
        check(&case);
    }

    /// Outlier dimensions as in Gemma's residual stream: two hidden units 10⁴ times the others,
    /// and a weight column of huge values.
    #[test]
    fn outlier_dimensions() {
        let (mut case, _) = random_case("outliers", 7, 3000, 96, 4);
        for row in case.h.chunks_mut(96) {
            row[3] *= 1e4;
            row[50] *= -1e4;
        }
        check(&case);
        let (mut case, _) = random_case("outlier weights", 8, 3000, 96, 3);
        for tok in case.w.chunks_mut(96) {
            tok[7] *= 1e3;
        }
        check(&case);
    }

    /// The gathered dot products are the sequential FMA sum, bit for bit, for a strided
    /// (transposed) layout and a group of fewer than 16 tokens.
    #[test]
    fn gathered_dots_equal_the_sequential_sum() {
        let (case, _) = random_case("dots", 9, 300, 77, 1);
        let transposed: Vec<f32> = (0..300 * 77).map(|i| case.w[(i % 300) * 77 + i / 300]).collect();
        for w in [Weights { data: &case.w, stride_vocab: 77, stride_hidden: 1 }, Weights { data: &transposed, stride_vocab: 1, stride_hidden: 300 }] {
            let tokens: Vec<u32> = (0..37).map(|i| (i * 7 % 300) as u32).collect();
            let mut out = Vec::new();
            w.dots(&tokens, &case.h, &mut out);
            let want: Vec<u32> = tokens.iter().map(|&t| w.dot(t as usize, &case.h).to_bits()).collect();
            assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn non_finite_rows_are_refused() {
        let (mut case, _) = random_case("nan", 10, 100, 32, 2);
        let w = Weights { data: &case.w, stride_vocab: 32, stride_hidden: 1 };
        let screen = Screen::emulated(w, 100, 32).unwrap();
        case.h[40] = f32::NAN;
        let w = Weights { data: &case.w, stride_vocab: 32, stride_hidden: 1 };
        assert!(screen.answer_rows(w, None, &case.h, 2, &Ask { rank_of: None, top: 3 }, &mut Vec::new()).is_none());
    }
}
