//! The CPU backend's f32 matmul kernel (AVX-512): the vocabulary projection `h · Wᵀ` for a
//! `[vocab, hidden]` unembedding `W`, and the model's linear layers `x · W` for a row-major
//! `[in, out]` weight.
//!
//! Why not the `gemm` crate, which burn-flex's matmul calls: on stable Rust its f32 kernels
//! are AVX2 (8 lanes; its AVX-512 kernels need its `nightly` feature), and on Gemma's
//! 640 × 262,144 unembedding it reaches about two thirds of MKL's GFLOP/s on the same two cores
//! (`cargo xtask bench projection`). AVX-512 intrinsics are stable since Rust 1.89, so the
//! kernel here is a plain BLIS-style one:
//!
//! - The right-hand side is read in panels of [`NR`] = 32 columns, a panel's step `k` being 32
//!   contiguous floats. A row-major `[in, out]` weight already has that layout (step stride
//!   `out`); the unembedding `[vocab, hidden]` does not, so it is packed once per model
//!   ([`PackedUnembed::pack`], `[hidden][32]` per panel, the last one zero-padded): one more copy
//!   of it in memory (670 MB for Gemma 3 270M, 322 MB for GPT-2 XL) for a kernel without
//!   packing work per call, which matters at the small row counts most projections have.
//! - A tile of [`MR`] = 12 rows × 32 columns keeps its 24 accumulators in registers; each step
//!   is two panel loads and 12 broadcasts of the left-hand side (packed per call, `[k][12]` per
//!   tile) for 24 FMAs. The inner dimension is cut into passes of [`KC`] so that a panel's slice
//!   stays in L1 while every row tile passes over it.
//! - Threads (rayon's pool) split the panels; each writes a disjoint set of output columns.
//!
//! The sum over the inner dimension runs in index order with one FMA per term, so an output
//! does not depend on the row count, the thread count or the tile it lands in: the result is
//! bitwise reproducible. It differs from burn's matmul only in f32 summation order.
//!
//! CPUs without AVX-512F (and other architectures) keep burn's matmul and, for the projection,
//! the `gemm` crate ([`crate::project::logits_into`]).

/// Tokens per packed panel: two AVX-512 vectors.
pub const NR: usize = 32;

/// Rows of `h` per register tile.
pub const MR: usize = 12;

/// Hidden units per pass over a panel: 256 × 32 floats of `W` (32 KiB) stay in L1 while every
/// row tile uses them. The partial sums go through the output between passes, in f32 as in the
/// registers, so the result is the same bits as one pass.
pub const KC: usize = 256;

/// Whether this CPU runs the kernel (AVX-512F); when it does not, [`PackedUnembed::pack`]
/// returns `None` and [`matmul_into`] `false`.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An unembedding `[vocab, hidden]` packed for [`PackedUnembed::logits_into`].
pub struct PackedUnembed {
    vocab: usize,
    hidden: usize,
    /// `ceil(vocab / NR)` panels of `[hidden][NR]`.
    panels: Vec<f32>,
}

impl std::fmt::Debug for PackedUnembed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedUnembed {{ vocab: {}, hidden: {} }}", self.vocab, self.hidden)
    }
}

impl PackedUnembed {
    /// Packs `w`, where token `j`'s weight `k` is `w[j * stride_vocab + k * stride_hidden]`
    /// (a row-major `[vocab, hidden]` tensor, or a `[hidden, vocab]` one read transposed).
    /// `None` when the CPU lacks AVX-512F.
    pub fn pack(w: &[f32], vocab: usize, hidden: usize, stride_vocab: usize, stride_hidden: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        let n_panels = vocab.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * hidden * NR];
        use rayon::prelude::*;
        panels.par_chunks_mut(hidden * NR).enumerate().for_each(|(p, panel)| {
            for t in 0..NR.min(vocab - p * NR) {
                let row = (p * NR + t) * stride_vocab;
                for k in 0..hidden {
                    panel[k * NR + t] = w[row + k * stride_hidden];
                }
            }
            // Non-temporal stores are weakly ordered: fence them before the task ends.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE is part of x86_64.
            unsafe {
                std::arch::x86_64::_mm_sfence()
            };
        });
        Some(PackedUnembed { vocab, hidden, panels })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// `h · Wᵀ` for `h` row-major `[n, hidden]` into `out` as a row-major `[n × vocab]` buffer.
    pub fn logits_into(&self, h: &[f32], n: usize, out: &mut Vec<f32>) {
        let b = Panels { data: &self.panels, panel_stride: self.hidden * NR, ldb: NR, cols: self.vocab };
        // SAFETY: `pack` returned `Some`, so the CPU has AVX-512F; panel p's step k is
        // `panels[p·hidden·NR + k·NR..][..NR]`, inside the buffer for every p < ceil(vocab/NR).
        unsafe { panel_gemm(h, n, self.hidden, &b, out) }
    }
}

