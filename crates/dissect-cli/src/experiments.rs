use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_cache::CacheReader;
use dissect_data::filtered::read_kept;
use dissect_data::paragraphs::{load_paragraphs, load_stopwords};
use dissect_data::parts::input_hashes;
use dissect_data::provenance::sha256_file;
use dissect_data::KeptRecord;
use dissect_experiments::stage::{provenance, run_resumable, Experiment, ExperimentsConfig, Inputs, RunInputs, StageParts};
use dissect_model::intervene::ExecPath;
use dissect_model::source::load;
use serde_json::json;

use crate::backend::on_backend;
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::shard::ShardArgs;
use crate::stage::{out_dir, positive, Input, RunArgs, StageArgs, StageSummary};

#[derive(clap::Args)]
pub struct Args {
    /// An experiment (knockout, extraction, patching, enrichment, sublayer-knockout, ranks,
    /// parameters) or `all` (the pipeline's list, else all seven).
    #[arg(default_value = "all")]
    name: String,
    #[command(flatten)]
    stage: StageArgs,
    /// The filter stage's kept records: its `filtered` directory (or one Parquet file).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Directory for the tables (`<out>/<table>/shard=NNNNN/part-CCCCC.parquet`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Wikipedia paragraphs per subject (CSV); default data/subject_paragraphs.csv.
    #[arg(long)]
    paragraphs: Option<PathBuf>,
    /// Stopwords, one per line; default data/nltk_stopwords_english.txt.
    #[arg(long)]
    stopwords: Option<PathBuf>,
    /// Only the first N kept records (by id).
    #[arg(long, value_parser = positive)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// `notebook` (h·Eᵀ, no final norm) or `logit-lens` (final norm, then unembedding).
    #[arg(long)]
    projection: Option<String>,
    /// Which reads a bf16 screen answers on a CPU with AMX: `top-k` (the default), `all` or
    /// `off`. The answers are the f32 path's whatever the setting.
    #[arg(long)]
    screen: Option<String>,
    /// Attention-knockout window: layers blocked around each centre layer (default 9).
    #[arg(long, value_parser = positive)]
    window: Option<usize>,
    /// Recompute every position for every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
    /// The activation cache (`dissect cache`'s `<out>/cache`): enrichment, extraction's
    /// clean rows and ranks read the clean activations from it instead of running the model.
    /// With --pipeline, `<out>/cache` unless the pipeline sets `[cache] use_in_experiments = false`.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Compute every activation by running the model, even where the pipeline has a cache.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// A JSON file with a full experiments configuration (overrides the flags above).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let stage = args.stage.resolve()?;
    let input = Input::kept_records(args.input.as_deref(), stage.pipeline.as_ref())?;
    let p = stage.pipeline.as_ref();
    let out = out_dir(args.out.as_deref(), p.map(Pipeline::experiments_dir))?;
    let paragraphs = Input::pick(
        args.paragraphs.as_deref(),
        "--paragraphs",
        p.map(|p| (p, "data.paragraphs", p.data.paragraphs.clone())),
        Some("data/subject_paragraphs.csv"),
    )?;
    let stopwords = Input::pick(
        args.stopwords.as_deref(),
        "--stopwords",
        p.map(|p| (p, "data.stopwords", p.data.stopwords.clone())),
        Some("data/nltk_stopwords_english.txt"),
    )?;
    let shard = args.shard.resolve()?;
    let cfg = config(&args, p)?;
    cfg.validate().map_err(anyhow::Error::msg)?;

