use std::path::PathBuf;

use dissect_data::DataError;
use dissect_model::ModelError;

/// Failures of the cache stage and of reading a cache back.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    /// A record whose prompt no longer matches what the filter stage saw: the filtered table
    /// and the model disagree, so no activation of it could be trusted.
    #[error("record {id}: {message}\nhint: run `dissect filter` again with the same model as `dissect cache`")]
    Record { id: u64, message: String },
    /// A value that f16 cannot hold (|x| > 65504 becomes infinite).
    #[error("record {id}: {site} at layer {layer}, position {position}: {value} is outside the f16 range\nhint: store the cache with --dtype f32")]
    F16Overflow { id: u64, site: &'static str, layer: usize, position: &'static str, value: f32 },
    /// A Parquet file in a cache directory that is not a cache part, or cache parts that
    /// disagree with each other.
    #[error("{path}: {message}\nhint: the directory must hold only `dissect cache` output of one model; rerun `dissect cache --force`")]
    Format { path: PathBuf, message: String },
    #[error("batch size {batch_size} is not allowed\nhint: use a batch size of at least 1, e.g. 8")]
    BatchSize { batch_size: usize },
}
