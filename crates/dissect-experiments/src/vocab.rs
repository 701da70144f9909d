//! Reading hidden states in vocabulary space: projections, ranks, top-k.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::predict::{rank_of, top_k};
use dissect_model::project::{project, Projection};
use dissect_model::Model;

/// Rows of logits `[n][vocab]` for hidden states `[n, hidden]`, computed in chunks so that a
/// large `n` never holds `n × vocab` floats on the device at once.
pub fn logits_rows<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection) -> Vec<Vec<f32>> {
    let [n, _] = h.dims();
    let v = model.config.vocab_size;
    // 256 rows × 262,144 tokens is 256 MiB of logits; the matmul reaches ~170 GFLOP/s there,
    // ~145 at 64 rows.
    let chunk = 256;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let logits = project(model, h.clone().slice([start..end]), how);
        let flat = logits.into_data().into_vec::<f32>().expect("f32 backend");
        out.extend(flat.chunks(v).map(<[f32]>::to_vec));
    }
    out
}

/// The target's 0-based rank and the top-1 token of each row.
pub fn rank_and_top1(rows: &[Vec<f32>], target: usize) -> Vec<(usize, u32)> {
    rows.iter().map(|r| (rank_of(r, target), top_k(r, 1)[0] as u32)).collect()
}
