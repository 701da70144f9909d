use std::path::PathBuf;

/// Everything that can go wrong reading or writing the project's data files.
///
/// A bad *record* is never an error: it becomes a [`crate::Rejected`]. Errors are for files
/// that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: {message}\nhint: the file must be one JSON array of objects with the fields known_id, subject, attribute, prompt (and optionally template, prediction, relation_id)")]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: line {line}: {message}\nhint: the file must be CSV with a header naming the columns {expected}")]
    Csv { path: PathBuf, line: u64, message: String, expected: String },
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error(
        "{path}: column `{column}`: {message}\nhint: the file was written by another version of dissect or by another stage; rerun the stage that writes it"
    )]
    Schema { path: PathBuf, column: String, message: String },
    #[error("{path}: no Parquet data found\nhint: give a .parquet file or a directory of shard=*/part-*.parquet partitions")]
    NoParquet { path: PathBuf },
    #[error("nothing to write to {path}\nhint: pass at least one record batch (an empty one carries the schema)")]
    NoBatches { path: PathBuf },
    #[error("bad shard `{spec}`: {message}\nhint: write i/n with 0 <= i < n, e.g. --shard 3/8")]
    Shard { spec: String, message: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        DataError::Parquet { path: path.into(), message: message.to_string() }
    }
}
