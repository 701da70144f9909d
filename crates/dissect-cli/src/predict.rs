use std::io::Write;

use anyhow::{Context, Result};
use dissect_model::backend::BackendKind;

use crate::backend::on_backend;
use dissect_model::predict::predict;
use dissect_model::source::load;

#[derive(clap::Args)]
pub struct Args {
    /// `gemma3-270m` (fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long, default_value = dissect_model::source::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

pub fn run(args: Args) -> Result<()> {
    args.backend.check_available()?;
    on_backend!(args.backend, |B| {
        let loaded = load::<B>(&args.model, &Default::default()).with_context(|| format!("loading {}", args.model))?;
        let p = predict(&loaded.model, &loaded.tokenizer, &args.prompt, args.top_k)?;
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &p)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{:>4}  {:>8}  {:>9}  token", "rank", "id", "prob")?;
            for (i, t) in p.top.iter().enumerate() {
                writeln!(out, "{:>4}  {:>8}  {:>9.6}  {:?}", i + 1, t.token_id, t.prob, t.token)?;
            }
        }
        Ok(())
    })
}
