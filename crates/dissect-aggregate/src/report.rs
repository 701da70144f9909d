//! The report as a small document model rendered twice: Markdown (figures linked) and a
//! self-contained HTML page (figures inlined as SVG).

use std::fmt::Write as _;

/// A block of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading(u8, String),
    Para(String),
    List(Vec<String>),
    Table { header: Vec<String>, rows: Vec<Vec<String>> },
    /// `name` is the figure's file stem under `figures/`.
    Figure { name: String, caption: String, svg: String },
    Code(String),
}

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
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}figure{margin:1em 0 2em}figure svg{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{font-size:.92em;color:#444}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}\
.supported{color:#0a7a3d}.contradicted{color:#b00020}.mixed{color:#a05a00}.insufficient{color:#555;font-style:italic}";

/// Headings ending in `: <verdict>` get the verdict's colour.
const VERDICT_CLASSES: [(&str, &str); 4] = [("supported", "supported"), ("contradicted", "contradicted"), ("mixed", "mixed"), ("insufficient evidence", "insufficient")];

/// A self-contained page: no external file, script or font is referenced.
pub fn to_html(title: &str, blocks: &[Block]) -> String {
    let mut out = format!("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n", esc(title));
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
                out.push_str("<table>\n<tr>");
                for h in header {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::Figure { caption, svg, .. } => {
                // plotters' SVG has no XML prolog, so it can be inlined as it is.
                let _ = writeln!(out, "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>", svg.trim(), esc(caption));
            }
            Block::Code(text) => {
                let _ = writeln!(out, "<pre><code>{}</code></pre>", esc(text));
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
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
