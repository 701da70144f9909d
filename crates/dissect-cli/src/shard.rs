use anyhow::{bail, Result};
use dissect_data::ShardSpec;

/// `--shard i/n`, or `--shards n` with the index from the job scheduler.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Run shard i of n (0-based).
    #[arg(long, conflicts_with = "shards")]
    pub shard: Option<String>,
    /// Run one shard of n, its index taken from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.
    #[arg(long)]
    pub shards: Option<u32>,
}

impl ShardArgs {
    pub fn resolve(&self) -> Result<Option<ShardSpec>> {
        Ok(match (&self.shard, self.shards) {
            (Some(s), _) => Some(ShardSpec::parse(s)?),
            (None, Some(n)) => match ShardSpec::from_env(n)? {
                Some(s) => Some(s),
                None => bail!("--shards {n} needs the task index in SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX\nhint: set one of them, or pass --shard i/{n}"),
            },
            (None, None) => None,
        })
    }
}
