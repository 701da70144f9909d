//! `cargo xtask report-check`: renders the aggregate stage's report.html in headless
//! Chromium at a laptop's width, saves screenshots beside it, and fails when the page is
//! wider than the window (something that would need a horizontal scrollbar on the page).
//!
//! The width is measured by the browser itself: a copy of the page gets a small script that
//! writes `document.documentElement.scrollWidth` (and what sticks out) into the DOM, which
//! `--dump-dom` prints. The copy lives in a temporary directory; the report is not touched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::temp::TempDir;

#[derive(clap::Args)]
pub struct Args {
    /// The report directory (the one holding report.html).
    #[arg(long, value_name = "DIR", default_value = "out/gemma3-270m/report")]
    out: PathBuf,
    /// Window width in CSS pixels: a common laptop screen's.
    #[arg(long, default_value_t = 1366)]
    width: u32,
    /// Window height of the first screenshot.
    #[arg(long, default_value_t = 900)]
    height: u32,
    /// The browser to run (default: $CHROMIUM, else chromium, chromium-browser or google-chrome on PATH).
    #[arg(long)]
    chromium: Option<PathBuf>,
}

/// Where the probe's result lands in the dumped DOM.
const PROBE_ID: &str = "dissect-report-check";

/// Runs at the end of the page: the layout viewport's width, the page's scroll width and
/// height, and the outermost elements whose right edge passes the viewport.
const PROBE: &str = r#"<script>
(function () {
  var d = document.documentElement, w = d.clientWidth, wide = [];
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect();
    if (r.right > w + 0.5 && !(e.parentElement && e.parentElement.getBoundingClientRect().right > w + 0.5)) {
      var name = e.tagName.toLowerCase() + (e.className && typeof e.className === 'string' ? '.' + e.className : '');
      var text = (e.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 60);
      wide.push(name + ' (right edge ' + Math.round(r.right) + ' px): ' + text);
    }
  });
  var p = document.createElement('pre');
  p.id = 'ID';
  p.textContent = JSON.stringify({clientWidth: w, scrollWidth: d.scrollWidth, scrollHeight: d.scrollHeight, wide: wide.slice(0, 10)});
  document.body.appendChild(p);
})();
</script>"#;

/// Chromium's page-size limit is about 16k px a side; a longer report is cut there.
const MAX_FULL_HEIGHT: u64 = 16_000;

pub fn run(args: &Args) -> Result<()> {
    let report = args.out.join("report.html");
    if !report.is_file() {
        bail!("{} does not exist\nhint: write the report first: cargo xtask reproduce, or dissect aggregate --out {}", report.display(), args.out.display());
    }
    let browser = find_chromium(args.chromium.as_deref())?;
    let html = std::fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?;
    let Some(end) = html.rfind("</body>") else { bail!("{}: no </body>\nhint: regenerate the report with dissect aggregate --force", report.display()) };

    let tmp = TempDir::new_in(&std::env::temp_dir(), "dissect-report-check-")?;
    let probe_page = tmp.path().join("report.html");
    let probed = format!("{}{}{}", &html[..end], PROBE.replace("'ID'", &format!("'{PROBE_ID}'")), &html[end..]);
    std::fs::write(&probe_page, probed).with_context(|| format!("writing {}", probe_page.display()))?;
    let profile = tmp.path().join("profile");
    let window = format!("--window-size={},{}", args.width, args.height);

    eprintln!("report-check: {} ({}) at {}×{}", report.display(), browser.display(), args.width, args.height);
    let dom = chromium(&browser, &profile, &[window.as_str(), "--dump-dom", &file_url(&probe_page)?])?;
    let m = measurement(&dom).context("the page's width was not measured (the probe's output is not in the dumped DOM)\nhint: the report may have a script error or chromium may not have run scripts; rerun with a newer chromium")?;
    let (client, scroll, height) = (field(&m, "clientWidth")?, field(&m, "scrollWidth")?, field(&m, "scrollHeight")?);
    eprintln!("report-check: page {scroll} px wide in a {client} px viewport, {height} px tall");

    let shots = args.out.join("screenshots");
    std::fs::create_dir_all(&shots).with_context(|| format!("creating {}", shots.display()))?;
    let shots = shots.canonicalize()?;
    let url = file_url(&report)?;
    let first = shots.join(format!("report-{}x{}.png", args.width, args.height));
    let full = shots.join(format!("report-{}-full.png", args.width));
    for (path, h) in [(&first, u64::from(args.height)), (&full, height.clamp(1, MAX_FULL_HEIGHT))] {
        let size = format!("--window-size={},{h}", args.width);
        let shot = format!("--screenshot={}", path.display());
        chromium(&browser, &profile, &[size.as_str(), "--hide-scrollbars", &shot, &url])?;
        if !path.is_file() {
            bail!(
                "chromium did not write {}\nhint: run it by hand: {} --headless --no-sandbox --disable-gpu {shot} {size} {url}",
                path.display(),
                browser.display()
            );
        }
        writeln!(std::io::stdout(), "{}", path.display())?;
    }
    if height > MAX_FULL_HEIGHT {
        eprintln!("report-check: the full-page screenshot stops at {MAX_FULL_HEIGHT} px of {height}");
    }

    if scroll > client {
        let wide: Vec<String> = m["wide"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(|s| format!("  {s}"))).collect();
        bail!(
            "report.html is {scroll} px wide in a {client} px window: the page scrolls sideways\n{}\nhint: wide content must scroll inside its own box (the report's tables are wrapped in <div class=\"wide\">, see crates/dissect-aggregate/src/report.rs); screenshots in {}",
            wide.join("\n"),
            shots.display()
        );
    }
    eprintln!("report-check: ok, no horizontal overflow at {} px", args.width);
    Ok(())
}

