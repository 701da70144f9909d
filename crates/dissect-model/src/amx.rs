//! The screen's matmul on Intel AMX: `ĥ · Ŵᵀ` in bf16 with f32 accumulation, for
//! [`crate::screen`]. Nothing here decides an answer: the screen's values only choose which
//! logits [`crate::screen`] recomputes exactly, so the bits this unit produces may differ from
//! CPU to CPU without changing any result.
//!
//! Why AMX and inline assembly: a `tdpbf16ps` multiplies a 16 × 32 bf16 tile by a 32 × 16 one
//! into 16 × 16 f32 sums, 8,192 multiply-adds per instruction, against 16 for an AVX-512 FMA.
//! On the vocabulary projection's shapes that is 3–4× the GFLOP/s of the f32 kernel in
//! [`crate::matmul`] (`cargo xtask bench projection`). Rust has no stable AMX intrinsics, but
//! `asm!` is stable and the assembler knows the instructions; the tile registers are never
//! touched by compiled code, so their state carries from one `asm!` block to the next.
//!
//! Linux hands a process AMX's 8 KiB of tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), made once by [`available`].
//!
//! Layouts (bf16 as `u16`, all tiles 16 rows × 64 bytes):
//! - the left-hand side `ĥ` `[n, d]` as [`RowTiles`]: `[row block of 16][k block of 32][16 rows][32]`;
//! - the right-hand side `Ŵ` `[vocab, d]` as [`TokenTiles`]: `[token block of 16][k block of
//!   32][16 k-pairs][16 tokens][2]`, the pair layout `tdpbf16ps` reads;
//! - the output `[n_pad, vocab_pad]` f32, row-major, rows and tokens padded to 32 (the padding
//!   rows and tokens are zeros and give zeros).

/// Rows and tokens per output block: 2 × 2 tiles of 16.
pub const BLOCK: usize = 32;

/// bf16 values per tile row, and the inner dimension's block.
const KB: usize = 32;

/// `u16`s per tile (16 rows × 32).
const TILE: usize = 16 * KB;