    let mut records = read_kept(input.existing()?)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));
    let cache_dir = args.cache.clone().or(p.filter(|p| p.cache.use_in_experiments && !args.no_cache).map(Pipeline::cache_dir));
    let cache = cache_dir.as_deref().map(|d| open_cache(d, &records)).transpose()?;

    let (header, weights) = stage.header()?;
    if let Some(c) = &cache {
        check_cache_model(c, &weights)?;
    }
    let run_inputs = RunInputs {
        model: &header.info,
        n_layers: header.n_layers,
        weights_sha256: weights,
        input_hashes: input_hashes(&input.path, shard)?,
        paragraphs_sha256: sha256_file(paragraphs.existing()?)?,
        stopwords_sha256: sha256_file(stopwords.existing()?)?,
        limit: args.limit,
        shard,
        cache_hashes: cache.as_ref().map(|c| c.params_hashes(records.iter().map(|r| &r.id))).transpose()?,
    };
    let prov = provenance(&run_inputs, &cfg);
    let parts = StageParts::new(&out, &cfg, shard, records.len(), &prov);
    let summary = |up_to_date, computed, reused| StageSummary {
        stage: "experiments",
        up_to_date,
        records: records.len(),
        chunks_computed: computed,
        chunks_reused: reused,
        outputs: vec![out.clone()],
        seconds: started.elapsed().as_secs_f64(),
        extra: Default::default(),
    };
    if args.run.nothing_to_do("experiments", &out, parts.all_current(), || parts.clear(), || summary(true, 0, parts.records.n_chunks()))? {
        return Ok(());
    }

    let (paragraphs, _) = load_paragraphs(&paragraphs.path)?;
    let stopwords: HashSet<String> = load_stopwords(&stopwords.path)?.into_iter().collect();
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let mut loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        loaded.model.screen = cfg.screen;
        eprintln!("experiments: {} on {} records (shard {shard}) with {model}", experiment_list(&cfg), records.len());
        let inputs = Inputs { records: &records, paragraphs: &paragraphs, stopwords: &stopwords, cache: cache.as_ref() };
        let mut bar = Progress::new("experiments", "records");
        let done = run_resumable(&loaded.model, &loaded.tokenizer, &inputs, &cfg, &parts, |d, t| bar.update(d, t))?;
        bar.finish();
        eprintln!(
            "experiments: {} chunks computed, {} reused, {:.1}s; tables in {}",
            done.computed,
            done.reused,
            started.elapsed().as_secs_f64(),
            out.display()
        );
        if args.run.json {
            summary(false, done.computed, done.reused).print()?;
        }
        Ok(())
    })
}

/// The configuration: `--config`, else the pipeline's, else the defaults; then the flags.
fn config(args: &Args, p: Option<&Pipeline>) -> Result<ExperimentsConfig> {
    let mut cfg = match (&args.config, p) {
        (Some(f), _) => serde_json::from_str(&std::fs::read_to_string(f).with_context(|| format!("reading --config {}", f.display()))?)
            .with_context(|| format!("{}: not an experiments configuration", f.display()))?,
        (None, Some(p)) => p.experiments.clone(),
        (None, None) => ExperimentsConfig::default(),
    };
    if args.name != "all" {
        cfg.experiments = vec![args.name.parse::<Experiment>().map_err(anyhow::Error::msg)?];
    } else if args.config.is_none() && p.is_none() {
        cfg.experiments = Experiment::ALL.to_vec();
    }
    if let Some(proj) = &args.projection {
        cfg.projection = serde_json::from_value(json!(proj)).map_err(|_| anyhow::anyhow!("unknown --projection `{proj}`\nhint: notebook or logit-lens"))?;
    }
    if let Some(screen) = &args.screen {
        cfg.screen = serde_json::from_value(json!(screen)).map_err(|_| anyhow::anyhow!("unknown --screen `{screen}`\nhint: top-k, all or off"))?;
    }
    if let Some(w) = args.window {
        cfg.knockout.window = w;
    }
    if args.full_recompute {
        cfg.knockout.path = ExecPath::Full;
        cfg.extraction.path = ExecPath::Full;
    }
    Ok(cfg)
}

/// Opens the cache and checks that it holds every record this run reads.
fn open_cache(dir: &Path, records: &[KeptRecord]) -> Result<CacheReader> {
    let cache = CacheReader::open(dir).with_context(|| {
        format!("opening the activation cache {}\nhint: run `dissect cache` with the same --pipeline (or --input) first, or pass --no-cache", dir.display())
    })?;
    let missing: Vec<u64> = records.iter().map(|r| r.id).filter(|&id| !cache.contains(id)).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the activation cache {} lacks {} of the {} records (e.g. {:?})\nhint: run `dissect cache` on the same --input with the same or a larger --limit first, or pass --no-cache",
            cache.root().display(),
            missing.len(),
            records.len(),
            &missing[..missing.len().min(5)]
        );
    }
    eprintln!("experiments: reading clean activations from {} ({} vectors)", cache.root().display(), cache.dtype());
    Ok(cache)
}

/// A cache of other weights would give numbers of another model.
fn check_cache_model(cache: &CacheReader, weights: &str) -> Result<()> {
    for p in cache.provenances() {
        if p.weights_sha256.as_deref() != Some(weights) {
            anyhow::bail!(
                "the activation cache {} was computed with {} (weights {}), not this model\nhint: rerun `dissect cache` with this --model (with --force), or pass --no-cache",
                cache.root().display(),
                p.model_spec,
                p.weights_sha256.as_deref().unwrap_or("unknown")
            );
        }
    }
    Ok(())
}

fn experiment_list(cfg: &ExperimentsConfig) -> String {
    cfg.experiments.iter().map(|e| e.label()).collect::<Vec<_>>().join(", ")
}
