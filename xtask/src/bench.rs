//! `cargo xtask bench forward|knockout|projection|rerun|experiments`: dissect against a reference (Hugging Face
//! transformers on PyTorch CPU, or MKL inside PyTorch) on the same model file, prompts or shapes, in one invocation, with the ratio printed.
//!
//! Ours runs as the `bench` example of dissect-cli (crates/dissect-cli/examples/bench.rs), outside the user's binary, theirs as
//! `python3 bench/hf_*.py`; each prints one JSON object, which is compared here. The two run one
//! after the other, never together: on a small machine they would fight over the same cores.
//! Both get the same number of threads (rayon's default, the number of CPUs, and
//! `torch.set_num_threads` of the same number), and neither clock includes loading the model.
//! Logs go to stderr, the result table to stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::command::{parse_json, render};
use crate::{fetch_model, models};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Tokens/s of the forward pass plus next-token probabilities.
    Forward,
    /// The attention-knockout sweep vs a notebook-style implementation.
    Knockout,
    /// The f32 vocabulary projection (Gemma's 640 × 262,144 unembedding) against MKL's sgemm
    /// inside PyTorch, the same shapes and threads in one process (the `proj_kernels` example,
    /// always built in release: debug assertions slow gemm's kernels several-fold).
    Projection,
    /// `cargo xtask reproduce --limit N` with nothing left to do (after a run that did the
    /// work): the seconds its stages take, against the 2 s goal.
    Rerun,
    /// The experiments stage on the same kept facts with the screen (the default) and with
    /// the f32 path alone (`--screen off`), and with `--baseline BIN` an older build too: the
    /// seconds per fact of each experiment, and every table compared value for value.
    Experiments,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    kind: Kind,
    /// A model of `cargo xtask fetch-model` (fetched if missing) or a .gguf file: the Python side
    /// loads GGUF only.
    #[arg(long, default_value = models::DEFAULT)]
    model: String,
    /// Prompt records (JSON array or JSONL, with "prompt" and, for knockout, "subject").
    #[arg(long, default_value = "data/known_1000.json")]
    prompts: PathBuf,
    /// The first N records. Default: 64 (forward), 20 (knockout).
    #[arg(long)]
    limit: Option<usize>,
    /// Forward: rows per batch, comma-separated; every value is timed on both sides.
    #[arg(long, default_value = "16,1")]
    batch: String,
    /// Projection: rows per call, comma-separated.
    #[arg(long, default_value = "8,64,256")]
    rows: String,
    /// Forward: timed passes after the warm-up (the best is compared). Experiments: rounds of
    /// the runs, in alternating order (each experiment's best round is compared). Default: 3
    /// (forward), 2 (experiments).
    #[arg(long)]
    repeat: Option<usize>,
    /// Knockout: let the Python side unembed every position, as the notebook does (by default it
    /// unembeds only the last one, which is faster and so the stricter comparison).
    #[arg(long)]
    all_logits: bool,
    /// Threads for both sides (default: the number of CPUs, which is rayon's default).
    #[arg(long)]
    threads: Option<usize>,
    /// The Python interpreter that has torch and transformers.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Rerun: the pipeline to reproduce (a name in pipelines/ or a .toml path).
    #[arg(long, default_value = "gemma3-270m")]
    pipeline: String,
    /// Experiments: a `dissect` binary of another build (say main's before a change) timed on the
    /// same facts; its tables are not compared.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Build and run ours with the release profile. The workspace's dev profile is optimised
    /// but keeps debug assertions, which slow gemm's kernels several-fold.
    #[arg(long)]
    release: bool,
}

/// The speed and agreement goals the benchmarks check.
const FORWARD_GOAL: f64 = 1.0;
const KNOCKOUT_GOAL: f64 = 25.0;
const KNOCKOUT_MAX_PP: f64 = 0.5;

/// Our f32 projection's GFLOP/s over MKL's on the same shapes, at the largest row count.
const PROJECTION_GOAL: f64 = 0.9;

/// A no-op rerun must not load the model: ≤ 2 s for the stages (after the build).
const RERUN_GOAL_S: f64 = 2.0;

