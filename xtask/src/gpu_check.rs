//! `cargo xtask gpu-check`: the CUDA backend checked end to end on a machine with an NVIDIA GPU,
//! in one command.
//!
//! What it runs, in order (each step's stdout and stderr are kept under `--out`, default a fresh
//! temporary directory whose path is printed):
//!
//! 1. `nvidia-smi -L`: a GPU and its driver must be there, else it stops at once.
//! 2. The models the tests read (fetched when missing, as `cargo xtask test` does).
//! 3. The CUDA half of the tests: `cargo test --release --features cuda -p dissect-model -- _cuda`
//!    (the `_cuda` variants of the `test_device!` tests; a variant that finds no usable CUDA
//!    device says so and returns, which counts as a failure here). The CPU half is `cargo xtask test`'s.
//! 4. `cargo build --release -p dissect-cli --features cuda`, then with that `dissect`: `predict` and
//!    `knockout` on one prompt with `--backend cpu` and `--backend cuda`, and the largest
//!    difference between the numbers of the two JSON outputs. The CUDA backend multiplies in TF32,
//!    so they differ a little; above 1e-2 the step is flagged `WARN` (the run still passes).
//! 5. On CUDA, timed: `dissect filter` on the first 60 facts of data/known_1000.json, then
//!    `dissect experiments all` on the first 20 kept facts.
//! 6. With `--gpt2-xl-shaped DIR` (a Hugging Face GPT-2 directory: config.json, model.safetensors,
//!    tokenizer.json), `predict` and `knockout` on it on CUDA, timed.
//!
//! A summary table (step, ok/FAILED, seconds, the CPU-vs-CUDA differences) goes to stdout and to
//! `<out>/summary.txt`; the command fails after it when a step failed.
//!
//! It needs cargo, an NVIDIA driver, and the CUDA toolkit's NVRTC library and headers, found
//! through `CUDA_PATH` (default `/usr/local/cuda`; its NVRTC folder is put on `LD_LIBRARY_PATH` for
//! the steps). The two builds take most of the time: tens of minutes cold on a few cores, seconds
//! when current; the runs after them take minutes. A CUDA run's time includes compiling (NVRTC)
//! and autotuning the kernels it needs.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::command::{parse_json, render};
use crate::{fetch_model, models};

const PROMPT: &str = "The Eiffel Tower is located in the city of";
const SUBJECT: &str = "The Eiffel Tower";

/// Above this, max |cpu − cuda| is more than TF32 matmuls explain on the small model: flagged.
const FLAG_ABOVE: f64 = 1e-2;

/// What a CUDA test variant prints when it finds no usable CUDA device (tests/common/mod.rs).
const NO_DEVICE: &str = "no CUDA device here";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A model of `cargo xtask fetch-model` (fetched if missing), a .gguf file, a Hugging Face
    /// model directory, or hf:<repo>[@rev].
    #[arg(long, default_value = models::DEFAULT)]
    model: String,
    /// Directory for every step's stdout and stderr, the outputs and summary.txt (created if
    /// missing). Default: a fresh temporary directory, kept and printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also time predict and knockout on CUDA on this Hugging Face GPT-2 directory (config.json,
    /// model.safetensors, tokenizer.json), e.g. one with GPT-2 XL's shapes.
    #[arg(long, value_name = "DIR")]
    gpt2_xl_shaped: Option<PathBuf>,
    /// Facts of data/known_1000.json the timed filter run reads.
    #[arg(long, default_value_t = 60)]
    filter_limit: usize,
    /// Kept facts the timed experiments run reads.
    #[arg(long, default_value_t = 20)]
    experiments_limit: usize,
    /// Seconds after which a `dissect` run is stopped and counted as failed (the builds and the
    /// tests have no limit).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Ok,
    /// Ran, but a number is outside what is expected; does not fail the check.
    Warn,
    Failed,
    /// Not run because a step it needs failed; fails the check.
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

struct Step {
    name: String,
    status: Status,
    seconds: Option<f64>,
    note: String,
}

/// How a subprocess ended.
struct Ran {
    ok: bool,
    seconds: f64,
    /// Why it failed, when it did.
    problem: String,
}

