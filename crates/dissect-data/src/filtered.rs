//! The filter stage's tables, the contract between it and every later stage: the records the
//! model knows (`filtered.parquet`) and the ones left out with the reason (`rejected.parquet`).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::parquet_io::read_parquet;
use crate::position::TokenPositions;
use crate::reject::{RejectReason, Rejected};
use crate::shard::ShardSpec;
use crate::span::SubjectSpan;

/// A record the model predicts correctly, with everything later stages need to find its
/// positions without a tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptRecord {
    /// The fact's `known_id`, which keys the record in every later table.
    pub id: u64,
    /// The text the model reads, as in the dataset.
    pub prompt: String,
    /// The subject as it occurs in the prompt.
    pub subject: String,
    /// The expected object, as in the dataset (no leading space).
    pub attribute: String,
    /// The Wikidata relation (e.g. `P19`); empty when the dataset has none.
    pub relation_id: String,
    /// The subject's tokens, in input-id indexing (stored as `subject_first`, `subject_last`).
    pub subject_span: SubjectSpan,
    /// Index of the first token of the text (1 after a BOS, else 0).
    pub first_token: usize,
    /// Number of input ids, special tokens included.
    pub n_tokens: usize,
    /// The model's greedy next token, which equals the first token of `" " + attribute`.
    pub target_id: u32,
    /// `target_id` decoded on its own, leading space included (e.g. `" Tours"`).
    pub target: String,
    /// The model's probability of `target_id` at the last position (0–1).
    pub target_prob: f32,
}

impl KeptRecord {
    /// The position kinds of this prompt, computed from the stored span and token counts, so
    /// later stages need no tokenizer.
    pub fn positions(&self) -> TokenPositions {
        TokenPositions::new(self.subject_span, self.n_tokens, self.first_token)
    }
}

/// `filtered.parquet`'s columns: [`KeptRecord`]'s fields in order, none nullable, the subject
/// span as `subject_first` and `subject_last`, token indices, counts and ids as `UInt32`.
pub fn kept_schema() -> SchemaRef {
    let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        text("prompt"),
        text("subject"),
        text("attribute"),
        text("relation_id"),
        u32f("subject_first"),
        u32f("subject_last"),
        u32f("first_token"),
        u32f("n_tokens"),
        u32f("target_id"),
        text("target"),
        Field::new("target_prob", DataType::Float32, false),
    ]))
}

/// The records as one batch with [`kept_schema`] (an empty slice keeps the schema).
pub fn kept_to_batch(records: &[KeptRecord]) -> RecordBatch {
    let text = |f: fn(&KeptRecord) -> &str| Arc::new(StringArray::from_iter_values(records.iter().map(f))) as ArrayRef;
    let u32s = |f: fn(&KeptRecord) -> usize| Arc::new(UInt32Array::from_iter_values(records.iter().map(|r| to_u32(f(r))))) as ArrayRef;
    let columns = vec![
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.id))) as ArrayRef,
        text(|r| &r.prompt),
        text(|r| &r.subject),
        text(|r| &r.attribute),
        text(|r| &r.relation_id),
        u32s(|r| r.subject_span.first),
        u32s(|r| r.subject_span.last),
        u32s(|r| r.first_token),
        u32s(|r| r.n_tokens),
        Arc::new(UInt32Array::from_iter_values(records.iter().map(|r| r.target_id))) as ArrayRef,
        text(|r| &r.target),
        Arc::new(Float32Array::from_iter_values(records.iter().map(|r| r.target_prob))) as ArrayRef,
    ];
    RecordBatch::try_new(kept_schema(), columns).expect("columns match kept_schema")
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("token positions fit in u32")
}

