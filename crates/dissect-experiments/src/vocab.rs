//! Reading hidden states in vocabulary space: projections, ranks, top-k, probabilities.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::project::{map_logit_rows, read_rows, Ask, Projection};
use dissect_model::softmax::softmax;
use dissect_model::Model;

/// The target's 0-based rank and the top-1 token of the vocabulary view of each row of `h`
/// `[n, hidden]`.
pub fn rank_and_top1<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection, target: usize) -> Vec<(usize, u32)> {
    let ask = Ask { rank_of: Some(target), top: 1 };
    read_rows(model, h, how, ask).into_iter().map(|a| (a.rank.expect("rank asked"), a.top[0] as u32)).collect()
}

/// The full softmax distribution of each final residual of `h` `[n, hidden]`.
pub fn probs_of_residual<B: Backend>(model: &Model<B>, h: Tensor<B, 2>) -> Vec<Vec<f32>> {
    map_logit_rows(model, h, Projection::LogitLens, softmax)
}