struct Check {
    root: PathBuf,
    out: PathBuf,
    /// Environment given to every subprocess (CUDA_PATH, LD_LIBRARY_PATH).
    env: Vec<(&'static str, OsString)>,
    timeout: Duration,
    steps: Vec<Step>,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let gpu = preflight()?;
    eprintln!("== GPU: {gpu}");
    if models::find(&args.model).is_none() && !args.model.starts_with("hf:") && !Path::new(&args.model).exists() {
        bail!(
            "--model {}: no such model or path\nhint: use one of {}, a .gguf file, a Hugging Face model directory or hf:<repo>",
            args.model,
            models::names().join(", ")
        );
    }
    if let Some(dir) = &args.gpt2_xl_shaped {
        check_hf_dir(dir)?;
    }
    let out = match &args.out {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            std::path::absolute(dir)?
        }
        None => tempfile::Builder::new().prefix("dissect-gpu-check-").tempdir().context("cannot create a temporary directory")?.keep(),
    };
    eprintln!("== logs and outputs: {}", out.display());
    let (env, cuda_note) = cuda_env();
    let mut check = Check { root, out, env, timeout: Duration::from_secs(args.timeout), steps: Vec::new() };
    check.push("nvidia-smi -L", Status::Ok, None, format!("{gpu}; {cuda_note}"));

    // The models: the tests read both registry models; the runs read --model.
    let started = Instant::now();
    let (test_models, model) = match fetch_models(&args.model) {
        Ok((test_models, model)) => {
            check.push("models", Status::Ok, Some(started.elapsed().as_secs_f64()), model.clone());
            (Some(test_models), Some(model))
        }
        Err(err) => {
            eprintln!("models: {err:#}");
            check.push("models", Status::Failed, Some(started.elapsed().as_secs_f64()), first_line(&format!("{err:#}")));
            (None, None)
        }
    };

    check.cuda_tests(test_models.as_ref())?;
    let bin = check.build()?;
    let runnable = bin.as_deref().zip(model.as_deref());
    check.compare(runnable, "predict", &["--top-k", "5"])?;
    check.compare(runnable, "knockout", &["--subject", SUBJECT])?;
    check.timed_stages(runnable, args.filter_limit, args.experiments_limit)?;
    if let Some(dir) = &args.gpt2_xl_shaped {
        let dir = std::path::absolute(dir)?.display().to_string();
        let gpt2 = bin.as_deref().map(|b| (b, dir.as_str()));
        for (what, extra) in [("predict", vec!["--top-k", "5"]), ("knockout", vec!["--subject", SUBJECT])] {
            let name = format!("gpt2-xl-shaped {what} cuda");
            check.dissect(gpt2, &name, &format!("gpt2-xl-{what}-cuda"), what, "cuda", &extra)?;
        }
    }

    let summary = check.summary(&gpu, model.as_deref().unwrap_or(&args.model));
    fs::write(check.out.join("summary.txt"), &summary)?;
    std::io::stdout().lock().write_all(summary.as_bytes())?;
    let failed = check.steps.iter().filter(|s| matches!(s.status, Status::Failed | Status::Skipped)).count();
    if failed > 0 {
        bail!(
            "{failed} of {} steps failed or did not run\nhint: every step's stdout and stderr are in {} (<step>.out, <step>.log)",
            check.steps.len(),
            check.out.display()
        );
    }
    Ok(())
}