pub(crate) fn run(args: &Args) -> Result<()> {
    if args.kind == Kind::Rerun {
        return rerun(&args.pipeline, args.limit.unwrap_or(6));
    }
    if args.kind == Kind::Projection {
        return projection(args);
    }
    if args.kind == Kind::Experiments {
        return experiments(args);
    }
    let root = crate::workspace_root();
    let gguf = model_file(&args.model)?;
    let prompts = std::path::absolute(&args.prompts)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    check_python(&args.python, &root)?;
    let limit = args.limit.unwrap_or(match args.kind {
        Kind::Forward => 64,
        Kind::Knockout | Kind::Rerun | Kind::Projection | Kind::Experiments => 20,
    });
    let (sub, script) = match args.kind {
        Kind::Forward => ("forward", "bench/hf_forward.py"),
        Kind::Knockout => ("knockout", "bench/hf_knockout.py"),
        Kind::Rerun | Kind::Projection | Kind::Experiments => unreachable!("handled above"),
    };
    let common = ["--prompts".to_string(), prompts.display().to_string(), "--limit".into(), limit.to_string()];
    let load_before = load_average();

    // Ours. `cargo run` builds first when needed (the dev profile is optimised in this
    // workspace); the timings are taken inside the binary, so the build is not in them.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut ours_cmd = Command::new(&cargo);
    ours_cmd.current_dir(&root).args(["run", "--quiet", "-p", "dissect-cli", "--example", "bench"]);
    if args.release {
        ours_cmd.arg("--release");
    }
    ours_cmd.args(["--", sub]);
    ours_cmd.args(["--model".into(), gguf.display().to_string()]).args(&common);
    if args.kind == Kind::Forward {
        ours_cmd.args(["--batch", &args.batch, "--repeat", &args.repeat.unwrap_or(3).to_string()]);
    }
    ours_cmd.env("RAYON_NUM_THREADS", threads.to_string());
    eprintln!("== dissect: {}", render(&ours_cmd));
    let ours = run_json(ours_cmd, "the bench example")?;

    // Theirs.
    let mut hf_cmd = Command::new(&args.python);
    hf_cmd.current_dir(&root).arg(script).args(["--gguf".into(), gguf.display().to_string()]).args(&common);
    hf_cmd.args(["--threads", &threads.to_string()]);
    if args.kind == Kind::Forward {
        for b in args.batch.split(',') {
            hf_cmd.args(["--batch", b.trim()]);
        }
        hf_cmd.args(["--repeat", &args.repeat.unwrap_or(3).to_string()]);
    }
    if args.kind == Kind::Knockout && args.all_logits {
        hf_cmd.arg("--all-logits");
    }
    eprintln!("== hugging face: {}", render(&hf_cmd));
    let hf = run_json(hf_cmd, "the Hugging Face reference")?;

    let load_after = load_average();
    let mut out = std::io::stdout().lock();
    let name = Path::new(&args.model).file_name().map_or(args.model.clone(), |n| n.to_string_lossy().into_owned());
    writeln!(
        out,
        "model {name} ({}), {} threads each (rayon {}, torch {}), torch {}, transformers {}",
        gguf.display(),
        threads,
        ours["threads"],
        hf["threads"],
        str_of(&hf["torch"]),
        str_of(&hf["transformers"]),
    )?;
    // Other work on the machine (say a build) skews both sides, PyTorch's spinning OpenMP
    // threads especially: the load average says how quiet it was.
    writeln!(out, "load average (1 min) before {load_before}, after {load_after}")?;
    match args.kind {
        Kind::Forward => forward_table(&mut out, &ours, &hf),
        Kind::Knockout => knockout_table(&mut out, &ours, &hf, args.all_logits),
        Kind::Rerun | Kind::Projection | Kind::Experiments => unreachable!("handled above"),
    }?;
    writeln!(out, "dissect built with the {} profile", if args.release { "release" } else { "dev" })?;
    Ok(())
}

