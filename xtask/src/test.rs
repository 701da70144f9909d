//! `cargo xtask test`: what CI runs. First `cargo xtask tidy` (format, lints, references);
//! then the tests. The tests that use the real model fail (never skip) when it is missing, so
//! the model is fetched first.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{fetch_model, models};

pub fn run(extra: &[String]) -> Result<()> {
    crate::tidy::run()?;
    let model = fetch_model::run(models::DEFAULT)?;
    eprintln!("model: {}", model.display());
    // The second real model: the Llama-family and byte-level GGUF tokenizer tests use it.
    let smollm2 = fetch_model::run("smollm2-135m")?;
    eprintln!("model: {}", smollm2.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .env("DISSECT_GEMMA_GGUF", &model)
        .env("DISSECT_SMOLLM2_GGUF", &smollm2)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    Ok(())
}
