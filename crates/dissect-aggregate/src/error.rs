use std::path::PathBuf;

use dissect_data::DataError;

/// Everything that stops an aggregation. A missing experiment table is not an error (that
/// experiment was not run: its tables, figure and finding are left out and the report says
/// so); an unreadable or malformed one is.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("table `{table}`: column `{column}`: {message}\nhint: the table was written by another version of dissect; rerun the experiments stage")]
    Schema { table: String, column: String, message: String },
    #[error("table `{table}`: record {id} has more than one row for {key}\nhint: two shards hold the same record; the input directory may mix runs with different shard counts")]
    Duplicate { table: String, id: i64, key: String },
    #[error("{path}: no experiment tables found (looked for the directories {expected})\nhint: pass the experiments stage's output directory as --input")]
    NoTables { path: PathBuf, expected: String },
    #[error("figure `{figure}`: {message}")]
    Plot { figure: String, message: String },
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