/// The GPU's name from `nvidia-smi -L`, or an error saying what is missing.
fn preflight() -> Result<String> {
    let hint = "hint: this check needs an NVIDIA GPU and its driver (nvidia-smi comes with the driver)\n\
                hint: and the CUDA toolkit, for NVRTC and its headers, found through CUDA_PATH (default /usr/local/cuda)";
    let out = Command::new("nvidia-smi").arg("-L").output().with_context(|| format!("cannot run `nvidia-smi -L`\n{hint}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("`nvidia-smi -L` failed ({}): {}\n{hint}", out.status, first_line(if err.trim().is_empty() { &text } else { &err }));
    }
    let gpus: Vec<&str> = text.lines().filter(|l| l.starts_with("GPU ")).collect();
    let Some(first) = gpus.first() else { bail!("`nvidia-smi -L` lists no GPU\n{hint}") };
    let more = if gpus.len() > 1 { format!(" (and {} more; the checks use the first)", gpus.len() - 1) } else { String::new() };
    Ok(format!("{}{more}", gpu_name(first)))
}

/// `NVIDIA H100 80GB HBM3` from `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`.
fn gpu_name(line: &str) -> &str {
    let name = line.split_once(": ").map_or(line, |(_, rest)| rest);
    name.split(" (UUID").next().unwrap_or(name).trim()
}

fn check_hf_dir(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = ["config.json", "model.safetensors", "tokenizer.json"].into_iter().filter(|f| !dir.join(f).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "--gpt2-xl-shaped {}: missing {}\nhint: the directory of a Hugging Face GPT-2 model: save_pretrained's config.json and model.safetensors, and a tokenizer.json",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// CUDA_PATH (set when unset, to the default if it exists) and LD_LIBRARY_PATH with the toolkit's
/// NVRTC folder in front, for every subprocess; and a line saying what was found.
fn cuda_env() -> (Vec<(&'static str, OsString)>, String) {
    let mut env = Vec::new();
    let cuda = match std::env::var_os("CUDA_PATH") {
        Some(p) => PathBuf::from(p),
        None => {
            let default = PathBuf::from("/usr/local/cuda");
            if default.is_dir() {
                env.push(("CUDA_PATH", default.clone().into_os_string()));
            }
            default
        }
    };
    let mut note = if cuda.join("include").is_dir() {
        format!("CUDA toolkit {}", cuda.display())
    } else {
        eprintln!("warning: no CUDA headers in {}/include: the CUDA steps will fail\nhint: set CUDA_PATH to the CUDA toolkit's folder", cuda.display());
        format!("no CUDA headers in {}/include", cuda.display())
    };
    let current = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let known: Vec<PathBuf> = std::env::split_paths(&current).collect();
    let nvrtc = ["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"].iter().map(|d| cuda.join(d)).find(|d| has_nvrtc(d));
    match nvrtc {
        Some(dir) if !known.contains(&dir) => {
            let paths = std::iter::once(dir.clone()).chain(known);
            if let Ok(joined) = std::env::join_paths(paths) {
                env.push(("LD_LIBRARY_PATH", joined));
                note.push_str(&format!(", NVRTC in {} (added to LD_LIBRARY_PATH)", dir.display()));
            }
        }
        Some(dir) => note.push_str(&format!(", NVRTC in {}", dir.display())),
        None => note.push_str(", no libnvrtc.so in it (LD_LIBRARY_PATH as it is)"),
    }
    (env, note)
}

fn has_nvrtc(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so")))
}

/// The models the tests read (fetched when missing, with the variables they are read from), and
/// the `--model` value given to `dissect`: a registry model's fetched path, a path made
/// absolute, or an `hf:` reference.
fn fetch_models(spec: &str) -> Result<(crate::test::TestModels, String)> {
    let test_models = crate::test::test_models()?;
    let model = if models::find(spec).is_some() {
        fetch_model::run(spec)?.display().to_string()
    } else if spec.starts_with("hf:") {
        spec.to_owned()
    } else {
        std::path::absolute(spec)?.display().to_string()
    };
    Ok((test_models, model))
}

impl Check {
    fn push(&mut self, name: &str, status: Status, seconds: Option<f64>, note: String) {
        let mark = if status == Status::Ok { "ok" } else { status.label() };
        eprintln!("== {name}: {mark}{}", if note.is_empty() { String::new() } else { format!(" ({note})") });
        self.steps.push(Step { name: name.to_owned(), status, seconds, note });
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn cargo(&self) -> Command {
        self.command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
    }

    /// Runs `cmd` with its stdout in `<out>/<file>.out` and its stderr in `<out>/<file>.log`, the
    /// stderr also shown as it comes. A `limit` stops it (a direct child only: its own children
    /// would keep the log open, so cargo runs without one).
    fn run_logged(&self, cmd: &mut Command, file: &str, limit: Option<Duration>) -> Result<Ran> {
        let (out_path, log_path) = (self.out.join(format!("{file}.out")), self.out.join(format!("{file}.log")));
        eprintln!("== {}\n   (stdout: {}, stderr: {})", render(cmd), out_path.display(), log_path.display());
        let stdout = File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
        let mut log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let started = Instant::now();
        let mut child = match cmd.stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped()).spawn() {
            Ok(child) => child,
            Err(e) => return Ok(Ran { ok: false, seconds: 0.0, problem: format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()) }),
        };
        let stderr = child.stderr.take().context("the child's stderr")?;
        let tee = std::thread::spawn(move || -> io::Result<()> {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line)? > 0 {
                log.write_all(&line)?;
                let _ = io::stderr().write_all(&line);
                line.clear();
            }
            Ok(())
        });
        let deadline = limit.map(|l| started + l);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Ok(Err(e)) = tee.join() {
            eprintln!("warning: copying the stderr of {} to {}: {e}", cmd.get_program().to_string_lossy(), log_path.display());
        }
        Ok(match status {
            Some(s) if s.success() => Ran { ok: true, seconds, problem: String::new() },
            Some(s) => Ran { ok: false, seconds, problem: format!("{s}") },
            None => Ran { ok: false, seconds, problem: format!("stopped after {} s (--timeout)", self.timeout.as_secs()) },
        })
    }

    fn cuda_tests(&mut self, models: Option<&crate::test::TestModels>) -> Result<()> {
        const NAME: &str = "cargo test --features cuda (CUDA tests)";
        let Some(models) = models else {
            self.push(NAME, Status::Skipped, None, "the models are missing".into());
            return Ok(());
        };
        let mut cmd = self.cargo();
        cmd.args(["test", "--release", "--features", "cuda", "-p", "dissect-model", "--", "_cuda", "--nocapture"]);
        cmd.envs(models.iter().map(|(var, path)| (var, path)));
        let ran = self.run_logged(&mut cmd, "cargo-test-cuda", None)?;
        let stdout = fs::read_to_string(self.out.join("cargo-test-cuda.out")).unwrap_or_default();
        let stderr = fs::read_to_string(self.out.join("cargo-test-cuda.log")).unwrap_or_default();
        let (passed, failed) = test_counts(&stdout);
        let no_device = stderr.matches(NO_DEVICE).count();
        let mut note = format!("{passed} passed, {failed} failed");
        let status = if !ran.ok {
            note = format!("{note}: {}", ran.problem);
            Status::Failed
        } else if no_device > 0 {
            note = format!("{note}, of which {no_device} found no usable CUDA device and returned early");
            Status::Failed
        } else if passed == 0 {
            note = "no CUDA test ran (none matched `_cuda`)".into();
            Status::Failed
        } else {
            Status::Ok
        };
        self.push(NAME, status, Some(ran.seconds), note);
        Ok(())
    }

    /// `dissect` built with the `cuda` feature; its path from cargo's JSON messages.
    fn build(&mut self) -> Result<Option<PathBuf>> {
        const NAME: &str = "cargo build dissect --features cuda";
        let mut cmd = self.cargo();
        cmd.args(["build", "--release", "-p", "dissect-cli", "--features", "cuda", "--message-format=json-render-diagnostics"]);
        let ran = self.run_logged(&mut cmd, "cargo-build", None)?;
        if !ran.ok {
            let note = format!("{}; if cudarc cannot tell the CUDA version (no nvcc on PATH), set CUDARC_CUDA_VERSION, e.g. 12080", ran.problem);
            self.push(NAME, Status::Failed, Some(ran.seconds), note);
            return Ok(None);
        }
        let messages = fs::read_to_string(self.out.join("cargo-build.out")).unwrap_or_default();
        match executable(&messages, "dissect") {
            Some(bin) => {
                self.push(NAME, Status::Ok, Some(ran.seconds), bin.display().to_string());
                Ok(Some(bin))
            }
            None => {
                self.push(NAME, Status::Failed, Some(ran.seconds), "cargo reported no `dissect` executable".into());
                Ok(None)
            }
        }
    }

    /// One `dissect <sub> --backend <backend> --model <model> --prompt PROMPT <extra> --json` run,
    /// stdout in `<out>/<file>.out`. Returns whether it succeeded.
    fn dissect(&mut self, on: Option<(&Path, &str)>, name: &str, file: &str, sub: &str, backend: &str, extra: &[&str]) -> Result<bool> {
        let Some((bin, model)) = on else {
            self.push(name, Status::Skipped, None, "needs the build and the model".into());
            return Ok(false);
        };
        let mut cmd = self.command(bin);
        cmd.args([sub, "--backend", backend, "--model", model, "--prompt", PROMPT]).args(extra).arg("--json");
        let ran = self.run_logged(&mut cmd, file, Some(self.timeout))?;
        self.push(name, if ran.ok { Status::Ok } else { Status::Failed }, Some(ran.seconds), ran.problem);
        Ok(ran.ok)
    }

    /// `sub` on the CPU and on CUDA, then the largest difference between their JSON numbers.
    fn compare(&mut self, on: Option<(&Path, &str)>, sub: &str, extra: &[&str]) -> Result<()> {
        let cpu = self.dissect(on, &format!("{sub} cpu"), &format!("{sub}-cpu"), sub, "cpu", extra)?;
        let cuda = self.dissect(on, &format!("{sub} cuda"), &format!("{sub}-cuda"), sub, "cuda", extra)?;
        let name = format!("{sub}: max |cpu - cuda|");
        if !(cpu && cuda) {
            self.push(&name, Status::Skipped, None, "needs both runs".into());
            return Ok(());
        }
        let read = |be: &str| -> Result<Value> {
            let path = self.out.join(format!("{sub}-{be}.out"));
            parse_json(&fs::read_to_string(&path)?).with_context(|| format!("the JSON in {}", path.display()))
        };
        let diff = || -> Result<(usize, f64)> { max_abs_diff(&read("cpu")?, &read("cuda")?) };
        let (status, note) = match diff() {
            Ok((n, max)) if max <= FLAG_ABOVE => (Status::Ok, format!("{max:.3e} over {n} numbers")),
            Ok((n, max)) => (Status::Warn, format!("{max:.3e} over {n} numbers: above {FLAG_ABOVE:e}, more than TF32 rounding explains")),
            Err(err) => (Status::Failed, first_line(&format!("{err:#}"))),
        };
        self.push(&name, status, None, note);
        Ok(())
    }

    /// `dissect filter` and then `dissect experiments all` on CUDA, timed.
    fn timed_stages(&mut self, on: Option<(&Path, &str)>, filter_limit: usize, experiments_limit: usize) -> Result<()> {
        let filter_name = format!("filter cuda --limit {filter_limit}");
        let experiments_name = format!("experiments all cuda --limit {experiments_limit}");
        let Some((bin, model)) = on else {
            self.push(&filter_name, Status::Skipped, None, "needs the build and the model".into());
            self.push(&experiments_name, Status::Skipped, None, "needs the build and the model".into());
            return Ok(());
        };
        let (filter_out, experiments_out) = (self.out.join("filter"), self.out.join("experiments"));
        let dataset = self.root.join("data").join("known_1000.json");
        let mut cmd = self.command(bin);
        cmd.args(["filter", "--backend", "cuda", "--model", model]).arg("--dataset").arg(&dataset).args(["--limit", &filter_limit.to_string()]);
        cmd.arg("--out").arg(&filter_out).args(["--force", "--json"]);
        let ran = self.run_logged(&mut cmd, "filter", Some(self.timeout))?;
        if !ran.ok {
            self.push(&filter_name, Status::Failed, Some(ran.seconds), ran.problem);
            self.push(&experiments_name, Status::Skipped, None, "needs the filter's output".into());
            return Ok(());
        }
        let summary = fs::read_to_string(self.out.join("filter.out")).ok().and_then(|t| parse_json(&t).ok());
        let kept = summary.as_ref().and_then(|v| Some((v["kept"].as_array()?.len(), v["records"].as_u64()?)));
        self.push(&filter_name, Status::Ok, Some(ran.seconds), kept.map_or_else(String::new, |(k, n)| format!("kept {k} of {n}")));

        let mut cmd = self.command(bin);
        cmd.args(["experiments", "all", "--backend", "cuda", "--model", model]).arg("--input").arg(filter_out.join("filtered"));
        cmd.arg("--out").arg(&experiments_out).args(["--limit", &experiments_limit.to_string(), "--force", "--json"]);
        let ran = self.run_logged(&mut cmd, "experiments", Some(self.timeout))?;
        let status = if ran.ok { Status::Ok } else { Status::Failed };
        self.push(&experiments_name, status, Some(ran.seconds), ran.problem);
        Ok(())
    }

    fn summary(&self, gpu: &str, model: &str) -> String {
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        let mut out = format!("gpu-check on {gpu}, model {model}\n\n{:<width$}  {:<7}  {:>8}  note\n", "step", "status", "seconds");
        for s in &self.steps {
            let seconds = s.seconds.map_or_else(|| "-".to_string(), |t| format!("{t:.1}"));
            out.push_str(format!("{:<width$}  {:<7}  {seconds:>8}  {}", s.name, s.status.label(), s.note).trim_end());
            out.push('\n');
        }
        out.push_str("\nCUDA times include compiling (NVRTC) and autotuning the kernels each run needs.\n");
        out.push_str(&format!("logs and outputs: {}\n", self.out.display()));
        out
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// Passed and failed tests, summed over the `test result:` lines of `cargo test`'s stdout.
fn test_counts(stdout: &str) -> (usize, usize) {
    let mut totals = (0, 0);
    for line in stdout.lines().filter_map(|l| l.trim().strip_prefix("test result: ")) {
        for part in line.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<usize>().ok()), words.next()) {
                match what {
                    "passed" => totals.0 += n,
                    "failed" => totals.1 += n,
                    _ => {}
                }
            }
        }
    }
    totals
}

/// The path of the executable named `name` in cargo's `--message-format=json` messages.
fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|m| {
        if m["reason"] == "compiler-artifact" && m["target"]["name"] == name {
            m["executable"].as_str().map(PathBuf::from)
        } else {
            None
        }
    })
}

