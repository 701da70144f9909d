//! The experiments stage's tables as Rust types: one row type per table, used by the writer
//! (`dissect-experiments`) and every reader (`dissect-aggregate`, tests), so a column cannot be
//! renamed or retyped on one side only. Each table has its own file here; [`Row`] turns a
//! slice of rows into an Arrow batch and back, with the schema derived from the struct.
//!
//! # Column conventions
//!
//! Every table follows these, so that a researcher's DuckDB or polars query can rely on them:
//!
//! - **Integers are signed**: `id` is `Int64`, every other integer `Int32`. Differences such
//!   as `subject_last_rank - attn_last_rank` never wrap around.
//! - **`layer` is a 0-based block index** (block `ℓ` is Hugging Face's `model.layers[ℓ]`,
//!   TransformerLens's `blocks.ℓ`). A column holding an index into Hugging Face's
//!   `hidden_states` tuple (0 = the embeddings, `ℓ + 1` = the output of block `ℓ`) says so in
//!   its name: `hidden_state`, `source_hidden_state`, `read_hidden_state`.
//! - **`positions` names a set of prompt positions** (`subject`, `last`, `non_subject`, …):
//!   whose attention edges to the last position are blocked (knockout, extraction; `none` is
//!   the clean run) or which positions are patched (patching).
//! - **Units are in the name**: `_pct` is percent (0–100), `p_` a probability (0–1), `_rank` a
//!   0-based rank (0 = the top token; the number of tokens scoring strictly higher).
//! - **Token ids** are the tokenizer's ids (`target_id`, `top1_id`, `top_ids`); decoded
//!   strings sit beside them where a table shows tokens.
//!
//! ```
//! use dissect_data::table::{RanksRow, Row};
//!
//! let rows = vec![RanksRow { id: 7, layer: 0, subject_last_rank: 12, attn_last_rank: 0 }];
//! let batch = RanksRow::to_batch(&rows);
//! assert_eq!(batch.schema().field(0).name(), "id");
//! assert_eq!(RanksRow::from_batch(&batch, "ranks.parquet".as_ref())?, rows);
//! # Ok::<(), dissect_data::DataError>(())
//! ```

mod column;
mod enrichment;
mod extraction;
mod knockout;
mod parameters;
mod patching;
mod ranks;
mod skipped;
mod sublayer_knockout;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};

pub use column::Column;
pub use enrichment::{EnrichmentBaselineRow, EnrichmentRow};
pub use extraction::ExtractionRow;
pub use knockout::KnockoutRow;
pub use parameters::{ParametersHeadRow, ParametersMatrixRow, ParametersMlpRow};
pub use patching::PatchingRow;
pub use ranks::RanksRow;
pub use skipped::{SkipReason, SkippedRow};
pub use sublayer_knockout::SublayerKnockoutRow;

use crate::error::DataError;
use crate::parquet_io::read_parquet;

/// The version of the tables' layout. Stages put it in their parameters, so parts written with
/// an older layout are recomputed rather than mixed with new ones.
pub const LAYOUT_VERSION: u32 = 2;

/// One row of a table; the `table_row!` macro implements it for the row types of this module.
pub trait Row: Sized {
    /// The table's name: its directory under the output directory.
    const TABLE: &'static str;

    /// The columns, in order.
    fn fields() -> Vec<Field>;

    /// One Arrow array per column.
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;

    /// The rows of a batch with [`Row::fields`]'s columns (extra columns are ignored); `path`
    /// names the file in errors.
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>, DataError>;

    /// The table's schema.
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(Self::fields()))
    }

    /// The rows as one batch (an empty slice gives an empty batch that keeps the schema).
    fn to_batch(rows: &[Self]) -> RecordBatch {
        RecordBatch::try_new(Self::schema(), Self::columns(rows)).expect("columns follow the derived schema")
    }

    /// Every row of a file or a directory of shard partitions.
    fn read(path: &Path) -> Result<Vec<Self>, DataError> {
        let mut out = Vec::new();
        for batch in read_parquet(path)? {
            out.extend(Self::from_batch(&batch, path)?);
        }
        Ok(out)
    }
}

/// The `id` column's value for a fact's `known_id`. Ids beyond `i64::MAX` do not occur in
/// practice (known_1000 numbers its facts from 0); such an id saturates rather than wrapping
/// to a negative one.
pub fn id_value(known_id: u64) -> i64 {
    i64::try_from(known_id).unwrap_or(i64::MAX)
}

/// A column of `batch` as typed values, or a schema error naming the file and column.
pub fn column_values<T: Column>(batch: &RecordBatch, path: &Path, name: &str) -> Result<Vec<T>, DataError> {
    let schema_error = |message: String| DataError::Schema { path: path.to_path_buf(), column: name.into(), message };
    let array = batch.column_by_name(name).ok_or_else(|| schema_error("missing".into()))?;
    T::values(array.as_ref()).map_err(schema_error)
}

