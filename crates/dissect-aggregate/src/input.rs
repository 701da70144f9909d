//! Reading the experiments stage's per-example tables (a file or a directory of shards each)
//! into typed rows, and the provenance in their footers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow_array::{Array, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use dissect_data::parquet_io::{parquet_files, read_kv_metadata, read_parquet};
use dissect_data::Provenance;
use serde::{Deserialize, Serialize};

use crate::error::AggregateError;

/// The experiment tables this stage reads, by directory name.
pub const EXPERIMENT_TABLES: [&str; 10] =
    ["knockout", "extraction", "patching", "enrichment", "enrichment_baseline", "sublayer_knockout", "ranks", "parameters_heads", "parameters_mlp", "skipped"];

#[derive(Debug, Clone, PartialEq)]
pub struct KnockoutRow {
    pub id: u64,
    pub layer: u32,
    pub block: String,
    pub window: u32,
    pub pct_change: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExtractionRow {
    pub id: u64,
    pub layer: u32,
    pub sublayer: String,
    pub blocked: String,
    pub extracted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchingRow {
    pub id: u64,
    pub layer: u32,
    pub source_layer: u32,
    pub positions: String,
    pub extracted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnrichmentRow {
    pub id: u64,
    /// `hidden_states` index: 0 = embeddings.
    pub layer: u32,
    pub position: String,
    pub rate: f64,
    /// The `extra` column: a measurement beyond the notebook's (`hidden_states[n_layers]`);
    /// `None` when the table has no such column (older runs, which wrote that index unmarked).
    pub extra: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    pub id: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SublayerRow {
    pub id: u64,
    /// `None`: the no-intervention row.
    pub start_layer: Option<u32>,
    pub end_layer: Option<u32>,
    pub sublayer: String,
    pub mode: String,
    pub read_layer: u32,
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RankRow {
    pub id: u64,
    pub layer: u32,
    pub subject_last_rank: u32,
    pub attn_last_rank: u32,
}

/// A row of `parameters_heads` (one head) or `parameters_mlp` (one sub-update).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterRow {
    pub id: u64,
    pub layer: u32,
    pub target_rank: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRow {
    pub id: u64,
    pub experiment: String,
    pub reason: String,
}

/// Who wrote a table: the distinct values over all its files (one per shard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProvenance {
    pub table: String,
    pub files: usize,
    pub stages: BTreeSet<String>,
    pub models: BTreeSet<String>,
    pub model_revisions: BTreeSet<String>,
    pub weights_sha256: BTreeSet<String>,
    pub dtypes: BTreeSet<String>,
    pub versions: BTreeSet<String>,
    pub params_sha256: BTreeSet<String>,
    /// The first file's parameters (shards differ only in their shard entry).
    pub params: Option<serde_json::Value>,
    /// Files whose footer carries no dissect provenance.
    pub foreign_files: usize,
    /// sha256 over every file's relative path, size and parameter hash: changes when a
    /// resumed run adds parts with unchanged parameters, so a stale aggregation is redone.
    pub files_sha256: String,
}

/// Everything read from the input directories.
#[derive(Debug, Default)]
pub struct Inputs {
    pub knockout: Option<Vec<KnockoutRow>>,
    pub extraction: Option<Vec<ExtractionRow>>,
    pub patching: Option<Vec<PatchingRow>>,
    pub enrichment: Option<Vec<EnrichmentRow>>,
    pub enrichment_baseline: Option<Vec<BaselineRow>>,
    pub sublayer: Option<Vec<SublayerRow>>,
    pub ranks: Option<Vec<RankRow>>,
    pub parameters_heads: Option<Vec<ParameterRow>>,
    pub parameters_mlp: Option<Vec<ParameterRow>>,
    pub skipped: Option<Vec<SkippedRow>>,
    /// Kept records: id → subject.
    pub kept: Option<BTreeMap<u64, String>>,
    /// Rejected records by reason kind.
    pub rejected: Option<BTreeMap<String, usize>>,
    pub provenance: Vec<TableProvenance>,
}

impl Inputs {
    /// The model as the tables' footers name it.
    pub fn model(&self) -> String {
        model_of(&self.provenance)
    }
}

/// The model the footers name; several are joined with ` + ` (a mixed-up input directory
/// then shows in every title).
pub fn model_of(provenance: &[TableProvenance]) -> String {
    let models: BTreeSet<&String> = provenance.iter().flat_map(|p| p.models.iter()).collect();
    if models.is_empty() {
        "unknown model".into()
    } else {
        models.into_iter().cloned().collect::<Vec<_>>().join(" + ")
    }
}

/// Only the footers of the tables [`read_inputs`] would read.
pub fn read_provenance(input: &Path, filter_dir: &Path) -> Result<Vec<TableProvenance>, AggregateError> {
    let mut out = Vec::new();
    for name in EXPERIMENT_TABLES {
        if let Some(path) = locate(input, name) {
            out.push(provenance_of(name, &path)?);
        }
    }
    if let Some(path) = locate(filter_dir, "filtered") {
        out.push(provenance_of("filtered", &path)?);
    }
    Ok(out)
}

/// `<dir>/<name>` as a file `<name>.parquet` or a directory of shards; `None` when neither
/// exists.
fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.parquet"))].into_iter().find(|p| p.exists())
}

fn provenance_of(table: &str, path: &Path) -> Result<TableProvenance, AggregateError> {
    let mut p = TableProvenance { table: table.into(), ..TableProvenance::default() };
    let mut listing = String::new();
    for file in parquet_files(path)? {
        p.files += 1;
        let size = std::fs::metadata(&file).map_err(|e| AggregateError::io(&file, e))?.len();
        let rel = file.strip_prefix(path).unwrap_or(&file).display().to_string();
        let prov = Provenance::from_kv(&read_kv_metadata(&file)?);
        listing.push_str(&format!("{rel}\t{size}\t{}\n", prov.as_ref().map(Provenance::params_hash).unwrap_or_default()));
        let Some(prov) = prov else {
            p.foreign_files += 1;
            continue;
        };
        if p.params.is_none() {
            p.params = Some(prov.params.clone());
        }
        p.params_sha256.insert(prov.params_hash());
        p.stages.insert(prov.stage);
        p.models.insert(prov.model_spec);
        p.model_revisions.extend(prov.model_revision);
        p.weights_sha256.extend(prov.weights_sha256);
        p.dtypes.insert(prov.dtype);
        p.versions.insert(prov.dissect_version);
    }
    p.files_sha256 = dissect_data::provenance::sha256_hex(listing.as_bytes());
    Ok(p)
}

/// Reads every experiment table present under `input` and the filter's tables under
/// `filter_dir` (`filtered.parquet` / `rejected.parquet`, or their shard directories).
pub fn read_inputs(input: &Path, filter_dir: &Path) -> Result<Inputs, AggregateError> {
    let mut inputs = Inputs::default();
    let mut found = 0;
    for name in EXPERIMENT_TABLES {
        let Some(path) = locate(input, name) else { continue };
        found += 1;
        let batches = read_parquet(&path)?;
        inputs.provenance.push(provenance_of(name, &path)?);
        match name {
            "knockout" => inputs.knockout = Some(knockout(&batches)?),
            "extraction" => inputs.extraction = Some(extraction(&batches)?),
            "patching" => inputs.patching = Some(patching(&batches)?),
            "enrichment" => inputs.enrichment = Some(enrichment(&batches)?),
            "enrichment_baseline" => inputs.enrichment_baseline = Some(baseline(&batches)?),
            "sublayer_knockout" => inputs.sublayer = Some(sublayer(&batches)?),
            "ranks" => inputs.ranks = Some(ranks(&batches)?),
            "parameters_heads" => inputs.parameters_heads = Some(parameter_rows(name, &batches)?),
            "parameters_mlp" => inputs.parameters_mlp = Some(parameter_rows(name, &batches)?),
            "skipped" => inputs.skipped = Some(skipped(&batches)?),
            _ => unreachable!("every name of EXPERIMENT_TABLES is handled"),
        }
    }
    if found == 0 || (found == 1 && inputs.skipped.is_some()) {
        return Err(AggregateError::NoTables { path: input.to_path_buf(), expected: EXPERIMENT_TABLES.join(", ") });
    }
    if let Some(path) = locate(filter_dir, "filtered") {
        inputs.provenance.push(provenance_of("filtered", &path)?);
        let kept = dissect_data::filtered::read_kept(&path)?;
        inputs.kept = Some(kept.into_iter().map(|k| (k.id, k.subject)).collect());
    }
    if let Some(path) = locate(filter_dir, "rejected") {
        let mut by_kind = BTreeMap::new();
        for r in dissect_data::filtered::read_rejected(&path)? {
            *by_kind.entry(r.reason.kind().to_string()).or_insert(0) += 1;
        }
        inputs.rejected = Some(by_kind);
    }
    Ok(inputs)
}

/// Typed access to one batch's columns, with errors that name the table and column.
struct Cols<'a> {
    table: &'a str,
    batch: &'a RecordBatch,
}

impl<'a> Cols<'a> {
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T, AggregateError> {
        let col = self.batch.column_by_name(name).ok_or_else(|| AggregateError::schema(self.table, name, "missing"))?;
        col.as_any().downcast_ref::<T>().ok_or_else(|| AggregateError::schema(self.table, name, format!("has type {}", col.data_type())))
    }

    fn no_nulls<T: Array + 'static>(&self, name: &str) -> Result<&'a T, AggregateError> {
        let a = self.get::<T>(name)?;
        if a.null_count() > 0 {
            return Err(AggregateError::schema(self.table, name, "has nulls"));
        }
        Ok(a)
    }

    fn u64(&self, name: &str) -> Result<&'a UInt64Array, AggregateError> {
        self.no_nulls(name)
    }
    fn u32(&self, name: &str) -> Result<&'a UInt32Array, AggregateError> {
        self.no_nulls(name)
    }
    fn f32(&self, name: &str) -> Result<&'a Float32Array, AggregateError> {
        self.no_nulls(name)
    }
    fn str(&self, name: &str) -> Result<&'a StringArray, AggregateError> {
        self.no_nulls(name)
    }
    fn bool(&self, name: &str) -> Result<&'a BooleanArray, AggregateError> {
        self.no_nulls(name)
    }
    /// A boolean column that may be absent (`None`); present, it must have no nulls.
    fn opt_bool(&self, name: &str) -> Result<Option<&'a BooleanArray>, AggregateError> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(None);
        }
        self.no_nulls(name).map(Some)
    }
}

