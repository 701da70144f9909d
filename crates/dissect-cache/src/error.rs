//! The cache crate's error type: what can fail while computing, writing or reading cached activations.

use std::path::PathBuf;

use dissect_data::DataError;
use dissect_model::ModelError;

/// Failures of the cache stage and of reading a cache back.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Loading, tokenizing or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading or writing a Parquet file (cache part or filter table) failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A record whose prompt no longer matches what the filter stage saw: the filtered table
    /// and the model disagree, so no activation of it could be trusted.
    #[error("record {id}: {message}\nhint: run `dissect filter` again with the same model as `dissect cache`")]
    Record {
        /// The record's `known_id`.
        id: u64,
        /// What disagrees (e.g. the two token counts).
        message: String,
    },
    /// A value that f16 cannot hold (|x| > 65504 becomes infinite).
    #[error("record {id}: {site} at layer {layer}, position {position}: {value} is outside the f16 range\nhint: store the cache with --dtype f32")]
    F16Overflow {
        /// The record's `known_id`.
        id: u64,
        /// The [`crate::Site`] name (`residual`, `attn_out`, `mlp_out`).
        site: &'static str,
        /// 0-based: `hidden_states[layer]` for the residual, block `layer` for the sublayers.
        layer: usize,
        /// The [`dissect_data::PositionKind`] name.
        position: &'static str,
        /// The f32 value that does not fit.
        value: f32,
    },
    /// A Parquet file in a cache directory that is not a cache part, or cache parts that
    /// disagree with each other.
    #[error("{path}: {message}\nhint: the directory must hold only `dissect cache` output of one model; rerun `dissect cache --force`")]
    Format {
        /// The cache part at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A batch size of 0 was asked for.
    #[error("batch size {batch_size} is not allowed\nhint: use a batch size of at least 1, e.g. 8")]
    BatchSize {
        /// The rejected value.
        batch_size: usize,
    },
    /// The activation cache an experiments run was pointed at cannot be read.
    #[error("cannot open the activation cache {dir}: {source}\nhint: run `dissect cache` with the same --pipeline (or --input) first, or pass --no-cache")]
    Unreadable {
        /// The directory asked for.
        dir: PathBuf,
        /// Why it cannot be read.
        source: Box<CacheError>,
    },
    /// The cache lacks records the run reads.
    #[error("the activation cache {root} lacks {missing} of the {total} records (e.g. {examples:?})\nhint: run `dissect cache` on the same --input with the same or a larger --limit first, or pass --no-cache")]
    Incomplete {
        /// Where the parts were found.
        root: PathBuf,
        /// How many of the records are absent.
        missing: usize,
        /// How many records the run reads.
        total: usize,
        /// The first few absent ids.
        examples: Vec<u64>,
    },
    /// The cache was computed with other weights: its activations are another model's.
    #[error("the activation cache {root} was computed with {model} (weights {weights}), not this model\nhint: rerun `dissect cache` with this --model (with --force), or pass --no-cache")]
    OtherModel {
        /// Where the parts were found.
        root: PathBuf,
        /// The model as the cache stage was given it.
        model: String,
        /// The sha256 of its weights (`unknown` when the footer has none).
        weights: String,
    },
}
