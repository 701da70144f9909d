//! The report as a small document model rendered twice: Markdown (figures linked) and a
//! self-contained HTML page (figures inlined as SVG).

use std::fmt::Write as _;

/// A block of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of the given level (1 = the title); one ending in `: <verdict>` is coloured in HTML.
    Heading(u8, String),
    /// A paragraph of plain text (escaped in HTML, written as is in Markdown).
    Para(String),
    /// A bulleted list, one item per string.
    List(Vec<String>),
    /// A table of plain-text cells; in HTML it scrolls in its own box, hex digests in monospace.
    Table {
        /// The column headers.
        header: Vec<String>,
        /// The rows, each with one cell per header.
        rows: Vec<Vec<String>>,
    },
    /// `name` is the figure's file stem under `figures/`.
    Figure {
        /// Linked as `figures/<name>.png` and `.svg` in Markdown.
        name: String,
        /// The caption under the figure.
        caption: String,
        /// The rendered SVG, inlined in the HTML.
        svg: String,
    },
    /// Preformatted text, e.g. the recorded configurations as JSON.
    Code(String),
    /// Blocks folded away behind `summary` (`<details>`; GitHub renders it in Markdown too).
    Folded {
        /// The always-visible line.
        summary: String,
        /// The folded blocks.
        body: Vec<Block>,
    },
}

/// The report as Markdown, figures linked as `figures/<name>.png` relative to the report.
pub fn to_markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(out, "- {i}");
                }
                out.push('\n');
            }
            Block::Table { header, rows } => {
                let cell = |s: &String| s.replace('|', "\\|").replace('\n', " ");
                let _ = writeln!(out, "| {} |", header.iter().map(cell).collect::<Vec<_>>().join(" | "));
                let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
                for r in rows {
                    let _ = writeln!(out, "| {} |", r.iter().map(cell).collect::<Vec<_>>().join(" | "));
                }
                out.push('\n');
            }
            Block::Figure { name, caption, .. } => {
                let _ = writeln!(out, "![{name}](figures/{name}.png)\n\n*{caption}* ([SVG](figures/{name}.svg))\n");
            }
            Block::Code(text) => {
                let fence = if text.contains("```") { "~~~~" } else { "```" };
                let _ = writeln!(out, "{fence}\n{text}\n{fence}\n");
            }
            Block::Folded { summary, body } => {
                // The blank line after <summary> makes GitHub render the body as Markdown.
                let _ = writeln!(out, "<details>\n<summary>{}</summary>\n\n{}</details>\n", esc(summary), to_markdown(body));
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Laid out for a laptop screen (1366 px): the body is capped below that, wide content
/// scrolls inside its own box rather than widening the page, and long words (sha256
/// hashes) may break anywhere, which lets tables shrink to the page's width.
const STYLE: &str = "*,*::before,*::after{box-sizing:border-box}\
body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45;overflow-wrap:anywhere}\
.wide{max-width:100%;overflow-x:auto;margin:.5em 0 1em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f3f3f3}td.hash{font-family:'DejaVu Sans Mono',monospace;font-size:.85em;word-break:break-all;min-width:12ch}\
figure{margin:1em 0 2em;max-width:100%;overflow-x:auto}figure svg{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{font-size:.92em;color:#444}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em;max-width:100%}\
details{margin:.5em 0 1em;border:1px solid #ddd;border-radius:4px;padding:.3em .8em}summary{cursor:pointer;color:#333}\
.supported{color:#0a7a3d}.contradicted{color:#b00020}.mixed{color:#a05a00}.insufficient{color:#555;font-style:italic}";

/// Headings ending in `: <verdict>` get the verdict's colour.
const VERDICT_CLASSES: [(&str, &str); 4] =
    [("supported", "supported"), ("contradicted", "contradicted"), ("mixed", "mixed"), ("insufficient evidence", "insufficient")];

/// Whether a cell holds a hex digest (shown in monospace, breaking anywhere).
fn is_hash(cell: &str) -> bool {
    cell.split(", ").all(|h| h.len() >= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A self-contained page: no external file, script or font is referenced.
pub fn to_html(title: &str, blocks: &[Block]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(title)
    );
    html_blocks(&mut out, blocks);
    out.push_str("</body>\n</html>\n");
    out
}

fn html_blocks(out: &mut String, blocks: &[Block]) {
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let class = VERDICT_CLASSES.iter().find(|(v, _)| text.ends_with(&format!(": {v}"))).map(|(_, c)| format!(" class=\"{c}\"")).unwrap_or_default();
                let _ = writeln!(out, "<h{level}{class}>{}</h{level}>", esc(text));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "<p>{}</p>", esc(text));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    let _ = writeln!(out, "<li>{}</li>", esc(i));
                }
                out.push_str("</ul>\n");
            }
            Block::Table { header, rows } => {
                out.push_str("<div class=\"wide\">\n<table>\n<tr>");
                for h in header {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let class = if is_hash(c) { " class=\"hash\"" } else { "" };
                        let _ = write!(out, "<td{class}>{}</td>", esc(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n</div>\n");
            }
            Block::Figure { caption, svg, .. } => {
                // plotters' SVG has no XML prolog, so it can be inlined as it is.
                let _ = writeln!(out, "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>", svg.trim(), esc(caption));
            }
            Block::Code(text) => {
                let _ = writeln!(out, "<pre><code>{}</code></pre>", esc(text));
            }
            Block::Folded { summary, body } => {
                let _ = writeln!(out, "<details>\n<summary>{}</summary>", esc(summary));
                html_blocks(out, body);
                out.push_str("</details>\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_renderings_escape_and_keep_content() {
        let blocks = vec![
            Block::Heading(1, "A <b> & c".into()),
            Block::Table { header: vec!["k".into(), "v".into()], rows: vec![vec!["a|b".into(), "1".into()]] },
            Block::Figure { name: "f".into(), caption: "cap".into(), svg: "<svg></svg>".into() },
        ];
        let md = to_markdown(&blocks);
        assert!(md.contains("# A <b> & c"));
        assert!(md.contains("| a\\|b | 1 |"));
        assert!(md.contains("![f](figures/f.png)"));
        let html = to_html("t", &blocks);
        assert!(html.contains("<h1>A &lt;b&gt; &amp; c</h1>"));
        assert!(html.contains("<figure>\n<svg></svg>"));
    }
}
