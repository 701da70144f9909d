//! Where the stage writes, what it records about the run, and whether a previous run can be
//! reused.

use std::path::{Path, PathBuf};

use dissect_data::filtered::{kept_to_batch, rejected_to_batch};
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::provenance::{output_is_current, sha256_file_memo};
use dissect_data::{DataError, Provenance, ShardSpec};
use dissect_model::source::ModelInfo;
use serde_json::json;

use crate::error::FilterError;
use crate::run::{FilterConfig, FilterOutput};

/// `<out>/filtered.parquet` and `<out>/rejected.parquet`; for a shard,
/// `<out>/filtered/shard=0000i/part-00000.parquet` and the same under `rejected/`, so each table
/// reads back whole as a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPaths {
    /// The kept records' table.
    pub filtered: PathBuf,
    /// The rejected records' table, with the reason for each.
    pub rejected: PathBuf,
}

impl OutputPaths {
    /// The tables under `out_dir`, as one file each or, for a shard, as its partition.
    pub fn new(out_dir: &Path, shard: Option<ShardSpec>) -> Self {
        match shard {
            None => OutputPaths { filtered: out_dir.join("filtered.parquet"), rejected: out_dir.join("rejected.parquet") },
            Some(s) => OutputPaths { filtered: s.part_path(&out_dir.join("filtered"), 0), rejected: s.part_path(&out_dir.join("rejected"), 0) },
        }
    }
}

/// sha256 of each weight file the model was loaded from, joined with `,`.
pub fn weights_sha256(info: &ModelInfo) -> Result<String, DataError> {
    let memo = dissect_model::source::dissect_home().join("sha256");
    let hashes = info.files.iter().map(|f| sha256_file_memo(f, &memo)).collect::<Result<Vec<_>, _>>()?;
    Ok(hashes.join(","))
}

/// The provenance of a filter run. Its parameters hold everything the tables depend on (the
/// model, its weights, the dataset's bytes, the limit, the shard, the batching), so an equal
/// parameter hash means the existing tables can be reused.
pub fn filter_provenance(
    info: &ModelInfo,
    weights_sha256: String,
    dataset_sha256: String,
    limit: Option<usize>,
    shard: Option<ShardSpec>,
    config: &FilterConfig,
) -> Provenance {
    let params = json!({
        "model": info.spec,
        "model_revision": info.revision,
        "weights_sha256": weights_sha256,
        "dataset_sha256": dataset_sha256,
        "limit": limit,
        "shard": shard.map(|s| s.to_string()),
        "batch_size": config.batch_size,
    });
    let mut p = Provenance::new("filter", &info.spec, params);
    p.model_revision = info.revision.clone();
    p.weights_sha256 = Some(weights_sha256);
    p
}

/// Whether both tables exist and were written with this parameter hash.
pub fn outputs_are_current(paths: &OutputPaths, params_hash: &str) -> bool {
    output_is_current(&paths.filtered, params_hash) && output_is_current(&paths.rejected, params_hash)
}

/// Writes both tables atomically, `rejected` first: a run killed in between leaves no
/// `filtered` table, so it is not taken as done.
pub fn write_outputs(paths: &OutputPaths, output: &FilterOutput, provenance: &Provenance) -> Result<(), FilterError> {
    let kv = provenance.to_kv();
    write_parquet_atomic(&paths.rejected, &[rejected_to_batch(&output.rejected)], &kv)?;
    write_parquet_atomic(&paths.filtered, &[kept_to_batch(&output.kept)], &kv)?;
    Ok(())
}
