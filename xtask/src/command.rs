//! Helpers for the subprocesses xtask runs: a command line for logs, and the JSON a run prints.

use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

/// The command line as a person would type it (arguments with spaces quoted), for logs.
pub(crate) fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.contains(' ') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// The whole output as JSON, else its last line that starts with `{` (a run that logs to stdout
/// before its result).
pub(crate) fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text.trim()).or_else(|_| {
        let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON object in the output")?;
        Ok(serde_json::from_str(line)?)
    })
}
