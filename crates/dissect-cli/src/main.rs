//! `dissect`: one subcommand per stage. Data goes to stdout, logs to stderr.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod knockout;
mod predict;

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
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Knockout(args) => knockout::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
