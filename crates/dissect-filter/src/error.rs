use dissect_data::DataError;
use dissect_model::ModelError;

/// Failures of the filter stage as a whole. A bad record is not one of them: it is rejected.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("batch size {batch_size} is not allowed\nhint: use a batch size of at least 1, e.g. 16")]
    BatchSize { batch_size: usize },
}
