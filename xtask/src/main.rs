//! Development tasks for dissect: `cargo xtask <task>` (see `cargo xtask --help`).
//!
//! Logs go to stderr, data (e.g. a fetched path) to stdout. Errors end with `hint:` lines.

mod bench;
mod cache;
mod command;
mod fetch_model;
mod gpu_check;
mod install;
mod models;
mod readme_check;
mod report_check;
mod reproduce;
mod sha256;
mod stamp;
mod temp;
mod test;
mod tidy;
mod wheel;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Development tasks for dissect")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download a model into `$DISSECT_HOME/models` (default `~/.cache/dissect/models`),
    /// verify its sha256, and print its path. A no-op when it is already there.
    FetchModel {
        /// The model: one of the rows in xtask/src/models.rs.
        #[arg(default_value = models::DEFAULT)]
        name: String,
    },
    /// The test suite: fetches the default model if needed, then `cargo test --workspace`
    /// (extra arguments are passed to cargo test).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark against Hugging Face transformers (PyTorch CPU) on the same model and prompts:
    /// `forward` (tokens/s) or `knockout` (the attention-knockout sweep), printing the ratio; or
    /// `rerun`: a `cargo xtask reproduce` with nothing to do, against its 2 s goal.
    Bench(bench::Args),
    /// The whole paper: fetch the model, then filter → cache → experiments → aggregate, each skipped
    /// when its outputs exist with the same parameters; prints the report's path.
    Reproduce(reproduce::Args),
    /// `cargo fmt --check`, `cargo clippy -D warnings`, and no references outside the
    /// repository or to issue numbers; `cargo xtask test` runs it first.
    Tidy,
    /// Runs every command of the README's sh blocks as written, from the workspace root
    /// (the few long ones listed in xtask/src/readme_check.rs are skipped, with the reason).
    ReadmeCheck(readme_check::Args),
    /// Renders report.html in headless Chromium at 1366 px, saves screenshots under
    /// <report>/screenshots/ and fails if the page overflows horizontally.
    ReportCheck(report_check::Args),
    /// On a machine with an NVIDIA GPU: the CUDA tests, `dissect` on CPU vs CUDA (max difference),
    /// and filter + experiments timed on CUDA; a summary table, logs kept under --out.
    GpuCheck(gpu_check::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::FetchModel { name } => fetch_model::run(&name).and_then(|path| {
            writeln!(std::io::stdout(), "{}", path.display())?;
            Ok(())
        }),
        Task::Test { args } => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Reproduce(args) => reproduce::run(&args).map(|_| ()),
        Task::Tidy => tidy::run(),
        Task::ReadmeCheck(args) => readme_check::run(&args),
        Task::ReportCheck(args) => report_check::run(&args),
        Task::GpuCheck(args) => gpu_check::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", render_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// The workspace the command was run in: the nearest directory above the current one with a
/// `Cargo.toml` declaring `[workspace]`. Found at run time, not from `CARGO_MANIFEST_DIR`: clones
/// that share one target directory can share one xtask binary, built from another clone.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("."));
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("[workspace]")) {
            return dir.to_path_buf();
        }
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// `error: outer: ...: root`, then every `hint:` line found anywhere in the chain,
/// the root cause's first.
fn render_error(err: &anyhow::Error) -> String {
    let mut messages = Vec::new();
    let mut hints = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let mut message = Vec::new();
        let mut cause_hints = Vec::new();
        for line in text.lines() {
            if line.starts_with("hint: ") {
                cause_hints.push(line.to_owned())
            } else {
                message.push(line)
            }
        }
        messages.push(message.join("\n"));
        // The root cause's hints are the most specific: they go first.
        hints.splice(0..0, cause_hints);
    }
    let mut out = format!("error: {}\n", messages.join(": "));
    for hint in hints {
        out.push_str(&hint);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use anyhow::{anyhow, Context};

    use super::*;

    #[test]
    fn hints_go_last() {
        let err = Err::<(), _>(anyhow!("root cause\nhint: fix the root")).context("middle\nhint: or the middle").context("outer").unwrap_err();
        assert_eq!(render_error(&err), "error: outer: middle: root cause\nhint: fix the root\nhint: or the middle\n");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let Task::FetchModel { name } = Cli::try_parse_from(["xtask", "fetch-model"]).unwrap().task else {
            panic!("fetch-model parses as FetchModel");
        };
        assert_eq!(name, models::DEFAULT);
    }
}
