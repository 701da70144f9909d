//! The resumable-stage engine: how every per-record stage (filter, cache, experiments) stores
//! its work as Parquet parts, decides what is already done, and resumes a killed run.
//!
//! A stage writes, for each of its tables, `<table dir>/shard=NNNNN/part-CCCCC.parquet`: one
//! part per chunk of records, each carrying the stage's [`Provenance`] in its footer. A part
//! is *current* when its parameter hash equals the run's; a run reuses current parts,
//! computes the others, and first removes parts written with other parameters or beyond its
//! last chunk, so a shard's directory never mixes two runs. Parts are written atomically, so
//! a kill loses at most the chunk in flight.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::error::DataError;
use crate::parquet_io::{parquet_files, read_kv_metadata, write_parquet_atomic};
use crate::provenance::{output_is_current, Provenance, PARAMS_HASH_KEY};
use crate::shard::ShardSpec;

/// The parts one run of a stage owns: one directory per table, this shard, `n_chunks` chunks.
#[derive(Debug, Clone)]
pub struct Parts {
    tables: Vec<PathBuf>,
    shard: ShardSpec,
    n_chunks: usize,
    kv: Vec<(String, String)>,
    hash: String,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Chunks computed and written in this run.
    pub computed: usize,
    /// Chunks whose parts already existed with the same parameters.
    pub reused: usize,
}

impl Parts {
    /// `tables`: the directories of the stage's tables (each gets `shard=NNNNN/` below it).
    pub fn new(tables: Vec<PathBuf>, shard: ShardSpec, n_chunks: usize, provenance: &Provenance) -> Self {
        Parts { tables, shard, n_chunks, kv: provenance.to_kv(), hash: provenance.params_hash() }
    }

    /// The run's parameter hash.
    pub fn params_hash(&self) -> &str {
        &self.hash
    }

    /// Chunks of records this run is split into: one part per table per chunk.
    pub fn n_chunks(&self) -> usize {
        self.n_chunks
    }

    /// Table `t`'s part for `chunk`.
    pub fn path(&self, t: usize, chunk: usize) -> PathBuf {
        self.shard.part_path(&self.tables[t], chunk)
    }

    /// Whether every table's part of `chunk` exists with this run's parameters.
    pub fn chunk_is_current(&self, chunk: usize) -> bool {
        (0..self.tables.len()).all(|t| output_is_current(&self.path(t, chunk), &self.hash))
    }

    /// Whether the whole run is done: what a stage checks before it loads a model.
    pub fn all_current(&self) -> bool {
        (0..self.n_chunks).all(|c| self.chunk_is_current(c))
    }

