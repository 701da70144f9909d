//! Next-token prediction: probabilities at the last position, and top-k without sorting the
//! whole vocabulary.

use burn_tensor::activation::softmax;
use burn_tensor::backend::Backend;
use serde::Serialize;

use crate::error::ModelError;
use crate::hooks::NoHooks;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// One candidate next token.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenProb {
    /// Vocabulary id.
    pub token_id: u32,
    /// Its text, as HF's `tokenizer.decode([id])` gives it.
    pub token: String,
    /// Softmax probability at the last position, in `[0, 1]`.
    pub prob: f32,
}

/// The model's most likely next tokens after a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The prompt text as given.
    pub prompt: String,
    /// Its token ids, special tokens (e.g. BOS) included.
    pub input_ids: Vec<u32>,
    /// The `k` most probable next tokens, most probable first.
    pub top: Vec<TokenProb>,
}

/// The indices of the `k` largest values, largest first (ties: lower index first; values in
/// `f32::total_cmp` order, so a NaN ranks above +∞), in one pass with a bounded heap: most
/// values fall below the heap's minimum and are skipped a block at a time.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;

    /// Orders by value, then prefers the lower index (so the heap's minimum is the entry to drop).
    #[derive(PartialEq)]
    struct Entry(f32, usize);
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
        }
    }

    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Entry>> = values[..k].iter().enumerate().map(|(i, &v)| Reverse(Entry(v, i))).collect();
    let mut floor = heap.peek().expect("k > 0").0 .0;
    // Blocks of values all strictly below the heap's minimum (`v < floor` in IEEE order, which
    // implies below it in total order too) cannot enter; that test vectorizes, the heap's
    // comparison does not. A NaN or a zero of the other sign fails `v < floor` and takes the
    // exact comparison.
    const BLOCK: usize = 64;
    for (b, block) in values[k..].chunks(BLOCK).enumerate() {
        if block.iter().fold(true, |below, &v| below & (v < floor)) {
            continue;
        }
        for (j, &v) in block.iter().enumerate() {
            let e = Entry(v, k + b * BLOCK + j);
            if e > heap.peek().expect("k > 0").0 {
                heap.pop();
                heap.push(Reverse(e));
                floor = heap.peek().expect("k > 0").0 .0;
            }
        }
    }
    let mut out: Vec<Entry> = heap.into_iter().map(|Reverse(e)| e).collect();
    out.sort_by(|a, b| b.cmp(a));
    out.into_iter().map(|e| e.1).collect()
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
    let last: Vec<_> = rows.iter().enumerate().map(|(i, r)| h.clone().slice([i..i + 1, r.len() - 1..r.len()]).reshape([1, 1, d])).collect();
    let last = burn_tensor::Tensor::cat(last, 0);
    let probs = softmax(model.logits(last), 2);
    let v = model.config.vocab_size;
    let flat = probs.into_data().into_vec::<f32>().map_err(|e| ModelError::Input { message: format!("{e:?}") })?;
    debug_assert_eq!(flat.len(), b * v);
    Ok(flat.chunks(v).map(<[f32]>::to_vec).collect())
}

/// Tokenizes `prompt` as HF does by default, runs it, and returns the `k` most probable next tokens.
pub fn predict<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, prompt: &str, k: usize) -> Result<Prediction, ModelError> {
    let enc = tokenizer.encode(prompt)?;
    let probs = last_position_probs(model, std::slice::from_ref(&enc.ids))?.remove(0);
    let top = top_k(&probs, k).into_iter().map(|i| TokenProb { token_id: i as u32, token: tokenizer.decode_token(i as u32), prob: probs[i] }).collect();
    Ok(Prediction { prompt: prompt.into(), input_ids: enc.ids, top })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        let v = [0.5, 2.0, -1.0, 2.0, 0.7, f32::NEG_INFINITY];
        assert_eq!(top_k(&v, 3), vec![1, 3, 4]);
        assert_eq!(top_k(&v, 10), vec![1, 3, 4, 0, 2, 5]);
        assert!(top_k(&v, 0).is_empty());
        assert_eq!(rank_of(&v, 4), 2);
        assert_eq!(rank_of(&v, 1), 0);
    }

    /// NaNs, zeros of both signs, ties and rising runs (each value entering the heap) at
    /// lengths around the skipped blocks' size: the same list as a full sort in total order.
    #[test]
    fn top_k_equals_a_full_sort_on_adversarial_values() {
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15);
        let specials = [f32::NAN, -f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0, 1.0];
        for n in [1, 63, 64, 65, 130, 1000, 4099] {
            let random: Vec<f32> =
                (0..n).map(|_| if next().is_multiple_of(5) { specials[(next() % 8) as usize] } else { (next() % 64) as f32 / 8.0 - 4.0 }).collect();
            let rising: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let zeros: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -0.0 } else { 0.0 }).collect();
            for v in [random, rising, zeros] {
                let mut idx: Vec<usize> = (0..v.len()).collect();
                idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                for k in [1, 2, 10, 64, n] {
                    let k = k.min(n);
                    assert_eq!(top_k(&v, k), idx[..k].to_vec(), "n = {n}, k = {k}");
                }
            }
        }
    }

    #[test]
    fn top_k_equals_a_full_sort() {
        // A deterministic pseudo-random vector with repeated values.
        let v: Vec<f32> = (0..5000u32).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 997) as f32 / 7.0).collect();
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        for k in [1, 5, 500, 5000] {
            assert_eq!(top_k(&v, k), idx[..k].to_vec(), "k = {k}");
        }
    }
}
