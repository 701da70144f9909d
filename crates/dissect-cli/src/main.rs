//! `dissect`: one subcommand per stage. Data goes to stdout, logs to stderr.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod aggregate;
mod backend;
mod bench;
mod cache;
mod filter;
mod experiment;
mod knockout;
mod memory;
mod pipeline;
mod predict;
mod progress;
mod shard;
mod stage;

#[derive(Parser)]
#[command(name = "dissect", version, about = "Dissecting factual recall in transformer language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The top-k next tokens of a prompt, with probabilities.
    Predict(predict::Args),
    /// Attention knockout on one prompt: % change of the top-1 probability per layer and set.
    Knockout(knockout::Args),
    /// Stage 3: the paper's experiments on the kept records, one table per experiment.
    Experiment(experiment::Args),
    /// Keep the known facts the model predicts; writes filtered.parquet and rejected.parquet.
    Filter(filter::Args),
    /// Stage 2: cache the kept records' activations the experiments read, to Parquet.
    Cache(cache::Args),
    /// Stage 4: tables with bootstrap CIs, the paper's figures and a report from the experiment tables.
    Aggregate(aggregate::Args),
    /// Benchmarks against Hugging Face (driven by `cargo xtask bench`); prints JSON.
    #[command(hide = true)]
    Bench(bench::Args),
}

fn main() {
    memory::keep_freed_memory();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Knockout(args) => knockout::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Filter(args) => filter::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Aggregate(args) => aggregate::run(args),
        Command::Bench(args) => bench::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
