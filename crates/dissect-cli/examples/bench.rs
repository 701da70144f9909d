//! `cargo run --release -p dissect-cli --example bench -- forward|knockout`: the Rust half of `cargo xtask bench`, which runs the Hugging
//! Face reference (bench/hf_*.py) on the same prompts and compares. Timings cover the model work
//! only (loading and tokenizing are outside the clock, as on the Python side); one untimed
//! warm-up comes first. Logs go to stderr, one JSON object to stdout.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dissect_experiments::knockout::{knockout_sweep, KnockoutConfig};
use dissect_model::backend::Cpu;
use dissect_model::intervene::ExecPath;
use dissect_model::predict::last_position_probs;
use dissect_model::source::load;
use dissect_model::Model;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Tokens/s of a forward pass plus next-token probabilities at the last position.
    Forward,
    /// The attention-knockout sweep (every layer × subject / non_subject / last) per prompt.
    Knockout,
}

#[derive(clap::Parser)]
#[command(name = "bench", about = "The Rust half of `cargo xtask bench`; prints one JSON object")]
pub struct Args {
    /// What to time.
    kind: Kind,
    /// `gemma3-270m` (fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long, default_value = dissect_model::source::DEFAULT_MODEL)]
    model: String,
    /// A JSON array or JSONL of records with a "prompt" (and, for knockout, a "subject") field,
    /// or of plain prompt strings.
    #[arg(long, default_value = "data/known_1000.json")]
    prompts: PathBuf,
    /// Use the first N records (0: all). Default 64 for forward, 20 for knockout.
    #[arg(long)]
    limit: Option<usize>,
    /// Rows per forward pass (forward), repeatable or comma-separated: every value is timed.
    /// For knockout: variants per forward pass.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Timed passes over all prompts (after the warm-up); the best is reported.
    #[arg(long)]
    repeat: Option<usize>,
    /// Knockout: recompute every position of every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
}

/// One prompt record; known_1000 records carry more fields, which are ignored.
#[derive(Deserialize)]
#[serde(untagged)]
enum Record {
    Text(String),
    Full { prompt: String, subject: Option<String>, known_id: Option<u64> },
}

struct Prompt {
    id: u64,
    prompt: String,
    subject: Option<String>,
}

/// Reads a JSON array or JSONL file; the detection is the first non-blank character, which is
/// what the Python side (bench/_common.py) does too, so both read the same records.
fn read_prompts(path: &Path, limit: usize) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let records: Vec<Record> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("parsing {} as a JSON array", path.display()))?
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), i + 1)))
            .collect::<Result<_>>()?
    };
    let mut out: Vec<Prompt> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Record::Text(prompt) => Prompt { id: i as u64, prompt, subject: None },
            Record::Full { prompt, subject, known_id } => Prompt { id: known_id.unwrap_or(i as u64), prompt, subject },
        })
        .collect();
    if limit > 0 {
        out.truncate(limit);
    }
    if out.is_empty() {
        bail!("no prompts in {}", path.display());
    }
    Ok(out)
}