fn field(m: &serde_json::Value, name: &str) -> Result<u64> {
    m[name].as_f64().map(|v| v.ceil() as u64).with_context(|| format!("the probe did not report {name}: {m}"))
}

/// The probe's JSON from the dumped DOM (a text node: only &, < and > are escaped).
fn measurement(dom: &str) -> Option<serde_json::Value> {
    let open = format!("<pre id=\"{PROBE_ID}\">");
    let start = dom.find(&open)? + open.len();
    let len = dom[start..].find("</pre>")?;
    let text = dom[start..start + len].replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&");
    serde_json::from_str(&text).ok()
}

fn file_url(path: &Path) -> Result<String> {
    let abs = path.canonicalize().with_context(|| format!("resolving {}", path.display()))?;
    // Percent-encode what a URL cannot hold as it is; the rest of a path is fine.
    let mut url = String::from("file://");
    for b in abs.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => url.push(b as char),
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(url)
}

fn find_chromium(given: Option<&Path>) -> Result<PathBuf> {
    let from_env = std::env::var_os("CHROMIUM").map(PathBuf::from);
    let candidates: Vec<PathBuf> = match given.map(Path::to_path_buf).or(from_env) {
        Some(p) => vec![p],
        None => ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].map(PathBuf::from).to_vec(),
    };
    for c in &candidates {
        let ok = Command::new(c).arg("--version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if ok {
            return Ok(c.clone());
        }
    }
    bail!(
        "no headless browser found (tried {})\nhint: install Chromium: apt-get install -y chromium (Debian 12; chromium-browser on Ubuntu), or pass --chromium PATH / set CHROMIUM",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Runs headless chromium with `args` and returns its stdout; its stderr (D-Bus and GPU
/// noise on a server) is shown only when it fails.
fn chromium(browser: &Path, profile: &Path, args: &[&str]) -> Result<String> {
    const LIMIT: Duration = Duration::from_secs(120);
    let mut cmd = Command::new(browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--run-all-compositor-stages-before-draw"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null());
    let out_file = profile.with_extension("stdout");
    let err_file = profile.with_extension("stderr");
    cmd.stdout(std::fs::File::create(&out_file)?).stderr(std::fs::File::create(&err_file)?);
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", browser.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish in {} s\nhint: run it by hand to see where it hangs: {} --headless --no-sandbox --disable-gpu {}",
                browser.display(),
                LIMIT.as_secs(),
                browser.display(),
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "{} {} failed ({status}):\n{}\nhint: chromium needs no display with --headless; as root it needs --no-sandbox (passed)",
            browser.display(),
            args.join(" "),
            tail.join("\n")
        );
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_result_is_read_from_the_dom() {
        let dom = format!("<html><body><p>x</p><pre id=\"{PROBE_ID}\">{{\"clientWidth\":1351,\"scrollWidth\":1972,\"scrollHeight\":10,\"wide\":[\"table (right edge 1972 px): a &lt;b&gt; &amp; c\"]}}</pre></body></html>");
        let m = measurement(&dom).unwrap();
        assert_eq!(field(&m, "scrollWidth").unwrap(), 1972);
        assert_eq!(m["wide"][0], "table (right edge 1972 px): a <b> & c");
        assert!(measurement("<html></html>").is_none());
    }

    #[test]
    fn file_urls_escape_odd_characters() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let url = file_url(&dir).unwrap();
        assert!(url.starts_with("file:///"));
        assert!(!url.contains(' '));
    }
}
