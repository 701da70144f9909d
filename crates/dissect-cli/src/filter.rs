use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::known::load_known_facts;
use dissect_data::provenance::sha256_file;
use dissect_data::Rejected;
use dissect_filter::{filter_provenance, outputs_are_current, run_filter_with_progress, weights_sha256, write_outputs, FilterOutput, OutputPaths};

use crate::backend::on_backend;
use dissect_model::source::load;

use crate::stage::{Stage, StageArgs};
use crate::progress::Progress;
use crate::shard::ShardArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// A JSON file in known_1000.json's format.
    #[arg(long, required_unless_present = "pipeline")]
    dataset: Option<PathBuf>,
    /// Directory for filtered.parquet and rejected.parquet (or their shard partitions).
    #[arg(long, required_unless_present = "pipeline")]
    out: Option<PathBuf>,
    /// Use only the first N records of the dataset.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// Prompts per forward pass (default 16).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Run even if the outputs exist with the same parameters.
    #[arg(long)]
    force: bool,
    /// Print {"kept":[ids..],"rejected":[{"id":..,"kind":..,"reason":..},..]} on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Stage { pipeline, model, backend } = args.stage.resolve()?;
    let p = pipeline.as_ref();
    let dataset = args.dataset.clone().or(p.map(|p| p.data.dataset.clone())).expect("clap requires --dataset without --pipeline");
    let out = args.out.clone().or(p.map(|p| p.out.clone())).expect("clap requires --out without --pipeline");
    let mut config = p.map(|p| p.filter.clone()).unwrap_or_default();
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    let shard = args.shard.resolve()?;
    let dataset_sha256 = sha256_file(&dataset)?;
    let (facts, mut rejected) = load_known_facts(&dataset, args.limit)?;
    let in_shard = |id: Option<u64>| shard.is_none_or(|s| s.owns(id));
    let facts: Vec<_> = facts.into_iter().filter(|f| in_shard(Some(f.known_id))).collect();
    rejected.retain(|r| in_shard(r.id));

    let started = Instant::now();
    on_backend!(backend, |B| {
        let loaded = load::<B>(&model, &Default::default()).with_context(|| format!("loading {model}"))?;
        let weights = weights_sha256(&loaded.info)?;
        let prov = filter_provenance(&loaded.info, weights, dataset_sha256, args.limit, shard, &config);
        let paths = OutputPaths::new(&out, shard);
        if !args.force && outputs_are_current(&paths, &prov.params_hash()) {
            eprintln!("filter: {} is up to date (same parameters); skipping\nhint: pass --force to run again", paths.filtered.display());
            if args.json {
                let kept = dissect_data::filtered::read_kept(&paths.filtered)?;
                let rejected = dissect_data::filtered::read_rejected(&paths.rejected)?;
                print_json(&FilterOutput { kept, rejected })?;
            }
            return Ok(());
        }
        eprintln!(
            "filter: {} records{} on {} (loaded in {:.1}s)",
            facts.len() + rejected.len(),
            shard.map(|s| format!(" in shard {s}")).unwrap_or_default(),
            model,
            started.elapsed().as_secs_f64()
        );

        let mut bar = Progress::new("filter", "prompts");
        let mut out = run_filter_with_progress(&loaded.model, &loaded.tokenizer, &facts, &config, &mut |d, t| bar.update(d, t))?;
        bar.finish();
        rejected.append(&mut out.rejected);
        out.rejected = rejected;
        write_outputs(&paths, &out, &prov)?;
        report(&out, &paths, started);
        if args.json {
            print_json(&out)?;
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

fn print_json(out: &FilterOutput) -> Result<()> {
    let rejected: Vec<_> =
        out.rejected.iter().map(|r| serde_json::json!({"id": r.id, "kind": r.reason.kind(), "reason": r.reason.to_string()})).collect();
    let v = serde_json::json!({"kept": out.kept.iter().map(|k| k.id).collect::<Vec<_>>(), "rejected": rejected});
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &v)?;
    writeln!(stdout)?;
    Ok(())
}