/// `proj_kernels` with our kernel and MKL's two output layouts, then the ratio per row count.
fn projection(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let probe = Command::new(&args.python)
        .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libtorch_cpu.so'))"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{}`\nhint: install Python 3 or pass --python <interpreter>", args.python))?;
    if !probe.status.success() {
        bail!("the MKL reference is PyTorch's: `import torch` failed\nhint: pip install torch");
    }
    let mkl = String::from_utf8(probe.stdout)?.trim().to_owned();
    let json = tempfile::NamedTempFile::new()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args(["run", "--quiet", "--release", "-p", "dissect-model", "--example", "proj_kernels", "--", &args.rows]);
    cmd.env("PROJ_ONLY", "burn,dissect,gemm-api,mkl,mkl-t").env("PROJ_THREADS", threads.to_string()).env("PROJ_MKL_LIB", &mkl).env("PROJ_JSON", json.path());
    eprintln!("== {}", render(&cmd));
    // The example's own table (every kernel, the load average) goes to stderr with the logs.
    let out = cmd.stderr(Stdio::inherit()).output().context("cannot start the proj_kernels example")?;
    std::io::stderr().write_all(&out.stdout)?;
    if !out.status.success() {
        bail!("the proj_kernels example failed ({})", out.status);
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(json.path())?).context("parsing the proj_kernels JSON")?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "f32 vocabulary projection [rows x {}] . [{} x {}], {threads} threads, median of {} rounds",
        doc["hidden"], doc["hidden"], doc["vocab"], doc["rounds"]
    )?;
    writeln!(o, "{:>6} {:>16} {:>16} {:>16} {:>12} {:>8}", "rows", "dissect GFLOP/s", "burn GFLOP/s", "MKL best GFLOP/s", "dissect/MKL", "top-10")?;
    let empty = Vec::new();
    let mut last = f64::NAN;
    for r in doc["results"].as_array().unwrap_or(&empty) {
        let k = &r["kernels"];
        let mkl_best = f(&k["mkl"]["gflops"]).max(f(&k["mkl-t"]["gflops"]));
        last = f(&k["dissect"]["vs_mkl_best"]);
        let same = if k["dissect"]["top10_equal"] == Value::Bool(true) { "equal" } else { "DIFFER" };
        writeln!(o, "{:>6} {:>16.1} {:>16.1} {:>16.1} {:>11.2}x {:>8}", r["rows"], f(&k["dissect"]["gflops"]), f(&k["burn"]["gflops"]), mkl_best, last, same)?;
    }
    let verdict = if last >= PROJECTION_GOAL { "met" } else { "NOT met" };
    writeln!(o, "\ngoal: within 10% of MKL at the largest row count (ratio >= {PROJECTION_GOAL}): {verdict} ({last:.2}x)")?;
    writeln!(o, "(ratios are medians over rounds of per-round ratios, so both sides saw the same load)")?;
    Ok(())
}

/// The model file both sides load: a registry model (fetched when missing) or a .gguf path.
fn model_file(spec: &str) -> Result<PathBuf> {
    if models::find(spec).is_some() {
        return fetch_model::run(spec);
    }
    let path = PathBuf::from(spec);
    if path.extension().is_some_and(|e| e == "gguf") && path.is_file() {
        return Ok(std::path::absolute(path)?);
    }
    bail!("cannot benchmark `{spec}`: the Hugging Face side needs a GGUF file\nhint: use one of {} or a path to a .gguf file", models::names().join(", "))
}

fn check_python(python: &str, root: &Path) -> Result<()> {
    let hint = "hint: pip install torch transformers gguf accelerate";
    let probe = Command::new(python).current_dir(root).args(["-c", "import torch, transformers, gguf"]).stdout(Stdio::null()).stderr(Stdio::piped()).output();
    match probe {
        Err(e) => bail!("cannot run `{python}`: {e}\nhint: install Python 3 or pass --python <interpreter>\n{hint}"),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("import failed");
            bail!("the Hugging Face reference needs torch, transformers and gguf: {last}\n{hint}")
        }
        Ok(_) => Ok(()),
    }
}

