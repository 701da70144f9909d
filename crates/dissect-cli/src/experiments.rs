use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::filtered::read_kept;
use dissect_data::paragraphs::{load_paragraphs, load_stopwords};
use dissect_data::parquet_io::{parquet_files, read_kv_metadata};
use dissect_data::provenance::{sha256_file, PARAMS_HASH_KEY};
use dissect_cache::CacheReader;
use dissect_data::{Provenance, ShardSpec};
use dissect_experiments::stage::{run_resumable, Experiment, ExperimentsConfig, Inputs};
use dissect_filter::weights_sha256;

use crate::backend::on_backend;
use dissect_model::intervene::ExecPath;
use dissect_model::source::load;
use serde_json::json;

use crate::pipeline::Pipeline;
use crate::stage::{Stage, StageArgs};
use crate::progress::Progress;
use crate::shard::ShardArgs;

#[derive(clap::Args)]
pub struct Args {
    /// An experiment (knockout, extraction, patching, enrichment, sublayer-knockout, ranks, parameters) or `all`.
    name: String,
    #[command(flatten)]
    stage: StageArgs,
    /// The filter stage's kept records: filtered.parquet, or its directory of shards.
    #[arg(long, required_unless_present = "pipeline")]
    input: Option<PathBuf>,
    /// Directory for the tables (`<out>/<table>/shard=NNNNN/part-CCCCC.parquet`).
    #[arg(long, required_unless_present = "pipeline")]
    out: Option<PathBuf>,
    /// Default data/subject_paragraphs.csv without a pipeline.
    #[arg(long)]
    paragraphs: Option<PathBuf>,
    /// Default data/nltk_stopwords_english.txt without a pipeline.
    #[arg(long)]
    stopwords: Option<PathBuf>,
    /// Only the first N kept records (by id).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// `notebook` (h·Eᵀ, no final norm) or `logit-lens` (final norm, then unembedding).
    #[arg(long)]
    projection: Option<String>,
    /// Attention-knockout window (layers around each centre layer; default 9).
    #[arg(long)]
    window: Option<usize>,
    /// Recompute every position for every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
    /// The activation cache (`dissect cache`'s `<out>/cache`, or its `--out`): enrichment,
    /// extraction's clean rows and ranks read the clean activations from it instead of
    /// running the model. With --pipeline, `[cache] use_in_experiments = true` gives `<out>/cache`.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A JSON file with a full experiments configuration (overrides the flags above).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Stage { pipeline, model, backend } = args.stage.resolve()?;
    let p = pipeline.as_ref();
    let input = args.input.clone().or(p.map(Pipeline::filtered)).expect("clap requires --input without --pipeline");
    let out = args.out.clone().or(p.map(Pipeline::experiments_dir)).expect("clap requires --out without --pipeline");
    let paragraphs_path = args.paragraphs.clone().or(p.map(|p| p.data.paragraphs.clone())).unwrap_or_else(|| "data/subject_paragraphs.csv".into());
    let stopwords_path = args.stopwords.clone().or(p.map(|p| p.data.stopwords.clone())).unwrap_or_else(|| "data/nltk_stopwords_english.txt".into());
    let shard = args.shard.resolve()?.unwrap_or(ShardSpec { index: 0, count: 1 });
    let mut cfg = match (&args.config, p) {
        (Some(f), _) => serde_json::from_str(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
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
        cfg.projection = serde_json::from_value(json!(proj)).map_err(|_| anyhow::anyhow!("unknown projection `{proj}`\nhint: notebook or logit-lens"))?;
    }
    if let Some(w) = args.window {
        cfg.knockout.window = w;
    }
    if args.full_recompute {
        cfg.knockout.path = ExecPath::Full;
        cfg.extraction.path = ExecPath::Full;
    }

    let mut records = read_kept(&input)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));
    let (paragraphs, _) = load_paragraphs(&paragraphs_path)?;
    let cache_dir = args.cache.clone().or(p.filter(|p| p.cache.use_in_experiments).map(Pipeline::cache_dir));
    let cache = cache_dir.as_deref().map(|d| open_cache(d, &records)).transpose()?;
    let stopwords: HashSet<String> = load_stopwords(&stopwords_path)?.into_iter().collect();

    let started = Instant::now();
    on_backend!(backend, |B| {
        let loaded = load::<B>(&model, &Default::default()).with_context(|| format!("loading {model}"))?;
        let weights = weights_sha256(&loaded.info)?;
        // The input tables' own parameter hashes stand for their contents.
        // With sharded filter output, a shard depends only on its own partition: other shards
        // finishing later must not change this shard's parameters.
        let own_part = shard.part_path(&input);
        let input_files = if shard.count > 1 && input.is_dir() && own_part.is_file() { vec![own_part] } else { parquet_files(&input)? };
        let input_hashes: Vec<String> = input_files
            .iter()
            .map(|f| Ok(read_kv_metadata(f)?.get(PARAMS_HASH_KEY).cloned().unwrap_or_default()))
            .collect::<Result<_, dissect_data::DataError>>()?;
        let mut params = json!({
            "model": loaded.info.spec,
            "weights_sha256": weights,
            "input": input_hashes,
            "paragraphs_sha256": sha256_file(&paragraphs_path)?,
            "stopwords_sha256": sha256_file(&stopwords_path)?,
            "limit": args.limit,
            "shard": shard.to_string(),
            // What runs, not what was asked: the top-level projection in every experiment, R
            // and the patching sources resolved for this model's depth.
            "config": cfg.effective(loaded.model.n_layers()),
            "effective": cfg.depth_scaling(loaded.model.n_layers()),
        });
        if let Some(c) = &cache {
            check_cache_model(c, &weights)?;
            // Only with a cache, so that runs without one keep their parameter hash.
            params["cache"] = json!(c.params_hashes(records.iter().map(|r| &r.id))?);
        }
        let mut prov = Provenance::new("experiments", &loaded.info.spec, params);
        prov.model_revision = loaded.info.revision.clone();
        prov.weights_sha256 = Some(weights);
        let hash = prov.params_hash();
        if args.force {
            let matrices = cfg.experiments.contains(&Experiment::Parameters).then_some(dissect_experiments::stage::MATRICES_TABLE);
            for name in dissect_experiments::stage::table_names(&cfg).into_iter().chain(matrices) {
                let _ = std::fs::remove_dir_all(out.join(name).join(shard.dir_name()));
            }
        }
        eprintln!("experiments: {} on {} records (shard {shard}) with {}", experiment_list(&cfg), records.len(), model);
        let inputs = Inputs { records: &records, paragraphs: &paragraphs, stopwords: &stopwords, cache: cache.as_ref() };
        let mut bar = Progress::new("experiments", "records");
        let (computed, reused) = run_resumable(&loaded.model, &loaded.tokenizer, &inputs, &cfg, &out, shard, &prov.to_kv(), &hash, |d, t| bar.update(d, t))?;
        bar.finish();
        eprintln!(
            "experiments: {computed} chunks computed, {reused} reused, {:.1}s; tables in {}",
            started.elapsed().as_secs_f64(),
            out.display()
        );
        Ok(())
    })
}

/// Opens the cache and checks that it holds every record this run reads.
fn open_cache(dir: &std::path::Path, records: &[dissect_data::KeptRecord]) -> Result<CacheReader> {
    let cache = CacheReader::open(dir).with_context(|| format!("opening the activation cache {}", dir.display()))?;
    let missing: Vec<u64> = records.iter().map(|r| r.id).filter(|&id| !cache.contains(id)).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the activation cache {} lacks {} of the {} records (e.g. {:?})\nhint: run `dissect cache` on the same --input with the same or a larger --limit first",
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
                "the activation cache {} was computed with {} (weights {}), not this model\nhint: rerun `dissect cache` with this --model, or drop --cache",
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
