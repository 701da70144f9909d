//! The rows a run has measured so far, for any of the tables in [`dissect_data::table`]: each
//! experiment pushes its own row types, the stage turns each table into one Arrow batch.

use std::any::Any;
use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use dissect_data::table::Row;

/// One table's rows with the type erased, so that tables of different row types sit in one map.
trait AnyRows {
    fn to_batch(&self) -> RecordBatch;
    fn append_to(self: Box<Self>, into: &mut dyn AnyRows);
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<R: Row + 'static> AnyRows for Vec<R> {
    fn to_batch(&self) -> RecordBatch {
        R::to_batch(self)
    }
    fn append_to(self: Box<Self>, into: &mut dyn AnyRows) {
        into.as_any_mut().downcast_mut::<Vec<R>>().expect("one row type per table name").extend(*self);
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Rows by table name.
#[derive(Default)]
pub struct TableRows {
    tables: BTreeMap<&'static str, Box<dyn AnyRows>>,
}

impl TableRows {
    /// Makes sure table `R` exists, so it is written (empty) even when no record adds a row.
    pub fn declare<R: Row + 'static>(&mut self) {
        self.tables.entry(R::TABLE).or_insert_with(|| Box::new(Vec::<R>::new()));
    }

    /// Adds one row to table `R`.
    pub fn push<R: Row + 'static>(&mut self, row: R) {
        self.declare::<R>();
        let rows = self.tables.get_mut(R::TABLE).expect("declared").as_any_mut();
        rows.downcast_mut::<Vec<R>>().expect("one row type per table name").push(row);
    }

    /// Moves every row of `other` into this collection.
    pub fn append(&mut self, other: TableRows) {
        for (name, rows) in other.tables {
            match self.tables.get_mut(name) {
                Some(into) => rows.append_to(into.as_mut()),
                None => {
                    self.tables.insert(name, rows);
                }
            }
        }
    }

    /// Table `name` as one batch; `None` when it was never declared.
    pub fn batch(&self, name: &str) -> Option<RecordBatch> {
        self.tables.get(name).map(|t| t.to_batch())
    }

    /// The tables' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tables.keys().copied().collect()
    }

    /// Every table as one batch, by name.
    pub fn batches(&self) -> BTreeMap<&'static str, RecordBatch> {
        self.tables.iter().map(|(name, t)| (*name, t.to_batch())).collect()
    }
}

#[cfg(test)]
mod tests {
    use dissect_data::table::{RanksRow, SkipReason, SkippedRow};

    use super::*;

    #[test]
    fn declared_tables_are_written_empty_and_appends_keep_order() {
        let mut a = TableRows::default();
        a.declare::<SkippedRow>();
        assert_eq!(a.batch("skipped").map(|b| b.num_rows()), Some(0));
        let mut b = TableRows::default();
        b.push(RanksRow { id: 1, layer: 0, subject_last_rank: 3, attn_last_rank: 0 });
        b.push(SkippedRow { id: 2, experiment: "ranks".into(), reason: SkipReason::Error, message: "m".into() });
        a.append(b);
        let mut c = TableRows::default();
        c.push(RanksRow { id: 3, layer: 0, subject_last_rank: 4, attn_last_rank: 1 });
        a.append(c);
        assert_eq!(a.names(), ["ranks", "skipped"]);
        let ranks = RanksRow::from_batch(&a.batch("ranks").unwrap(), "t".as_ref()).unwrap();
        assert_eq!(ranks.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3]);
    }
}
