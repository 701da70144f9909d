//! Reading the experiments stage's per-example tables (a file or a directory of shards each)
//! into typed rows, and the provenance in their footers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dissect_data::parquet_io::{parquet_files, read_kv_metadata};
use dissect_data::table::{Row, SkippedRow};
use dissect_data::Provenance;
use serde::{Deserialize, Serialize};

use crate::error::AggregateError;

/// Who wrote a table: the distinct values over all its files (one per shard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProvenance {
    /// The table's directory name, e.g. `knockout`, or `filtered` for the filter stage's table.
    pub table: String,
    /// Parquet files read (one per shard part).
    pub files: usize,
    /// Stages that wrote the files (`experiments`, `filter`); more than one means a mixed-up input.
    pub stages: BTreeSet<String>,
    /// Model specs as the user named them to the writing stage (`hf:<repo>[@<revision>]` or a path).
    pub models: BTreeSet<String>,
    /// Hugging Face revisions from `hf:<repo>@<revision>` specs; empty when none was given.
    pub model_revisions: BTreeSet<String>,
    /// sha256 of the weight file(s) the writing stage loaded (several files joined with `,`).
    pub weights_sha256: BTreeSet<String>,
    /// dtypes the model computed in.
    pub dtypes: BTreeSet<String>,
    /// dissect versions that wrote the files.
    pub versions: BTreeSet<String>,
    /// Parameter hashes; several mean shards of runs with different settings are mixed.
    pub params_sha256: BTreeSet<String>,
    /// The first file's parameters (shards differ only in their shard entry).
    pub params: Option<serde_json::Value>,
    /// Files whose footer carries no dissect provenance.
    pub foreign_files: usize,
    /// sha256 over every file's relative path, size and parameter hash: changes when a
    /// resumed run adds parts with unchanged parameters, so a stale aggregation is redone.
    pub files_sha256: String,
}

/// Expands [`dissect_data::experiment_registry`] (where an experiment and its tables are
/// registered) into what this stage reads: every table of the list, then `skipped`.
macro_rules! experiment_tables {
    ($( $(#[$doc:meta])* $variant:ident($module:ident) => $($field:ident: $row:ty),+; )+) => {
        /// The experiment tables this stage reads, by directory name.
        pub const EXPERIMENT_TABLES: &[&str] = &[$($(<$row>::TABLE,)+)+ SkippedRow::TABLE];

        /// Everything read from the input directories: each experiment table as the row type
        /// its writer uses (`None` where the table is absent).
        #[derive(Debug, Default)]
        pub struct Inputs {
            $($(
                #[doc = concat!("The `", stringify!($field), "` rows ([`", stringify!($row), "`]).")]
                pub $field: Option<Vec<$row>>,
            )+)+
            /// Records an experiment could not measure, and why.
            pub skipped: Option<Vec<SkippedRow>>,
            /// Kept records: id → subject.
            pub kept: Option<BTreeMap<i64, String>>,
            /// Rejected records by reason kind.
            pub rejected: Option<BTreeMap<String, usize>>,
            /// Who wrote each table read.
            pub provenance: Vec<TableProvenance>,
        }

        impl Reader<'_> {
            fn experiment_tables(&mut self) -> Result<Inputs, AggregateError> {
                Ok(Inputs { $($($field: self.table()?,)+)+ skipped: self.table()?, ..Inputs::default() })
            }
        }
    };
}

dissect_data::experiment_registry!(experiment_tables);

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
    let mut provenance = Vec::new();
    let mut read = Reader { input, provenance: &mut provenance };
    let mut inputs = read.experiment_tables()?;
    let found = provenance.len();
    if found == 0 || (found == 1 && inputs.skipped.is_some()) {
        return Err(AggregateError::NoTables { path: input.to_path_buf(), expected: EXPERIMENT_TABLES.join(", ") });
    }
    inputs.provenance = provenance;
    if let Some(path) = locate(filter_dir, "filtered") {
        inputs.provenance.push(provenance_of("filtered", &path)?);
        let kept = dissect_data::filtered::read_kept(&path)?;
        inputs.kept = Some(kept.into_iter().map(|k| (dissect_data::table::id_value(k.id), k.subject)).collect());
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

/// Reads the experiment tables one row type at a time, noting who wrote each.
struct Reader<'a> {
    input: &'a Path,
    provenance: &'a mut Vec<TableProvenance>,
}

impl Reader<'_> {
    fn table<R: Row>(&mut self) -> Result<Option<Vec<R>>, AggregateError> {
        let Some(path) = locate(self.input, R::TABLE) else { return Ok(None) };
        let rows = R::read(&path)?;
        self.provenance.push(provenance_of(R::TABLE, &path)?);
        Ok(Some(rows))
    }
}
