//! The errors that stop an aggregation, each with a hint on what to do.

use std::path::PathBuf;

use dissect_data::DataError;

/// Everything that stops an aggregation. A missing experiment table is not an error (that
/// experiment was not run: its tables, figure and finding are left out and the report says
/// so); an unreadable or malformed one is.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// An input Parquet file could not be read or does not have its table's columns.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Reading an input or writing an output failed (or `summary.json` does not parse).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system (or the JSON parser) reported.
        #[source]
        source: std::io::Error,
    },
    /// A summary table could not be written as CSV (`column` is then `csv`). Input tables
    /// with missing or retyped columns arrive as [`AggregateError::Data`] instead.
    #[error("table `{table}`: column `{column}`: {message}\nhint: the table was written by another version of dissect; rerun the experiments stage")]
    Schema {
        /// The summary table's name.
        table: String,
        /// The column concerned, or `csv` for a CSV writer failure.
        column: String,
        /// The underlying error.
        message: String,
    },
    /// A record contributes two values to one summary cell: shards or runs in the input overlap.
    #[error("table `{table}`: record {id} has more than one row for {key}\nhint: two shards hold the same record; the input directory may mix runs with different shard counts")]
    Duplicate {
        /// The summary table being built.
        table: String,
        /// The record's `id`.
        id: i64,
        /// The cell, as `column=value` pairs (e.g. `positions=subject, layer=3`).
        key: String,
    },
    /// The input directory holds no experiment table (or only `skipped`).
    #[error("{path}: no experiment tables found (looked for the directories {expected})\nhint: pass the experiments stage's output directory as --input")]
    NoTables {
        /// The input directory given.
        path: PathBuf,
        /// The table directories looked for, comma-separated.
        expected: String,
    },
    /// A figure could not be rendered to SVG or PNG.
    #[error("figure `{figure}`: {message}")]
    Plot {
        /// The figure's file stem, e.g. `knockout`.
        figure: String,
        /// The renderer's message.
        message: String,
    },
    /// An [`AggregateConfig`](crate::AggregateConfig) value is out of range: 0 resamples, or a level
    /// not strictly between 0 and 1.
    #[error("bad aggregation setting: {0}\nhint: --resamples must be at least 1")]
    Config(String),
}

impl AggregateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AggregateError::Io { path: path.into(), source }
    }

    pub(crate) fn schema(table: &str, column: &str, message: impl Into<String>) -> Self {
        AggregateError::Schema { table: table.into(), column: column.into(), message: message.into() }
    }
}
