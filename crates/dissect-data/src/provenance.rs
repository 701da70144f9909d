//! What produced a file: stored as key-value metadata in every Parquet footer, and used to
//! skip a stage whose output already exists with the same parameters.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::error::DataError;
use crate::parquet_io::{parquet_files, read_kv_metadata};

/// The metadata key holding [`Provenance::params_hash`].
pub const PARAMS_HASH_KEY: &str = "dissect.params_sha256";

/// What produced a file: stage, model, weights, code version and parameters, written to every Parquet footer
/// ([`Provenance::to_kv`]) and compared by [`Provenance::params_hash`] to decide whether an output can be reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The stage that wrote the file (`filter`, `cache`, ...).
    pub stage: String,
    /// The model as the user named it.
    pub model_spec: String,
    /// The Hugging Face revision (branch, tag or commit) from an `hf:<repo>@<revision>` spec; `None` when none was given.
    pub model_revision: Option<String>,
    /// sha256 of the weight file(s); several files are hashed one by one and joined with `,`.
    pub weights_sha256: Option<String>,
    /// The dtype the model computed in.
    pub dtype: String,
    /// The version of dissect that wrote the file (the crate version).
    pub dissect_version: String,
    /// Everything the output depends on besides the code: a stage puts its options *and* the
    /// hashes of its inputs here, because [`Provenance::params_hash`] is what decides whether
    /// an existing output can be reused.
    pub params: Json,
}

impl Provenance {
    /// A provenance for `stage` with computation dtype `f32`, this dissect version and no revision or weight
    /// hash; callers set those fields when they know them.
    pub fn new(stage: &str, model_spec: &str, params: Json) -> Self {
        Provenance {
            stage: stage.into(),
            model_spec: model_spec.into(),
            model_revision: None,
            weights_sha256: None,
            dtype: "f32".into(),
            dissect_version: env!("CARGO_PKG_VERSION").into(),
            params,
        }
    }

    /// [`canonical_json`] of the parameters.
    pub fn params_json(&self) -> String {
        canonical_json(&self.params)
    }

    /// sha256 (hex) of [`Provenance::params_json`].
    pub fn params_hash(&self) -> String {
        sha256_hex(self.params_json().as_bytes())
    }

    /// The footer entries, all under `dissect.`; absent optional fields are left out.
    pub fn to_kv(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            ("dissect.stage".to_string(), self.stage.clone()),
            ("dissect.model".to_string(), self.model_spec.clone()),
            ("dissect.dtype".to_string(), self.dtype.clone()),
            ("dissect.version".to_string(), self.dissect_version.clone()),
            ("dissect.params".to_string(), self.params_json()),
            (PARAMS_HASH_KEY.to_string(), self.params_hash()),
        ];
        if let Some(r) = &self.model_revision {
            kv.push(("dissect.model_revision".to_string(), r.clone()));
        }
        if let Some(w) = &self.weights_sha256 {
            kv.push(("dissect.weights_sha256".to_string(), w.clone()));
        }
        kv
    }

    /// Reads back [`Provenance::to_kv`]; `None` when a required key is missing or the
    /// parameters are not JSON (a file some other tool wrote).
    pub fn from_kv(kv: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| kv.get(k).cloned();
        Some(Provenance {
            stage: get("dissect.stage")?,
            model_spec: get("dissect.model")?,
            model_revision: get("dissect.model_revision"),
            weights_sha256: get("dissect.weights_sha256"),
            dtype: get("dissect.dtype")?,
            dissect_version: get("dissect.version")?,
            params: serde_json::from_str(&get("dissect.params")?).ok()?,
        })
    }
}

/// JSON with object keys sorted at every level and no whitespace, so equal values always hash
/// equally (serde_json's own key order depends on a cargo feature another crate may turn on).
pub fn canonical_json(value: &Json) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// sha256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 (hex) of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// [`sha256_file`], remembered in `memo_dir` under the file's canonical path, length and
/// modification time, so that a stage deciding whether its outputs are current does not read
/// hundreds of megabytes of weights each time. A file changed in place gets a new length or
/// modification time and is hashed again; an unreadable or unwritable memo only costs the
/// hashing.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let (file, memo) = (dir.path().join("weights.bin"), dir.path().join("memo"));
/// std::fs::write(&file, b"abc")?;
/// let first = dissect_data::provenance::sha256_file_memo(&file, &memo)?;
/// assert_eq!(first, dissect_data::provenance::sha256_file(&file)?);
/// assert_eq!(std::fs::read_dir(&memo)?.count(), 1);
/// std::fs::write(&file, b"abcd")?;
/// assert_ne!(dissect_data::provenance::sha256_file_memo(&file, &memo)?, first, "a changed file is hashed again");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sha256_file_memo(path: &Path, memo_dir: &Path) -> Result<String, DataError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| DataError::io(path, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| DataError::io(path, e))?;
    let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let key = format!("{}\n{}\n{mtime_ns}", canonical.display(), meta.len());
    let memo = memo_dir.join(format!("{}.sha256", &sha256_hex(key.as_bytes())[..32]));
    if let Ok(text) = std::fs::read_to_string(&memo) {
        if let Some((stored_key, hash)) = text.rsplit_once('\n') {
            if stored_key == key && hash.len() == 64 {
                return Ok(hash.to_string());
            }
        }
    }
    let hash = sha256_file(&canonical)?;
    let _ = crate::atomic::write(&memo, format!("{key}\n{hash}").as_bytes());
    Ok(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` (a file, or a directory of shard partitions) exists and every file in it
/// was written with parameters hashing to `params_hash`. Unreadable or foreign files count
/// as "no", so the stage reruns and overwrites them.
pub fn output_is_current(path: &Path, params_hash: &str) -> bool {
    let Ok(files) = parquet_files(path) else { return false };
    files.iter().all(|f| read_kv_metadata(f).is_ok_and(|kv| kv.get(PARAMS_HASH_KEY).is_some_and(|h| h == params_hash)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use serde_json::json;

    use super::*;
    use crate::parquet_io::write_parquet_atomic;

    #[test]
    fn canonical_json_ignores_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": "é\""}});
        let b = json!({"a": {"x": "é\"", "y": [1, {"p": 3, "q": 2}]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&b), r#"{"a":{"x":"é\"","y":[1,{"p":3,"q":2}]},"b":1}"#);
        assert_ne!(canonical_json(&a), canonical_json(&json!({"b": 2, "a": {"y": [1, {"q": 2, "p": 3}], "x": "é\""}})));
        assert_eq!(serde_json::from_str::<Json>(&canonical_json(&a)).unwrap(), a);
    }

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
    }

    #[test]
    fn provenance_round_trips_through_a_parquet_footer_and_decides_skipping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut prov = Provenance::new("filter", "some-model", json!({"batch_size": 16, "dataset_sha256": "00"}));
        prov.weights_sha256 = Some("a5fd".into());
        let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        assert!(!output_is_current(&path, &prov.params_hash()));
        write_parquet_atomic(&path, &[batch], &prov.to_kv()).unwrap();
        let back = Provenance::from_kv(&read_kv_metadata(&path).unwrap()).unwrap();
        assert_eq!(back, prov);
        assert_eq!(back.dissect_version, env!("CARGO_PKG_VERSION"));
        assert!(output_is_current(&path, &prov.params_hash()));
        let other = Provenance::new("filter", "some-model", json!({"batch_size": 8, "dataset_sha256": "00"}));
        assert!(!output_is_current(&path, &other.params_hash()));
    }
}
