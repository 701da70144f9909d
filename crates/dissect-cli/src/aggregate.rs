use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dissect_aggregate::{aggregate, outputs_are_current, AggregateConfig, Summary};

use crate::pipeline::Pipeline;
use crate::stage::Input;

#[derive(clap::Args)]
pub struct Args {
    /// A pipeline (name in pipelines/ or a .toml path) giving every default below.
    #[arg(long)]
    pipeline: Option<String>,
    /// The experiments stage's output: one directory (or `.parquet`) per table, each a
    /// directory of shards is read as their union.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Directory for tables/, figures/, report.md, report.html and summary.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the filter's `filtered/` and `rejected/` tables are; default:
    /// the input directory if they are there, else its parent.
    #[arg(long)]
    filter_dir: Option<PathBuf>,
    /// Seed of the bootstrap (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Bootstrap resamples (default 1000).
    #[arg(long, value_parser = crate::stage::positive)]
    resamples: Option<usize>,
    /// Recompute the report even if it exists for the same inputs and settings.
    #[arg(long)]
    force: bool,
    /// Print the summary (paths, counts, findings and their numbers) as JSON on stdout
    /// instead of the report's path.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let pipeline = args.pipeline.as_deref().map(Pipeline::load).transpose()?;
    let p = pipeline.as_ref();
    let input = Input::pick(args.input.as_deref(), "--input", p.map(|p| (p, "out", p.experiments_dir())), None)?;
    let input = input.existing()?.to_path_buf();
    let out = args.out.clone().or(p.map(Pipeline::report_dir)).context("--out is required without --pipeline\nhint: pass --out DIR, or --pipeline NAME")?;
    let defaults = AggregateConfig::default();
    let cfg = AggregateConfig {
        seed: args.seed.or(p.map(|p| p.aggregate.seed)).unwrap_or(defaults.seed),
        resamples: args.resamples.or(p.map(|p| p.aggregate.resamples)).unwrap_or(defaults.resamples),
        filter_dir: args.filter_dir.clone().or(p.map(|p| p.out.clone())),
        ..defaults
    };
    if !args.force && outputs_are_current(&input, &out, &cfg) {
        crate::stage::log_up_to_date("aggregate", &out);
        let summary = Summary::read(&out).context("reading the previous summary.json")?;
        return print(&summary, args.json);
    }
    let started = Instant::now();
    eprintln!("aggregate: {} → {} ({} resamples, seed {})", input.display(), out.display(), cfg.resamples, cfg.seed);
    let summary = aggregate(&input, &out, &cfg).with_context(|| format!("aggregating {}", input.display()))?;
    for c in &summary.counts {
        eprintln!("aggregate: {:<34} {}", c.name, c.value);
    }
    for f in &summary.findings {
        let held = f.criteria.iter().filter(|c| c.holds).count();
        eprintln!("aggregate: {} — {} ({held}/{} criteria)", f.title, f.verdict.label(), f.criteria.len());
    }
    eprintln!("aggregate: wrote {} tables and {} figures in {:.1}s", summary.tables.len(), summary.figures.len(), started.elapsed().as_secs_f64());
    print(&summary, args.json)
}

fn print(summary: &Summary, json: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, summary)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{}", summary.report_html.display())?;
    }
    Ok(())
}
