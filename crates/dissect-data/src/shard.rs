//! Splitting a run by record across machines: `--shard i/n`, or the index a job scheduler
//! gives each array task.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// Environment variables holding a task's index, in the order they are read: Slurm job
/// arrays, then Kubernetes Indexed Jobs.
pub const INDEX_VARS: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The shard a record belongs to: `id mod n`. Ids of a dataset are usually consecutive, so
/// this balances shards to within one record, and it never changes between versions.
pub fn shard_of(id: u64, n: u32) -> u32 {
    assert!(n > 0, "shard count must be positive");
    (id % u64::from(n)) as u32
}

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardSpec {
    /// Which shard, `0..count`.
    pub index: u32,
    /// How many shards the run is split into, at least 1.
    pub count: u32,
}

impl ShardSpec {
    /// The whole input as one shard: what an unsharded run writes (`shard=00000`).
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// Shard `index` of `count`; an error unless `count >= 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, DataError> {
        let spec = format!("{index}/{count}");
        if count == 0 {
            return Err(DataError::Shard { spec, message: "the shard count must be at least 1".into() });
        }
        if index >= count {
            return Err(DataError::Shard { spec, message: format!("index {index} is not below the count {count} (indices start at 0)") });
        }
        Ok(ShardSpec { index, count })
    }

    /// Parses `"i/n"` (as `--shard` takes it; spaces around the numbers are allowed).
    pub fn parse(spec: &str) -> Result<Self, DataError> {
        let bad = |message: &str| DataError::Shard { spec: spec.to_string(), message: message.to_string() };
        let (i, n) = spec.split_once('/').ok_or_else(|| bad("expected i/n"))?;
        let i = i.trim().parse().map_err(|_| bad("the index is not a non-negative integer"))?;
        let n = n.trim().parse().map_err(|_| bad("the count is not a positive integer"))?;
        Self::new(i, n)
    }

    /// The shard of this task of a job array of `count` tasks, from the first of
    /// [`INDEX_VARS`] that is set; `None` if none is. The index is used as it is, so a Slurm
    /// array must be numbered `--array=0-(n-1)` (rerunning one task keeps its number).
    pub fn from_env(count: u32) -> Result<Option<Self>, DataError> {
        Self::from_vars(count, |k| std::env::var(k).ok())
    }

    /// [`ShardSpec::from_env`] with the variables looked up by `get`.
    pub fn from_vars(count: u32, get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DataError> {
        for var in INDEX_VARS {
            if let Some(v) = get(var) {
                let index = v
                    .trim()
                    .parse()
                    .map_err(|_| DataError::Shard { spec: format!("{var}={v}"), message: "the scheduler's task index is not a non-negative integer".into() })?;
                return Self::new(index, count).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether the record with this `known_id` belongs to this shard ([`shard_of`]).
    pub fn contains(&self, id: u64) -> bool {
        shard_of(id, self.count) == self.index
    }

    /// Whether this shard reports a record that may have no id (a malformed one): those
    /// without go to shard 0, so the union of all shards has every record exactly once.
    pub fn owns(&self, id: Option<u64>) -> bool {
        id.map_or(self.index == 0, |id| self.contains(id))
    }

    /// `shard=00007`: zero-padded so that name order is shard order.
    pub fn dir_name(&self) -> String {
        format!("shard={:05}", self.index)
    }

    /// `<root>/shard=00007/part-00003.parquet`: chunk 3 of shard 7 (a stage that writes one
    /// part per shard writes chunk 0).
    pub fn part_path(&self, root: &Path, chunk: usize) -> PathBuf {
        root.join(self.dir_name()).join(format!("part-{chunk:05}.parquet"))
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_id_lands_in_exactly_one_shard_the_same_way_every_time() {
        let shards: Vec<ShardSpec> = (0..4).map(|i| ShardSpec::new(i, 4).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for id in 0..1209u64 {
            let owners: Vec<u32> = shards.iter().filter(|s| s.contains(id)).map(|s| s.index).collect();
            assert_eq!(owners, vec![shard_of(id, 4)]);
            sizes[owners[0] as usize] += 1;
        }
        assert_eq!(sizes, [303, 302, 302, 302]);
        assert_eq!([shard_of(0, 3), shard_of(7, 3), shard_of(1208, 3)], [0, 1, 2]);
        assert!(ShardSpec::new(0, 1).unwrap().contains(u64::MAX));
        assert!(shards[0].owns(None) && !shards[1].owns(None) && shards[1].owns(Some(5)));
    }

    #[test]
    fn parse_accepts_i_of_n_and_rejects_the_rest() {
        assert_eq!(ShardSpec::parse("3/8").unwrap(), ShardSpec { index: 3, count: 8 });
        assert_eq!(ShardSpec::parse("3/8").unwrap().to_string(), "3/8");
        for bad in ["8/8", "1/0", "3", "-1/4", "a/4", "1/b", ""] {
            let err = ShardSpec::parse(bad).unwrap_err();
            assert!(err.to_string().contains("\nhint: "), "{bad}: {err}");
        }
    }

    #[test]
    fn scheduler_variables_in_order() {
        let vars = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |k: &str| m.get(k).cloned()
        };
        assert_eq!(ShardSpec::from_vars(4, vars(&[])).unwrap(), None);
        assert_eq!(ShardSpec::from_vars(4, vars(&[("JOB_COMPLETION_INDEX", "2")])).unwrap(), Some(ShardSpec { index: 2, count: 4 }));
        assert_eq!(
            ShardSpec::from_vars(4, vars(&[("JOB_COMPLETION_INDEX", "2"), ("SLURM_ARRAY_TASK_ID", "1")])).unwrap(),
            Some(ShardSpec { index: 1, count: 4 })
        );
        assert!(ShardSpec::from_vars(4, vars(&[("SLURM_ARRAY_TASK_ID", "4")])).is_err());
        assert!(ShardSpec::from_vars(4, vars(&[("SLURM_ARRAY_TASK_ID", "x")])).is_err());
    }

    #[test]
    fn partition_paths_sort_in_shard_order() {
        let root = Path::new("/out/cache");
        assert_eq!(ShardSpec::new(7, 12).unwrap().part_path(root, 3), Path::new("/out/cache/shard=00007/part-00003.parquet"));
        assert!(ShardSpec::new(9, 12).unwrap().dir_name() < ShardSpec::new(10, 12).unwrap().dir_name());
    }
}
