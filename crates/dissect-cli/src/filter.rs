use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::known::load_known_facts;
use dissect_data::provenance::sha256_file;
use dissect_data::Rejected;
use dissect_filter::{filter_provenance, outputs_are_current, run_filter_with_progress, write_outputs, FilterOutput, OutputPaths};
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::progress::Progress;
use crate::shard::ShardArgs;
use crate::stage::{log_up_to_date, out_dir, positive, Input, RunArgs, StageArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The facts: a JSON array of records in known_1000.json's format (see the README).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Directory for filtered.parquet and rejected.parquet (or their shard partitions).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N records of the dataset.
    #[arg(long, value_parser = positive)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
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
    let out = out_dir(args.out.as_deref(), p.map(|p| p.out.clone()))?;
    let mut config = p.map(|p| p.filter.clone()).unwrap_or_default();
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    let shard = args.shard.resolve()?;
    let dataset_sha256 = sha256_file(dataset.existing()?)?;
    let (header, weights) = stage.header()?;
    let prov = filter_provenance(&header.info, weights, dataset_sha256, args.limit, shard, &config);
    let paths = OutputPaths::new(&out, shard);
    if !args.run.force && outputs_are_current(&paths, &prov.params_hash()) {
        log_up_to_date("filter", &paths.filtered);
        if args.run.json {
            let kept = dissect_data::filtered::read_kept(&paths.filtered)?;
            let rejected = dissect_data::filtered::read_rejected(&paths.rejected)?;
            print_json(&FilterOutput { kept, rejected }, &paths, true, started)?;
        }
        return Ok(());
    }
    let (facts, mut rejected) = load_known_facts(&dataset.path, args.limit)?;
    let in_shard = |id: Option<u64>| shard.is_none_or(|s| s.owns(id));
    let facts: Vec<_> = facts.into_iter().filter(|f| in_shard(Some(f.known_id))).collect();
    rejected.retain(|r| in_shard(r.id));

    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        eprintln!(
            "filter: {} records{} on {model} (loaded in {:.1}s)",
            facts.len() + rejected.len(),
            shard.map(|s| format!(" in shard {s}")).unwrap_or_default(),
            started.elapsed().as_secs_f64()
        );
        let mut bar = Progress::new("filter", "prompts");
        let mut out = run_filter_with_progress(&loaded.model, &loaded.tokenizer, &facts, &config, &mut |d, t| bar.update(d, t))?;
        bar.finish();
        rejected.append(&mut out.rejected);
        out.rejected = rejected;
        write_outputs(&paths, &out, &prov)?;
        report(&out, &paths, started);
        if args.run.json {
            print_json(&out, &paths, false, started)?;
        }
        Ok(())
    })
}

fn report(out: &FilterOutput, paths: &OutputPaths, started: Instant) {
    let total = out.kept.len() + out.rejected.len();
    let wrong = out.rejected.iter().filter(|r| !r.reason.is_invalid_input()).count();
    let invalid: Vec<&Rejected> = out.rejected.iter().filter(|r| r.reason.is_invalid_input()).collect();
    let pct = if total == 0 { 0.0 } else { 100.0 * out.kept.len() as f64 / total as f64 };
    eprintln!(
        "filter: kept {} of {total} ({pct:.1}%); rejected {wrong} wrong predictions and {} invalid records; {:.1}s",
        out.kept.len(),
        invalid.len(),
        started.elapsed().as_secs_f64()
    );
    for r in invalid {
        eprintln!("filter: record {}: {}", r.id.map_or("?".to_string(), |i| i.to_string()), r.reason);
    }
    eprintln!("filter: wrote {} and {}", paths.filtered.display(), paths.rejected.display());
}

fn print_json(out: &FilterOutput, paths: &OutputPaths, up_to_date: bool, started: Instant) -> Result<()> {
    let rejected: Vec<_> = out.rejected.iter().map(|r| serde_json::json!({"id": r.id, "kind": r.reason.kind(), "reason": r.reason.to_string()})).collect();
    let v = serde_json::json!({
        "stage": "filter",
        "up_to_date": up_to_date,
        "records": out.kept.len() + out.rejected.len(),
        "outputs": [&paths.filtered, &paths.rejected],
        "seconds": started.elapsed().as_secs_f64(),
        "kept": out.kept.iter().map(|k| k.id).collect::<Vec<_>>(),
        "rejected": rejected,
    });
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &v)?;
    writeln!(stdout)?;
    Ok(())
}