/// Reads [`kept_to_batch`]'s rows back; `origin` names the file in errors.
pub fn kept_from_batches(batches: &[RecordBatch], origin: &Path) -> Result<Vec<KeptRecord>, DataError> {
    let mut out = Vec::new();
    for b in batches {
        let c = Columns { batch: b, origin };
        let (id, prompt, subject, attribute, relation) = (
            c.get::<UInt64Array>("id")?,
            c.get::<StringArray>("prompt")?,
            c.get::<StringArray>("subject")?,
            c.get::<StringArray>("attribute")?,
            c.get::<StringArray>("relation_id")?,
        );
        let (sf, sl, ft, nt, tid) = (
            c.get::<UInt32Array>("subject_first")?,
            c.get::<UInt32Array>("subject_last")?,
            c.get::<UInt32Array>("first_token")?,
            c.get::<UInt32Array>("n_tokens")?,
            c.get::<UInt32Array>("target_id")?,
        );
        let (target, prob) = (c.get::<StringArray>("target")?, c.get::<Float32Array>("target_prob")?);
        for i in 0..b.num_rows() {
            let span = SubjectSpan { first: sf.value(i) as usize, last: sl.value(i) as usize };
            let n_tokens = nt.value(i) as usize;
            if span.first > span.last || span.last >= n_tokens {
                return Err(DataError::Schema {
                    path: origin.to_path_buf(),
                    column: "subject_last".into(),
                    message: format!("record {} has subject span {}..={} outside its {n_tokens} tokens", id.value(i), span.first, span.last),
                });
            }
            out.push(KeptRecord {
                id: id.value(i),
                prompt: prompt.value(i).to_string(),
                subject: subject.value(i).to_string(),
                attribute: attribute.value(i).to_string(),
                relation_id: relation.value(i).to_string(),
                subject_span: span,
                first_token: ft.value(i) as usize,
                n_tokens,
                target_id: tid.value(i),
                target: target.value(i).to_string(),
                target_prob: prob.value(i),
            });
        }
    }
    Ok(out)
}

/// The kept records of a `filtered.parquet` file or a directory of its shard partitions.
pub fn read_kept(path: &Path) -> Result<Vec<KeptRecord>, DataError> {
    kept_from_batches(&read_parquet(path)?, path)
}

/// The kept records a later stage runs on: sorted by id, the first `limit` of them, then those
/// of `shard`. Limiting before sharding makes every shard of `--limit N` a part of the same N.
pub fn read_kept_selection(path: &Path, limit: Option<usize>, shard: ShardSpec) -> Result<Vec<KeptRecord>, DataError> {
    let mut records = read_kept(path)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));
    Ok(records)
}

/// `id` (null when the record had none), `kind` ([`RejectReason::kind`]), `reason` (for
/// people) and `detail` (the reason as JSON, with e.g. the predicted token).
pub fn rejected_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]))
}

/// The rejections as one batch with [`rejected_schema`] (an empty slice keeps the schema).
pub fn rejected_to_batch(rejected: &[Rejected]) -> RecordBatch {
    let columns = vec![
        Arc::new(rejected.iter().map(|r| r.id).collect::<UInt64Array>()) as ArrayRef,
        Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| r.reason.kind()))) as ArrayRef,
        Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| r.reason.to_string()))) as ArrayRef,
        Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| serde_json::to_string(&r.reason).expect("reasons serialize")))) as ArrayRef,
    ];
    RecordBatch::try_new(rejected_schema(), columns).expect("columns match rejected_schema")
}

/// Reads [`rejected_to_batch`]'s rows back from their `id` and `detail` columns; `origin`
/// names the file in errors.
pub fn rejected_from_batches(batches: &[RecordBatch], origin: &Path) -> Result<Vec<Rejected>, DataError> {
    let mut out = Vec::new();
    for b in batches {
        let c = Columns { batch: b, origin };
        let (id, detail) = (c.get::<UInt64Array>("id")?, c.get::<StringArray>("detail")?);
        for i in 0..b.num_rows() {
            let reason: RejectReason = serde_json::from_str(detail.value(i)).map_err(|e| DataError::Schema {
                path: origin.to_path_buf(),
                column: "detail".into(),
                message: format!("row {i}: {e}"),
            })?;
            out.push(Rejected { id: id.is_valid(i).then(|| id.value(i)), reason });
        }
    }
    Ok(out)
}

