//! `dissect-experiments`: the paper's measurements on one prompt at a time, built from the
//! intervention vocabulary of `dissect_model::intervene`.

pub mod knockout;

use burn_tensor::activation::softmax;
use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::Model;

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Model(#[from] dissect_model::ModelError),
    #[error("record {id}: {message}")]
    Record { id: String, message: String },
}

/// Softmax probabilities `[n][vocab]` of final residuals `[n, hidden]`.
pub fn probs_of_residual<B: Backend>(model: &Model<B>, h: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [n, d] = h.dims();
    let v = model.config.vocab_size;
    let p = softmax(model.logits(h.reshape([1, n, d])), 2);
    let flat = p.into_data().into_vec::<f32>().expect("f32 backend");
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}
