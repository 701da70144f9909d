//! What every subcommand shares: model/backend/pipeline flags, where input paths come from,
//! numeric flags that must be positive, and the `--json` summary a stage prints.
//!
//! Paths: a path given as a flag is relative to the current directory; a path in a pipeline
//! file is relative to the directory that holds its `pipelines/` folder (or to the file's own
//! directory); a built-in default (`data/...`) is looked up in the current directory, then in
//! the workspace this binary was built from. An input that does not exist is reported with
//! the flag or pipeline key it came from.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use dissect_data::parts::RunSummary;
use dissect_model::backend::BackendKind;
use dissect_model::source::{describe, ModelHeader, DEFAULT_MODEL};
use serde::Serialize;

use crate::pipeline::Pipeline;
use crate::shard::ShardArgs;

/// The flags every subcommand that runs a model shares: a pipeline gives the defaults,
/// `--model` and `--backend` win over it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StageArgs {
    /// A pipeline (name in pipelines/ or a .toml path) giving every default below.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// `gemma3-270m` (the fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long)]
    pub model: Option<String>,
    /// `cpu` (the default) or `cuda` (a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long)]
    pub backend: Option<BackendKind>,
}

/// The flags every per-record stage (filter, cache, experiments) shares: which records, how
/// its outputs are cut, and how it reports.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Only the first N records: of the dataset (filter), of the kept records by id (cache,
    /// experiments). Every shard of a run with --limit N shares the same N.
    #[arg(long, value_parser = positive)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Records per Parquet part; a killed run redoes at most one part. Default: the stage's
    /// `chunk_size` in the pipeline, else 256 (filter), 32 (cache, experiments).
    #[arg(long, value_parser = positive)]
    pub chunk_size: Option<usize>,
    /// Recompute this shard's outputs even if they exist with the same parameters.
    #[arg(long)]
    pub force: bool,
    /// Print a summary of the run (records, chunks computed and reused, outputs) as JSON on
    /// stdout; logs stay on stderr.
    #[arg(long)]
    pub json: bool,
}

/// A per-record stage's run as it reports itself: the up-to-date check before the model is
/// loaded, the closing log line, and the `--json` summary.
pub struct StageRun<'a> {
    stage: &'static str,
    args: &'a RunArgs,
    started: Instant,
    records: usize,
    outputs: Vec<PathBuf>,
}

impl<'a> StageRun<'a> {
    /// `started`: when the subcommand began (its time is reported); `outputs`: what `--json`
    /// lists.
    pub fn new(stage: &'static str, args: &'a RunArgs, started: Instant, records: usize, outputs: Vec<PathBuf>) -> Self {
        StageRun { stage, args, started, records, outputs }
    }

    fn summary(&self, up_to_date: bool, done: RunSummary, extra: serde_json::Map<String, serde_json::Value>) -> StageSummary {
        StageSummary {
            stage: self.stage,
            up_to_date,
            records: self.records,
            chunks_computed: done.computed,
            chunks_reused: done.reused,
            outputs: self.outputs.clone(),
            seconds: self.started.elapsed().as_secs_f64(),
            extra,
        }
    }

