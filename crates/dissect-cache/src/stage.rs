//! The cache stage: kept records in chunks, one Parquet part per chunk, resumable.

use std::path::{Path, PathBuf};

use burn_tensor::backend::Backend;
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::provenance::output_is_current;
use dissect_data::{DataError, KeptRecord, PositionKind, Provenance, ShardSpec};
use dissect_model::source::ModelInfo;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::compute::compute;
use crate::error::CacheError;
use crate::schema::{to_batch, RecordActivations, StoreDtype};

/// Bumped whenever the rows or columns change meaning, so old caches are recomputed rather
/// than misread (it is part of the parameter hash).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Records per Parquet part: each part is written when its records are done, so a killed
    /// run loses at most one part's work.
    pub chunk_size: usize,
    pub dtype: StoreDtype,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { batch_size: 8, chunk_size: 32, dtype: StoreDtype::F32 }
    }
}

/// `<cache_dir>/shard=NNNNN/part-CCCCC.parquet`.
pub fn part_path(cache_dir: &Path, shard: ShardSpec, chunk: usize) -> PathBuf {
    cache_dir.join(shard.dir_name()).join(format!("part-{chunk:05}.parquet"))
}

/// The provenance of a cache run. Its parameters hold everything the parts depend on: the
/// model and its weights, the input tables (by their own parameter hashes), which records
/// (limit, shard), the configuration (batching changes the last bits of a padded forward)
/// and the format version.
pub fn cache_provenance(
    info: &ModelInfo,
    weights_sha256: String,
    input_hashes: Vec<String>,
    limit: Option<usize>,
    shard: ShardSpec,
    cfg: &CacheConfig,
) -> Provenance {
    let params = json!({
        "model": info.spec,
        "model_revision": info.revision,
        "weights_sha256": weights_sha256,
        "input": input_hashes,
        "limit": limit,
        "shard": shard.to_string(),
        "config": cfg,
        "format": FORMAT_VERSION,
    });
    let mut p = Provenance::new("cache", &info.spec, params);
    p.model_revision = info.revision.clone();
    p.weights_sha256 = Some(weights_sha256);
    p
}

/// Writes one cache part atomically: `records`' rows ([`crate::schema::to_batch`]) with
/// `kv` and a self-description (`dissect.cache.*`: vector dtype, hidden size, layers,
/// positions and sites) in the footer.
///
/// ```
/// use std::collections::BTreeMap;
/// use burn_tensor::Tensor;
/// use dissect_cache::schema::{KindResidual, RecordActivations, StoreDtype};
/// use dissect_cache::{write_part, CacheReader};
/// use dissect_data::PositionKind;
/// type B = dissect_model::backend::Cpu;
///
/// // One record of a 2-layer model with hidden size 3, at its first and last tokens only.
/// let (n_layers, hidden) = (2, 3);
/// let series = |seed: f32, rows: usize| (0..rows * hidden).map(|i| seed + i as f32).collect::<Vec<f32>>();
/// let mut residual = BTreeMap::new();
/// residual.insert(PositionKind::FirstToken, KindResidual { token_index: 1, values: series(0.0, n_layers + 1) });
/// residual.insert(PositionKind::Last, KindResidual { token_index: 4, values: series(100.0, n_layers + 1) });
/// let rec = RecordActivations { id: 7, n_layers, hidden, residual, attn_out: series(200.0, n_layers), mlp_out: series(300.0, n_layers) };
///
/// let dir = tempfile::tempdir()?;
/// write_part(&dir.path().join("shard=00000/part-00000.parquet"), &[rec.clone()], StoreDtype::F32, &[])?;
///
/// let cache = CacheReader::open(dir.path())?;
/// assert_eq!(cache.get_host(7)?, Some(rec));
/// let back = cache.get::<B>(7, &Default::default())?.expect("record 7 is cached");
/// assert_eq!(back.residual(PositionKind::Last).expect("cached").dims(), [3, 3]);
/// assert_eq!(back.attn_out().into_data().to_vec::<f32>()?, series(200.0, 2));
/// assert!(back.residual(PositionKind::SubjectLast).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_part(path: &Path, records: &[RecordActivations], dtype: StoreDtype, kv: &[(String, String)]) -> Result<(), CacheError> {
    let first = records.first().ok_or_else(|| DataError::NoBatches { path: path.to_path_buf() })?;
    let (hidden, n_layers) = (first.hidden, first.n_layers);
    let batch = to_batch(records, hidden, dtype)?;
    let mut kv = kv.to_vec();
    let positions: Vec<&str> = PositionKind::ALL.iter().map(|k| k.name()).collect();
    kv.extend([
        ("dissect.cache.vector_dtype".to_string(), dtype.name().to_string()),
        ("dissect.cache.hidden".to_string(), hidden.to_string()),
        ("dissect.cache.n_layers".to_string(), n_layers.to_string()),
        ("dissect.cache.positions".to_string(), positions.join(",")),
        (
            "dissect.cache.sites".to_string(),
            format!("residual at every position, layers 0..={n_layers} (the last is before the final norm); attn_out and mlp_out at last, layers 0..{n_layers}"),
        ),
    ]);
    write_parquet_atomic(path, &[batch], &kv)?;
    Ok(())
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Chunks computed and written in this run.
    pub computed: usize,
    /// Chunks whose part already existed with the same parameters.
    pub reused: usize,
    /// Rows written in this run.
    pub rows: usize,
}

