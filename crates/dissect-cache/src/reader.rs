//! Reading a cache directory back: records by id, as burn tensors on a device.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{Array, UInt64Array};
use burn_tensor::backend::Backend;
use burn_tensor::{Tensor, TensorData};
use dissect_data::parquet_io::{parquet_files, read_kv_metadata, read_parquet};
use dissect_data::provenance::PARAMS_HASH_KEY;
use dissect_data::{DataError, PositionKind, Provenance};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::CacheError;
use crate::schema::{from_batches, vector_layout, RecordActivations, StoreDtype};

type Part = Arc<HashMap<u64, RecordActivations>>;

/// One record's cached activations as tensors on a device.
#[derive(Debug, Clone)]
pub struct CachedRecord<B: Backend> {
    /// The record's `known_id`.
    pub id: u64,
    residual: BTreeMap<PositionKind, (usize, Tensor<B, 2>)>,
    attn_out: Tensor<B, 2>,
    mlp_out: Tensor<B, 2>,
}

impl<B: Backend> CachedRecord<B> {
    /// Uploads a record read on the host (e.g. by [`CacheReader::get_host`]) to `device`.
    pub fn from_host(a: &RecordActivations, device: &B::Device) -> Self {
        let t = |v: &[f32], rows: usize| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [rows, a.hidden]), device);
        CachedRecord {
            id: a.id,
            residual: a.residual.iter().map(|(&k, r)| (k, (r.token_index, t(&r.values, a.n_layers + 1)))).collect(),
            attn_out: t(&a.attn_out, a.n_layers),
            mlp_out: t(&a.mlp_out, a.n_layers),
        }
    }

    /// `hidden_states[0..=n_layers]` at a position kind, `[n_layers + 1, hidden]`; `None`
    /// for a kind the prompt does not have ([`PositionKind::AfterSubject`] when the subject
    /// ends the prompt).
    pub fn residual(&self, kind: PositionKind) -> Option<Tensor<B, 2>> {
        self.residual.get(&kind).map(|(_, t)| t.clone())
    }

    /// Every cached kind with its residual stream, in [`PositionKind::ALL`] order.
    pub fn residuals(&self) -> Vec<(PositionKind, Tensor<B, 2>)> {
        self.residual.iter().map(|(&k, (_, t))| (k, t.clone())).collect()
    }

    /// The index in the input ids (BOS included) that a kind was read at.
    pub fn token_index(&self, kind: PositionKind) -> Option<usize> {
        self.residual.get(&kind).map(|(i, _)| *i)
    }

    /// What each block's MHSA added to the residual stream at the last position, `[n_layers, hidden]`.
    pub fn attn_out(&self) -> Tensor<B, 2> {
        self.attn_out.clone()
    }

    /// What each block's MLP added to the residual stream at the last position, `[n_layers, hidden]`.
    pub fn mlp_out(&self) -> Tensor<B, 2> {
        self.mlp_out.clone()
    }

    /// Number of transformer blocks (HF `num_hidden_layers` / `n_layer`).
    pub fn n_layers(&self) -> usize {
        self.attn_out.dims()[0]
    }

    /// Width of every vector (HF `hidden_size` / `n_embd`).
    pub fn hidden(&self) -> usize {
        self.attn_out.dims()[1]
    }
}

/// A cache directory (`<dir>/shard=*/part-*.parquet`, or one part file) opened for reading.
/// Opening reads only the `id` column of each part; a record's part is decoded on first use
/// and kept until a record of another part is asked for, so reading in id order decodes
/// each part once.
pub struct CacheReader {
    root: PathBuf,
    files: Vec<PathBuf>,
    index: HashMap<u64, usize>,
    hidden: usize,
    dtype: StoreDtype,
    provenance: Vec<Option<Provenance>>,
    /// The last decoded part: (file index, its records by id).
    current: Mutex<Option<(usize, Part)>>,
}

impl std::fmt::Debug for CacheReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheReader").field("root", &self.root).field("files", &self.files.len()).field("records", &self.index.len()).finish()
    }
}