fn opt(a: &UInt32Array, i: usize) -> Option<u32> {
    a.is_valid(i).then(|| a.value(i))
}

fn rows<R>(table: &str, batches: &[RecordBatch], mut f: impl FnMut(&Cols<'_>, usize) -> Result<R, AggregateError>) -> Result<Vec<R>, AggregateError> {
    let mut out = Vec::new();
    for batch in batches {
        let c = Cols { table, batch };
        for i in 0..batch.num_rows() {
            out.push(f(&c, i)?);
        }
    }
    Ok(out)
}

fn knockout(b: &[RecordBatch]) -> Result<Vec<KnockoutRow>, AggregateError> {
    rows("knockout", b, |c, i| {
        Ok(KnockoutRow {
            id: c.u64("id")?.value(i),
            layer: c.u32("layer")?.value(i),
            block: c.str("block")?.value(i).into(),
            window: c.u32("window")?.value(i),
            pct_change: f64::from(c.f32("pct_change")?.value(i)),
        })
    })
}

fn extraction(b: &[RecordBatch]) -> Result<Vec<ExtractionRow>, AggregateError> {
    rows("extraction", b, |c, i| {
        Ok(ExtractionRow {
            id: c.u64("id")?.value(i),
            layer: c.u32("layer")?.value(i),
            sublayer: c.str("sublayer")?.value(i).into(),
            blocked: c.str("blocked")?.value(i).into(),
            extracted: c.bool("extracted")?.value(i),
        })
    })
}

fn patching(b: &[RecordBatch]) -> Result<Vec<PatchingRow>, AggregateError> {
    rows("patching", b, |c, i| {
        Ok(PatchingRow {
            id: c.u64("id")?.value(i),
            layer: c.u32("layer")?.value(i),
            source_layer: c.u32("source_layer")?.value(i),
            positions: c.str("positions")?.value(i).into(),
            extracted: c.bool("extracted")?.value(i),
        })
    })
}

fn enrichment(b: &[RecordBatch]) -> Result<Vec<EnrichmentRow>, AggregateError> {
    rows("enrichment", b, |c, i| {
        Ok(EnrichmentRow {
            id: c.u64("id")?.value(i),
            layer: c.u32("layer")?.value(i),
            position: c.str("position")?.value(i).into(),
            rate: f64::from(c.f32("rate")?.value(i)),
            extra: c.opt_bool("extra")?.map(|a| a.value(i)),
        })
    })
}

fn baseline(b: &[RecordBatch]) -> Result<Vec<BaselineRow>, AggregateError> {
    rows("enrichment_baseline", b, |c, i| Ok(BaselineRow { id: c.u64("id")?.value(i), rate: f64::from(c.f32("rate")?.value(i)) }))
}

fn sublayer(b: &[RecordBatch]) -> Result<Vec<SublayerRow>, AggregateError> {
    rows("sublayer_knockout", b, |c, i| {
        Ok(SublayerRow {
            id: c.u64("id")?.value(i),
            start_layer: opt(c.get::<UInt32Array>("start_layer")?, i),
            end_layer: opt(c.get::<UInt32Array>("end_layer")?, i),
            sublayer: c.str("sublayer")?.value(i).into(),
            mode: c.str("mode")?.value(i).into(),
            read_layer: c.u32("read_layer")?.value(i),
            rate: f64::from(c.f32("rate")?.value(i)),
        })
    })
}

fn ranks(b: &[RecordBatch]) -> Result<Vec<RankRow>, AggregateError> {
    rows("ranks", b, |c, i| {
        Ok(RankRow {
            id: c.u64("id")?.value(i),
            layer: c.u32("layer")?.value(i),
            subject_last_rank: c.u32("subject_last_rank")?.value(i),
            attn_last_rank: c.u32("attn_last_rank")?.value(i),
        })
    })
}

fn parameter_rows(table: &str, b: &[RecordBatch]) -> Result<Vec<ParameterRow>, AggregateError> {
    rows(table, b, |c, i| Ok(ParameterRow { id: c.u64("id")?.value(i), layer: c.u32("layer")?.value(i), target_rank: c.u32("target_rank")?.value(i) }))
}

fn skipped(b: &[RecordBatch]) -> Result<Vec<SkippedRow>, AggregateError> {
    rows("skipped", b, |c, i| {
        Ok(SkippedRow { id: c.u64("id")?.value(i), experiment: c.str("experiment")?.value(i).into(), reason: c.str("reason")?.value(i).into() })
    })
}
