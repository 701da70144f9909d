use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_cache::{cache_provenance, run_resumable, CacheConfig, StoreDtype};
use dissect_data::filtered::read_kept;
use dissect_data::parquet_io::{parquet_files, read_kv_metadata};
use dissect_data::provenance::PARAMS_HASH_KEY;
use dissect_data::ShardSpec;
use dissect_filter::weights_sha256;
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::pipeline::Pipeline;
use crate::stage::{Stage, StageArgs};
use crate::progress::Progress;
use crate::shard::ShardArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The filter stage's kept records: filtered.parquet, or its directory of shards.
    #[arg(long, required_unless_present = "pipeline")]
    input: Option<PathBuf>,
    /// Output directory: the cache goes to `<out>/cache/shard=NNNNN/part-CCCCC.parquet`.
    #[arg(long, required_unless_present = "pipeline")]
    out: Option<PathBuf>,
    /// Only the first N kept records (by id).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// How vectors are stored: f32 (default) or f16 (half the size, about 3 significant digits).
    #[arg(long)]
    dtype: Option<StoreDtype>,
    /// Prompts per forward pass (default 8).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Records per Parquet part (default 32); a killed run redoes at most one part.
    #[arg(long)]
    chunk_size: Option<usize>,
    /// Recompute this shard's parts even if they exist with the same parameters.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Stage { pipeline, model, backend } = args.stage.resolve()?;
    let p = pipeline.as_ref();
    let input = args.input.clone().or(p.map(Pipeline::filtered)).expect("clap requires --input without --pipeline");
    let out = args.out.clone().or(p.map(|p| p.out.clone())).expect("clap requires --out without --pipeline");
    let cache_dir = out.join("cache");
    let shard = args.shard.resolve()?.unwrap_or(ShardSpec { index: 0, count: 1 });
    let mut cfg: CacheConfig = p.map(|p| p.cache.config()).unwrap_or_default();
    if let Some(d) = args.dtype {
        cfg.dtype = d;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(c) = args.chunk_size {
        cfg.chunk_size = c;
    }

    let mut records = read_kept(&input)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));

    let started = Instant::now();
    on_backend!(backend, |B| {
        let loaded = load::<B>(&model, &Default::default()).with_context(|| format!("loading {model}"))?;
        let weights = weights_sha256(&loaded.info)?;
        let prov = cache_provenance(&loaded.info, weights, input_hashes(&input, shard)?, args.limit, shard, &cfg);
        if args.force {
            let _ = std::fs::remove_dir_all(cache_dir.join(shard.dir_name()));
        }
        eprintln!(
            "cache: {} records (shard {shard}) with {model}, {} vectors, loaded in {:.1}s",
            records.len(),
            cfg.dtype,
            started.elapsed().as_secs_f64()
        );
        let mut bar = Progress::new("cache", "records");
        let summary = run_resumable(&loaded.model, &loaded.tokenizer, &records, &cfg, &cache_dir, shard, &prov, |d, t| bar.update(d, t))?;
        bar.finish();
        let shard_dir = cache_dir.join(shard.dir_name());
        eprintln!(
            "cache: {} chunks computed ({} rows), {} reused, {:.1}s; {} in {}",
            summary.computed,
            summary.rows,
            summary.reused,
            started.elapsed().as_secs_f64(),
            human_bytes(dir_size(&shard_dir)),
            shard_dir.display()
        );
        Ok(())
    })
}

/// The input tables' own parameter hashes stand for their contents. With sharded filter
/// output a shard depends only on its own partition, so other shards finishing later do not
/// change this shard's parameters.
fn input_hashes(input: &Path, shard: ShardSpec) -> Result<Vec<String>> {
    let own_part = shard.part_path(input);
    let files = if shard.count > 1 && input.is_dir() && own_part.is_file() { vec![own_part] } else { parquet_files(input)? };
    files.iter().map(|f| Ok(read_kv_metadata(f)?.get(PARAMS_HASH_KEY).cloned().unwrap_or_default())).collect()
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
