//! Summary tables: one row per condition (and layer), with n, the mean and its bootstrap CI
//! (and for ranks the median and its CI), written as Parquet and CSV.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{Bootstrap, Estimate, Statistic};
use crate::error::AggregateError;

/// One value of a key column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// A layer index or a source layer; `None` for "not applicable" (the no-intervention row).
    I32(Option<i32>),
    /// A condition: a position set, sublayer, mode, measure or statistic name.
    Str(String),
}

impl Key {
    /// A string key, e.g. `Key::s("subject")`.
    pub fn s(v: &str) -> Key {
        Key::Str(v.to_string())
    }
    /// A present integer key (a layer or hidden-state index in the input's convention).
    pub fn u(v: i32) -> Key {
        Key::I32(Some(v))
    }
    /// The integer, or `None` for a string key or a "not applicable" one.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Key::I32(v) => *v,
            Key::Str(_) => None,
        }
    }
    /// The string, or `None` for an integer key.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Key::Str(s) => Some(s),
            Key::I32(_) => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::I32(Some(v)) => write!(f, "{v}"),
            Key::I32(None) => f.write_str(""),
            Key::Str(s) => f.write_str(s),
        }
    }
}

/// The Arrow type of a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// Nullable `Int32`: layers, hidden-state indices, start layers.
    I32,
    /// Nullable `Utf8`: condition names.
    Str,
}

/// One cell of a summary table: its key values and the estimates over its examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// One value per key column, in [`SummaryTable::key_columns`]' order.
    pub keys: Vec<Key>,
    /// The mean with its bootstrap interval; `mean.n` is the cell's number of examples.
    pub mean: Estimate,
    /// Only in tables built with medians (ranks).
    pub median: Option<Estimate>,
}

/// An aggregated table. Rows are in key order (layers numerically, "not applicable" first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryTable {
    /// The file stem under `tables/`, e.g. `knockout`.
    pub name: String,
    /// What one example contributes to a cell, e.g. `pct_change` or `extraction_rate_pct`.
    pub metric: String,
    /// The key columns' names and types, in column order.
    pub key_columns: Vec<(String, KeyType)>,
    /// Whether rows also carry the median and its interval (true only for `ranks`).
    pub with_median: bool,
    /// One row per cell, in key order.
    pub rows: Vec<SummaryRow>,
}

/// Per-example values of every cell, keyed by the cell's key values.
pub type Cells = BTreeMap<Vec<Key>, Vec<(i64, f64)>>;

