//! `cargo xtask tidy`: the checks that keep the tree as the project wants it, run by
//! `cargo xtask test` before the tests (and so by CI):
//!
//! - `cargo fmt --all --check` (settings in `rustfmt.toml`);
//! - `cargo clippy --workspace --all-targets -- -D warnings`;
//! - no tracked text file points outside the repository (the design folder beside the checkout,
//!   absolute machine paths)
//!   or cites issue numbers: the project speaks of itself only.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Text that must not appear in a tracked file, with the reason shown when it does.
const FORBIDDEN: &[(&str, &str)] = &[
    // Spelled in pieces so that this file, which the check reads too, does not itself point there.
    (concat!("..", "/", "shared/"), "a path outside the repository"),
    (concat!("/work", "/", "shared"), "a path outside the repository"),
    ("/work/main", "an absolute path of one machine"),
    ("/root/", "an absolute path of one machine"),
    ("/home/", "an absolute path of one machine"),
    ("issue #", "an issue number: say what the code does instead"),
];

/// Files that may contain the text above: this file (it lists it), and the data sources,
/// which cite another project's issue tracker.
const ALLOWED: &[&str] = &["xtask/src/tidy.rs", "data/SOURCES.md"];

pub fn run() -> Result<()> {
    let root = crate::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("tidy: cargo fmt --check");
    check(Command::new(&cargo).current_dir(&root).args(["fmt", "--all", "--check"]), "cargo fmt --all --check", "run `cargo fmt --all`")?;
    eprintln!("tidy: cargo clippy");
    check(
        Command::new(&cargo).current_dir(&root).args(["clippy", "--quiet", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        "cargo clippy --workspace --all-targets -- -D warnings",
        "fix the lints above (or allow one where its reason is written next to it)",
    )?;
    eprintln!("tidy: references outside the repository");
    let found = forbidden_references(&root)?;
    if !found.is_empty() {
        bail!("{}\nhint: the project speaks of itself only: no paths outside the repository, no issue numbers", found.join("\n"));
    }
    eprintln!("tidy: ok");
    Ok(())
}

fn check(cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})\nhint: {hint}");
    }
    Ok(())
}

/// `file:line: text (reason)` for every forbidden text in a tracked UTF-8 file.
fn forbidden_references(root: &Path) -> Result<Vec<String>> {
    let out = Command::new("git").current_dir(root).args(["ls-files", "-z"]).output().context("running git ls-files")?;
    if !out.status.success() {
        bail!("git ls-files failed\nhint: run tidy in a git checkout");
    }
    let mut found = Vec::new();
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        if ALLOWED.contains(&name.as_ref()) {
            continue;
        }
        // Binary and non-UTF-8 files (weights, fonts, figures) hold no prose.
        let Ok(text) = std::fs::read_to_string(root.join(name.as_ref())) else { continue };
        found.extend(scan(&name, &text));
    }
    Ok(found)
}

fn scan(name: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (needle, why) in FORBIDDEN {
            if line.to_lowercase().contains(needle) {
                found.push(format!("{name}:{}: `{needle}`: {why}", i + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_outside_paths_and_issue_numbers_and_nothing_else() {
        let text = concat!("see ..", "/", "shared/design/DESIGN.md\nfixed in Issue #12\nthe model in /root/.cache\nout/report/report.md\n");
        let found = scan("x.md", text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("x.md:1:") && found[1].starts_with("x.md:2:") && found[2].starts_with("x.md:3:"));
        assert!(scan("y.rs", "let p = dissect_home().join(\"models\");").is_empty());
    }

    #[test]
    fn the_tree_refers_to_nothing_outside_itself() {
        let found = forbidden_references(&crate::workspace_root()).unwrap();
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}