/// Whether this CPU and OS run the AMX screen: AMX-TILE, AMX-BF16 and AVX-512F, and Linux's
/// permission for the tile state (asked once per process).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let (amx_bf16, amx_tile) = (edx & (1 << 22) != 0, edx & (1 << 24) != 0);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: a plain system call; the kernel clobbers rcx and r11 and nothing else.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to the nearest bf16 (ties to even), subnormals flushed to zero as the AMX unit
/// reads them; the caller has checked that `x` is finite.
pub fn to_bf16(x: f32) -> u16 {
    if x.abs() < f32::MIN_POSITIVE {
        return (x.to_bits() >> 16) as u16 & 0x8000;
    }
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// `Ŵ`, a `[vocab, d]` matrix in bf16, in the tile layout of the right-hand side.
pub struct TokenTiles {
    vocab: usize,
    vocab_pad: usize,
    k_blocks: usize,
    data: Vec<u16>,
}

impl TokenTiles {
    /// Packs `value(token, k)` (already bf16) for `token < vocab`, `k < d`.
    pub fn pack(vocab: usize, d: usize, value: impl Fn(usize, usize) -> u16 + Sync) -> Self {
        let vocab_pad = vocab.div_ceil(BLOCK) * BLOCK;
        let k_blocks = d.div_ceil(KB);
        let mut data = vec![0u16; vocab_pad * k_blocks * KB];
        use rayon::prelude::*;
        data.par_chunks_mut(k_blocks * TILE).enumerate().for_each(|(tb, block)| {
            for n in 0..16 {
                let t = tb * 16 + n;
                if t >= vocab {
                    break;
                }
                for k in 0..d {
                    block[(k / KB) * TILE + (k % KB) / 2 * 32 + n * 2 + k % 2] = value(t, k);
                }
            }
        });
        TokenTiles { vocab, vocab_pad, k_blocks, data }
    }

    /// Tokens including the padding: the output's row stride.
    pub fn vocab_pad(&self) -> usize {
        self.vocab_pad
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The inner dimension, padded to a multiple of 32.
    pub fn d_pad(&self) -> usize {
        self.k_blocks * KB
    }
}

/// `ĥ`, rows in bf16 in the tile layout of the left-hand side.
pub struct RowTiles {
    n: usize,
    n_pad: usize,
    k_blocks: usize,
    data: Vec<u16>,
}

impl RowTiles {
    /// Packs `n` rows of bf16 values, row `i`'s value `k` being `rows[i * d + k]`.
    pub fn pack(rows: &[u16], n: usize, d: usize) -> Self {
        let n_pad = n.div_ceil(BLOCK) * BLOCK;
        let k_blocks = d.div_ceil(KB);
        let mut data = vec![0u16; n_pad * k_blocks * KB];
        for i in 0..n {
            let (rb, r) = (i / 16, i % 16);
            for k in 0..d {
                data[(rb * k_blocks + k / KB) * TILE + r * KB + k % KB] = rows[i * d + k];
            }
        }
        RowTiles { n, n_pad, k_blocks, data }
    }

    /// Rows including the padding.
    pub fn n_pad(&self) -> usize {
        self.n_pad
    }

    /// Rows.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `ĥ · Ŵᵀ` into `out`, row-major `[h.n_pad(), w.vocab_pad()]`.
///
/// # Panics
/// When [`available`] is false or the inner dimensions differ.
pub fn screen_into(h: &RowTiles, w: &TokenTiles, out: &mut Vec<f32>) {
    assert!(available(), "AMX is not available on this CPU");
    assert_eq!(h.k_blocks, w.k_blocks, "screen_into: inner dimensions differ");
    let ld = w.vocab_pad;
    let len = h.n_pad * ld;
    out.clear();
    out.reserve(len);
    let out_ptr = crate::matmul::SendPtr(out.as_mut_ptr());
    // Each task: one run of token blocks (its tiles stay in L2) against every row block, so a
    // task writes whole 128-byte row segments of contiguous columns.
    const PAIRS_PER_TASK: usize = 64;
    let pairs = ld / BLOCK;
    use rayon::prelude::*;
    (0..pairs.div_ceil(PAIRS_PER_TASK)).into_par_iter().for_each(|task| {
        let out_ptr = &out_ptr;
        // SAFETY: `available()` holds (asserted above) and the tile configuration is this
        // thread's; every tile load reads inside `h.data` / `w.data` (block offsets below their
        // lengths) and every store writes inside `out`'s capacity, the tasks' columns disjoint.
        unsafe {
            configure();
            for rp in 0..h.n_pad / BLOCK {
                let a = h.data.as_ptr().add(rp * 2 * h.k_blocks * TILE);
                for tp in task * PAIRS_PER_TASK..((task + 1) * PAIRS_PER_TASK).min(pairs) {
                    let b = w.data.as_ptr().add(tp * 2 * w.k_blocks * TILE);
                    block(a, b, h.k_blocks, out_ptr.0.add(rp * BLOCK * ld + tp * BLOCK), ld);
                }
            }
            release();
        }
    });
    // SAFETY: the tasks above wrote every element of the `n_pad × vocab_pad` output.
    unsafe { out.set_len(len) };
}

/// Eight 16 × 64-byte tiles (palette 1).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

/// Loads the tile configuration for this thread.
///
/// # Safety
/// [`available`] is true.
unsafe fn configure() {
    let mut cfg = TileConfig([0; 64]);
    cfg.0[0] = 1;
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    // SAFETY: AMX is enabled for the process; `cfg` is a valid palette-1 configuration.
    unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
}

/// Releases this thread's tile state, so that context switches stop saving it.
///
/// # Safety
/// [`available`] is true.
unsafe fn release() {
    // SAFETY: AMX is enabled for the process.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

/// One 32 × 32 output block: rows `a` (two row blocks), tokens `b` (two token blocks), `kb`
/// inner blocks, written to `c` with row stride `ld` floats.
///
/// # Safety
/// Tiles configured by [`configure`]; `a` and `b` point at `2 · kb` tiles each (the second row
/// or token block right after the first); `c` has 32 rows of 32 writable floats at stride `ld`.
unsafe fn block(a: *const u16, b: *const u16, kb: usize, c: *mut f32, ld: usize) {
    let stride = 64usize;
    // SAFETY: per the function's contract.
    unsafe {
        std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        for k in 0..kb {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(k * TILE),
                a1 = in(reg) a.add((kb + k) * TILE),
                b0 = in(reg) b.add(k * TILE),
                b1 = in(reg) b.add((kb + k) * TILE),
                s = in(reg) stride,
                options(nostack, readonly),
            );
        }
        std::arch::asm!(
            "tilestored [{c0} + {l}*1], tmm0",
            "tilestored [{c1} + {l}*1], tmm1",
            "tilestored [{c2} + {l}*1], tmm2",
            "tilestored [{c3} + {l}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(16),
            c2 = in(reg) c.add(16 * ld),
            c3 = in(reg) c.add(16 * ld + 16),
            l = in(reg) ld * 4,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_flushes_subnormals() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        // 1 + 2^-8 is halfway between two bf16s: ties to the even one, 1.0.
        assert_eq!(from_bf16(to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))), 1.0 + 2f32.powi(-6));
        assert_eq!(from_bf16(to_bf16(-3.0e-39)), 0.0);
        for x in [0.1f32, -7.3, 1234.5, 3.0e-20] {
            assert!(((from_bf16(to_bf16(x)) - x) / x).abs() <= 2f32.powi(-8));
        }
    }

    /// The AMX product equals the f64 product of the bf16 values to f32 accuracy, on shapes
    /// with padding on every side (rows, tokens and inner dimension not multiples of 32).
    #[test]
    fn screen_matches_the_bf16_product() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        let (n, v, d) = (37, 101, 70);
        let hv: Vec<u16> = (0..n * d).map(|i| to_bf16(((i * 37 % 101) as f32 - 50.0) / 17.0)).collect();
        let wv: Vec<u16> = (0..v * d).map(|i| to_bf16(((i * 53 % 89) as f32 - 44.0) / 23.0)).collect();
        let w = TokenTiles::pack(v, d, |t, k| wv[t * d + k]);
        let h = RowTiles::pack(&hv, n, d);
        let mut out = Vec::new();
        screen_into(&h, &w, &mut out);
        assert_eq!(out.len(), h.n_pad() * w.vocab_pad());
        for i in 0..n {
            for t in 0..v {
                let want: f64 = (0..d).map(|k| f64::from(from_bf16(hv[i * d + k])) * f64::from(from_bf16(wv[t * d + k]))).sum();
                let got = f64::from(out[i * w.vocab_pad() + t]);
                assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "row {i} token {t}: {got} vs {want}");
            }
        }
    }
}