impl SummaryTable {
    /// Bootstraps every cell (in parallel: each cell has its own seeded stream, so the result
    /// does not depend on scheduling). Values are sorted by record id first so that sharded
    /// and unsharded inputs give identical tables; a record twice in one cell is an error.
    pub fn build(
        name: &str,
        metric: &str,
        key_columns: &[(&str, KeyType)],
        cells: Cells,
        with_median: bool,
        boot: &Bootstrap,
    ) -> Result<SummaryTable, AggregateError> {
        let rows = cells
            .into_iter()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(keys, mut values)| {
                values.sort_by_key(|&(id, _)| id);
                let label = describe(key_columns, &keys);
                if let Some(w) = values.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(AggregateError::Duplicate { table: name.into(), id: w[0].0, key: label });
                }
                let v: Vec<f64> = values.iter().map(|&(_, x)| x).collect();
                let key = format!("{name}/{label}");
                let mean = boot.estimate(&v, Statistic::Mean, &format!("{key}/mean"));
                let median = with_median.then(|| boot.estimate(&v, Statistic::Median, &format!("{key}/median")));
                Ok(SummaryRow { keys, mean, median })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SummaryTable {
            name: name.into(),
            metric: metric.into(),
            key_columns: key_columns.iter().map(|&(n, t)| (n.to_string(), t)).collect(),
            with_median,
            rows,
        })
    }

    /// The position of key column `name` in each row's `keys`; `None` if the table lacks it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.key_columns.iter().position(|(n, _)| n == name)
    }

    /// The rows whose key columns named in `filter` have those values, in table order.
    pub fn select(&self, filter: &[(&str, Key)]) -> Vec<&SummaryRow> {
        let idx: Vec<(usize, &Key)> = filter.iter().filter_map(|(n, k)| self.column_index(n).map(|i| (i, k))).collect();
        if idx.len() != filter.len() {
            return Vec::new();
        }
        self.rows.iter().filter(|r| idx.iter().all(|(i, k)| &r.keys[*i] == *k)).collect()
    }

    /// `(key, row)` for the rows matching `filter`, keyed by the column `by` (e.g. a curve
    /// over layers).
    pub fn series(&self, filter: &[(&str, Key)], by: &str) -> Vec<(Key, &SummaryRow)> {
        let Some(i) = self.column_index(by) else { return Vec::new() };
        self.select(filter).into_iter().map(|r| (r.keys[i].clone(), r)).collect()
    }

    /// The distinct values of a key column, in table order.
    pub fn distinct(&self, column: &str) -> Vec<Key> {
        let Some(i) = self.column_index(column) else { return Vec::new() };
        let mut out: Vec<Key> = Vec::new();
        for r in &self.rows {
            if !out.contains(&r.keys[i]) {
                out.push(r.keys[i].clone());
            }
        }
        out
    }

    fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = self.key_columns.iter().map(|(n, _)| n.clone()).collect();
        h.extend(["metric", "n", "mean", "ci_low", "ci_high"].map(String::from));
        if self.with_median {
            h.extend(["median", "median_ci_low", "median_ci_high"].map(String::from));
        }
        h
    }

    /// The Arrow batch: key columns (Int32 or Utf8, nullable), `metric`, `n` (UInt64), and
    /// Float64 `mean`, `ci_low`, `ci_high` (+ `median`, `median_ci_low`, `median_ci_high`).
    pub fn to_batch(&self) -> RecordBatch {
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (i, (name, ty)) in self.key_columns.iter().enumerate() {
            match ty {
                KeyType::I32 => {
                    fields.push(Field::new(name, DataType::Int32, true));
                    cols.push(Arc::new(Int32Array::from_iter(self.rows.iter().map(|r| r.keys[i].as_i32()))));
                }
                KeyType::Str => {
                    fields.push(Field::new(name, DataType::Utf8, true));
                    cols.push(Arc::new(StringArray::from_iter(self.rows.iter().map(|r| r.keys[i].as_str()))));
                }
            }
        }
        fields.push(Field::new("metric", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(self.rows.iter().map(|_| self.metric.as_str()))));
        fields.push(Field::new("n", DataType::UInt64, false));
        cols.push(Arc::new(UInt64Array::from_iter_values(self.rows.iter().map(|r| r.mean.n as u64))));
        let mut f64col = |name: &str, f: &dyn Fn(&SummaryRow) -> f64| {
            fields.push(Field::new(name, DataType::Float64, false));
            cols.push(Arc::new(Float64Array::from_iter_values(self.rows.iter().map(f))) as ArrayRef);
        };
        f64col("mean", &|r| r.mean.value);
        f64col("ci_low", &|r| r.mean.ci_low);
        f64col("ci_high", &|r| r.mean.ci_high);
        if self.with_median {
            let med = |r: &SummaryRow| r.median.expect("with_median rows have a median");
            f64col("median", &|r| med(r).value);
            f64col("median_ci_low", &|r| med(r).ci_low);
            f64col("median_ci_high", &|r| med(r).ci_high);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns match the schema")
    }

    /// The same table as CSV. Numbers are Rust's shortest round-trip form, so parsing a CSV
    /// cell gives exactly the Parquet value; NaN is written `NaN`, a null key as an empty cell.
    pub fn to_csv(&self) -> Result<Vec<u8>, AggregateError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| AggregateError::schema(&self.name, "csv", e.to_string());
        w.write_record(self.header()).map_err(csv_err)?;
        for r in &self.rows {
            let mut rec: Vec<String> = r.keys.iter().map(Key::to_string).collect();
            rec.push(self.metric.clone());
            rec.push(r.mean.n.to_string());
            rec.extend([r.mean.value, r.mean.ci_low, r.mean.ci_high].map(|x| x.to_string()));
            if let Some(m) = r.median {
                rec.extend([m.value, m.ci_low, m.ci_high].map(|x| x.to_string()));
            }
            w.write_record(&rec).map_err(csv_err)?;
        }
        w.into_inner().map_err(|e| AggregateError::schema(&self.name, "csv", e.to_string()))
    }
}

