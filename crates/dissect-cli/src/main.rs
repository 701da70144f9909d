//! `dissect`: one subcommand per stage. Data goes to stdout, logs to stderr.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod aggregate;
mod backend;
mod cache;
mod experiments;
mod filter;
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
    /// Stage 1: keep the known facts the model predicts; writes the `filtered` and `rejected` tables.
    Filter(filter::Args),
    /// Stage 2: cache the kept records' activations the experiments read, to Parquet.
    Cache(cache::Args),
    /// Stage 3: the paper's experiments on the kept records, one table per experiment.
    Experiments(experiments::Args),
    /// Stage 4: tables with bootstrap CIs, the paper's figures and a report from the experiment tables.
    Aggregate(aggregate::Args),
}

fn main() {
    memory::keep_freed_memory();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Knockout(args) => knockout::run(args),
        Command::Experiments(args) => experiments::run(args),
        Command::Filter(args) => filter::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Aggregate(args) => aggregate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `dissect <command> --help` explains every flag.
    #[test]
    fn every_flag_of_every_subcommand_has_help() {
        let mut missing = Vec::new();
        for sub in super::Cli::command().get_subcommands() {
            for arg in sub.get_arguments() {
                if arg.get_help().is_none() && !matches!(arg.get_id().as_str(), "help" | "version") {
                    missing.push(format!("{} --{}", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }

    /// The stages' subcommands are spelled as the stages print themselves.
    #[test]
    fn stage_subcommands_are_named_as_the_stages() {
        let cli = super::Cli::command();
        let names: Vec<&str> = cli.get_subcommands().map(|s| s.get_name()).collect();
        for stage in ["filter", "cache", "experiments", "aggregate"] {
            assert!(names.contains(&stage), "{stage} missing from {names:?}");
        }
    }
}
