//! The filter stage's error type.

use dissect_data::DataError;
use dissect_model::ModelError;

/// Failures of the filter stage as a whole. A bad record is not one of them: it is rejected.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Loading or running the model failed (a tokenizer failure on one fact is a rejection instead).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading the facts or writing the output tables failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A batch or chunk size of 0 was asked for.
    #[error("a {name} of 0 is not allowed\nhint: use a {name} of at least 1")]
    Size {
        /// `batch size` or `chunk size`.
        name: &'static str,
    },
}
