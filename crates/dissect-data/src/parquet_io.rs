//! Parquet files that are either whole or absent, and reading a file or a directory of shard
//! partitions back.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::DataError;

/// Writes `batches` (all of one schema; the first one's is used) to `path` with `kv_metadata`
/// in the file footer. The data goes to a hidden temporary file in the same directory, which
/// is synced and then renamed over `path`, so a reader, or a rerun after a kill, sees the old
/// file or the complete new one, never a partial one. Missing parent directories are created.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch, StringArray};
/// use dissect_data::parquet_io::{read_kv_metadata, read_parquet, write_parquet_atomic};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("facts.parquet");
/// let batch = RecordBatch::try_from_iter([
///     ("id", Arc::new(Int64Array::from(vec![0, 1])) as _),
///     ("subject", Arc::new(StringArray::from(vec!["Eiffel Tower", "Honoré de Balzac"])) as _),
/// ])?;
/// write_parquet_atomic(&path, &[batch.clone()], &[("dissect.stage".to_string(), "demo".to_string())])?;
///
/// assert_eq!(read_parquet(&path)?, vec![batch]);
/// assert_eq!(read_kv_metadata(&path)?["dissect.stage"], "demo");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_parquet_atomic(path: &Path, batches: &[RecordBatch], kv_metadata: &[(String, String)]) -> Result<(), DataError> {
    let first = batches.first().ok_or_else(|| DataError::NoBatches { path: path.to_path_buf() })?;
    for batch in batches {
        if batch.schema() != first.schema() {
            return Err(DataError::parquet(path, format!("batch schema {:?} differs from the first batch's {:?}", batch.schema(), first.schema())));
        }
    }
    let kv = kv_metadata.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).set_key_value_metadata(Some(kv)).build();
    crate::atomic::write_with(path, |file| {
        let mut writer = ArrowWriter::try_new(&mut *file, first.schema(), Some(props)).map_err(std::io::Error::other)?;
        for batch in batches {
            writer.write(batch).map_err(std::io::Error::other)?;
        }
        writer.close().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// The Parquet files behind `path`: the file itself, or for a directory every
/// `shard=*/part-*.parquet` in it, in name order (shard names are zero-padded, so this is
/// shard order).
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(DataError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory")));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for shard in read_dir_sorted(path)? {
        let is_shard = shard.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("shard="));
        if !is_shard || !shard.is_dir() {
            continue;
        }
        files.extend(
            read_dir_sorted(&shard)?
                .into_iter()
                .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))),
        );
    }
    if files.is_empty() {
        return Err(DataError::NoParquet { path: path.to_path_buf() });
    }
    Ok(files)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?.map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e))).collect::<Result<_, _>>()?;
    entries.sort();
    Ok(entries)
}

/// Every record batch of a file, or of all shard partitions of a directory, in order. A file
/// with no rows gives one empty batch with its schema.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, DataError> {
    let mut out = Vec::new();
    for file in parquet_files(path)? {
        let f = File::open(&file).map_err(|e| DataError::io(&file, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| b.build()).map_err(|e| DataError::parquet(&file, e))?;
        let schema = reader.schema();
        let before = out.len();
        for batch in reader {
            out.push(batch.map_err(|e| DataError::parquet(&file, e))?);
        }
        if out.len() == before {
            // An empty table still says what its columns are, so readers can check them.
            out.push(RecordBatch::new_empty(schema));
        }
    }
    Ok(out)
}

/// The key-value metadata in one Parquet file's footer (including arrow's own `ARROW:schema`).
pub fn read_kv_metadata(path: &Path) -> Result<BTreeMap<String, String>, DataError> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| DataError::parquet(path, e))?;
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    Ok(kv.into_iter().map(|k| (k.key, k.value.unwrap_or_default())).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, Int64Array, StringArray, UInt32Array};

    use super::*;

    fn batch(ids: &[i64]) -> RecordBatch {
        let names: Vec<String> = ids.iter().map(|i| format!("r{i}")).collect();
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids.to_vec())) as _), ("name", Arc::new(StringArray::from(names)) as _)]).unwrap()
    }

    fn visible_and_hidden(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_of_several_batches_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/out.parquet");
        let kv = vec![("a".to_string(), "1".to_string()), ("b".to_string(), "{\"x\": [1, 2]}".to_string())];
        write_parquet_atomic(&path, &[batch(&[1, 2]), batch(&[3])], &kv).unwrap();
        let back = read_parquet(&path).unwrap();
        let ids: Vec<i64> = back.iter().flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let meta = read_kv_metadata(&path).unwrap();
        assert_eq!(meta["a"], "1");
        assert_eq!(meta["b"], "{\"x\": [1, 2]}");
        assert_eq!(visible_and_hidden(path.parent().unwrap()), vec!["out.parquet"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        write_parquet_atomic(&path, &[batch(&[7])], &[]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let other =
            RecordBatch::try_from_iter([("x", Arc::new(Float32Array::from(vec![1.0])) as _), ("y", Arc::new(UInt32Array::from(vec![1])) as _)]).unwrap();
        let err = write_parquet_atomic(&path, &[batch(&[1, 2]), other], &[]).unwrap_err();
        assert!(matches!(err, DataError::Parquet { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the old file must be untouched");
        assert_eq!(visible_and_hidden(dir.path()), vec!["out.parquet"]);
        // And with no previous file, nothing appears.
        let fresh = dir.path().join("fresh.parquet");
        assert!(write_parquet_atomic(&fresh, &[batch(&[1]), batch(&[2]).project(&[1]).unwrap()], &[]).is_err());
        assert!(!fresh.exists());
        assert_eq!(visible_and_hidden(dir.path()), vec!["out.parquet"]);
        assert!(matches!(write_parquet_atomic(&fresh, &[], &[]), Err(DataError::NoBatches { .. })));
    }

    #[test]
    fn a_directory_of_shards_reads_in_shard_order_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for (shard, ids) in [(2, vec![20i64]), (0, vec![0, 1]), (10, vec![100])] {
            write_parquet_atomic(&dir.path().join(format!("shard={shard:05}/part-0.parquet")), &[batch(&ids)], &[]).unwrap();
        }
        std::fs::write(dir.path().join("shard=00000/.part-0.parquet.1.0.tmp"), b"partial").unwrap();
        std::fs::write(dir.path().join("README"), b"x").unwrap();
        let ids: Vec<i64> =
            read_parquet(dir.path()).unwrap().iter().flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()).collect();
        assert_eq!(ids, vec![0, 1, 20, 100]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(read_parquet(empty.path()), Err(DataError::NoParquet { .. })));
        assert!(matches!(read_parquet(&empty.path().join("missing.parquet")), Err(DataError::Io { .. })));
    }
}