/// Every number in `v`, objects' values in key order, arrays in order; `null` (how NaN is
/// written) as NaN. Strings and booleans are left out.
fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => out.push(f64::NAN),
        Value::Array(items) => items.iter().for_each(|x| numbers(x, out)),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.into_iter().for_each(|k| numbers(&map[k], out));
        }
        Value::Bool(_) | Value::String(_) => {}
    }
}

/// How many numbers the two values hold, and the largest |a − b| between them (NaN on one side
/// only counts as infinite; on both, as equal). An error when they hold different counts.
fn max_abs_diff(a: &Value, b: &Value) -> Result<(usize, f64)> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    numbers(a, &mut x);
    numbers(b, &mut y);
    if x.len() != y.len() {
        bail!("the outputs differ in shape: {} numbers on the CPU, {} on CUDA", x.len(), y.len());
    }
    let max = x
        .iter()
        .zip(&y)
        .map(|(p, q)| match (p.is_nan(), q.is_nan()) {
            (true, true) => 0.0,
            (true, false) | (false, true) => f64::INFINITY,
            (false, false) => (p - q).abs(),
        })
        .fold(0.0, f64::max);
    Ok((x.len(), max))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn gpu_check_numbers_are_compared_in_key_order() {
        let cpu = json!({"prompt": "p", "top": [{"token_id": 7, "token": "Paris", "prob": 0.5}, {"token_id": 9, "token": "the", "prob": 0.25}]});
        // The same numbers, keys written in another order: equal.
        let same = json!({"top": [{"prob": 0.5, "token": "Paris", "token_id": 7}, {"prob": 0.25, "token_id": 9, "token": "the"}], "prompt": "p"});
        assert_eq!(max_abs_diff(&cpu, &same).unwrap(), (4, 0.0));
        let cuda = json!({"prompt": "p", "top": [{"token_id": 7, "token": "Paris", "prob": 0.501}, {"token_id": 9, "token": "the", "prob": 0.2498}]});
        let (n, max) = max_abs_diff(&cpu, &cuda).unwrap();
        assert_eq!(n, 4);
        assert!((max - 1e-3).abs() < 1e-12, "{max}");
        // A number missing on one side is a different shape, not a small difference.
        assert!(max_abs_diff(&cpu, &json!({"prompt": "p", "top": [{"token_id": 7, "prob": 0.5}]})).is_err());
        // NaN (written null) on one side only is infinitely far; on both, equal.
        assert_eq!(max_abs_diff(&json!([null, 1.0]), &json!([null, 1.0])).unwrap().1, 0.0);
        assert_eq!(max_abs_diff(&json!([null]), &json!([2.0])).unwrap().1, f64::INFINITY);
    }

    #[test]
    fn gpu_check_reads_cargo_output() {
        let stdout = "running 3 tests\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 1.2s\n\
                      test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.5s\n";
        assert_eq!(test_counts(stdout), (3, 1));
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"dissect_model"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"dissect"},"executable":"/t/release/dissect"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(executable(messages, "dissect"), Some(PathBuf::from("/t/release/dissect")));
        assert_eq!(gpu_name("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"), "NVIDIA H100 80GB HBM3");
    }
}
