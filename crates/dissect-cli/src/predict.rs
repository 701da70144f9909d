use std::io::Write;

use anyhow::{Context, Result};
use dissect_model::predict::predict;
use dissect_model::source::load;

use crate::backend::on_backend;
use crate::stage::{positive, StageArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// The prompt to continue.
    #[arg(long)]
    prompt: String,
    /// How many of the most probable next tokens to print.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    top_k: usize,
    /// Print one JSON object ({"prompt", "input_ids", "top": [{"token_id", "token", "prob"}]}) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let stage = args.stage.resolve()?;
    let model = &stage.model;
    on_backend!(stage.backend, |B| {
        let loaded = load::<B>(model, &Default::default()).with_context(|| format!("loading {model}"))?;
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