    /// The step before loading the model: `--force` clears the outputs (`clear`); otherwise,
    /// when they are `current`, it says so about `what` (and prints the summary with `--json`,
    /// `extra` added). True when there is nothing left to do.
    pub fn nothing_to_do(
        &self,
        what: &Path,
        current: bool,
        n_chunks: usize,
        clear: impl FnOnce() -> Result<(), dissect_data::DataError>,
        extra: impl FnOnce() -> Result<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<bool> {
        if self.args.force {
            clear()?;
            return Ok(false);
        }
        if !current {
            return Ok(false);
        }
        log_up_to_date(self.stage, what);
        if self.args.json {
            self.summary(true, RunSummary { computed: 0, reused: n_chunks }, extra()?).print()?;
        }
        Ok(true)
    }

    /// The closing log line (`detail` follows the counts) and, with `--json`, the summary with
    /// `extra` added.
    pub fn finish(&self, done: RunSummary, detail: &str, extra: serde_json::Map<String, serde_json::Value>) -> Result<()> {
        eprintln!("{}: {} chunks computed, {} reused, {:.1}s; {detail}", self.stage, done.computed, done.reused, self.started.elapsed().as_secs_f64());
        if self.args.json {
            self.summary(false, done, extra).print()?;
        }
        Ok(())
    }
}

/// `--out`, else the pipeline's directory for the stage.
pub fn out_dir(flag: Option<&Path>, pipeline: Option<PathBuf>) -> Result<PathBuf> {
    match flag.map(Path::to_path_buf).or(pipeline) {
        Some(d) => Ok(d),
        None => bail!("--out is required without --pipeline\nhint: pass --out DIR, or --pipeline NAME"),
    }
}

/// What [`StageArgs`] resolve to.
pub struct Stage {
    pub pipeline: Option<Pipeline>,
    pub model: String,
    pub backend: BackendKind,
}

impl StageArgs {
    /// Loads the pipeline, picks model and backend, and checks that the backend can run here.
    pub fn resolve(&self) -> Result<Stage> {
        let pipeline = self.pipeline.as_deref().map(Pipeline::load).transpose()?;
        let p = pipeline.as_ref();
        let backend = self.backend.or(p.map(|p| p.backend)).unwrap_or_default();
        backend.check_available()?;
        let model = self.model.clone().or(p.map(|p| p.model.clone())).unwrap_or_else(|| DEFAULT_MODEL.into());
        Ok(Stage { pipeline, model, backend })
    }
}

impl Stage {
    /// The model's metadata and weight hash, read without loading the weights: enough to
    /// decide whether a stage's outputs are current.
    pub fn header(&self) -> Result<(ModelHeader, String)> {
        let header = describe(&self.model)?;
        let weights = dissect_filter::weights_sha256(&header.info)?;
        Ok((header, weights))
    }
}

/// An input path and where it came from, for error messages.
pub struct Input {
    pub path: PathBuf,
    origin: String,
}

impl Input {
    /// The flag's value, else the pipeline's (`key` names it), else the built-in `default`.
    pub fn pick(flag: Option<&Path>, flag_name: &str, pipeline: Option<(&Pipeline, &str, PathBuf)>, default: Option<&str>) -> Result<Input> {
        if let Some(f) = flag {
            return Ok(Input { path: f.to_path_buf(), origin: flag_name.to_string() });
        }
        if let Some((p, key, path)) = pipeline {
            return Ok(Input { path, origin: format!("`{key}` of the pipeline {}", p.file.display()) });
        }
        match default {
            Some(d) => Ok(Input { path: default_data(d), origin: format!("the default for {flag_name}") }),
            None => bail!("{flag_name} is required without --pipeline\nhint: pass {flag_name} PATH, or --pipeline NAME"),
        }
    }

    /// `--input` of the stages after the filter: the flag, else the pipeline's `filtered` table.
    pub fn kept_records(flag: Option<&Path>, pipeline: Option<&Pipeline>) -> Result<Input> {
        Input::pick(flag, "--input", pipeline.map(|p| (p, "out", p.filtered())), None)
    }

    /// The path, once it is known to exist.
    pub fn existing(&self) -> Result<&Path> {
        if self.path.exists() {
            return Ok(&self.path);
        }
        bail!(
            "{} does not exist (from {})\nhint: flags are relative to the current directory ({}); pipeline paths to the directory holding pipelines/",
            self.path.display(),
            self.origin,
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        )
    }
}

/// `data/<file>` in the current directory, else in the workspace this binary was built from.
fn default_data(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    if built.exists() {
        built
    } else {
        here
    }
}

/// A value parser for counts that must be at least 1.
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A value parser for a configuration enum's name as pipeline files write it (`logit-lens`,
/// `top-k`); an unknown one is refused with the names allowed.
pub fn config_name<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|e| e.to_string())
}

/// What a per-record stage did, printed by `--json` on stdout (logs stay on stderr).
#[derive(Debug, Serialize)]
pub struct StageSummary {
    pub stage: &'static str,
    /// True when every output was current and the model was not loaded.
    pub up_to_date: bool,
    pub records: usize,
    pub chunks_computed: usize,
    pub chunks_reused: usize,
    /// The directories or files the stage wrote.
    pub outputs: Vec<PathBuf>,
    pub seconds: f64,
    /// A stage's own entries (the filter's kept ids and rejections).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl StageSummary {
    pub fn print(&self) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, self)?;
        writeln!(stdout)?;
        Ok(())
    }
}

/// The line a stage logs when its outputs are current.
pub fn log_up_to_date(stage: &str, what: &Path) {
    eprintln!("{stage}: {} is up to date (same parameters); nothing to do\nhint: pass --force to run again", what.display());
}