/// Runs a benchmark side with its logs passed through and parses the JSON it prints.
fn run_json(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("cannot start {what} ({})", render(&cmd)))?;
    if !out.status.success() {
        // bench/_common.py exits with 3 when an import fails.
        let hint = if out.status.code() == Some(3) { "\nhint: pip install torch transformers gguf accelerate" } else { "" };
        bail!("{what} failed ({}){hint}", out.status);
    }
    let text = String::from_utf8(out.stdout).context("benchmark output is not UTF-8")?;
    parse_json(&text).with_context(|| format!("parsing the JSON of {what}"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

fn str_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn forward_table(out: &mut impl Write, ours: &Value, hf: &Value) -> Result<()> {
    let tokens = f(&ours["tokens"]);
    writeln!(out, "forward + last-position probabilities: {} prompts, {} tokens; best of the timed passes\n", ours["prompts"], ours["tokens"])?;
    if ours["input_ids"] != hf["input_ids"] {
        writeln!(out, "WARNING: the two tokenizers gave different ids; the comparison is not like for like")?;
    }
    writeln!(out, "{:<9} {:>10} {:>10} {:>14} {:>12} {:>12} {:>9}", "batch", "dissect s", "HF s", "dissect tok/s", "HF tok/s", "HF/dissect", "top-1 =")?;
    let empty = Vec::new();
    let hf_runs: BTreeMap<u64, &Value> = hf["runs"].as_array().unwrap_or(&empty).iter().map(|r| (r["batch"].as_u64().unwrap_or(0), r)).collect();
    let mut worst = f64::INFINITY;
    for r in ours["runs"].as_array().unwrap_or(&empty) {
        let b = r["batch"].as_u64().unwrap_or(0);
        let Some(h) = hf_runs.get(&b) else { continue };
        let (t_ours, t_hf) = (f(&r["best_s"]), f(&h["best_s"]));
        let ratio = t_hf / t_ours;
        worst = worst.min(ratio);
        let (a, c) = (r["top1"].as_array().unwrap_or(&empty), h["top1"].as_array().unwrap_or(&empty));
        let same = a.iter().zip(c).filter(|(x, y)| x == y).count();
        let label = if b == 1 { "1 (no pad)".to_string() } else { b.to_string() };
        writeln!(
            out,
            "{label:<9} {t_ours:>10.2} {t_hf:>10.2} {:>14.1} {:>12.1} {:>11.2}x {:>9}",
            tokens / t_ours,
            tokens / t_hf,
            ratio,
            format!("{same}/{}", a.len())
        )?;
    }
    let verdict = if worst >= FORWARD_GOAL { "met" } else { "NOT met" };
    writeln!(out, "\ngoal: not slower than PyTorch in every mode: {verdict} (worst HF/dissect {worst:.2}x)")?;
    Ok(())
}

fn knockout_table(out: &mut impl Write, ours: &Value, hf: &Value, all_logits: bool) -> Result<()> {
    let empty = Vec::new();
    let (po, ph) = (ours["prompts"].as_array().unwrap_or(&empty), hf["prompts"].as_array().unwrap_or(&empty));
    let hf_by_id: BTreeMap<String, &Value> = ph.iter().map(|p| (p["known_id"].to_string(), p)).collect();
    let (layers, variants) = (ours["layers"].as_u64().unwrap_or(0), ours["variants_per_prompt"].as_u64().unwrap_or(0));
    writeln!(
        out,
        "attention knockout sweep: {} prompts x {layers} layers x 3 sets (window {}); dissect {} path, HF one variant per forward ({} logits)\n",
        po.len(),
        ours["window"],
        str_of(&ours["path"]),
        if all_logits { "all-position" } else { "last-position" },
    )?;
    let (t_ours, t_hf) = (f(&ours["best_s"]), f(&hf["best_s"]));
    let n = po.len().max(1) as f64;
    let forwards = po.len() as u64 * (variants + 1);
    writeln!(out, "{:<22} {:>12} {:>12}", "", "dissect", "HF")?;
    writeln!(out, "{:<22} {:>12.2} {:>12.2}", "total s", t_ours, t_hf)?;
    writeln!(out, "{:<22} {:>12.3} {:>12.3}", "s / prompt", t_ours / n, t_hf / n)?;
    writeln!(out, "{:<22} {:>12.1} {:>12.1}", "variants / s", forwards as f64 / t_ours, forwards as f64 / t_hf)?;
    let ratio = t_hf / t_ours;
    writeln!(out, "{:<22} {:>12.1}x", "speed-up HF/dissect", ratio)?;
    // Per-prompt medians shrug off a burst of other work on the machine during part of a run.
    let median = |ps: &[Value]| {
        let mut v: Vec<f64> = ps.iter().map(|p| f(&p["seconds"])).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (m_ours, m_hf) = (median(po), median(ph));
    writeln!(out, "{:<22} {:>12.3} {:>12.3}", "median s / prompt", m_ours, m_hf)?;
    writeln!(out, "{:<22} {:>12.1}x", "speed-up of medians", m_hf / m_ours)?;

    // Agreement: the same ids, the same target, then every (prompt, layer, set) pct_change.
    let (mut max_pp, mut at) = (0f64, String::new());
    let (mut same_ids, mut same_target, mut compared, mut missing) = (0, 0, 0, 0);
    for p in po {
        let Some(h) = hf_by_id.get(&p["known_id"].to_string()) else {
            missing += 1;
            continue;
        };
        same_ids += usize::from(p["input_ids"] == h["input_ids"] && p["subject_tokens"] == h["subject_tokens"]);
        if p["target_id"] != h["target_id"] {
            continue;
        }
        same_target += 1;
        let key = |r: &Value| (r["layer"].as_u64().unwrap_or(0), str_of(&r["block"]));
        let theirs: BTreeMap<_, f64> = h["rows"].as_array().unwrap_or(&empty).iter().map(|r| (key(r), f(&r["pct_change"]))).collect();
        for r in p["rows"].as_array().unwrap_or(&empty) {
            let Some(&t) = theirs.get(&key(r)) else {
                missing += 1;
                continue;
            };
            compared += 1;
            let d = (f(&r["pct_change"]) - t).abs();
            if d > max_pp || d.is_nan() {
                max_pp = if d.is_nan() { f64::INFINITY } else { d };
                at = format!("record {}, layer {}, {}", p["known_id"], r["layer"], str_of(&r["block"]));
            }
        }
    }
    writeln!(out, "{:<22} {:>12.4} pp ({at})", "max |pct_change diff|", max_pp)?;
    writeln!(
        out,
        "same ids & subject span: {same_ids}/{}; same target: {same_target}/{}; (layer, set) values compared: {compared}; missing: {missing}",
        po.len(),
        po.len()
    )?;
    let ok_speed = if ratio >= KNOCKOUT_GOAL { "met" } else { "NOT met" };
    let ok_pp = if max_pp <= KNOCKOUT_MAX_PP && same_target == po.len() && missing == 0 { "met" } else { "NOT met" };
    writeln!(out, "\ngoals: speed-up >= {KNOCKOUT_GOAL}x: {ok_speed}; disagreement <= {KNOCKOUT_MAX_PP} pp: {ok_pp}")?;
    Ok(())
}

/// The experiments stage's seconds per fact over the baseline's, the goal.
const EXPERIMENTS_GOAL: f64 = 3.0;

/// `dissect filter` on the pipeline's first facts, then `dissect experiments all` on the first
/// `limit` kept ones, screened and not (and by `--baseline`), one run after the other.
fn experiments(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let limit = args.limit.unwrap_or(12);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.current_dir(&root).args(["build", "--release", "--quiet", "-p", "dissect-cli", "--message-format", "json"]).stdout(Stdio::piped());
    eprintln!("== {}", render(&build));
    let built = build.output().context("running cargo build")?;
    if !built.status.success() {
        bail!("cargo build failed");
    }
    let ours = String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "dissect")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo build did not report the dissect binary")?;
    let tmp = tempfile::tempdir()?;
    let filtered = tmp.path().join("filter");
    // About two in five facts are kept on the default model: five times the limit is plenty.
    let mut filter = Command::new(&ours);
    filter.current_dir(&root).args(["filter", "--pipeline", &args.pipeline, "--limit", &(5 * limit).to_string(), "--out"]).arg(&filtered);
    eprintln!("== {}", render(&filter));
    if !filter.status().context("running dissect filter")?.success() {
        bail!("dissect filter failed");
    }
    // A directory of parts: every version, `--baseline` ones included, reads a table so.
    let input = filtered.join("filtered");
    // A path, not a name, so that an older `--baseline` binary finds the same file.
    let pipeline =
        if args.pipeline.ends_with(".toml") { PathBuf::from(&args.pipeline) } else { root.join("pipelines").join(format!("{}.toml", args.pipeline)) };
    let mut runs: Vec<(&str, PathBuf, Vec<&str>)> = vec![("screened", ours.clone(), vec![]), ("f32", ours.clone(), vec!["--screen", "off"])];
    if let Some(base) = &args.baseline {
        runs.push(("baseline", base.clone(), vec![]));
    }
    // The machine's speed drifts from run to run: every run is repeated, the order reversed each
    // round so that no binary always goes first, and each experiment's best round counts.
    let rounds = args.repeat.unwrap_or(2).max(1);
    let mut timings: Vec<(&str, Profile, f64)> = runs.iter().map(|(name, _, _)| (*name, Profile::default(), f64::INFINITY)).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..runs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, bin, extra) = &runs[i];
            let mut cmd = Command::new(bin);
            cmd.current_dir(&root)
                .args(["experiments", "all", "--no-cache", "--limit", &limit.to_string(), "--pipeline"])
                .arg(&pipeline)
                .arg("--input")
                .arg(&input)
                .arg("--out")
                .arg(tmp.path().join(format!("{name}-{round}")))
                .args(extra)
                .env("DISSECT_PROFILE", "1")
                .stderr(Stdio::piped());
            eprintln!("== {name}, round {}/{rounds}: {}", round + 1, render(&cmd));
            let t0 = std::time::Instant::now();
            let out = cmd.output().with_context(|| format!("running {}", bin.display()))?;
            let wall = t0.elapsed().as_secs_f64();
            let log = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                bail!("{name}: the experiments stage failed:\n{log}");
            }
            let t = &mut timings[i];
            t.1.keep_best(profile(&log));
            t.2 = t.2.min(wall);
        }
    }
    let same = compare_tables(&tmp.path().join("screened-0"), &tmp.path().join("f32-0"))?;

    let mut out = std::io::stdout().lock();
    let facts = timings[0].1.facts;
    writeln!(out, "experiments stage, pipeline {}, {facts} kept facts, release build; seconds per fact, best of {rounds} rounds", args.pipeline)?;
    let names: Vec<String> = timings[0].1.per_experiment.keys().cloned().collect();
    let header: Vec<&str> = timings.iter().map(|t| t.0).collect();
    writeln!(out, "{:<20} {}", "experiment", header.iter().map(|h| format!("{h:>10}")).collect::<String>())?;
    for e in names.iter().map(String::as_str).chain(["total"]) {
        let cells: String = timings.iter().map(|(_, p, _)| format!("{:>10.3}", p.seconds(e) / p.facts.max(1) as f64)).collect();
        writeln!(out, "{e:<20} {cells}")?;
    }
    let walls: String = timings.iter().map(|(_, _, w)| format!("{w:>10.1}")).collect();
    writeln!(out, "{:<20} {walls}", "wall (s, best run)")?;
    let (screened, f32) = (timings[0].1.seconds("total"), timings[1].1.seconds("total"));
    writeln!(out, "screened vs f32 path: {:.2}x", f32 / screened)?;
    writeln!(
        out,
        "tables, screened vs f32 path: {}",
        if same.is_empty() { "identical, every value of every table".to_string() } else { format!("DIFFER in {}", same.join(", ")) }
    )?;
    if let Some((_, base, _)) = timings.get(2) {
        let ratio = base.seconds("total") / screened;
        let verdict = if ratio >= EXPERIMENTS_GOAL { "met" } else { "NOT met" };
        writeln!(out, "screened vs baseline: {ratio:.2}x (goal >= {EXPERIMENTS_GOAL}x: {verdict})")?;
    }
    if !same.is_empty() {
        bail!("the screened run's tables differ from the f32 path's");
    }
    Ok(())
}