fn main() {
    if let Err(e) = run(<Args as clap::Parser>::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let device = Default::default();
    let t0 = Instant::now();
    let loaded = load::<Cpu>(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    eprintln!("[dissect] loaded {} in {:.1}s, {} rayon threads", args.model, t0.elapsed().as_secs_f64(), rayon::current_num_threads());
    let doc = match args.kind {
        Kind::Forward => forward(&args, &loaded.model, &loaded.tokenizer)?,
        Kind::Knockout => knockout(&args, &loaded.model, &loaded.tokenizer)?,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn best(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Index of the largest value (first on ties), like numpy's argmax on the Python side.
fn argmax(v: &[f32]) -> u32 {
    let mut at = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[at] {
            at = i;
        }
    }
    at as u32
}

fn forward(args: &Args, model: &Model<Cpu>, tok: &dissect_model::tokenizer::Tokenizer) -> Result<serde_json::Value> {
    let prompts = read_prompts(&args.prompts, args.limit.unwrap_or(64))?;
    let rows: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(&p.prompt).map(|e| e.ids)).collect::<Result<_, _>>()?;
    let tokens: usize = rows.iter().map(Vec::len).sum();
    let batches = if args.batch.is_empty() { vec![16, 1] } else { args.batch.clone() };
    let repeat = args.repeat.unwrap_or(3).max(1);
    // One pass over every prompt: right-padded batches of `batch` rows, probabilities at each
    // row's last real position (the library's own entry point, as `dissect predict` uses it).
    let pass = |batch: usize| -> Result<Vec<u32>> {
        let mut top1 = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(batch.max(1)) {
            top1.extend(last_position_probs(model, chunk)?.iter().map(|p| argmax(p)));
        }
        Ok(top1)
    };
    let mut runs = Vec::new();
    for &b in &batches {
        let t = Instant::now();
        let top1 = pass(b)?;
        let warm = secs(t);
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let t = Instant::now();
            pass(b)?;
            times.push(secs(t));
        }
        let best = best(&times);
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        eprintln!("[dissect] batch {b}: warm-up {warm:.2}s, timed {}s, {:.0} tokens/s (best)", shown.join(", "), tokens as f64 / best);
        runs.push(json!({"batch": b, "warmup_s": warm, "times_s": times, "best_s": best,
            "tokens_per_s": tokens as f64 / best, "top1": top1}));
    }
    Ok(json!({"bench": "forward", "impl": "dissect", "threads": rayon::current_num_threads(),
        "prompts": rows.len(), "tokens": tokens, "input_ids": rows, "runs": runs}))
}

/// A prompt's token ids and the subject's token range, or why the prompt cannot be used.
type KnockoutInput = Result<(Vec<u32>, Range<usize>), String>;

/// The rules of `dissect knockout` (the Python side applies them too).
fn knockout_input(tok: &dissect_model::tokenizer::Tokenizer, p: &Prompt) -> Result<KnockoutInput> {
    let Some(subject) = &p.subject else { return Ok(Err("no subject field".into())) };
    let enc = tok.encode(&p.prompt)?;
    let Some(start) = p.prompt.find(subject.as_str()) else { return Ok(Err("subject not in prompt".into())) };
    let Some(span) = dissect_data::span::token_span(&enc.offsets, start..start + subject.len()).map(|s| s.first..s.last + 1) else {
        return Ok(Err("subject covers no token".into()));
    };
    if span.end >= enc.ids.len() {
        return Ok(Err("subject ends at the last token".into()));
    }
    Ok(Ok((enc.ids, span)))
}

fn knockout(args: &Args, model: &Model<Cpu>, tok: &dissect_model::tokenizer::Tokenizer) -> Result<serde_json::Value> {
    let prompts = read_prompts(&args.prompts, args.limit.unwrap_or(20))?;
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for p in &prompts {
        match knockout_input(tok, p)? {
            Ok((ids, span)) => inputs.push((p, ids, span)),
            Err(why) => {
                eprintln!("[dissect] skipping record {}: {why}", p.id);
                skipped.push(json!({"known_id": p.id, "reason": why}));
            }
        }
    }
    let Some((_, ids0, span0)) = inputs.first() else { bail!("no prompt with a usable subject in {}", args.prompts.display()) };
    let mut cfg = KnockoutConfig { path: if args.full_recompute { ExecPath::Full } else { ExecPath::Fast }, ..KnockoutConfig::default() };
    if let Some(&b) = args.batch.first() {
        cfg.batch = b;
    }
    let repeat = args.repeat.unwrap_or(1).max(1);

    let t = Instant::now();
    knockout_sweep(model, ids0, span0.clone(), &cfg)?;
    let warm = secs(t);
    let mut times = Vec::with_capacity(repeat);
    let mut results = Vec::new();
    for rep in 0..repeat {
        let t_all = Instant::now();
        let mut out = Vec::with_capacity(inputs.len());
        for (p, ids, span) in &inputs {
            let t = Instant::now();
            let r = knockout_sweep(model, ids, span.clone(), &cfg)?;
            let s = secs(t);
            let rows: Vec<_> =
                r.rows.iter().map(|x| json!({"layer": x.layer, "block": x.block.name(), "pct_change": x.pct_change, "p_new": x.p_new})).collect();
            out.push(json!({"known_id": p.id, "prompt": p.prompt, "subject": p.subject, "input_ids": ids,
                "subject_tokens": [span.start, span.end], "target_id": r.target_id, "p_base": r.p_base,
                "seconds": s, "rows": rows}));
        }
        times.push(secs(t_all));
        eprintln!("[dissect] knockout pass {}: {} prompts in {:.2}s", rep + 1, inputs.len(), times[rep]);
        results = out;
    }
    let sets = cfg.sets.len();
    Ok(json!({"bench": "knockout", "impl": "dissect", "threads": rayon::current_num_threads(),
        "path": if args.full_recompute { "full" } else { "fast" }, "window": cfg.window,
        "layers": model.n_layers(), "variants_per_prompt": model.n_layers() * sets,
        "warmup_s": warm, "times_s": times, "best_s": best(&times), "skipped": skipped, "prompts": results}))
}
