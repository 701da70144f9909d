//! The cache stage: kept records in chunks, one Parquet part per chunk, resumable.

use std::path::Path;

use arrow_array::RecordBatch;

use burn_tensor::backend::Backend;
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::parts::Parts;
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

/// The cache stage's options; all of them go into the parameter hash, so changing one recomputes every part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Prompts per forward pass. 1 by default: a record's vectors are then bit for bit what the
    /// experiments stage computes for it without a cache ([`crate::compute()`] on that record
    /// alone), so its tables do not depend on whether the cache was used. A larger batch pads
    /// prompts to one length, which changes the matmuls' shapes and with them the last bits.
    pub batch_size: usize,
    /// Records per Parquet part: each part is written when its records are done, so a killed
    /// run loses at most one part's work.
    pub chunk_size: usize,
    /// How the vectors are stored on disk; computation is f32 either way.
    pub dtype: StoreDtype,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { batch_size: 1, chunk_size: 32, dtype: StoreDtype::F32 }
    }
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
    let (batch, extra) = part_contents(path, records, dtype)?;
    let kv: Vec<(String, String)> = kv.iter().chain(&extra).cloned().collect();
    write_parquet_atomic(path, &[batch], &kv)?;
    Ok(())
}

/// A part's rows and its self-description footer entries (`dissect.cache.*`).
fn part_contents(path: &Path, records: &[RecordActivations], dtype: StoreDtype) -> Result<(RecordBatch, Vec<(String, String)>), CacheError> {
    let first = records.first().ok_or_else(|| DataError::NoBatches { path: path.to_path_buf() })?;
    let (hidden, n_layers) = (first.hidden, first.n_layers);
    let batch = to_batch(records, hidden, dtype)?;
    let positions: Vec<&str> = PositionKind::ALL.iter().map(|k| k.name()).collect();
    let kv = vec![
        ("dissect.cache.vector_dtype".to_string(), dtype.name().to_string()),
        ("dissect.cache.hidden".to_string(), hidden.to_string()),
        ("dissect.cache.n_layers".to_string(), n_layers.to_string()),
        ("dissect.cache.positions".to_string(), positions.join(",")),
        (
            "dissect.cache.sites".to_string(),
            format!(
                "residual at every position, layers 0..={n_layers} (the last is before the final norm); attn_out and mlp_out at last, layers 0..{n_layers}"
            ),
        ),
    ];
    Ok((batch, kv))
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

/// The parts a cache run owns: `<cache_dir>/shard=NNNNN/part-CCCCC.parquet`, one per chunk of
/// `cfg.chunk_size` records.
pub fn cache_parts(cache_dir: &Path, shard: ShardSpec, n_records: usize, cfg: &CacheConfig, provenance: &Provenance) -> Parts {
    Parts::new(vec![cache_dir.to_path_buf()], shard, n_records.div_ceil(cfg.chunk_size.max(1)), provenance)
}

/// Runs the stage over `records` (already restricted to this shard, in a fixed order) with
/// the resumable engine ([`Parts::run`]): a chunk whose part exists with the same parameter
/// hash is not recomputed, parts of other runs are removed first. `progress` gets (records
/// done, total).
pub fn run_resumable<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    records: &[KeptRecord],
    cfg: &CacheConfig,
    parts: &Parts,
    progress: impl FnMut(usize, usize),
) -> Result<RunSummary, CacheError> {
    let mut rows = 0;
    let done = parts.run(
        records,
        cfg.chunk_size,
        |c, chunk| {
            let acts = compute(model, tokenizer, chunk, cfg.batch_size)?;
            rows += acts.iter().map(|a| a.residual.len() * (a.n_layers + 1) + 2 * a.n_layers).sum::<usize>();
            Ok::<_, CacheError>(vec![part_contents(&parts.path(0, c), &acts, cfg.dtype)?])
        },
        progress,
    )?;
    Ok(RunSummary { computed: done.computed, reused: done.reused, rows })
}
