use std::io::Write;

use anyhow::{bail, Context, Result};
use dissect_experiments::knockout::{knockout_sweep, KnockoutConfig};
use dissect_model::intervene::ExecPath;
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::stage::{positive, StageArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The prompt whose next-token prediction is measured.
    #[arg(long)]
    prompt: String,
    /// The subject as it appears in the prompt (its first occurrence is used).
    #[arg(long)]
    subject: String,
    /// Layers blocked around each centre layer (default: the pipeline's, else 9).
    #[arg(long, value_parser = positive)]
    window: Option<usize>,
    /// Recompute every position for every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
    /// Print {"target_token", "target_id", "p_base", "layers", "window", "rows": [{"layer"
    /// (0-based block index), "layer_1based", "positions", "pct_change"}]} instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let stage = args.stage.resolve()?;
    // The pipeline's sets and window, so that one prompt is measured as the report measures
    // every record.
    let mut cfg: KnockoutConfig = stage.pipeline.as_ref().map(|p| p.experiments.knockout.clone()).unwrap_or_default();
    if stage.pipeline.is_none() {
        cfg.sets = dissect_experiments::knockout::BlockSet::REPORT.to_vec();
    }
    if let Some(w) = args.window {
        cfg.window = w;
    }
    if args.full_recompute {
        cfg.path = ExecPath::Full;
    }
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
        let enc = loaded.tokenizer.encode(&args.prompt)?;
        let Some(start) = args.prompt.find(&args.subject) else {
            bail!("the subject {:?} does not occur in the prompt\nhint: pass the subject exactly as written in the prompt", args.subject);
        };
        let Some(span) = dissect_data::span::token_span(&enc.offsets, start..start + args.subject.len()).map(|s| s.first..s.last + 1) else {
            bail!("the subject {:?} covers no token of the prompt", args.subject);
        };
        if span.end >= enc.ids.len() {
            bail!("the subject ends at the last token: nothing is left to predict from\nhint: the prompt must continue after the subject");
        }
        let r = knockout_sweep(&loaded.model, &enc.ids, span, &cfg)?;
        let target = loaded.tokenizer.decode_token(r.target_id);
        let mut out = std::io::stdout().lock();
        if args.json {
            let rows: Vec<_> = r
                .rows
                .iter()
                .map(|row| serde_json::json!({"layer": row.layer, "layer_1based": row.layer + 1, "positions": row.block.name(), "pct_change": row.pct_change}))
                .collect();
            let v = serde_json::json!({"target_token": target, "target_id": r.target_id, "p_base": r.p_base,
                "layers": r.layers, "window": r.window, "rows": rows});
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            return Ok(());
        }
        // The sets that apply to this prompt (bos only where the tokenizer prepends one).
        let sets: Vec<&str> = cfg.sets.iter().map(|s| s.name()).filter(|n| r.rows.iter().any(|x| x.block.name() == *n)).collect();
        writeln!(out, "target {target:?} (id {}), p_base {:.6}, window {}", r.target_id, r.p_base, r.window)?;
        writeln!(
            out,
            "% change of p(target) with the last position's edges to each set blocked in the window centred at the layer (1-based, as in the report)"
        )?;
        write!(out, "{:>5}", "layer")?;
        for s in &sets {
            write!(out, "  {s:>18}")?;
        }
        writeln!(out)?;
        for layer in 0..r.layers {
            write!(out, "{:>5}", layer + 1)?;
            for s in &sets {
                let v = r.rows.iter().find(|x| x.layer == layer && x.block.name() == *s).map_or(f32::NAN, |x| x.pct_change);
                write!(out, "  {:>17.2}%", v)?;
            }
            writeln!(out)?;
        }
        Ok(())
    })
}
