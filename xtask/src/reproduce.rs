//! `cargo xtask reproduce`: the whole paper in one command. Fetches the model when the pipeline
//! says how, builds the `dissect` binary, and runs its stages one after the other as separate
//! processes: filter → cache → experiments → aggregate. Each stage skips work whose outputs
//! exist with the same parameters (the cache and experiments stages per chunk of records), so a
//! killed run is resumed by running the same command again, and a changed experiment parameter
//! reruns the experiments and the aggregate only: the activation cache is reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::fetch_model;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A pipeline name (a file in pipelines/) or a path to a pipeline .toml.
    #[arg(long, default_value = "gemma3-270m")]
    pipeline: String,
    /// Only the first N records of the dataset.
    #[arg(long)]
    limit: Option<usize>,
    /// cpu or cuda (default: the pipeline's).
    #[arg(long)]
    backend: Option<String>,
    /// Recompute every stage, even those whose outputs are current.
    #[arg(long, conflicts_with = "from")]
    force: bool,
    /// Recompute this stage (filter, cache, experiments or aggregate) and the ones after it.
    #[arg(long, value_name = "STAGE")]
    from: Option<String>,
    /// Run the per-record stages for shard i of n only (no aggregation).
    #[arg(long, conflicts_with = "aggregate_only")]
    shard: Option<String>,
    /// Run one shard of n, its index taken from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.
    #[arg(long, conflicts_with_all = ["shard", "aggregate_only"])]
    shards: Option<u32>,
    /// Aggregate the shards already written.
    #[arg(long)]
    aggregate_only: bool,
}

const STAGES: [&str; 4] = ["filter", "cache", "experiments", "aggregate"];
/// The last per-record stage; after it only the aggregate, which reads every shard.
const LAST_PER_RECORD: usize = 2;

impl Args {
    /// A plain `cargo xtask reproduce --pipeline P [--limit N]`.
    pub fn plain(pipeline: &str, limit: Option<usize>) -> Self {
        Args { pipeline: pipeline.into(), limit, backend: None, force: false, from: None, shard: None, shards: None, aggregate_only: false }
    }
}

/// Runs the chain; returns the seconds the stages took (after the model fetch and the build).
pub fn run(args: &Args) -> Result<f64> {
    let root = crate::workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    let pipeline_file = pipeline_file(&args.pipeline)?;
    let text = std::fs::read_to_string(&pipeline_file).with_context(|| format!("reading {}", pipeline_file.display()))?;
    // Only what the driver itself needs; the stages read the whole file.
    let table: toml::Table = text.parse().with_context(|| format!("{}: not valid TOML", pipeline_file.display()))?;
    let backend = args.backend.clone().or_else(|| table.get("backend").and_then(|v| v.as_str()).map(str::to_string)).unwrap_or_else(|| "cpu".into());
    let out = table.get("out").and_then(|v| v.as_str()).map(PathBuf::from).unwrap_or_default();
    let forced_from = match &args.from {
        Some(s) => Some(STAGES.iter().position(|x| x == s).with_context(|| format!("unknown stage `--from {s}`\nhint: one of {}", STAGES.join(", ")))?),
        None => args.force.then_some(0),
    };
    let started = Instant::now();

    if let Some(name) = table.get("fetch").and_then(|v| v.as_str()) {
        let path = fetch_model::run(name)?;
        // The stages find a named model through these variables when it lives elsewhere.
        if name == "gemma3-270m" {
            std::env::set_var("DISSECT_GEMMA_GGUF", &path);
        }
    }
    let dissect = build_dissect(&backend)?;

    let built = Instant::now();
    let pipeline = pipeline_file.to_string_lossy().into_owned();
    let mut shard_args: Vec<String> = Vec::new();
    if let Some(s) = &args.shard {
        shard_args = vec!["--shard".into(), s.clone()];
    } else if let Some(n) = args.shards {
        shard_args = vec!["--shards".into(), n.to_string()];
    }
    let per_record = !args.aggregate_only;
    let aggregate = args.shard.is_none() && args.shards.is_none();
    // --limit counts dataset records: it goes to the filter only, and the later stages take
    // every record the filter kept.
    let plan: Vec<(usize, Vec<String>)> = vec![
        (0, [vec!["filter".into()], limit_args(args.limit)].concat()),
        (1, vec!["cache".into()]),
        (2, vec!["experiments".into()]),
        (3, vec!["aggregate".into()]),
    ];
    for (i, mut stage_args) in plan {
        let run_it = if i <= LAST_PER_RECORD { per_record } else { aggregate };
        if !run_it {
            continue;
        }
        stage_args.extend(["--pipeline".into(), pipeline.clone()]);
        if i <= LAST_PER_RECORD {
            stage_args.extend(["--backend".into(), backend.clone()]);
            stage_args.extend(shard_args.iter().cloned());
        }
        if forced_from.is_some_and(|f| i >= f) {
            stage_args.push("--force".into());
        }
        eprintln!("== [{}/{}] {} ({:.0}s so far)", i + 1, STAGES.len(), STAGES[i], started.elapsed().as_secs_f64());
        let status = Command::new(&dissect).args(&stage_args).status().with_context(|| format!("running {}", dissect.display()))?;
        if !status.success() {
            bail!("stage {} failed ({status})\nhint: fix the error above and run the same command again: finished work is kept", STAGES[i]);
        }
    }
    eprintln!("== done in {:.1}s (stages {:.2}s, after the model fetch and build)", started.elapsed().as_secs_f64(), built.elapsed().as_secs_f64());
    if aggregate {
        let report = pipeline_base(&pipeline_file).join(&out).join("report").join("report.md");
        use std::io::Write;
        writeln!(std::io::stdout(), "{}", report.display())?;
    }
    Ok(built.elapsed().as_secs_f64())
}

