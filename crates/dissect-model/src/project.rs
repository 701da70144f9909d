//! Projections of hidden states to the vocabulary.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Projection {
    /// The paper's notebook: `h · Eᵀ` with the unembedding matrix, no final norm. For a tied
    /// model E is the token embedding; for an untied one (GPT-J) the notebook is silent: we
    /// use the `lm_head` weight without its bias.
    #[default]
    Notebook,
    /// Logit lens: the final norm, then the unembedding with its bias (and the model's final
    /// softcap, if any) — exactly how the model turns its last residual into logits.
    LogitLens,
}

/// Logits `[n, vocab]` of hidden states `[n, hidden]`.
pub fn project<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection) -> Tensor<B, 2> {
    let [n, d] = h.dims();
    match how {
        Projection::LogitLens => model.logits(h.reshape([1, n, d])).reshape([n, model.config.vocab_size]),
        Projection::Notebook => match &model.lm_head {
            Some(head) => h.matmul(head.weight.clone()),
            None => model.tied_unembed(h),
        },
    }
}