/// The experiments and the per-record tables each writes, in the order a run measures them:
/// the one list both sides expand, so adding an experiment registers it with one line here.
///
/// A line reads `Variant(module) => field: RowType, …;`. The experiments stage makes it
/// `Experiment::Variant`, labelled `module` (the name users type), measured by
/// `dissect_experiments::module::Variant`, writing the listed tables. The aggregate reads each
/// table into `Inputs::field` with the same row type. Each side passes its own macro:
/// `dissect_data::experiment_registry!(its_macro)`.
#[macro_export]
macro_rules! experiment_registry {
    ($callback:ident) => {
        $callback! {
            /// Attention knockout (the paper's §3).
            Knockout(knockout) => knockout: $crate::table::KnockoutRow;
            /// Attribute extraction (§5).
            Extraction(extraction) => extraction: $crate::table::ExtractionRow;
            /// Extraction with early representations patched in (§5.2).
            Patching(patching) => patching: $crate::table::PatchingRow;
            /// Subject enrichment (§4).
            Enrichment(enrichment) => enrichment: $crate::table::EnrichmentRow, enrichment_baseline: $crate::table::EnrichmentBaselineRow;
            /// Sublayer knockout (§4.2).
            SublayerKnockout(sublayer_knockout) => sublayer: $crate::table::SublayerKnockoutRow;
            /// The target's ranks in the subject and in the MHSA output.
            Ranks(ranks) => ranks: $crate::table::RanksRow;
            /// Parameters in vocabulary space (the model-level `parameters_matrices` table is
            /// written once per run, not per record).
            Parameters(parameters) => parameters_heads: $crate::table::ParametersHeadRow, parameters_mlp: $crate::table::ParametersMlpRow;
        }
    };
}

/// Declares a row type and derives its [`Row`] implementation: the struct's field names are
/// the column names, their types ([`Column`]) the column types.
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:literal {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        impl $crate::table::Row for $name {
            const TABLE: &'static str = $table;

            fn fields() -> Vec<arrow_schema::Field> {
                use $crate::table::Column;
                vec![$( arrow_schema::Field::new(stringify!($field), <$ty>::data_type(), <$ty>::NULLABLE), )+]
            }

            fn columns(rows: &[Self]) -> Vec<arrow_array::ArrayRef> {
                use $crate::table::Column;
                vec![$( <$ty>::array(rows.iter().map(|r| &r.$field)), )+]
            }

            fn from_batch(batch: &arrow_array::RecordBatch, path: &std::path::Path) -> Result<Vec<Self>, $crate::DataError> {
                $( let mut $field = $crate::table::column_values::<$ty>(batch, path, stringify!($field))?.into_iter(); )+
                Ok((0..batch.num_rows()).map(|_| $name { $( $field: $field.next().expect("a value per row"), )+ }).collect())
            }
        }
    };
}
pub(crate) use table_row;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::write_parquet_atomic;

    #[test]
    fn every_table_round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let rows = vec![
            SublayerKnockoutRow {
                id: 3,
                start_layer: None,
                end_layer: None,
                sublayer: "none".into(),
                mode: "none".into(),
                read_hidden_state: 16,
                rate_pct: 12.5,
            },
            SublayerKnockoutRow {
                id: 3,
                start_layer: Some(0),
                end_layer: Some(9),
                sublayer: "mlp".into(),
                mode: "zero".into(),
                read_hidden_state: 16,
                rate_pct: 0.0,
            },
        ];
        write_parquet_atomic(&path, &[SublayerKnockoutRow::to_batch(&rows)], &[]).unwrap();
        assert_eq!(SublayerKnockoutRow::read(&path).unwrap(), rows);

        let heads = vec![ParametersHeadRow { id: 1, layer: 2, head: 3, target_rank: 4, top_ids: vec![5, 6], top_tokens: vec![" a".into(), " b".into()] }];
        write_parquet_atomic(&path, &[ParametersHeadRow::to_batch(&heads)], &[]).unwrap();
        assert_eq!(ParametersHeadRow::read(&path).unwrap(), heads);

        let skipped = vec![SkippedRow { id: 9, experiment: "enrichment".into(), reason: SkipReason::NoParagraphs, message: "no paragraphs".into() }];
        write_parquet_atomic(&path, &[SkippedRow::to_batch(&skipped)], &[]).unwrap();
        assert_eq!(SkippedRow::read(&path).unwrap(), skipped);
    }

    #[test]
    fn integer_columns_are_signed_so_differences_do_not_wrap() {
        use arrow_schema::DataType;
        let tables = [
            KnockoutRow::fields(),
            ExtractionRow::fields(),
            PatchingRow::fields(),
            EnrichmentRow::fields(),
            EnrichmentBaselineRow::fields(),
            SublayerKnockoutRow::fields(),
            RanksRow::fields(),
            ParametersHeadRow::fields(),
            ParametersMlpRow::fields(),
            ParametersMatrixRow::fields(),
            SkippedRow::fields(),
        ];
        for fields in tables {
            for f in fields {
                let ty = match f.data_type() {
                    DataType::List(item) => item.data_type().clone(),
                    t => t.clone(),
                };
                assert!(!ty.is_unsigned_integer(), "{}: {ty}", f.name());
                if f.name() == "id" {
                    assert_eq!(ty, DataType::Int64);
                }
            }
        }
    }

    #[test]
    fn a_column_of_another_type_names_the_file_and_column() {
        use arrow_array::{Int32Array, UInt32Array};
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(arrow_array::Int64Array::from(vec![1])) as ArrayRef),
            ("layer", Arc::new(UInt32Array::from(vec![0])) as ArrayRef),
            ("subject_last_rank", Arc::new(Int32Array::from(vec![0])) as ArrayRef),
            ("attn_last_rank", Arc::new(Int32Array::from(vec![0])) as ArrayRef),
        ])
        .unwrap();
        let err = RanksRow::from_batch(&batch, Path::new("old/ranks.parquet")).unwrap_err().to_string();
        assert!(err.contains("old/ranks.parquet") && err.contains("`layer`") && err.contains("UInt32"), "{err}");
    }
}
