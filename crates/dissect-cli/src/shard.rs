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
    /// The shard asked for; without either flag, the whole input ([`ShardSpec::WHOLE`]).
    pub fn resolve(&self) -> Result<ShardSpec> {
        Ok(match (&self.shard, self.shards) {
            (Some(s), _) => ShardSpec::parse(s)?,
            (None, Some(n)) => match ShardSpec::from_env(n)? {
                Some(s) => s,
                None => bail!("--shards {n} needs the task index in SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX\nhint: set one of them, or pass --shard i/{n}"),
            },
            (None, None) => ShardSpec::WHOLE,
        })
    }
}
