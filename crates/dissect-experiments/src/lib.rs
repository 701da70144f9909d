//! `dissect-experiments`: the paper's measurements on one prompt at a time, built from the
//! intervention vocabulary of `dissect_model::intervene`.

#![warn(missing_docs)]

pub mod cached;
pub mod enrichment;
pub mod extraction;
pub mod knockout;
pub mod parameters;
pub mod patching;
pub mod ranks;
pub mod record;
pub mod rows;
pub mod stage;
pub mod sublayer_knockout;
pub mod vocab;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::intervene::{record_clean, CleanRun, RecordSpec, Recorded};
use dissect_model::Model;

/// Why an experiment could not measure a record; the stage turns it into a `skipped` row
/// ([`ExperimentError::skip_reason`]) and goes on with the other records.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The model or its tokenizer failed (encoding the prompt or a paragraph, a forward pass).
    #[error(transparent)]
    Model(#[from] dissect_model::ModelError),
    /// The activation cache could not be read.
    #[error(transparent)]
    Cache(#[from] dissect_cache::CacheError),
    /// The subject was not found in `" " + prompt`, so enrichment's subject-embedding baseline
    /// has no tokens ([`enrichment::baseline_subject_ids`]).
    #[error("embedding baseline: {0}")]
    Baseline(String),
    /// A record-specific inconsistency, e.g. the record is missing from the activation cache or
    /// the cache was built with another model or filter run.
    #[error("record {id}: {message}")]
    Record {
        /// The record's `known_id`, as text.
        id: String,
        /// What is wrong, for people.
        message: String,
    },
    /// The subject has no Wikipedia paragraphs, so its attributes rate has no reference set;
    /// the paper leaves such records out of enrichment and sublayer knockout.
    #[error("record {id}: no paragraphs for subject {subject:?}: excluded from enrichment and sublayer knockout, as in the paper")]
    NoParagraphs {
        /// The record's `known_id`.
        id: u64,
        /// The subject looked up in the paragraphs file.
        subject: String,
    },
    /// The prompt's token count differs from the filter stage's, so the positions it stored
    /// (subject span, last token) do not fit this tokenizer.
    #[error("record {id}: tokenizes to {tokens} tokens, the filter stage saw {filtered}\nhint: was it filtered with another model? rerun the filter stage with this one")]
    TokenizationMismatch {
        /// The record's `known_id`.
        id: u64,
        /// Input ids with this run's tokenizer, special tokens included.
        tokens: usize,
        /// Input ids the filter stage recorded ([`dissect_data::KeptRecord::n_tokens`]).
        filtered: usize,
    },
}

impl ExperimentError {
    /// The `skipped` table's reason for a record that failed with this error.
    pub fn skip_reason(&self) -> dissect_data::table::SkipReason {
        use dissect_data::table::SkipReason;
        match self {
            ExperimentError::NoParagraphs { .. } => SkipReason::NoParagraphs,
            ExperimentError::TokenizationMismatch { .. } => SkipReason::TokenizationMismatch,
            _ => SkipReason::Error,
        }
    }
}

/// Hugging Face's `hidden_states[layer]` (what the notebook reads) from our residual stream
/// `h` entering block `layer`: the same vector, except after the last block, where HF's entry
/// has the final norm applied. Our stream keeps the raw residual there (`hidden[n_layers]`), so
/// this applies the norm at that index.
pub fn hf_hidden_state<B: Backend>(model: &Model<B>, layer: usize, h: Tensor<B, 2>) -> Tensor<B, 2> {
    if layer == model.n_layers() {
        model.final_norm.forward(h)
    } else {
        h
    }
}

/// The vector whose projection is the vocabulary view of `hidden_states[layer]`: the
/// notebook projects HF's entry ([`hf_hidden_state`]); the logit lens applies the final norm
/// itself, so it takes the raw residual (at the last index both give the model's own logits).
pub fn projected_hidden_state<B: Backend>(model: &Model<B>, layer: usize, h: Tensor<B, 2>, projection: dissect_model::project::Projection) -> Tensor<B, 2> {
    match projection {
        dissect_model::project::Projection::Notebook => hf_hidden_state(model, layer, h),
        dissect_model::project::Projection::LogitLens => h,
    }
}

/// The clean residual stream entering every block and after the last, at every position:
/// `n_layers + 1` tensors `[seq, hidden]`.
pub fn clean_hidden<B: Backend>(model: &Model<B>, ids: &[u32]) -> Result<Vec<Tensor<B, 2>>, ExperimentError> {
    Ok(by_position(every_position(model, ids, false)?.residual))
}

/// [`clean_hidden`] and, from the same forward pass, the clean run the interventions' fast
/// paths attend over ([`CleanRun::from_kv`]).
pub fn clean_stream<B: Backend>(model: &Model<B>, ids: &[u32]) -> Result<(Vec<Tensor<B, 2>>, CleanRun<B>), ExperimentError> {
    let rec = every_position(model, ids, true)?;
    Ok((by_position(rec.residual), CleanRun::from_kv(ids, rec.kv)?))
}

/// The clean pass recording the stream at every position, and the keys and values when `kv`
/// is asked.
fn every_position<B: Backend>(model: &Model<B>, ids: &[u32], kv: bool) -> Result<Recorded<B>, ExperimentError> {
    Ok(record_clean(model, ids, RecordSpec { residual: true, kv, positions: vec![(0..ids.len()).collect()], ..RecordSpec::default() })?)
}

/// A batch of one's entries `[1, seq, hidden]` as `[seq, hidden]`.
fn by_position<B: Backend>(entries: Vec<Tensor<B, 3>>) -> Vec<Tensor<B, 2>> {
    entries
        .into_iter()
        .map(|t| {
            let [_, s, d] = t.dims();
            t.reshape([s, d])
        })
        .collect()
}
