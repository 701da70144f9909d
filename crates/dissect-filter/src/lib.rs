//! Stage 1, filtering (Meng et al. 2022): keep the known facts whose attribute the model
//! predicts, i.e. whose greedy next token is the first token of `" " + attribute`.

#![warn(missing_docs)]

pub mod error;
pub mod output;
pub mod prepare;
pub mod run;

pub use error::FilterError;
pub use output::{filter_parts, filter_provenance, read_parts, run_resumable, weights_sha256, FilterTables};
pub use run::{run_filter, run_filter_with_progress, FilterConfig, FilterOutput};