impl CacheReader {
    /// Opens the directory `dissect cache` wrote its shards to. Given the stage's `--out`
    /// directory instead (whose `cache/` holds the shards), it opens `cache/`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let root = if dir.is_dir() && parquet_files(dir).is_err() && dir.join("cache").is_dir() { dir.join("cache") } else { dir.to_path_buf() };
        let files = parquet_files(&root)?;
        let mut index = HashMap::new();
        let mut layout = None;
        let mut provenance = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let f = File::open(file).map_err(|source| DataError::Io { path: file.clone(), source })?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| parquet_err(file, e))?;
            let this = vector_layout(builder.schema(), file)?;
            if *layout.get_or_insert(this) != this {
                return Err(format_err(file, format!("vectors of hidden size {} ({}), other parts have {:?}", this.0, this.1, layout.expect("set"))));
            }
            let id_col = builder.schema().index_of("id").map_err(|_| format_err(file, "no `id` column".into()))?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), [id_col]);
            let reader = builder.with_projection(mask).build().map_err(|e| parquet_err(file, e))?;
            let mut seen = BTreeSet::new();
            for batch in reader {
                let batch = batch.map_err(|e| parquet_err(file, e))?;
                let ids = batch.column(0).as_any().downcast_ref::<UInt64Array>().ok_or_else(|| format_err(file, "`id` is not u64".into()))?;
                seen.extend(ids.values().iter().copied());
            }
            for id in seen {
                if let Some(other) = index.insert(id, i) {
                    return Err(format_err(file, format!("record {id} is also in {}: two runs mixed in one directory", files[other].display())));
                }
            }
            let kv = read_kv_metadata(file)?;
            let prov = Provenance::from_kv(&kv);
            if let Some(p) = &prov {
                if p.stage != "cache" {
                    return Err(format_err(file, format!("written by the `{}` stage, not `cache`", p.stage)));
                }
            }
            provenance.push(prov);
        }
        let (hidden, dtype) = layout.expect("parquet_files returns at least one file");
        Ok(CacheReader { root, files, index, hidden, dtype, provenance, current: Mutex::new(None) })
    }

    /// Opens the cache an experiments run reads, and checks that it can serve it: it holds
    /// every record of `ids`, and every part was computed with the weights `weights_sha256`
    /// (a cache of other weights would give another model's numbers).
    pub fn open_for(dir: &Path, ids: &[u64], weights_sha256: &str) -> Result<Self, CacheError> {
        let cache = CacheReader::open(dir).map_err(|e| CacheError::Unreadable { dir: dir.to_path_buf(), source: Box::new(e) })?;
        let missing: Vec<u64> = ids.iter().copied().filter(|&id| !cache.contains(id)).collect();
        if !missing.is_empty() {
            return Err(CacheError::Incomplete {
                root: cache.root.clone(),
                missing: missing.len(),
                total: ids.len(),
                examples: missing.into_iter().take(5).collect(),
            });
        }
        if let Some(p) = cache.provenances().into_iter().find(|p| p.weights_sha256.as_deref() != Some(weights_sha256)) {
            return Err(CacheError::OtherModel {
                root: cache.root.clone(),
                model: p.model_spec.clone(),
                weights: p.weights_sha256.clone().unwrap_or_else(|| "unknown".into()),
            });
        }
        Ok(cache)
    }

    /// The directory (or file) the parts were found in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The part files, in path order (shard, then chunk).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Number of cached records (not rows).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no record is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether the record with this `known_id` is cached; reads nothing.
    pub fn contains(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }

    /// The cached record ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.index.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Width of the cached vectors (HF `hidden_size` / `n_embd`), the same in every part.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// How the vectors are stored.
    pub fn dtype(&self) -> StoreDtype {
        self.dtype
    }

    /// The provenance of the part holding `id`.
    pub fn provenance_of(&self, id: u64) -> Option<&Provenance> {
        self.index.get(&id).and_then(|&i| self.provenance[i].as_ref())
    }

    /// The distinct provenances of all parts (one per shard of a run).
    pub fn provenances(&self) -> Vec<&Provenance> {
        let mut out: Vec<&Provenance> = Vec::new();
        for p in self.provenance.iter().flatten() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// The parameter hashes of the parts holding `ids` (sorted, distinct): what a later
    /// stage that reads these records depends on.
    pub fn params_hashes<'a>(&self, ids: impl IntoIterator<Item = &'a u64>) -> Result<Vec<String>, CacheError> {
        let files: BTreeSet<usize> = ids.into_iter().filter_map(|id| self.index.get(id).copied()).collect();
        let mut hashes = BTreeSet::new();
        for i in files {
            hashes.insert(read_kv_metadata(&self.files[i])?.get(PARAMS_HASH_KEY).cloned().unwrap_or_default());
        }
        Ok(hashes.into_iter().collect())
    }

    /// One record on the host; `None` when it is not cached.
    pub fn get_host(&self, id: u64) -> Result<Option<RecordActivations>, CacheError> {
        let Some(&file) = self.index.get(&id) else { return Ok(None) };
        let part = self.part(file)?;
        Ok(part.get(&id).cloned())
    }

    /// One record as tensors on `device`; `None` when it is not cached.
    pub fn get<B: Backend>(&self, id: u64, device: &B::Device) -> Result<Option<CachedRecord<B>>, CacheError> {
        let Some(&file) = self.index.get(&id) else { return Ok(None) };
        let part = self.part(file)?;
        Ok(part.get(&id).map(|a| CachedRecord::from_host(a, device)))
    }

    /// Every record, in id order.
    pub fn iter<'a, B: Backend>(&'a self, device: &'a B::Device) -> impl Iterator<Item = Result<CachedRecord<B>, CacheError>> + 'a {
        self.ids().into_iter().map(move |id| self.get::<B>(id, device).map(|r| r.expect("listed ids are cached")))
    }

    fn part(&self, file: usize) -> Result<Part, CacheError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, part)) = current.as_ref() {
            if *f == file {
                return Ok(part.clone());
            }
        }
        let path = &self.files[file];
        let records = from_batches(&read_parquet(path)?, path)?;
        let part: Part = Arc::new(records.into_iter().map(|r| (r.id, r)).collect());
        *current = Some((file, part.clone()));
        Ok(part)
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Data(DataError::Parquet { path: path.to_path_buf(), message: e.to_string() })
}

fn format_err(path: &Path, message: String) -> CacheError {
    CacheError::Format { path: path.to_path_buf(), message }
}
