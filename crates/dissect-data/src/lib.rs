//! `dissect-data`: the datasets the experiments read (known facts, subject paragraphs,
//! stopwords), where a subject sits in a tokenized prompt, the position vocabulary shared by
//! every stage, and Parquet I/O with provenance and sharding.
//!
//! This crate knows nothing about models: token spans are computed from the byte offsets a
//! tokenizer reports, so stages that only read tables (aggregation) need no model code.

#![warn(missing_docs)]

pub mod atomic;
pub mod error;
pub mod filtered;
pub mod known;
pub mod paragraphs;
pub mod parquet_io;
pub mod parts;
pub mod position;
pub mod provenance;
pub mod reject;
pub mod shard;
pub mod span;
pub mod table;

pub use error::DataError;
pub use filtered::KeptRecord;
pub use known::KnownFact;
pub use position::{PositionKind, TokenPositions};
pub use provenance::Provenance;
pub use reject::{RejectReason, Rejected};
pub use shard::ShardSpec;
pub use span::SubjectSpan;
