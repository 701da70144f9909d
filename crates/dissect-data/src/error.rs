//! The data crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing the project's data files.
///
/// A bad *record* is never an error: it becomes a [`crate::Rejected`]. Errors are for files
/// that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be opened, read, written, created or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A known-facts file that is not one JSON array; a single bad record is a rejection instead.
    #[error("{path}: line {line}, column {column}: {message}\nhint: the file must be one JSON array of objects with the fields known_id, subject, attribute, prompt (and optionally template, prediction, relation_id)")]
    Json {
        /// The file (or the name given to text parsed in memory).
        path: PathBuf,
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A CSV file whose header lacks a required column or cannot be read; bad rows are skipped instead.
    #[error("{path}: line {line}: {message}\nhint: the file must be CSV with a header naming the columns {expected}")]
    Csv {
        /// The file (or the name given to a reader).
        path: PathBuf,
        /// 1-based line number (1 is the header).
        line: u64,
        /// What is wrong.
        message: String,
        /// The columns the file must name, comma-separated.
        expected: String,
    },
    /// The Parquet or Arrow library failed on a file: not Parquet, corrupt, or unwritable data.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The library's description.
        message: String,
    },
    /// A Parquet table readable as such but not with the columns and types this version expects.
    #[error(
        "{path}: column `{column}`: {message}\nhint: the file was written by another version of dissect or by another stage; rerun the stage that writes it"
    )]
    Schema {
        /// The Parquet file.
        path: PathBuf,
        /// The missing or mistyped column.
        column: String,
        /// What is wrong with it.
        message: String,
    },
    /// A directory holding no `shard=*/part-*.parquet` file (a path that does not exist is [`DataError::Io`]).
    #[error("{path}: no Parquet data found\nhint: give a .parquet file or a directory of shard=*/part-*.parquet partitions")]
    NoParquet {
        /// The directory given.
        path: PathBuf,
    },
    /// A Parquet write was asked for with no record batch, so there is no schema to write.
    #[error("nothing to write to {path}\nhint: pass at least one record batch (an empty one carries the schema)")]
    NoBatches {
        /// The file that would have been written.
        path: PathBuf,
    },
    /// A shard that is not `i/n` with `0 <= i < n`, from `--shard` or a scheduler's task index.
    #[error("bad shard `{spec}`: {message}\nhint: write i/n with 0 <= i < n, e.g. --shard 3/8")]
    Shard {
        /// The shard as given (`i/n`), or `VAR=value` when a scheduler's task index is not a number.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        DataError::Parquet { path: path.into(), message: message.to_string() }
    }
}
