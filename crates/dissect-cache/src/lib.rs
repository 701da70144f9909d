//! Stage 2, the activation cache: for every kept record, the activations the experiments
//! read from a clean run, in Parquet, and a reader that gives them back as burn tensors.
//!
//! What is cached (and nothing else): the residual stream `hidden_states[l]` for
//! `l = 0..=n_layers` (block inputs, then the final residual before the final norm) at the
//! position kinds first / subject_first / subject_last / after_subject / last, and what the
//! MHSA and MLP sublayers add to the residual stream at the last position, every layer. One
//! row per (record, layer, position kind, site), see [`schema::cache_schema`]; parts under
//! `<cache>/shard=NNNNN/part-CCCCC.parquet`, so DuckDB or polars read the directory whole.
//!
//! Experiments that change earlier positions (patching, sublayer knockout) or need every
//! position still run the model; the cache serves enrichment, extraction's clean rows and
//! ranks.

#![warn(missing_docs)]

pub mod compute;
pub mod error;
pub mod reader;
pub mod schema;
pub mod stage;

pub use compute::{clean_pass, compute, CleanPass};
pub use error::CacheError;
pub use reader::{CacheReader, CachedRecord};
pub use schema::{KindResidual, RecordActivations, Site, StoreDtype};
pub use stage::{cache_parts, cache_provenance, run_resumable, write_part, CacheConfig, RunSummary};
