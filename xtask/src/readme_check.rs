//! `cargo xtask readme-check`: every command in the README's ```` ```sh ```` blocks, run as
//! written (`bash -c`) from the workspace root, in README order; the first that fails stops the
//! check with its command line and the end of its stderr.
//!
//! A block is split into commands by line: blank lines and lines starting with `#` (comments,
//! a script's `#!` and `#SBATCH` lines) are not commands, and a line ending in `\` continues
//! on the next. The only commands left out are the few in [`SKIP`], each with its reason,
//! printed when it is skipped; an entry that matches no README command is an error, so the list
//! cannot outlive its command.
//!
//! Every ```` ```python ```` block must also be, verbatim, part of a file under `examples/`, so
//! the README's snippets are the files the commands run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// A README command that the check does not run.
pub(crate) struct Skip {
    /// The command as [`normalize`] writes it: continuations joined, runs of blanks as one
    /// space, a trailing `# comment` left out.
    pub(crate) command: &'static str,
    pub(crate) reason: &'static str,
}

/// Kept as short as the README allows: only what takes far longer than the rest of the check
/// together, or needs hardware or a scheduler that a workstation does not have.
pub(crate) const SKIP: &[Skip] = &[
    Skip {
        command: "cargo xtask reproduce",
        reason: "the whole paper on all 1209 facts: about 26 minutes on two cores (the README's \
                 own-facts commands run the same chain on three facts)",
    },
    Skip { command: "cargo xtask test", reason: "the test suite: a separate dev-profile build and every test; CI runs it" },
    Skip { command: "cargo xtask reproduce --pipeline gemma3-270m --shards 8", reason: "one task of a Slurm job array: needs SLURM_ARRAY_TASK_ID" },
    Skip {
        command: "cargo xtask reproduce --pipeline gpt2-xl --backend cuda",
        reason: "needs an NVIDIA GPU, a build with --features cuda and the Hugging Face hub",
    },
    Skip {
        command: "dissect predict --model hf:google/gemma-3-270m --prompt \"The Eiffel Tower is located in the city of\"",
        reason: "gated on Hugging Face: needs network and the token of an account that accepted the Gemma terms",
    },
    Skip { command: "python3 bench/make_gpt2_xl_shaped.py", reason: "the GPT-2 XL-shaped model: 6.2 GB of random weights, and pip's access to PyPI" },
    Skip {
        command: "dissect filter --model ~/.cache/dissect/models/gpt2-xl-shaped --dataset ~/.cache/dissect/models/gpt2-xl-shaped/facts.json --out /tmp/xl",
        reason: "needs the GPT-2 XL-shaped model above",
    },
    Skip {
        command: "DISSECT_PROFILE=1 dissect experiments all --model ~/.cache/dissect/models/gpt2-xl-shaped --input /tmp/xl/filtered --out /tmp/xl/tables --no-cache --limit 20",
        reason: "the paper's scale: 14 minutes on two cores, with the GPT-2 XL-shaped model above",
    },
    Skip {
        command: "dissect experiments all --pipeline gemma3-270m --config pipelines/notebook-settings.json --out out/gemma3-270m-notebook/experiments",
        reason: "every experiment on the 490 kept facts: about 25 minutes on two cores",
    },
];

/// One command of a ```` ```sh ```` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snippet {
    /// 1-based line of the README where it starts.
    pub(crate) line: usize,
    /// As written, continuation lines included: what `bash -c` runs.
    pub(crate) text: String,
}

impl Snippet {
    pub(crate) fn normalized(&self) -> String {
        normalize(&self.text)
    }
}

/// A fenced block: its info string (`sh`, `python`, ...), first line and lines.
struct Block<'a> {
    info: &'a str,
    first_line: usize,
    lines: Vec<&'a str>,
}

fn blocks(markdown: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some(Block { info: info.trim(), first_line: i + 2, lines: Vec::new() }),
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(open.take()),
            (Some(block), _) => block.lines.push(line),
            (None, None) => {}
        }
    }
    out
}

/// The commands of every ```` ```sh ```` block, in README order.
pub(crate) fn commands(markdown: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    for block in blocks(markdown).into_iter().filter(|b| b.info == "sh") {
        let mut current: Option<Snippet> = None;
        for (k, line) in block.lines.iter().enumerate() {
            let line_no = block.first_line + k;
            if let Some(cmd) = &mut current {
                cmd.text.push('\n');
                cmd.text.push_str(line);
            } else {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                current = Some(Snippet { line: line_no, text: (*line).to_string() });
            }
            if !line.trim_end().ends_with('\\') {
                out.extend(current.take());
            }
        }
        out.extend(current.take());
    }
    out
}

/// The ```` ```python ```` blocks' texts.
fn python_blocks(markdown: &str) -> Vec<(usize, String)> {
    blocks(markdown).into_iter().filter(|b| b.info == "python").map(|b| (b.first_line, b.lines.iter().map(|l| format!("{l}\n")).collect())).collect()
}

/// `text` on one line: `\`-newline continuations joined, blanks collapsed, a trailing comment
/// (a `#` after a blank, outside quotes) left out.
pub(crate) fn normalize(text: &str) -> String {
    let joined = text.replace("\\\n", " ");
    let mut kept = String::new();
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    for c in joined.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_blank => break,
            _ => {}
        }
        prev_blank = c.is_whitespace();
        kept.push(c);
    }
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn skip_for(snippet: &Snippet) -> Option<&'static Skip> {
    let n = snippet.normalized();
    SKIP.iter().find(|s| s.command == n)
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print the commands (and which are skipped, and why) without running them.
    #[arg(long)]
    list: bool,
}

