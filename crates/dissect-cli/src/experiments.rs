use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_cache::CacheReader;
use dissect_data::filtered::read_kept_selection;
use dissect_data::paragraphs::{load_paragraphs, load_stopwords};
use dissect_data::parts::input_hashes;
use dissect_data::provenance::sha256_file;
use dissect_experiments::stage::{provenance, run_resumable, Experiment, ExperimentsConfig, Inputs, RunInputs, StageParts};
use dissect_model::intervene::ExecPath;
use dissect_model::project::Projection;
use dissect_model::screen::Screening;
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::stage::{config_name, out_dir, positive, Input, RunArgs, StageArgs, StageRun};

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
    /// `notebook` (h·Eᵀ, no final norm) or `logit-lens` (final norm, then unembedding).
    #[arg(long, value_parser = config_name::<Projection>)]
    projection: Option<Projection>,
    /// Which reads a bf16 screen answers on a CPU with AMX: `top-k` (the default), `all` or
    /// `off`. The answers are the f32 path's whatever the setting.
    #[arg(long, value_parser = config_name::<Screening>)]
    screen: Option<Screening>,
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
    /// A JSON file with a full experiments configuration (the flags above override it).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let stage = args.stage.resolve()?;
    let p = stage.pipeline.as_ref();
    let input = Input::kept_records(args.input.as_deref(), p)?;
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
    let shard = args.run.shard.resolve()?;
    let cfg = config(&args, p)?;
    let records = read_kept_selection(input.existing()?, args.run.limit, shard)?;

    let (header, weights) = stage.header()?;
    let cache_dir = args.cache.clone().or(p.filter(|p| p.cache.use_in_experiments && !args.no_cache).map(Pipeline::cache_dir));
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let cache = cache_dir.map(|dir| CacheReader::open_for(&dir, &ids, &weights)).transpose()?;
    let run_inputs = RunInputs {
        model: &header.info,
        n_layers: header.n_layers,
        weights_sha256: weights,
        input_hashes: input_hashes(&input.path, shard)?,
        paragraphs_sha256: sha256_file(paragraphs.existing()?)?,
        stopwords_sha256: sha256_file(stopwords.existing()?)?,
        limit: args.run.limit,
        shard,
        cache_hashes: cache.as_ref().map(|c| c.params_hashes(&ids)).transpose()?,
    };
    let parts = StageParts::new(&out, &cfg, shard, records.len(), &provenance(&run_inputs, &cfg));
    let run = StageRun::new("experiments", &args.run, started, records.len(), vec![out.clone()]);
    if run.nothing_to_do(&out, parts.all_current(), parts.records.n_chunks(), || parts.clear(), || Ok(Default::default()))? {
        return Ok(());
    }
    let (paragraphs, _) = load_paragraphs(&paragraphs.path)?;
    let stopwords = load_stopwords(&stopwords.path)?.into_iter().collect();
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let mut loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        let list: Vec<&str> = cfg.experiments.iter().map(|e| e.label()).collect();
        eprintln!("experiments: {} on {} records (shard {shard}) with {model}", list.join(", "), records.len());
        if let Some(c) = &cache {
            eprintln!("experiments: reading clean activations from {} ({} vectors)", c.root().display(), c.dtype());
        }
        let inputs = Inputs { records: &records, paragraphs: &paragraphs, stopwords: &stopwords, cache: cache.as_ref() };
        let mut bar = Progress::new("experiments", "records");
        let done = run_resumable(&mut loaded.model, &loaded.tokenizer, &inputs, &cfg, &parts, |d, t| bar.update(d, t))?;
        bar.finish();
        run.finish(done, &format!("tables in {}", out.display()), Default::default())
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
    }
    cfg.projection = args.projection.unwrap_or(cfg.projection);
    cfg.screen = args.screen.unwrap_or(cfg.screen);
    cfg.knockout.window = args.window.unwrap_or(cfg.knockout.window);
    cfg.chunk_size = args.run.chunk_size.unwrap_or(cfg.chunk_size);
    if args.full_recompute {
        (cfg.knockout.path, cfg.extraction.path) = (ExecPath::Full, ExecPath::Full);
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}