/// Runs the stage over `records` (already restricted to this shard, in a fixed order) in
/// chunks of `cfg.chunk_size`, writing chunk `c` to [`part_path`] with `provenance` in its
/// footer. A chunk whose part exists with the same parameter hash is not recomputed; parts
/// of this shard written with other parameters are removed first, so the directory never
/// mixes two runs. `progress` gets (records done, total).
#[allow(clippy::too_many_arguments)]
pub fn run_resumable<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    records: &[KeptRecord],
    cfg: &CacheConfig,
    cache_dir: &Path,
    shard: ShardSpec,
    provenance: &Provenance,
    mut progress: impl FnMut(usize, usize),
) -> Result<RunSummary, CacheError> {
    let hash = provenance.params_hash();
    let kv = provenance.to_kv();
    let shard_dir = cache_dir.join(shard.dir_name());
    let size = cfg.chunk_size.max(1);
    let n_chunks = records.len().div_ceil(size);
    remove_stale_parts(&shard_dir, &hash, n_chunks)?;
    let total = records.len();
    let mut summary = RunSummary::default();
    for (c, chunk) in records.chunks(size).enumerate() {
        let path = part_path(cache_dir, shard, c);
        if output_is_current(&path, &hash) {
            summary.reused += 1;
        } else {
            let acts = compute(model, tokenizer, chunk, cfg.batch_size)?;
            write_part(&path, &acts, cfg.dtype, &kv)?;
            summary.computed += 1;
            summary.rows += acts.iter().map(|a| a.residual.len() * (a.n_layers + 1) + 2 * a.n_layers).sum::<usize>();
        }
        progress((c * size + chunk.len()).min(total), total);
    }
    Ok(summary)
}

/// Removes this shard's parts that another run wrote (another parameter hash), or that lie
/// beyond the chunks this run has, so that the directory holds one run's records only.
fn remove_stale_parts(dir: &Path, params_hash: &str, n_chunks: usize) -> Result<(), CacheError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(chunk) = name.strip_prefix("part-").and_then(|n| n.strip_suffix(".parquet")) else { continue };
        let beyond = chunk.parse::<usize>().map_or(true, |c| c >= n_chunks);
        if beyond || !output_is_current(&p, params_hash) {
            std::fs::remove_file(&p).map_err(|source| DataError::Io { path: p.clone(), source })?;
        }
    }
    Ok(())
}
