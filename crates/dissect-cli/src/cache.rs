use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_cache::{cache_parts, cache_provenance, run_resumable, CacheConfig, StoreDtype};
use dissect_data::filtered::read_kept_selection;
use dissect_data::parts::{input_hashes, RunSummary};
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::progress::Progress;
use crate::stage::{out_dir, positive, Input, RunArgs, StageArgs, StageRun};

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
    /// How vectors are stored: f32 (default) or f16 (half the size, about 3 significant digits).
    #[arg(long)]
    dtype: Option<StoreDtype>,
    /// Prompts per forward pass (default 1: each record's vectors are then bit for bit those
    /// the experiments compute without a cache; more pads prompts to one length).
    #[arg(long, value_parser = positive)]
    batch_size: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let stage = args.stage.resolve()?;
    let p = stage.pipeline.as_ref();
    let input = Input::kept_records(args.input.as_deref(), p)?;
    let cache_dir = out_dir(args.out.as_deref(), p.map(|p| p.out.clone()))?.join("cache");
    let shard = args.run.shard.resolve()?;
    let defaults: CacheConfig = p.map(|p| p.cache.config()).unwrap_or_default();
    let cfg = CacheConfig {
        dtype: args.dtype.unwrap_or(defaults.dtype),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        chunk_size: args.run.chunk_size.unwrap_or(defaults.chunk_size),
    };
    let records = read_kept_selection(input.existing()?, args.run.limit, shard)?;

    let (header, weights) = stage.header()?;
    let prov = cache_provenance(&header.info, weights, input_hashes(&input.path, shard)?, args.run.limit, shard, &cfg);
    let parts = cache_parts(&cache_dir, shard, records.len(), &cfg, &prov);
    let shard_dir = cache_dir.join(shard.dir_name());
    let run = StageRun::new("cache", &args.run, started, records.len(), vec![cache_dir.clone()]);
    if run.nothing_to_do(&shard_dir, parts.all_current(), parts.n_chunks(), || parts.clear(), || Ok(Default::default()))? {
        return Ok(());
    }
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        eprintln!("cache: {} records (shard {shard}) with {model}, {} vectors, loaded in {:.1}s", records.len(), cfg.dtype, started.elapsed().as_secs_f64());
        let mut bar = Progress::new("cache", "records");
        let done = run_resumable(&loaded.model, &loaded.tokenizer, &records, &cfg, &parts, |d, t| bar.update(d, t))?;
        bar.finish();
        let detail = format!("{} rows, {:.1} MiB in {}", done.rows, dir_size(&shard_dir) as f64 / f64::from(1 << 20), shard_dir.display());
        run.finish(RunSummary { computed: done.computed, reused: done.reused }, &detail, Default::default())
    })
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}
