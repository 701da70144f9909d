//! Reading hidden states in vocabulary space: projections, ranks, top-k, probabilities.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::project::{map_logit_rows, read_rows, Ask, Projection};
use dissect_model::Model;

/// The target's 0-based rank and the top-1 token of the vocabulary view of each row of `h`
/// `[n, hidden]`.
pub fn rank_and_top1<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection, target: usize) -> Vec<(usize, u32)> {
    let ask = Ask { rank_of: Some(target), top: 1 };
    read_rows(model, h, how, ask).into_iter().map(|a| (a.rank.expect("rank asked"), a.top[0] as u32)).collect()
}

/// The softmax probability of `token` in the model's own next-token distribution (final norm,
/// unembedding, softcap) for each final residual of `h` `[n, hidden]`.
pub fn prob_of_residual<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, token: usize) -> Vec<f32> {
    map_logit_rows(model, h, Projection::LogitLens, |r| softmax_at(r, token))
}

/// The full softmax distribution of each final residual of `h` `[n, hidden]`.
pub fn probs_of_residual<B: Backend>(model: &Model<B>, h: Tensor<B, 2>) -> Vec<Vec<f32>> {
    map_logit_rows(model, h, Projection::LogitLens, |r| {
        let (max, sum) = softmax_parts(r);
        r.iter().map(|&x| ((f64::from(x) - max).exp() / sum) as f32).collect()
    })
}

/// `softmax(logits)[token]`.
pub fn softmax_at(logits: &[f32], token: usize) -> f32 {
    let (max, sum) = softmax_parts(logits);
    ((f64::from(logits[token]) - max).exp() / sum) as f32
}

/// The maximum and `Σ exp(x − max)`, accumulated in f64 so that a 262,144-token vocabulary
/// adds no rounding of its own to the normaliser.
fn softmax_parts(logits: &[f32]) -> (f64, f64) {
    let max = f64::from(logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
    (max, logits.iter().map(|&x| (f64::from(x) - max).exp()).sum())
}

#[cfg(test)]
mod tests {
    use super::softmax_at;

    #[test]
    fn softmax_at_is_normalised_and_shift_invariant() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 7.0).collect();
        let total: f64 = (0..logits.len()).map(|t| f64::from(softmax_at(&logits, t))).sum();
        assert!((total - 1.0).abs() < 1e-5, "sum {total}");
        let shifted: Vec<f32> = logits.iter().map(|x| x + 1000.0).collect();
        assert!((softmax_at(&logits, 5) - softmax_at(&shifted, 5)).abs() < 1e-6);
        assert_eq!(softmax_at(&[0.0, 0.0], 1), 0.5);
    }
}
