use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_cache::{cache_parts, cache_provenance, run_resumable, CacheConfig, StoreDtype};
use dissect_data::filtered::read_kept;
use dissect_data::parts::input_hashes;
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::shard::ShardArgs;
use crate::stage::{out_dir, positive, Input, RunArgs, StageArgs, StageSummary};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The filter stage's kept records: its `filtered` directory (or one Parquet file).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output directory: the cache goes to `<out>/cache/shard=NNNNN/part-CCCCC.parquet`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the first N kept records (by id).
    #[arg(long, value_parser = positive)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// How vectors are stored: f32 (default) or f16 (half the size, about 3 significant digits).
    #[arg(long)]
    dtype: Option<StoreDtype>,
    /// Prompts per forward pass (default 8).
    #[arg(long, value_parser = positive)]
    batch_size: Option<usize>,
    /// Records per Parquet part (default 32); a killed run redoes at most one part.
    #[arg(long, value_parser = positive)]
    chunk_size: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let stage = args.stage.resolve()?;
    let input = Input::kept_records(args.input.as_deref(), stage.pipeline.as_ref())?;
    let p = stage.pipeline.as_ref();
    let out = out_dir(args.out.as_deref(), p.map(|p| p.out.clone()))?;
    let cache_dir = out.join("cache");
    let shard = args.shard.resolve()?;
    let cfg = config(&args, p);

    let mut records = read_kept(input.existing()?)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));

    let (header, weights) = stage.header()?;
    let prov = cache_provenance(&header.info, weights, input_hashes(&input.path, shard)?, args.limit, shard, &cfg);
    let parts = cache_parts(&cache_dir, shard, records.len(), &cfg, &prov);
    let shard_dir = cache_dir.join(shard.dir_name());
    let summary = |up_to_date, computed, reused| StageSummary {
        stage: "cache",
        up_to_date,
        records: records.len(),
        chunks_computed: computed,
        chunks_reused: reused,
        outputs: vec![cache_dir.clone()],
        seconds: started.elapsed().as_secs_f64(),
        extra: Default::default(),
    };
    if args.run.nothing_to_do("cache", &shard_dir, parts.all_current(), || parts.clear(), || summary(true, 0, parts.n_chunks()))? {
        return Ok(());
    }
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        eprintln!("cache: {} records (shard {shard}) with {model}, {} vectors, loaded in {:.1}s", records.len(), cfg.dtype, started.elapsed().as_secs_f64());
        let mut bar = Progress::new("cache", "records");
        let done = run_resumable(&loaded.model, &loaded.tokenizer, &records, &cfg, &parts, |d, t| bar.update(d, t))?;
        bar.finish();
        eprintln!(
            "cache: {} chunks computed ({} rows), {} reused, {:.1}s; {} in {}",
            done.computed,
            done.rows,
            done.reused,
            started.elapsed().as_secs_f64(),
            human_bytes(dir_size(&shard_dir)),
            shard_dir.display()
        );
        if args.run.json {
            summary(false, done.computed, done.reused).print()?;
        }
        Ok(())
    })
}

fn config(args: &Args, p: Option<&Pipeline>) -> CacheConfig {
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
    cfg
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