/// The rejections of a `rejected.parquet` file or a directory of its shard partitions.
pub fn read_rejected(path: &Path) -> Result<Vec<Rejected>, DataError> {
    rejected_from_batches(&read_parquet(path)?, path)
}

struct Columns<'a> {
    batch: &'a RecordBatch,
    origin: &'a Path,
}

impl Columns<'_> {
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&T, DataError> {
        let err = |message: String| DataError::Schema { path: self.origin.to_path_buf(), column: name.into(), message };
        let col = self.batch.column_by_name(name).ok_or_else(|| err("missing".into()))?;
        let typed = col.as_any().downcast_ref::<T>().ok_or_else(|| err(format!("has type {}", col.data_type())))?;
        if !self.batch.schema().field_with_name(name).is_ok_and(|f| f.is_nullable()) && col.null_count() > 0 {
            return Err(err("has nulls".into()));
        }
        Ok(typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::write_parquet_atomic;
    use crate::position::PositionKind;

    fn kept(id: u64) -> KeptRecord {
        KeptRecord {
            id,
            prompt: "Honoré de Balzac was born in".into(),
            subject: "Honoré de Balzac".into(),
            attribute: "Tours".into(),
            relation_id: "P19".into(),
            subject_span: SubjectSpan { first: 1, last: 5 },
            first_token: 1,
            n_tokens: 9,
            target_id: 4242,
            target: " Tours".into(),
            target_prob: 0.25,
        }
    }

    #[test]
    fn kept_and_rejected_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![kept(3), kept(8)];
        let path = dir.path().join("filtered.parquet");
        write_parquet_atomic(&path, &[kept_to_batch(&records)], &[]).unwrap();
        let back = read_kept(&path).unwrap();
        assert_eq!(back, records);
        assert_eq!(back[0].positions().get(PositionKind::AfterSubject), Some(6));

        let rejected = vec![
            Rejected { id: None, reason: RejectReason::Malformed { record: 4, message: "missing field `prompt`".into() } },
            Rejected { id: Some(1), reason: RejectReason::PromptTooLong { n_tokens: 9000, context_length: 8192 } },
            Rejected {
                id: Some(2),
                reason: RejectReason::WrongPrediction {
                    predicted_id: 7,
                    predicted: " London".into(),
                    predicted_prob: 0.5,
                    expected_id: 9,
                    expected: " Paris".into(),
                    expected_prob: 0.125,
                },
            },
        ];
        let path = dir.path().join("rejected.parquet");
        write_parquet_atomic(&path, &[rejected_to_batch(&rejected)], &[]).unwrap();
        assert_eq!(read_rejected(&path).unwrap(), rejected);
        let batch = &read_parquet(&path).unwrap()[0];
        let kinds = batch.column_by_name("kind").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(kinds.value(2), "wrong_prediction");
        assert_eq!(batch.column_by_name("id").unwrap().null_count(), 1);
    }

    #[test]
    fn empty_tables_keep_their_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejected.parquet");
        write_parquet_atomic(&path, &[rejected_to_batch(&[])], &[]).unwrap();
        assert!(read_rejected(&path).unwrap().is_empty());
        let path = dir.path().join("filtered.parquet");
        write_parquet_atomic(&path, &[kept_to_batch(&[])], &[]).unwrap();
        assert!(read_kept(&path).unwrap().is_empty());
    }

    #[test]
    fn a_table_of_the_wrong_shape_is_a_schema_error_naming_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filtered.parquet");
        write_parquet_atomic(&path, &[rejected_to_batch(&[])], &[]).unwrap();
        match read_kept(&path) {
            Err(DataError::Schema { column, .. }) => assert_eq!(column, "prompt"),
            other => panic!("{other:?}"),
        }
        let mut bad = kept(1);
        bad.subject_span = SubjectSpan { first: 2, last: 9 };
        write_parquet_atomic(&path, &[kept_to_batch(&[bad])], &[]).unwrap();
        assert!(matches!(read_kept(&path), Err(DataError::Schema { .. })));
    }
}
