use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_data::known::load_known_facts;
use dissect_data::provenance::sha256_file;
use dissect_data::Rejected;
use dissect_data::ShardSpec;
use dissect_filter::{filter_parts, filter_provenance, read_parts, run_resumable, FilterOutput, FilterTables};
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::progress::Progress;
use crate::shard::ShardArgs;
use crate::stage::{out_dir, positive, Input, RunArgs, StageArgs, StageSummary};

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
    /// Use only the first N records of the dataset.
    #[arg(long, value_parser = positive)]
    limit: Option<usize>,
    #[command(flatten)]
    shard: ShardArgs,
    /// Prompts per forward pass (default 16).
    #[arg(long, value_parser = positive)]
    batch_size: Option<usize>,
    /// Facts per Parquet part (default 256); a killed run redoes at most one part.
    #[arg(long, value_parser = positive)]
    chunk_size: Option<usize>,
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
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.chunk_size = args.chunk_size.unwrap_or(config.chunk_size);
    config.check()?;
    let shard = args.shard.resolve()?;
    let dataset_sha256 = sha256_file(dataset.existing()?)?;

    let (facts, mut unreadable) = load_known_facts(&dataset.path, args.limit)?;
    let facts: Vec<_> = facts.into_iter().filter(|f| shard.contains(f.known_id)).collect();
    unreadable.retain(|r| shard.owns(r.id));

    let (header, weights) = stage.header()?;
    let prov = filter_provenance(&header.info, weights, dataset_sha256, args.limit, shard, &config);
    let tables = FilterTables::new(&out);
    let parts = filter_parts(&tables, shard, facts.len(), &config, &prov);
    let records = facts.len() + unreadable.len();
    let summary = |up_to_date, computed, reused, extra| StageSummary {
        stage: "filter",
        up_to_date,
        records,
        chunks_computed: computed,
        chunks_reused: reused,
        outputs: vec![tables.filtered.clone(), tables.rejected.clone()],
        seconds: started.elapsed().as_secs_f64(),
        extra,
    };
    let shard_dir = tables.filtered.join(shard.dir_name());
    let current = parts.all_current();
    // `--json` on a current run reports the decisions read back from the parts.
    let extra = if args.run.json && current && !args.run.force { decisions(&read_parts(&parts)?) } else { Default::default() };
    if args.run.nothing_to_do("filter", &shard_dir, current, || parts.clear(), || summary(true, 0, parts.n_chunks(), extra))? {
        return Ok(());
    }
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        eprintln!(
            "filter: {records} records{} on {model} (loaded in {:.1}s)",
            if shard == ShardSpec::WHOLE { String::new() } else { format!(" in shard {shard}") },
            started.elapsed().as_secs_f64()
        );
        let mut bar = Progress::new("filter", "prompts");
        let done = run_resumable(&loaded.model, &loaded.tokenizer, &facts, &unreadable, &config, &parts, &mut |d, t| bar.update(d, t))?;
        bar.finish();
        remove_single_file_tables(&out);
        let written = read_parts(&parts)?;
        report(&written, &tables, done.computed, done.reused, started);
        if args.run.json {
            summary(false, done.computed, done.reused, decisions(&written)).print()?;
        }
        Ok(())
    })
}

/// Earlier versions wrote each table as one file beside the directories; readers must not
/// find two versions of a table.
fn remove_single_file_tables(out: &Path) {
    for name in ["filtered.parquet", "rejected.parquet"] {
        let _ = std::fs::remove_file(out.join(name));
    }
}

/// `kept` (ids) and `rejected` (id, kind, reason) of this shard, for `--json`.
fn decisions(out: &FilterOutput) -> serde_json::Map<String, serde_json::Value> {
    let kept: Vec<u64> = out.kept.iter().map(|k| k.id).collect();
    let rejected: Vec<_> = out.rejected.iter().map(|r| serde_json::json!({"id": r.id, "kind": r.reason.kind(), "reason": r.reason.to_string()})).collect();
    let mut m = serde_json::Map::new();
    m.insert("kept".into(), kept.into());
    m.insert("rejected".into(), rejected.into());
    m
}

/// Counts from this shard's tables as written, so a resumed run reports the reused parts too.
fn report(out: &FilterOutput, tables: &FilterTables, computed: usize, reused: usize, started: Instant) {
    let kept = out.kept.len();
    let total = kept + out.rejected.len();
    let invalid: Vec<&Rejected> = out.rejected.iter().filter(|r| r.reason.is_invalid_input()).collect();
    let wrong = out.rejected.len() - invalid.len();
    let pct = if total == 0 { 0.0 } else { 100.0 * kept as f64 / total as f64 };
    eprintln!(
        "filter: kept {kept} of {total} ({pct:.1}%); rejected {wrong} wrong predictions and {} invalid records; {computed} chunks computed, {reused} reused; {:.1}s",
        invalid.len(),
        started.elapsed().as_secs_f64()
    );
    for r in invalid {
        eprintln!("filter: record {}: {}", r.id.map_or("?".to_string(), |i| i.to_string()), r.reason);
    }
    eprintln!("filter: wrote {} and {}", tables.filtered.display(), tables.rejected.display());
}