/// Seconds per experiment from `DISSECT_PROFILE`'s lines (`profile: record ID NAME 1.234s …`).
#[derive(Default)]
struct Profile {
    facts: usize,
    per_experiment: BTreeMap<String, f64>,
}

impl Profile {
    /// Each experiment's smaller time of `self`'s and `other`'s (a first round: `other`'s).
    fn keep_best(&mut self, other: Profile) {
        if self.facts == 0 {
            *self = other;
            return;
        }
        for (e, secs) in other.per_experiment {
            let best = self.per_experiment.entry(e).or_insert(secs);
            *best = best.min(secs);
        }
    }

    fn seconds(&self, experiment: &str) -> f64 {
        match experiment {
            "total" => self.per_experiment.values().sum(),
            e => self.per_experiment.get(e).copied().unwrap_or(0.0),
        }
    }
}

fn profile(log: &str) -> Profile {
    let mut p = Profile::default();
    let mut ids = std::collections::BTreeSet::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("profile: record ") else { continue };
        let mut words = rest.split_whitespace();
        let (Some(id), Some(name), Some(secs)) = (words.next(), words.next(), words.next()) else { continue };
        let Ok(secs) = secs.trim_end_matches('s').parse::<f64>() else { continue };
        ids.insert(id.to_string());
        *p.per_experiment.entry(name.to_string()).or_default() += secs;
    }
    p.facts = ids.len();
    p
}

