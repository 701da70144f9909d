use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::known::load_known_facts;
use dissect_data::provenance::sha256_file;
use dissect_filter::{filter_parts, filter_provenance, read_parts, run_resumable, FilterTables};
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::progress::Progress;
use crate::stage::{out_dir, positive, Input, RunArgs, StageArgs, StageRun};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The facts: a JSON array of records in known_1000.json's format (see the README).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Directory for the `filtered/` and `rejected/` tables (`shard=NNNNN/part-CCCCC.parquet` each).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prompts per forward pass (default 16).
    #[arg(long, value_parser = positive)]
    batch_size: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let stage = args.stage.resolve()?;
    let p = stage.pipeline.as_ref();
    let dataset = Input::pick(args.dataset.as_deref(), "--dataset", p.map(|p| (p, "data.dataset", p.data.dataset.clone())), None)?;
    let tables = FilterTables::new(&out_dir(args.out.as_deref(), p.map(|p| p.out.clone()))?);
    let mut config = p.map(|p| p.filter.clone()).unwrap_or_default();
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.chunk_size = args.run.chunk_size.unwrap_or(config.chunk_size);
    config.check()?;
    let shard = args.run.shard.resolve()?;
    let dataset_sha256 = sha256_file(dataset.existing()?)?;

    let (facts, mut unreadable) = load_known_facts(&dataset.path, args.run.limit)?;
    let facts: Vec<_> = facts.into_iter().filter(|f| shard.contains(f.known_id)).collect();
    unreadable.retain(|r| shard.owns(r.id));
    let (header, weights) = stage.header()?;
    let prov = filter_provenance(&header.info, weights, dataset_sha256, args.run.limit, shard, &config);
    let parts = filter_parts(&tables, shard, facts.len(), &config, &prov);
    let run = StageRun::new("filter", &args.run, started, facts.len() + unreadable.len(), vec![tables.filtered.clone(), tables.rejected.clone()]);
    // A current run's `--json` reports the decisions read back from its parts.
    let decisions = || Ok(read_parts(&parts)?.decisions());
    if run.nothing_to_do(&tables.filtered.join(shard.dir_name()), parts.all_current(), parts.n_chunks(), || parts.clear(), decisions)? {
        return Ok(());
    }
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        eprintln!("filter: {} records (shard {shard}) on {model}, loaded in {:.1}s", facts.len() + unreadable.len(), started.elapsed().as_secs_f64());
        let mut bar = Progress::new("filter", "prompts");
        let done = run_resumable(&loaded.model, &loaded.tokenizer, &facts, &unreadable, &config, &parts, &mut |d, t| bar.update(d, t))?;
        bar.finish();
        tables.remove_single_file_tables();
        // Counted from the tables as written, so a resumed run reports the reused parts too.
        let written = read_parts(&parts)?;
        for r in written.invalid() {
            eprintln!("filter: record {}: {}", r.id.map_or("?".to_string(), |i| i.to_string()), r.reason);
        }
        run.finish(done, &format!("{written}; wrote {} and {}", tables.filtered.display(), tables.rejected.display()), written.decisions())
    })
}
