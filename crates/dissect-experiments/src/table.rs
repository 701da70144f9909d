//! A small column builder for the per-example tables: rows are pushed as values, columns come
//! out as Arrow arrays.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};

#[derive(Debug, Clone)]
pub enum Cell {
    U64(u64),
    U32(Option<u32>),
    F32(f32),
    Str(Option<String>),
    Bool(bool),
    U32s(Vec<u32>),
    Strs(Vec<String>),
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::U64(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::U32(Some(v as u32))
    }
}
impl From<Option<usize>> for Cell {
    fn from(v: Option<usize>) -> Self {
        Cell::U32(v.map(|v| v as u32))
    }
}
impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Cell::U32(Some(v))
    }
}
impl From<f32> for Cell {
    fn from(v: f32) -> Self {
        Cell::F32(v)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Str(Some(v.to_string()))
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Str(Some(v))
    }
}
impl From<Option<&str>> for Cell {
    fn from(v: Option<&str>) -> Self {
        Cell::Str(v.map(str::to_string))
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Self {
        Cell::Bool(v)
    }
}

/// Rows with named columns; a column's type is taken from its first value.
#[derive(Debug, Default, Clone)]
pub struct Table {
    names: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(names: &[&'static str]) -> Self {
        Table { names: names.to_vec(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(row.len(), self.names.len(), "row width");
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn extend(&mut self, other: Table) {
        self.rows.extend(other.rows);
    }

    /// The Arrow batch; `types` gives each column's type (so an empty table keeps its schema).
    pub fn to_batch(&self, types: &[DataType]) -> RecordBatch {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (c, (name, ty)) in self.names.iter().zip(types).enumerate() {
            let cells = self.rows.iter().map(|r| &r[c]);
            let (array, nullable): (ArrayRef, bool) = match ty {
                DataType::UInt64 => (
                    Arc::new(UInt64Array::from_iter_values(cells.map(|x| match x {
                        Cell::U64(v) => *v,
                        other => panic!("{name}: {other:?}"),
                    }))),
                    false,
                ),
                DataType::UInt32 => (
                    Arc::new(UInt32Array::from_iter(cells.map(|x| match x {
                        Cell::U32(v) => *v,
                        other => panic!("{name}: {other:?}"),
                    }))),
                    true,
                ),
                DataType::Float32 => (
                    Arc::new(Float32Array::from_iter_values(cells.map(|x| match x {
                        Cell::F32(v) => *v,
                        other => panic!("{name}: {other:?}"),
                    }))),
                    false,
                ),
                DataType::Utf8 => (
                    Arc::new(StringArray::from_iter(cells.map(|x| match x {
                        Cell::Str(v) => v.clone(),
                        other => panic!("{name}: {other:?}"),
                    }))),
                    true,
                ),
                DataType::Boolean => (
                    Arc::new(BooleanArray::from_iter(cells.map(|x| match x {
                        Cell::Bool(v) => Some(*v),
                        other => panic!("{name}: {other:?}"),
                    }))),
                    false,
                ),
                DataType::List(item) => (list_array(name, item.data_type(), cells), false),
                other => panic!("unsupported column type {other}"),
            };
            fields.push(Field::new(*name, ty.clone(), nullable));
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
    }
}

/// A `List<UInt32>` or `List<Utf8>` column from `U32s` or `Strs` cells.
fn list_array<'a>(name: &str, item: &DataType, cells: impl Iterator<Item = &'a Cell>) -> ArrayRef {
    use arrow_array::builder::{ListBuilder, StringBuilder, UInt32Builder};
    match item {
        DataType::Utf8 => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for c in cells {
                let Cell::Strs(v) = c else { panic!("{name}: {c:?}") };
                for s in v {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }
        DataType::UInt32 => {
            let mut b = ListBuilder::new(UInt32Builder::new());
            for c in cells {
                let Cell::U32s(v) = c else { panic!("{name}: {c:?}") };
                b.values().append_slice(v);
                b.append(true);
            }
            Arc::new(b.finish())
        }
        other => panic!("unsupported list item type {other}"),
    }
}