/// The tables (directories of parquet parts) under `a` whose rows differ from `b`'s.
fn compare_tables(a: &Path, b: &Path) -> Result<Vec<String>> {
    let mut differ = Vec::new();
    let mut tables: Vec<PathBuf> = std::fs::read_dir(a)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    tables.sort();
    for t in tables {
        let name = t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (x, y) = (dissect_data::parquet_io::read_parquet(&t)?, dissect_data::parquet_io::read_parquet(&b.join(&name))?);
        if x != y {
            differ.push(name);
        }
    }
    Ok(differ)
}

/// `cargo xtask reproduce --limit N` twice: the first does (or
/// confirms) the work, the second must find everything current.
fn rerun(pipeline: &str, limit: usize) -> Result<()> {
    let args = crate::reproduce::Args::plain(pipeline, Some(limit));
    eprintln!("== first run (does the work unless it is already done)");
    crate::reproduce::run(&args)?;
    eprintln!("== second run: nothing to do");
    let stages = crate::reproduce::run(&args)?;
    let verdict = if stages <= RERUN_GOAL_S { "met" } else { "NOT met" };
    let mut out = std::io::stdout().lock();
    writeln!(out, "no-op `cargo xtask reproduce --limit {limit}`: stages {stages:.2} s after the build (goal <= {RERUN_GOAL_S} s: {verdict})")?;
    if stages > RERUN_GOAL_S {
        bail!("the no-op rerun took {stages:.2} s\nhint: a stage whose outputs are current must answer without loading the model");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{profile, Profile};

    /// Both forms of the profile line (with and without the screen's counts), other lines
    /// ignored, records counted once.
    #[test]
    fn profile_sums_seconds_per_experiment() {
        let log = "experiments: knockout on 2 records\n\
                   profile: record 3 knockout 1.500s screened 0 rows 0 narrowed 0 recomputed\n\
                   profile: record 3 ranks 0.250s\n\
                   profile: record 7 knockout 0.500s\n\
                   profile: record 7 ranks garbage\n";
        let p = profile(log);
        assert_eq!(p.facts, 2);
        assert_eq!(p.seconds("knockout"), 2.0);
        assert_eq!(p.seconds("ranks"), 0.25);
        assert_eq!(p.seconds("total"), 2.25);
        assert_eq!(p.seconds("patching"), 0.0);
    }

    #[test]
    fn keep_best_takes_each_experiments_smaller_time() {
        let mut best = Profile::default();
        best.keep_best(profile("profile: record 1 knockout 2.0s\nprofile: record 1 ranks 0.5s\n"));
        best.keep_best(profile("profile: record 1 knockout 1.0s\nprofile: record 1 ranks 0.75s\n"));
        assert_eq!(best.facts, 1);
        assert_eq!(best.seconds("knockout"), 1.0);
        assert_eq!(best.seconds("ranks"), 0.5);
    }
}