fn limit_args(limit: Option<usize>) -> Vec<String> {
    limit.map(|n| vec!["--limit".to_string(), n.to_string()]).unwrap_or_default()
}

/// The directory a pipeline's relative paths are taken from, as the stages take them: the one
/// holding `pipelines/` for a file in a `pipelines/` directory, else the file's own directory.
fn pipeline_base(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("."));
    match parent.file_name() {
        Some(n) if n == "pipelines" => parent.parent().unwrap_or(parent).to_path_buf(),
        _ => parent.to_path_buf(),
    }
}

fn pipeline_file(name: &str) -> Result<PathBuf> {
    let p = PathBuf::from(name);
    if p.extension().is_some_and(|e| e == "toml") {
        return std::fs::canonicalize(&p).with_context(|| format!("pipeline file {} not found", p.display()));
    }
    let p = crate::workspace_root().join("pipelines").join(format!("{name}.toml"));
    if !p.is_file() {
        bail!("no pipeline named `{name}`\nhint: the names are the files in pipelines/, or pass a path to a .toml file");
    }
    Ok(p)
}

/// Builds the `dissect` binary into the shared target directory and returns its path.
///
/// The release profile: the dev profile (what the tests use) keeps debug assertions in the
/// dependencies, and gemm's kernels run the vocabulary projection at ~110 GFLOP/s there against
/// ~170 in release (`cargo run [--release] -p dissect-model --example proj_bench 256`).
fn build_dissect(backend: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--release", "-p", "dissect-cli"]);
    if backend == "cuda" {
        cmd.args(["--features", "cuda"]);
    }
    let status = cmd.status().context("building dissect")?;
    if !status.success() {
        bail!("building dissect failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::workspace_root().join("target"));
    let bin = target.join("release").join("dissect");
    if !bin.is_file() {
        bail!("{} was not built\nhint: is CARGO_TARGET_DIR the same for cargo xtask and cargo build?", bin.display());
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_directory_the_stages_use() {
        assert_eq!(pipeline_base(Path::new("/w/pipelines/gemma3-270m.toml")), Path::new("/w"));
        assert_eq!(pipeline_base(Path::new("/w/examples/my_facts.toml")), Path::new("/w/examples"));
    }
}
