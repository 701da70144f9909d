//! Where the stage writes, what it records about the run, and the resumable run itself on the
//! stage engine ([`Parts`]).

use std::path::{Path, PathBuf};

use burn_tensor::backend::Backend;
use dissect_data::filtered::{kept_to_batch, read_kept, read_rejected, rejected_to_batch};
use dissect_data::known::FactChecker;
use dissect_data::parts::{Parts, RunSummary};
use dissect_data::provenance::sha256_file_memo;
use dissect_data::{DataError, KnownFact, Provenance, RejectReason, Rejected, ShardSpec};
use dissect_model::source::ModelInfo;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde_json::json;

use crate::error::FilterError;
use crate::run::{run_filter_with_progress, FilterConfig, FilterOutput};

/// The stage's two tables, each a directory of parts: `<out>/filtered/shard=NNNNN/part-CCCCC.parquet`
/// (the kept records) and the same under `<out>/rejected/` (every other record with its
/// reason). An unsharded run is shard 0 of 1. Each table reads back whole as its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTables {
    /// The kept records' table.
    pub filtered: PathBuf,
    /// The rejected records' table, with the reason for each.
    pub rejected: PathBuf,
}

impl FilterTables {
    /// The tables under `out_dir`.
    pub fn new(out_dir: &Path) -> Self {
        FilterTables { filtered: out_dir.join("filtered"), rejected: out_dir.join("rejected") }
    }

    /// Removes `filtered.parquet` and `rejected.parquet` beside the directories: earlier
    /// versions wrote each table as one file, and no reader may find two versions of a table.
    pub fn remove_single_file_tables(&self) {
        for table in [&self.filtered, &self.rejected] {
            let _ = std::fs::remove_file(table.with_extension("parquet"));
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
/// model, its weights, the dataset's bytes, the limit, the shard, the batching and chunking),
/// so an equal parameter hash means the existing parts can be reused.
pub fn filter_provenance(
    info: &ModelInfo,
    weights_sha256: String,
    dataset_sha256: String,
    limit: Option<usize>,
    shard: ShardSpec,
    config: &FilterConfig,
) -> Provenance {
    let params = json!({
        "model": info.spec,
        "model_revision": info.revision,
        "weights_sha256": weights_sha256,
        "dataset_sha256": dataset_sha256,
        "limit": limit,
        "shard": shard.to_string(),
        "batch_size": config.batch_size,
        "chunk_size": config.chunk_size,
    });
    let mut p = Provenance::new("filter", &info.spec, params);
    p.model_revision = info.revision.clone();
    p.weights_sha256 = Some(weights_sha256);
    p
}

/// The parts a filter run owns: both tables, one part per chunk of `config.chunk_size` of
/// the shard's `n_facts` facts (one part when there are none, so that an empty shard leaves
/// empty tables).
pub fn filter_parts(tables: &FilterTables, shard: ShardSpec, n_facts: usize, config: &FilterConfig, provenance: &Provenance) -> Parts {
    let n_chunks = n_facts.div_ceil(config.chunk_size.max(1)).max(1);
    Parts::new(vec![tables.filtered.clone(), tables.rejected.clone()], shard, n_chunks, provenance)
}

/// What the run's parts hold, read back in chunk order: every decision of this shard,
/// including those of parts an earlier run wrote.
pub fn read_parts(parts: &Parts) -> Result<FilterOutput, FilterError> {
    let mut out = FilterOutput::default();
    for c in 0..parts.n_chunks() {
        out.kept.extend(read_kept(&parts.path(0, c))?);
        out.rejected.extend(read_rejected(&parts.path(1, c))?);
    }
    Ok(out)
}

/// Runs the stage over `facts` (already restricted to this shard, in input order) with the
/// resumable engine ([`Parts::run`]): each chunk of facts is decided by
/// [`run_filter_with_progress`] and written as one part of each table; a chunk whose parts
/// exist with the same parameters is not recomputed. Facts are checked over the whole list
/// first, so a duplicate id is rejected whichever chunk its first record is in. `unreadable`
/// (records rejected while reading the dataset) go into the first chunk's `rejected` part.
/// `progress` gets (facts done, total) after each batch.
pub fn run_resumable<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    facts: &[KnownFact],
    unreadable: &[Rejected],
    config: &FilterConfig,
    parts: &Parts,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunSummary, FilterError> {
    config.check()?;
    let total = facts.len();
    let size = config.chunk_size;
    let mut checker = FactChecker::default();
    let verdicts: Vec<Option<RejectReason>> = facts.iter().map(|f| checker.check(f)).collect();
    parts.run(
        facts,
        size,
        |c, chunk| {
            let verdicts = &verdicts[c * size..c * size + chunk.len()];
            let valid: Vec<KnownFact> = chunk.iter().zip(verdicts).filter(|(_, v)| v.is_none()).map(|(f, _)| f.clone()).collect();
            let out = run_filter_with_progress(model, tokenizer, &valid, config, &mut |d, _| progress(c * size + d, total))?;
            // Facts rejected before the model count as done too.
            progress(c * size + chunk.len(), total);
            let mut rejected: Vec<Rejected> = if c == 0 { unreadable.to_vec() } else { Vec::new() };
            let checked = chunk.iter().zip(verdicts).filter_map(|(f, v)| v.clone().map(|reason| Rejected { id: Some(f.known_id), reason }));
            rejected.extend(checked.chain(out.rejected));
            Ok::<_, FilterError>(vec![(kept_to_batch(&out.kept), vec![]), (rejected_to_batch(&rejected), vec![])])
        },
        |_, _| {},
    )
}
