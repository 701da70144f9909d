use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::filtered::read_kept;
use dissect_data::paragraphs::{load_paragraphs, load_stopwords};
use dissect_data::parquet_io::{parquet_files, read_kv_metadata};
use dissect_data::provenance::{sha256_file, PARAMS_HASH_KEY};
use dissect_data::{Provenance, ShardSpec};
use dissect_experiments::stage::{run_resumable, Experiment, ExperimentsConfig, Inputs};
use dissect_filter::weights_sha256;
use dissect_model::backend::{BackendKind, Cpu};
use dissect_model::intervene::ExecPath;
use dissect_model::project::Projection;
use dissect_model::source::load;
use serde_json::json;

use crate::progress::Progress;
use crate::shard::ShardArgs;

#[derive(clap::Args)]
pub struct Args {
    /// An experiment (knockout, extraction, patching, enrichment, sublayer-knockout, ranks) or `all`.
    name: String,
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    /// The filter stage's kept records: filtered.parquet, or its directory of shards.
    #[arg(long)]
    input: PathBuf,
    /// Directory for the tables (`<out>/<table>/shard=NNNNN/part-CCCCC.parquet`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "data/subject_paragraphs.csv")]
    paragraphs: PathBuf,
    #[arg(long, default_value = "data/nltk_stopwords_english.txt")]
    stopwords: PathBuf,
    /// Only the first N kept records (by id).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// `notebook` (h·Eᵀ, no final norm) or `logit-lens` (final norm, then unembedding).
    #[arg(long, default_value = "notebook")]
    projection: String,
    /// Attention-knockout window (layers around each centre layer).
    #[arg(long, default_value_t = 9)]
    window: usize,
    /// Recompute every position for every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
    /// A JSON file with a full experiments configuration (overrides the flags above).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    force: bool,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

pub fn run(args: Args) -> Result<()> {
    args.backend.check_available()?;
    let shard = args.shard.resolve()?.unwrap_or(ShardSpec { index: 0, count: 1 });
    let mut cfg = match &args.config {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("{}: not an experiments configuration", p.display()))?,
        None => ExperimentsConfig::default(),
    };
    if args.config.is_none() {
        cfg.experiments = match args.name.as_str() {
            "all" => Experiment::ALL.to_vec(),
            one => vec![one.parse::<Experiment>().map_err(anyhow::Error::msg)?],
        };
        cfg.projection = serde_json::from_value(json!(args.projection))
            .map_err(|_| anyhow::anyhow!("unknown projection `{}`\nhint: notebook or logit-lens", args.projection))?;
        cfg.knockout.window = args.window;
        let path = if args.full_recompute { ExecPath::Full } else { ExecPath::Fast };
        cfg.knockout.path = path;
        cfg.extraction.path = path;
    }
    let _: Projection = cfg.projection;

    let mut records = read_kept(&args.input)?;
    records.sort_by_key(|r| r.id);
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    records.retain(|r| shard.contains(r.id));
    let (paragraphs, _) = load_paragraphs(&args.paragraphs)?;
    let stopwords: HashSet<String> = load_stopwords(&args.stopwords)?.into_iter().collect();

    let started = Instant::now();
    let loaded = load::<Cpu>(&args.model, &Default::default()).with_context(|| format!("loading {}", args.model))?;
    let weights = weights_sha256(&loaded.info)?;
    // The input tables' own parameter hashes stand for their contents.
    let input_hashes: Vec<String> = parquet_files(&args.input)?
        .iter()
        .map(|f| Ok(read_kv_metadata(f)?.get(PARAMS_HASH_KEY).cloned().unwrap_or_default()))
        .collect::<Result<_, dissect_data::DataError>>()?;
    let params = json!({
        "model": loaded.info.spec,
        "weights_sha256": weights,
        "input": input_hashes,
        "paragraphs_sha256": sha256_file(&args.paragraphs)?,
        "stopwords_sha256": sha256_file(&args.stopwords)?,
        "limit": args.limit,
        "shard": shard.to_string(),
        "config": cfg,
    });
    let mut prov = Provenance::new("experiments", &loaded.info.spec, params);
    prov.model_revision = loaded.info.revision.clone();
    prov.weights_sha256 = Some(weights);
    let hash = prov.params_hash();
    if args.force {
        for name in dissect_experiments::stage::table_names(&cfg) {
            let _ = std::fs::remove_dir_all(args.out.join(name).join(shard.dir_name()));
        }
    }
    eprintln!("experiments: {} on {} records (shard {shard}) with {}", experiment_list(&cfg), records.len(), args.model);
    let inputs = Inputs { records: &records, paragraphs: &paragraphs, stopwords: &stopwords };
    let mut bar = Progress::new("experiments", "records");
    let (computed, reused) = run_resumable(&loaded.model, &loaded.tokenizer, &inputs, &cfg, &args.out, shard, &prov.to_kv(), &hash, |d, t| bar.update(d, t))?;
    bar.finish();
    eprintln!(
        "experiments: {computed} chunks computed, {reused} reused, {:.1}s; tables in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn experiment_list(cfg: &ExperimentsConfig) -> String {
    cfg.experiments.iter().map(|e| e.name()).collect::<Vec<_>>().join(", ")
}
