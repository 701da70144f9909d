use std::io::Write;

use anyhow::{bail, Context, Result};
use dissect_experiments::knockout::{knockout_sweep, KnockoutConfig};
use dissect_model::backend::BackendKind;

use crate::backend::on_backend;
use dissect_model::intervene::ExecPath;
use dissect_model::source::load;

#[derive(clap::Args)]
pub struct Args {
    /// `gemma3-270m` (fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long, default_value = dissect_model::source::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    prompt: String,
    /// The subject as it appears in the prompt (its first occurrence is used).
    #[arg(long)]
    subject: String,
    /// Layers blocked around each centre layer.
    #[arg(long, default_value_t = 9)]
    window: usize,
    /// Recompute every position for every variant instead of only the last one.
    #[arg(long)]
    full_recompute: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

pub fn run(args: Args) -> Result<()> {
    args.backend.check_available()?;
    on_backend!(args.backend, |B| {
        let loaded = load::<B>(&args.model, &Default::default()).with_context(|| format!("loading {}", args.model))?;
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
        let cfg = KnockoutConfig {
            window: args.window,
            path: if args.full_recompute { ExecPath::Full } else { ExecPath::Fast },
            ..KnockoutConfig::default()
        };
        let r = knockout_sweep(&loaded.model, &enc.ids, span, &cfg)?;
        let target = loaded.tokenizer.decode_token(r.target_id);
        let mut out = std::io::stdout().lock();
        if args.json {
            let rows: Vec<_> = r
                .rows
                .iter()
                .map(|row| serde_json::json!({"layer": row.layer, "block": row.block.name(), "pct_change": row.pct_change}))
                .collect();
            let v = serde_json::json!({"target_token": target, "target_id": r.target_id, "p_base": r.p_base,
                "layers": r.layers, "window": r.window, "rows": rows});
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            return Ok(());
        }
        writeln!(out, "target {target:?} (id {}), p_base {:.6}, window {}", r.target_id, r.p_base, r.window)?;
        writeln!(out, "{:>5}  {:>10}  {:>12}  {:>10}", "layer", "subject", "non_subject", "last")?;
        for layer in 0..r.layers {
            let get = |name: &str| r.rows.iter().find(|x| x.layer == layer && x.block.name() == name).map_or(f32::NAN, |x| x.pct_change);
            writeln!(out, "{:>5}  {:>9.2}%  {:>11.2}%  {:>9.2}%", layer, get("subject"), get("non_subject"), get("last"))?;
        }
        Ok(())
    })
}
