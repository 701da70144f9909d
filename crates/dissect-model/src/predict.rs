//! Next-token prediction: probabilities at the last position, and top-k without sorting the
//! whole vocabulary.

use burn_tensor::activation::softmax;
use burn_tensor::backend::Backend;
use serde::Serialize;

use crate::error::ModelError;
use crate::hooks::NoHooks;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenProb {
    pub token_id: u32,
    pub token: String,
    pub prob: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub top: Vec<TokenProb>,
}

/// The indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}

/// 0-based rank of `values[target]` (how many values are strictly larger), in one pass.
pub fn rank_of(values: &[f32], target: usize) -> usize {
    let v = values[target];
    values.iter().filter(|&&x| x > v).count()
}

/// Softmax probabilities at the last position of each row `[rows][vocab]`.
/// Rows may have different lengths (they are right-padded together).
pub fn last_position_probs<B: Backend>(model: &Model<B>, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
    let ids = model.ids_tensor(rows)?;
    let h = model.forward(ids, &mut NoHooks);
    let [b, _, d] = h.dims();
    let last: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| h.clone().slice([i..i + 1, r.len() - 1..r.len()]).reshape([1, 1, d]))
        .collect();
    let last = burn_tensor::Tensor::cat(last, 0);
    let probs = softmax(model.logits(last), 2);
    let v = model.config.vocab_size;
    let flat = probs.into_data().into_vec::<f32>().map_err(|e| ModelError::Input { message: format!("{e:?}") })?;
    debug_assert_eq!(flat.len(), b * v);
    Ok(flat.chunks(v).map(<[f32]>::to_vec).collect())
}

pub fn predict<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, prompt: &str, k: usize) -> Result<Prediction, ModelError> {
    let enc = tokenizer.encode(prompt)?;
    let probs = last_position_probs(model, std::slice::from_ref(&enc.ids))?.remove(0);
    let top = top_k(&probs, k)
        .into_iter()
        .map(|i| TokenProb { token_id: i as u32, token: tokenizer.decode_token(i as u32), prob: probs[i] })
        .collect();
    Ok(Prediction { prompt: prompt.into(), input_ids: enc.ids, top })
}
