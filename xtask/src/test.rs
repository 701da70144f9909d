//! `cargo xtask test`: what CI runs. First `cargo xtask tidy` (format, lints, references);
//! then the tests. The tests that use the real model fail (never skip) when it is missing, so
//! the model is fetched first.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{fetch_model, models};

pub fn run(extra: &[String]) -> Result<()> {
    crate::tidy::run()?;
    let models = test_models()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .envs(models.iter().map(|(var, path)| (var, path)))
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    Ok(())
}

/// The real models the tests read, each with the environment variable they take its path from.
pub(crate) type TestModels = [(&'static str, PathBuf); 2];

/// [`TestModels`], fetched when missing: the default model, and the second real model (the
/// Llama-family and byte-level GGUF tokenizer tests use it).
pub(crate) fn test_models() -> Result<TestModels> {
    let models = [("DISSECT_GEMMA_GGUF", fetch_model::run(models::DEFAULT)?), ("DISSECT_SMOLLM2_GGUF", fetch_model::run("smollm2-135m")?)];
    for (_, path) in &models {
        eprintln!("model: {}", path.display());
    }
    Ok(models)
}