/// `x · W` for `x` row-major `[m, k]` and `w` row-major `[k, n]` into `out` (row-major
/// `[m × n]`); `false`, `out` untouched, when the CPU lacks AVX-512F.
pub fn matmul_into(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut Vec<f32>) -> bool {
    if !available() {
        return false;
    }
    assert_eq!(w.len(), k * n, "matmul_into: w is not [k, n]");
    let b = Panels { data: w, panel_stride: NR, ldb: n, cols: n };
    // SAFETY: AVX-512F checked above; panel p's step j is `w[p·NR + j·n..]`, of which the kernel
    // reads the `min(NR, n − p·NR)` columns that exist (masked loads on a partial panel).
    unsafe { panel_gemm(x, m, k, &b, out) };
    true
}

/// The right-hand side `[k, cols]` as panels of [`NR`] columns: panel p's step j starts at
/// `data[p · panel_stride + j · ldb]`.
struct Panels<'a> {
    data: &'a [f32],
    panel_stride: usize,
    ldb: usize,
    cols: usize,
}

/// `a · B` for `a` row-major `[n, k]` into `out` (row-major `[n × b.cols]`).
///
/// # Safety
/// AVX-512F; every panel step the kernel reads (its first `min(NR, cols − p·NR)` floats) lies
/// inside `b.data`.
unsafe fn panel_gemm(a_rows: &[f32], n: usize, k: usize, b: &Panels<'_>, out: &mut Vec<f32>) {
    assert_eq!(a_rows.len(), n * k, "panel_gemm: a is not [n, k]");
    let v = b.cols;
    out.clear();
    out.reserve(n * v);
    if n == 0 || v == 0 {
        return;
    }
    // a by tiles of MR rows, each `[k][MR]` (zero rows past n): a broadcast operand per step,
    // from one cache line per tile.
    let tiles = n.div_ceil(MR);
    let mut a = vec![0f32; tiles * k * MR];
    for (i, row) in a_rows.chunks(k.max(1)).enumerate().take(n) {
        let tile = &mut a[(i / MR) * k * MR..];
        for (j, &x) in row.iter().enumerate() {
            tile[j * MR + i % MR] = x;
        }
    }
    let dst = SendPtr(out.as_mut_ptr());
    // An output of 64 MiB or more leaves the caches anyway: the last pass writes it with
    // non-temporal stores, which skip reading each line before writing it (measured: 0.89x
    // MKL's best GFLOP/s at 256 rows of Gemma's vocabulary without, 0.93x with). A smaller one
    // is read back by the caller from L2/L3, so it is stored normally.
    let stream = n * v >= 1 << 24;
    use rayon::prelude::*;
    (0..v.div_ceil(NR)).into_par_iter().for_each(|p| {
        let dst = &dst;
        let cols = NR.min(v - p * NR);
        let panel = b.data[p * b.panel_stride..].as_ptr();
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for t in 0..tiles {
                let rows = MR.min(n - t * MR);
                // SAFETY: `a`'s tile t holds `[k][MR]`, read at k0..k0+kc; the panel's steps
                // k0..k0+kc are inside `b.data` (the caller's contract); the tile written is rows
                // t·MR..t·MR+rows × columns p·NR..p·NR+cols of the `n × v` output, inside `out`'s
                // capacity and written by this panel's task alone (read back only after this
                // task wrote it, for k0 > 0). The caller checked AVX-512F.
                unsafe {
                    let c = dst.0.add(t * MR * v + p * NR);
                    #[cfg(target_arch = "x86_64")]
                    kernel::tile(rows, a.as_ptr().add((t * k + k0) * MR), kc, panel.add(k0 * b.ldb), b.ldb, c, v, cols, k0 > 0, stream && k0 + kc == k);
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("no AVX-512 here ({c:?}, {panel:?})");
                }
            }
        }
        // Non-temporal stores are weakly ordered: fence them before the task ends.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of x86_64.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    });
    // SAFETY: the tiles above cover every row and every column below `v` exactly once.
    unsafe { out.set_len(n * v) };
}

/// The output pointer, shared by the panel tasks, which write disjoint columns.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: users share it between tasks that write disjoint elements (here the panels' columns;
// in `crate::amx` the tasks' column ranges).
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Steps ahead at which [`tile_m`] prefetches the panel.
    const PREFETCH: usize = 16;

    /// One tile of `rows` ≤ [`MR`] rows over `kc` hidden units; dispatches to the kernel
    /// compiled for that row count. With `accumulate` the tile's partial sums are read from `c`
    /// first.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `kc` steps of [`MR`] floats; `b` `kc` steps `ldb` apart, of which
    /// the first `cols` floats are read; `c` the tile's first element in an output with row
    /// stride `ldc`, `rows` rows and `cols` ≤ [`NR`] columns valid (and written before, with
    /// `accumulate`). With `stream`, a full, 64-byte
    /// aligned tile is written with non-temporal stores (the caller fences them).
    #[allow(clippy::too_many_arguments)] // one BLAS-style micro-kernel call
    pub unsafe fn tile(rows: usize, a: *const f32, kc: usize, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, cols: usize, accumulate: bool, stream: bool) {
        /// One arm per row count: the kernel is compiled for each, its accumulators in registers.
        macro_rules! by_rows {
            ($($m:literal)+) => {
                match rows {
                    // SAFETY: forwarded from the caller.
                    $($m => unsafe { tile_m::<$m>(a, kc, b, ldb, c, ldc, cols, accumulate, stream) },)+
                    _ => unreachable!("tile rows {rows} (MR is {MR})"),
                }
            };
        }
        const _: () = assert!(MR == 12, "by_rows! lists the row counts 1..=MR");
        by_rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// One step: 2 × M FMAs of the broadcast `a[0..M]` with the panel's two vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn step<const M: usize>(acc: &mut [[__m512; 2]; M], a: *const f32, b0: __m512, b1: __m512) {
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `a` holds M floats (the caller's tile step).
            let x = _mm512_set1_ps(unsafe { *a.add(i) });
            acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)] // the micro-kernel of `tile`
    unsafe fn tile_m<const M: usize>(
        a: *const f32,
        kc: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        stream: bool,
    ) {
        let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { (1u16 << cols) - 1 };
        let m1: __mmask16 = if cols <= 16 {
            0
        } else if cols >= NR {
            0xFFFF
        } else {
            ((1u32 << (cols - 16)) - 1) as u16
        };
        // SAFETY: the bounds are the caller's (see `tile`); masked lanes are not accessed.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; M];
            if accumulate {
                for (i, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm512_maskz_loadu_ps(m0, c.add(i * ldc));
                    acc[1] = _mm512_maskz_loadu_ps(m1, c.add(i * ldc + 16));
                }
            }
            if cols == NR {
                for k in 0..kc {
                    // A weight read in place has its steps a row apart (8 KiB for 2048
                    // columns), each on another page, where the hardware prefetchers stop:
                    // ask for the panel's lines a few steps ahead. A prefetch never faults, so
                    // the address may pass the buffer's end.
                    let ahead = b.wrapping_add((k + PREFETCH) * ldb);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
                    let b0 = _mm512_loadu_ps(b.add(k * ldb));
                    let b1 = _mm512_loadu_ps(b.add(k * ldb + 16));
                    step::<M>(&mut acc, a.add(k * MR), b0, b1);
                }
            } else {
                // A partial panel: the columns past `cols` may lie past the buffer's end.
                for k in 0..kc {
                    let b0 = _mm512_maskz_loadu_ps(m0, b.add(k * ldb));
                    let b1 = _mm512_maskz_loadu_ps(m1, b.add(k * ldb + 16));
                    step::<M>(&mut acc, a.add(k * MR), b0, b1);
                }
            }
            if stream && cols == NR && (c as usize).is_multiple_of(64) && ldc.is_multiple_of(16) {
                for (i, acc) in acc.iter().enumerate() {
                    _mm512_stream_ps(c.add(i * ldc), acc[0]);
                    _mm512_stream_ps(c.add(i * ldc + 16), acc[1]);
                }
                return;
            }
            for (i, acc) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(i * ldc), m0, acc[0]);
                _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{available, matmul_into, PackedUnembed};

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every logit equals the same dot product summed in index order with FMAs (so bitwise),
    /// for row counts around the tile size, a vocabulary that is no multiple of a panel, both
    /// layouts of `W`, and independently of the row count a row is projected with.
    #[test]
    fn equals_the_sequential_fma_dot_product() {
        if !available() {
            assert!(PackedUnembed::pack(&[0.0; 4], 2, 2, 2, 1).is_none());
            return;
        }
        // A hidden size over KC: two passes per panel; a last panel of 25 or 13 tokens.
        for v in [1000 + 17, 1000 + 5] {
            check(v, 300);
        }
    }

    fn check(v: usize, d: usize) {
        let w = values(v * d, 1);
        let wt: Vec<f32> = (0..d).flat_map(|k| (0..v).map(move |j| (k, j))).map(|(k, j)| w[j * d + k]).collect();
        let packed = PackedUnembed::pack(&w, v, d, d, 1).unwrap();
        let packed_t = PackedUnembed::pack(&wt, v, d, 1, v).unwrap();
        let h = values(30 * d, 2);
        let want = |i: usize, j: usize| (0..d).fold(0f32, |acc, k| h[i * d + k].mul_add(w[j * d + k], acc));
        let mut out = Vec::new();
        for n in [1, 5, 12, 13, 25, 30] {
            for p in [&packed, &packed_t] {
                p.logits_into(&h[..n * d], n, &mut out);
                assert_eq!(out.len(), n * v);
                for i in 0..n {
                    for j in 0..v {
                        assert_eq!(out[i * v + j].to_bits(), want(i, j).to_bits(), "n {n}, row {i}, token {j}");
                    }
                }
            }
        }
    }

    /// An output of 64 MiB or more, written with non-temporal stores: the same bits.
    #[test]
    fn streamed_output_equals_the_sequential_fma_dot_product() {
        if !available() {
            return;
        }
        let (v, d, n) = (1 << 16, 20, 256);
        let w = values(v * d, 3);
        let h = values(n * d, 4);
        let mut out = Vec::new();
        PackedUnembed::pack(&w, v, d, d, 1).unwrap().logits_into(&h, n, &mut out);
        for i in 0..n {
            for j in 0..v {
                let want = (0..d).fold(0f32, |acc, k| h[i * d + k].mul_add(w[j * d + k], acc));
                assert_eq!(out[i * v + j].to_bits(), want.to_bits(), "row {i}, token {j}");
            }
        }
    }

    /// `x · W` for a row-major `[k, n]` weight read in place: the same bits as the sequential
    /// FMA dot product, with a partial last panel at the very end of the buffer (masked loads)
    /// and an inner dimension over KC.
    #[test]
    fn matmul_into_equals_the_sequential_fma_dot_product() {
        let mut out = Vec::new();
        if !available() {
            assert!(!matmul_into(&[1.0], 1, 1, &[1.0], 1, &mut out));
            return;
        }
        for (m, k, n) in [(1, 640, 2048), (7, 300, 45), (13, 64, 640), (25, 17, 3)] {
            let (x, w) = (values(m * k, 5), values(k * n, 6));
            // The weight alone in its allocation, so that a read past its end would fault.
            let w = w.into_boxed_slice();
            assert!(matmul_into(&x, m, k, &w, n, &mut out));
            assert_eq!(out.len(), m * n);
            for i in 0..m {
                for j in 0..n {
                    let want = (0..k).fold(0f32, |acc, t| x[i * k + t].mul_add(w[t * n + j], acc));
                    assert_eq!(out[i * n + j].to_bits(), want.to_bits(), "{m}x{k}x{n}: ({i}, {j})");
                }
            }
        }
    }
}
