//! `skipped`: the (record, experiment) pairs the experiments stage did not measure, and why.
//! A record that fails one experiment still gets the others.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::DataType;

use super::{table_row, Column};

/// Why a record has no rows in an experiment's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The subject has no paragraphs, so enrichment and sublayer knockout cannot be measured:
    /// excluded, as in the paper.
    NoParagraphs,
    /// The prompt tokenizes to another length than the filter stage saw: the filter tables come
    /// from another model or tokenizer.
    TokenizationMismatch,
    /// Any other failure; the row's `message` says what.
    Error,
}

impl SkipReason {
    /// Every reason, in the order reports list them.
    pub const ALL: [SkipReason; 3] = [SkipReason::NoParagraphs, SkipReason::TokenizationMismatch, SkipReason::Error];

    /// The value of the `reason` column.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::NoParagraphs => "no_paragraphs",
            SkipReason::TokenizationMismatch => "tokenization_mismatch",
            SkipReason::Error => "error",
        }
    }

    /// The reason a `reason` column value names.
    pub fn from_name(name: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Stored as its [`SkipReason::name`].
impl Column for SkipReason {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(|v| Some(v.name())).collect::<StringArray>())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        <String as Column>::values(array)?.into_iter().map(|s| SkipReason::from_name(&s).ok_or_else(|| format!("unknown skip reason `{s}`"))).collect()
    }
}

table_row! {
    /// One (record, experiment) pair left out.
    pub struct SkippedRow in "skipped" {
        /// The fact's `known_id`.
        pub id: i64,
        /// The experiment as users name it (`enrichment`, `sublayer_knockout`, …).
        pub experiment: String,
        /// Why, as a fixed vocabulary that reports count by.
        pub reason: SkipReason,
        /// The full message, for people.
        pub message: String,
    }
}