/// `block=subject, layer=3`: names a cell in errors and in its bootstrap stream key.
fn describe(cols: &[(&str, KeyType)], keys: &[Key]) -> String {
    cols.iter().zip(keys).map(|((n, _), k)| format!("{n}={k}")).collect::<Vec<_>>().join(", ")
}

/// A plain count with what it counts (the `counts` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// e.g. `kept`, `rejected:<kind>`, `examples:<table>`, `skipped:<experiment>`.
    pub name: String,
    /// The number of records (or, for `skipped`, of (record, experiment) pairs).
    pub value: u64,
    /// What is counted, in words, for the report.
    pub detail: String,
}

/// The `counts` table as an Arrow batch: `name`, `value` (UInt64), `detail`.
pub fn counts_batch(counts: &[Count]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("name", Arc::new(StringArray::from_iter_values(counts.iter().map(|c| c.name.as_str()))) as ArrayRef),
        ("value", Arc::new(UInt64Array::from_iter_values(counts.iter().map(|c| c.value))) as ArrayRef),
        ("detail", Arc::new(StringArray::from_iter_values(counts.iter().map(|c| c.detail.as_str()))) as ArrayRef),
    ])
    .expect("three equal-length columns")
}

/// The `counts` table as CSV with a `name,value,detail` header.
pub fn counts_csv(counts: &[Count]) -> Result<Vec<u8>, AggregateError> {
    let err = |e: String| AggregateError::schema("counts", "csv", e);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["name", "value", "detail"]).map_err(|e| err(e.to_string()))?;
    for c in counts {
        w.write_record([c.name.as_str(), &c.value.to_string(), c.detail.as_str()]).map_err(|e| err(e.to_string()))?;
    }
    w.into_inner().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;

    use super::*;

    fn boot() -> Bootstrap {
        Bootstrap { resamples: 200, level: 0.95, seed: 3 }
    }

    #[test]
    fn cells_are_order_independent_and_duplicates_are_errors() {
        let cols = [("block", KeyType::Str), ("layer", KeyType::I32)];
        let mut a = Cells::new();
        a.insert(vec![Key::s("subject"), Key::u(0)], vec![(1, 1.0), (2, 5.0), (3, -2.0)]);
        let mut b = Cells::new();
        b.insert(vec![Key::s("subject"), Key::u(0)], vec![(3, -2.0), (1, 1.0), (2, 5.0)]);
        let ta = SummaryTable::build("t", "x", &cols, a, true, &boot()).unwrap();
        let tb = SummaryTable::build("t", "x", &cols, b, true, &boot()).unwrap();
        assert_eq!(ta, tb);
        assert_eq!(ta.rows[0].mean.value, 4.0 / 3.0);
        assert_eq!(ta.rows[0].median.unwrap().value, 1.0);

        let mut d = Cells::new();
        d.insert(vec![Key::s("subject"), Key::u(2)], vec![(1, 1.0), (1, 2.0)]);
        let err = SummaryTable::build("t", "x", &cols, d, false, &boot()).unwrap_err();
        assert!(err.to_string().contains("record 1") && err.to_string().contains("layer=2"), "{err}");
    }

    #[test]
    fn batch_and_csv_agree() {
        let cols = [("sublayer", KeyType::Str), ("start_layer", KeyType::I32)];
        let mut c = Cells::new();
        c.insert(vec![Key::s("none"), Key::I32(None)], vec![(1, 10.0), (2, 30.0)]);
        c.insert(vec![Key::s("mlp"), Key::u(4)], vec![(1, 0.1), (2, 0.2)]);
        let t = SummaryTable::build("s", "rate", &cols, c, false, &boot()).unwrap();
        let b = t.to_batch();
        assert_eq!(b.num_rows(), 2);
        let starts = b.column_by_name("start_layer").unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
        let csv = String::from_utf8(t.to_csv().unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "sublayer,start_layer,metric,n,mean,ci_low,ci_high");
        for (i, line) in lines[1..].iter().enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            let start = if starts.is_valid(i) { starts.value(i).to_string() } else { String::new() };
            assert_eq!(cells[1], start);
            assert_eq!(cells[4].parse::<f64>().unwrap(), t.rows[i].mean.value);
        }
    }
}