    /// `--force`: removes this shard's parts of every table (other shards are kept).
    pub fn clear(&self) -> Result<(), DataError> {
        for dir in &self.tables {
            let shard_dir = dir.join(self.shard.dir_name());
            match std::fs::remove_dir_all(&shard_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(DataError::io(&shard_dir, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes this shard's parts written with other parameters or beyond the last chunk.
    pub fn remove_stale(&self) -> Result<(), DataError> {
        for dir in &self.tables {
            let shard_dir = dir.join(self.shard.dir_name());
            let Ok(entries) = std::fs::read_dir(&shard_dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
                let Some(chunk) = name.strip_prefix("part-").and_then(|n| n.strip_suffix(".parquet")) else { continue };
                let beyond = chunk.parse::<usize>().map_or(true, |c| c >= self.n_chunks);
                if beyond || !output_is_current(&p, &self.hash) {
                    std::fs::remove_file(&p).map_err(|source| DataError::Io { path: p.clone(), source })?;
                }
            }
        }
        Ok(())
    }

    /// Writes table `t`'s part of `chunk` with the run's provenance plus `extra` footer entries.
    pub fn write(&self, t: usize, chunk: usize, batch: &RecordBatch, extra: &[(String, String)]) -> Result<(), DataError> {
        let kv: Vec<(String, String)> = self.kv.iter().chain(extra).cloned().collect();
        write_parquet_atomic(&self.path(t, chunk), std::slice::from_ref(batch), &kv)
    }

    /// The resumable loop: removes stale parts, then for every chunk of `items` (`chunk_size`
    /// at a time) that is not current calls `compute(chunk index, items)` and writes what it
    /// returns, one batch (with extra footer entries) per table in [`Parts::new`]'s order.
    /// With no items and `n_chunks == 1`, the one chunk is computed from the empty slice, so
    /// that an empty shard leaves empty tables rather than none.
    /// `progress` gets (items done, total) after each chunk.
    pub fn run<T, E: From<DataError>>(
        &self,
        items: &[T],
        chunk_size: usize,
        mut compute: impl FnMut(usize, &[T]) -> Result<Vec<(RecordBatch, Vec<(String, String)>)>, E>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<RunSummary, E> {
        let size = chunk_size.max(1);
        // A stage may mark an empty input as done with one empty chunk.
        let chunks: Vec<&[T]> = if items.is_empty() && self.n_chunks == 1 { vec![items] } else { items.chunks(size).collect() };
        debug_assert_eq!(chunks.len(), self.n_chunks, "n_chunks must match the items");
        self.remove_stale()?;
        let total = items.len();
        let mut summary = RunSummary::default();
        for (c, chunk) in chunks.into_iter().enumerate() {
            if self.chunk_is_current(c) {
                summary.reused += 1;
            } else {
                let parts = compute(c, chunk)?;
                assert_eq!(parts.len(), self.tables.len(), "one batch per table");
                for (t, (batch, extra)) in parts.iter().enumerate() {
                    self.write(t, c, batch, extra)?;
                }
                summary.computed += 1;
            }
            progress((c * size + chunk.len()).min(total), total);
        }
        Ok(summary)
    }
}

/// The input tables' own parameter hashes, standing for their contents in a downstream
/// stage's parameters. With a sharded input directory a shard depends only on its own
/// partition, so other shards finishing later do not change this shard's parameters.
pub fn input_hashes(input: &Path, shard: ShardSpec) -> Result<Vec<String>, DataError> {
    let own_part = shard.part_path(input, 0);
    let files = if shard.count > 1 && input.is_dir() && own_part.is_file() { vec![own_part] } else { parquet_files(input)? };
    files.iter().map(|f| Ok(read_kv_metadata(f)?.get(PARAMS_HASH_KEY).cloned().unwrap_or_default())).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::UInt64Array;
    use serde_json::json;

    use super::*;

    fn batch(ids: &[u64]) -> RecordBatch {
        RecordBatch::try_from_iter([("id", Arc::new(UInt64Array::from(ids.to_vec())) as _)]).unwrap()
    }

    fn parts(root: &Path, n_chunks: usize, param: u32) -> Parts {
        let prov = Provenance::new("test", "m", json!({ "param": param }));
        Parts::new(vec![root.join("a"), root.join("b")], ShardSpec::new(0, 1).unwrap(), n_chunks, &prov)
    }

    fn run(p: &Parts, items: &[u64], computed: &mut Vec<usize>) -> RunSummary {
        p.run::<u64, DataError>(
            items,
            2,
            |c, chunk| {
                computed.push(c);
                Ok(vec![(batch(chunk), vec![]), (batch(chunk), vec![])])
            },
            |_, _| {},
        )
        .unwrap()
    }

    #[test]
    fn resumes_reuses_and_removes_stale_parts() {
        let dir = tempfile::tempdir().unwrap();
        let items = [1u64, 2, 3, 4, 5];
        let mut computed = Vec::new();
        let p = parts(dir.path(), 3, 1);
        assert!(!p.all_current());
        assert_eq!(run(&p, &items, &mut computed), RunSummary { computed: 3, reused: 0 });
        assert!(p.all_current());

        // A killed run: one part missing is the only one recomputed.
        std::fs::remove_file(p.path(1, 1)).unwrap();
        computed.clear();
        assert_eq!(run(&p, &items, &mut computed), RunSummary { computed: 1, reused: 2 });
        assert_eq!(computed, [1]);

        // Fewer records: the part beyond the last chunk goes.
        let fewer = parts(dir.path(), 2, 1);
        run(&fewer, &items[..4], &mut computed);
        assert!(!p.path(0, 2).exists() && !p.path(1, 2).exists());

        // Other parameters: every part is recomputed, none of the old ones survives.
        let other = parts(dir.path(), 2, 2);
        assert!(!other.all_current());
        computed.clear();
        assert_eq!(run(&other, &items[..4], &mut computed), RunSummary { computed: 2, reused: 0 });

        other.clear().unwrap();
        assert!(!dir.path().join("a/shard=00000").exists());
    }

    #[test]
    fn write_merges_extra_footer_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), 1, 1);
        p.write(0, 0, &batch(&[7]), &[("x.extra".into(), "1".into())]).unwrap();
        let kv = read_kv_metadata(&p.path(0, 0)).unwrap();
        assert_eq!(kv["x.extra"], "1");
        assert_eq!(kv[PARAMS_HASH_KEY], p.params_hash());
    }
}
