use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dissect_data::known::load_known_facts;
use dissect_data::provenance::sha256_file;
use dissect_data::{Rejected, ShardSpec};
use dissect_filter::{filter_provenance, outputs_are_current, run_filter_with_progress, weights_sha256, write_outputs, FilterConfig, FilterOutput, OutputPaths};
use dissect_model::backend::{BackendKind, Cpu};
use dissect_model::source::load;

#[derive(clap::Args)]
pub struct Args {
    /// `gemma3-270m` (fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    /// A JSON file in known_1000.json's format.
    #[arg(long)]
    dataset: PathBuf,
    /// Directory for filtered.parquet and rejected.parquet (or their shard partitions).
    #[arg(long)]
    out: PathBuf,
    /// Use only the first N records of the dataset.
    #[arg(long)]
    limit: Option<usize>,
    /// Run shard i of n (0-based).
    #[arg(long, conflicts_with = "shards")]
    shard: Option<String>,
    /// Run one shard of n, its index taken from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.
    #[arg(long)]
    shards: Option<u32>,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Run even if the outputs exist with the same parameters.
    #[arg(long)]
    force: bool,
    /// Print {"kept":[ids..],"rejected":[{"id":..,"kind":..,"reason":..},..]} on stdout.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

pub fn run(args: Args) -> Result<()> {
    args.backend.check_available()?;
    let shard = match (&args.shard, args.shards) {
        (Some(s), _) => Some(ShardSpec::parse(s)?),
        (None, Some(n)) => match ShardSpec::from_env(n)? {
            Some(s) => Some(s),
            None => bail!("--shards {n} needs the task index in SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX\nhint: set one of them, or pass --shard i/{n}"),
        },
        (None, None) => None,
    };
    let config = FilterConfig { batch_size: args.batch_size };
    let dataset_sha256 = sha256_file(&args.dataset)?;
    let (facts, mut rejected) = load_known_facts(&args.dataset, args.limit)?;
    let in_shard = |id: Option<u64>| shard.is_none_or(|s| id.map_or(s.index == 0, |id| s.contains(id)));
    let facts: Vec<_> = facts.into_iter().filter(|f| in_shard(Some(f.known_id))).collect();
    // Records without an id are reported by shard 0 only, so the shards' union has each once.
    rejected.retain(|r| in_shard(r.id));

    let started = Instant::now();
    let loaded = load::<Cpu>(&args.model, &Default::default()).with_context(|| format!("loading {}", args.model))?;
    let weights = weights_sha256(&loaded.info)?;
    let prov = filter_provenance(&loaded.info, weights, dataset_sha256, args.limit, shard, &config);
    let paths = OutputPaths::new(&args.out, shard);
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
        args.model,
        started.elapsed().as_secs_f64()
    );

    let mut bar = Progress::new();
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

/// Progress with an ETA on stderr: one rewritten line on a terminal, a line per tenth in a log.
struct Progress {
    started: Instant,
    tty: bool,
    last_tenth: usize,
}

impl Progress {
    fn new() -> Self {
        Progress { started: Instant::now(), tty: std::io::stderr().is_terminal(), last_tenth: 0 }
    }

    fn update(&mut self, done: usize, total: usize) {
        let tenth = if total == 0 { 10 } else { done * 10 / total };
        if !self.tty && tenth == self.last_tenth {
            return;
        }
        self.last_tenth = tenth;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if done == 0 { 0.0 } else { elapsed / done as f64 * (total - done) as f64 };
        let line = format!("filter: {done}/{total} prompts, {elapsed:.0}s elapsed, ETA {eta:.0}s");
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