/// How much of a failed command's stderr the error shows.
const STDERR_TAIL: usize = 8000;

pub(crate) fn run(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).with_context(|| format!("reading {}", readme_path.display()))?;
    let snippets = commands(&readme);
    check_skip_list(&snippets)?;
    check_python_blocks(&readme, &root)?;

    if args.list {
        let mut out = std::io::stdout().lock();
        for s in &snippets {
            match skip_for(s) {
                Some(skip) => writeln!(out, "README.md:{}: SKIP {}  ({})", s.line, s.normalized(), skip.reason)?,
                None => writeln!(out, "README.md:{}: {}", s.line, s.normalized())?,
            }
        }
        return Ok(());
    }

    let started = Instant::now();
    let (mut ran, mut skipped) = (0, Vec::new());
    for (i, s) in snippets.iter().enumerate() {
        let head = format!("[{}/{}] README.md:{}", i + 1, snippets.len(), s.line);
        if let Some(skip) = skip_for(s) {
            eprintln!("== {head}: skipped: {}\n   why: {}", s.normalized(), skip.reason);
            skipped.push(s);
            continue;
        }
        eprintln!("== {head}: {}", s.text);
        let t = Instant::now();
        let (status, stderr) = run_bash(&s.text, &root)?;
        if !status.success() {
            bail!(
                "README.md:{} failed ({status}) after {:.1}s:\n{}\nits stderr ended with:\n{}\nhint: fix the command in README.md, or what it runs",
                s.line,
                t.elapsed().as_secs_f64(),
                s.text,
                tail(&stderr, STDERR_TAIL)
            );
        }
        eprintln!("   ok in {:.1}s", t.elapsed().as_secs_f64());
        ran += 1;
    }
    eprintln!("readme-check: {ran} commands ran and passed, {} skipped, in {:.0}s", skipped.len(), started.elapsed().as_secs_f64());
    for s in skipped {
        eprintln!("  skipped README.md:{}: {}", s.line, s.normalized());
    }
    Ok(())
}

fn check_skip_list(snippets: &[Snippet]) -> Result<()> {
    let stale: Vec<&str> = SKIP.iter().filter(|skip| !snippets.iter().any(|s| s.normalized() == skip.command)).map(|s| s.command).collect();
    if !stale.is_empty() {
        bail!("SKIP lists commands the README does not have: {stale:?}\nhint: remove them from SKIP in xtask/src/readme_check.rs");
    }
    Ok(())
}

fn check_python_blocks(readme: &str, root: &Path) -> Result<()> {
    let mut files = Vec::new();
    if let Ok(dir) = std::fs::read_dir(root.join("examples")) {
        for e in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                files.push(text);
            }
        }
    }
    for (line, block) in python_blocks(readme) {
        if !files.iter().any(|f| f.contains(&block)) {
            bail!(
                "README.md:{line}: this python block is not part of any file in examples/\nhint: the README shows the files the commands run: copy the block from the file"
            );
        }
    }
    Ok(())
}

/// Runs `bash -c text` in `dir`, echoing its stdout and stderr to ours as it goes; returns its
/// status and its stderr.
fn run_bash(text: &str, dir: &Path) -> Result<(std::process::ExitStatus, String)> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(text)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running bash\nhint: the check needs bash on PATH")?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let echo_out = std::thread::spawn(move || echo(stdout, false));
    let echo_err = std::thread::spawn(move || echo(stderr, true));
    let status = child.wait().context("waiting for bash")?;
    echo_out.join().expect("stdout reader");
    let err = echo_err.join().expect("stderr reader");
    Ok((status, err))
}

/// Copies a child's stream to our stderr, indented; returns it when `keep`.
fn echo(stream: impl Read, keep: bool) -> String {
    let mut kept = String::new();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line);
        eprint!("   | {}", text);
        if !text.ends_with('\n') {
            eprintln!();
        }
        if keep {
            kept.push_str(&text);
        }
        line.clear();
    }
    kept
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
    }

    #[test]
    fn finds_the_readme_set_up_commands() {
        let found: Vec<String> = commands(&readme()).iter().map(Snippet::normalized).collect();
        assert_eq!(found[..2], ["cargo xtask reproduce", "cargo xtask test"], "{found:#?}");
    }

    #[test]
    fn every_skip_is_a_readme_command_and_python_blocks_are_files() {
        let readme = readme();
        check_skip_list(&commands(&readme)).unwrap();
        check_python_blocks(&readme, &Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
    }

    #[test]
    fn splits_blocks_into_commands() {
        let md = "text\n```sh\n# a comment\ncargo run -- a \\\n    --b \"c # d\"   # why\n\n#!/bin/bash\necho 'x'\n```\n\n```yaml\nkey: value\n```\n```python\nprint(1)\n```\n  ```sh\nls\n  ```\n";
        let found = commands(md);
        assert_eq!(
            found,
            vec![
                Snippet { line: 4, text: "cargo run -- a \\\n    --b \"c # d\"   # why".into() },
                Snippet { line: 8, text: "echo 'x'".into() },
                Snippet { line: 18, text: "ls".into() },
            ]
        );
        assert_eq!(found[0].normalized(), "cargo run -- a --b \"c # d\"");
        assert_eq!(python_blocks(md), vec![(15, "print(1)\n".to_string())]);
        assert_eq!(normalize("a#b  c # d"), "a#b c");
    }
}
