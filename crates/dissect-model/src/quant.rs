//! ggml block formats, dequantized to f32 exactly as ggml's reference `dequantize_row_*`
//! (and gguf-py, which the tests compare against) do, including the order of the float
//! operations, so results are bit-identical.

use half::{bf16, f16};
use rayon::prelude::*;

const QK_K: usize = 256;

/// The ggml tensor types this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// Plain little-endian f32.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// 32 4-bit values with one f16 scale, offset −8.
    Q4_0,
    /// 32 4-bit values with an f16 scale and an f16 minimum.
    Q4_1,
    /// 32 5-bit values with one f16 scale, offset −16.
    Q5_0,
    /// 32 5-bit values with an f16 scale and an f16 minimum.
    Q5_1,
    /// 32 signed 8-bit values with one f16 scale.
    Q8_0,
    /// K-quant super-block of 256 4-bit values: 8 sub-blocks with 6-bit scales and minimums.
    Q4K,
    /// K-quant super-block of 256 5-bit values: 8 sub-blocks with 6-bit scales and minimums.
    Q5K,
    /// K-quant super-block of 256 6-bit values: 16 sub-blocks with 8-bit scales, offset −32.
    Q6K,
}

impl GgmlType {
    /// The type for ggml's `ggml_type` number as GGUF stores it; `None` for a type this crate cannot read.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// (values per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 2 + 16),
            Self::Q4_1 => (32, 4 + 16),
            Self::Q5_0 => (32, 2 + 4 + 16),
            Self::Q5_1 => (32, 4 + 4 + 16),
            Self::Q8_0 => (32, 2 + 32),
            Self::Q4K => (QK_K, 4 + 12 + QK_K / 2),
            Self::Q5K => (QK_K, 4 + 12 + QK_K / 8 + QK_K / 2),
            Self::Q6K => (QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2),
        }
    }

    /// Bytes needed for `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn byte_len(self, n: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        n.is_multiple_of(per).then_some(n / per * bytes)
    }

    /// Dequantize whole blocks. `raw.len()` must be a multiple of the block size.
    pub fn dequantize(self, raw: &[u8]) -> Vec<f32> {
        let (per, bytes) = self.block();
        assert_eq!(raw.len() % bytes, 0, "partial {self:?} block");
        let mut out = vec![0f32; raw.len() / bytes * per];
        // Blocks are independent: split the work in chunks of blocks across threads.
        let blocks_per_chunk = 4096;
        out.par_chunks_mut(per * blocks_per_chunk).zip(raw.par_chunks(bytes * blocks_per_chunk)).for_each(|(y, x)| {
            for (yb, xb) in y.chunks_exact_mut(per).zip(x.chunks_exact(bytes)) {
                self.dequantize_block(xb, yb);
            }
        });
        out
    }

    fn dequantize_block(self, x: &[u8], y: &mut [f32]) {
        match self {
            Self::F32 => y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
            Self::F16 => y[0] = f16_at(x, 0),
            Self::BF16 => y[0] = bf16::from_le_bytes([x[0], x[1]]).to_f32(),
            Self::Q4_0 => {
                let d = f16_at(x, 0);
                let qs = &x[2..18];
                for j in 0..16 {
                    y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
                    y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
            Self::Q4_1 => {
                let d = f16_at(x, 0);
                let m = f16_at(x, 2);
                let qs = &x[4..20];
                for j in 0..16 {
                    y[j] = (qs[j] & 0x0F) as f32 * d + m;
                    y[j + 16] = (qs[j] >> 4) as f32 * d + m;
                }
            }
            Self::Q5_0 => {
                let d = f16_at(x, 0);
                let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
                let qs = &x[6..22];
                for j in 0..16 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    y[j] = (((qs[j] & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
                    y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
                }
            }
            Self::Q5_1 => {
                let d = f16_at(x, 0);
                let m = f16_at(x, 2);
                let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
                let qs = &x[8..24];
                for j in 0..16 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    y[j] = ((qs[j] & 0x0F) as u32 | h0) as f32 * d + m;
                    y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
                }
            }
            Self::Q8_0 => {
                let d = f16_at(x, 0);
                for j in 0..32 {
                    y[j] = (x[2 + j] as i8) as f32 * d;
                }
            }
            Self::Q4K => {
                let d = f16_at(x, 0);
                let dmin = f16_at(x, 2);
                let scales = &x[4..16];
                let qs = &x[16..16 + QK_K / 2];
                for (i, (yy, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * i, scales);
                    let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                    for l in 0..32 {
                        yy[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                        yy[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
            Self::Q5K => {
                let d = f16_at(x, 0);
                let dmin = f16_at(x, 2);
                let scales = &x[4..16];
                let qh = &x[16..16 + QK_K / 8];
                let ql = &x[16 + QK_K / 8..];
                for (i, (yy, q)) in y.chunks_exact_mut(64).zip(ql.chunks_exact(32)).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * i, scales);
                    let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                    let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
                    for l in 0..32 {
                        let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                        let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                        yy[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
                        yy[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
                    }
                }
            }
            Self::Q6K => {
                let ql_all = &x[..QK_K / 2];
                let qh_all = &x[QK_K / 2..QK_K / 2 + QK_K / 4];
                let sc_all = &x[QK_K / 2 + QK_K / 4..QK_K / 2 + QK_K / 4 + QK_K / 16];
                let d = f16_at(x, QK_K / 2 + QK_K / 4 + QK_K / 16);
                for n in 0..QK_K / 128 {
                    let yy = &mut y[n * 128..(n + 1) * 128];
                    let ql = &ql_all[n * 64..];
                    let qh = &qh_all[n * 32..];
                    let sc = &sc_all[n * 8..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * (sc[is + k] as i8) as f32;
                        yy[l] = s(0) * q1 as f32;
                        yy[l + 32] = s(2) * q2 as f32;
                        yy[l + 64] = s(4) * q3 as f32;
                        yy[l + 96] = s(6) * q4 as f32;
                    }
                }
            }
        }
    }
}

fn f16_at(x: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([x[at], x[at + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}
