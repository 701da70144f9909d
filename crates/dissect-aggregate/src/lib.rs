//! `dissect-aggregate`: the last stage. Reads the experiments stage's per-example tables (each
//! a Parquet file or a directory of `shard=*/part-*.parquet`, read as their union) and the
//! filter stage's tables, and writes under the output directory:
//!
//! - `tables/<name>.parquet` and `tables/<name>.csv`: per condition and layer the number of
//!   examples `n`, the `mean` and its 95% bootstrap interval `ci_low`, `ci_high` (ranks also
//!   the median and its interval), see [`tables::Tables`] for each table's keys; `counts`
//!   holds kept / rejected / skipped counts;
//! - `figures/<name>.svg` and `.png`, one per figure of the paper ([`figures`]);
//! - `report.md` and a self-contained `report.html`: the limits of the run ([`limits`]), the
//!   three findings with the numbers that support or contradict them ([`findings`]), and the
//!   inputs' provenance;
//! - `summary.json`: [`Summary`], for scripts.
//!
//! Every path the report and `summary.json` show (the input directory, a model given as a
//! path, the files written, paths inside the recorded configurations) is relative to the
//! output directory, the directory holding `report.html`: the report can be moved or
//! published with its directory and names no directory of the machine that wrote it.
//! [`Summary::read`] resolves `summary.json`'s paths against the output directory again.
//! In the HTML, tables too wide for a laptop screen scroll inside their own box and the
//! recorded configurations are folded in `<details>`.
//!
//! Intervals are seeded percentile bootstraps over examples ([`bootstrap`] documents the
//! method), so a rerun writes identical files, and a sharded input gives the same tables as
//! an unsharded one. Layer columns keep the input's convention (`layer` a 0-based block;
//! `hidden_state` and `source_hidden_state` indices into `hidden_states`, 0 = embeddings); the
//! figures and the report show blocks 1-based like the paper.

#![warn(missing_docs)]

pub mod bootstrap;
pub mod error;
pub mod figures;
pub mod findings;
mod glyph_text;
pub mod input;
pub mod limits;
pub mod paths;
pub mod plot;
pub mod report;
pub mod summary;
pub mod tables;

use std::path::{Path, PathBuf};

use dissect_data::atomic;
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::provenance::output_is_current;
use dissect_data::Provenance;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use bootstrap::{Bootstrap, Estimate, Statistic};
pub use error::AggregateError;
pub use findings::{Criterion, Finding, Numbers, Status, Verdict};
pub use limits::Limits;
use report::Block;
pub use summary::{Count, Key, SummaryRow, SummaryTable};
pub use tables::Tables;

/// The aggregation's settings. Seed, resamples and level enter the parameter hash, so changing
/// one makes [`outputs_are_current`] false and the next run redoes the outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateConfig {
    /// Seed of every bootstrap stream.
    pub seed: u64,
    /// Bootstrap resamples per cell (default 1000); 0 is rejected with [`AggregateError::Config`].
    pub resamples: usize,
    /// Interval level (0.95).
    pub level: f64,
    /// Where `filtered.parquet` / `rejected.parquet` are; `None`: the input directory if they
    /// are there, else its parent.
    pub filter_dir: Option<PathBuf>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig { seed: 0, resamples: 1000, level: 0.95, filter_dir: None }
    }
}

impl AggregateConfig {
    /// The bootstrap these settings describe (resamples, level, seed).
    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap { resamples: self.resamples, level: self.level, seed: self.seed }
    }

    fn check(&self) -> Result<(), AggregateError> {
        if self.resamples == 0 {
            return Err(AggregateError::Config("0 resamples".into()));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(AggregateError::Config(format!("interval level {} is not between 0 and 1", self.level)));
        }
        Ok(())
    }
}

/// What a run wrote and found. Paths are the output directory joined with the file's name;
/// `summary.json` holds them relative to the output directory (see [`Summary::read`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The model as the inputs' footers name it (several joined with ` + `); in `summary.json` a
    /// model given as an absolute path is shown relative to the output directory.
    pub model: String,
    /// The model's depth (number of blocks) as the experiment tables show it; `None` when no table has layers.
    pub n_layers: Option<i32>,
    /// Every summary table written, `.parquet` and `.csv`, `counts` last.
    pub tables: Vec<PathBuf>,
    /// Every figure written, `.svg` and `.png`.
    pub figures: Vec<PathBuf>,
    /// `report.md` (figures linked as PNG and SVG).
    pub report_md: PathBuf,
    /// `report.html`, self-contained (figures inlined as SVG).
    pub report_html: PathBuf,
    /// The `counts` table: kept, rejected and skipped records and distinct records per experiment.
    pub counts: Vec<Count>,
    /// What the numbers rest on: records, projection, depth scaling, paragraph data.
    #[serde(default)]
    pub limits: Limits,
    /// The paper's three findings, in order, each with its evidence, criteria and verdict.
    pub findings: Vec<Finding>,
    /// The peaks and rates the findings' criteria were computed from.
    pub numbers: Numbers,
    /// The aggregation's parameter hash (in every output table's footer).
    pub params_sha256: String,
}

impl Summary {
    /// `summary.json`'s content: the paths relative to `out`, and so a model given as a path.
    pub fn relative_to(&self, out: &Path) -> Summary {
        let rel = |p: &PathBuf| paths::relative_to(p, out);
        Summary {
            model: paths::show(&self.model, out),
            tables: self.tables.iter().map(rel).collect(),
            figures: self.figures.iter().map(rel).collect(),
            report_md: rel(&self.report_md),
            report_html: rel(&self.report_html),
            ..self.clone()
        }
    }

    /// Reads `out/summary.json`, its relative paths joined to `out` again.
    pub fn read(out: &Path) -> Result<Summary, AggregateError> {
        let path = out.join("summary.json");
        let bytes = std::fs::read(&path).map_err(|e| AggregateError::io(&path, e))?;
        let mut s: Summary = serde_json::from_slice(&bytes).map_err(|e| AggregateError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let join = |p: &mut PathBuf| *p = out.join(&*p);
        s.tables.iter_mut().chain(s.figures.iter_mut()).chain([&mut s.report_md, &mut s.report_html]).for_each(join);
        Ok(s)
    }
}

/// The filter directory `cfg` names, or the default of [`AggregateConfig::filter_dir`].
pub fn filter_dir(input: &Path, cfg: &AggregateConfig) -> PathBuf {
    if let Some(d) = &cfg.filter_dir {
        return d.clone();
    }
    let has = |d: &Path| ["filtered", "filtered.parquet"].iter().any(|n| d.join(n).exists());
    match input.parent() {
        Some(p) if !has(input) && has(p) => p.to_path_buf(),
        _ => input.to_path_buf(),
    }
}

/// The version of the findings' rules and of the report's layout: part of the aggregation's
/// parameters, so a report written under older rules is redone rather than taken as current.
pub const FINDINGS_RULES: u32 = 2;

/// The provenance of an aggregation: the settings and the parameter hashes of every input
/// file, so new inputs or settings change the hash and an unchanged rerun can be skipped.
pub fn aggregate_provenance(inputs: &[input::TableProvenance], model: &str, cfg: &AggregateConfig) -> Provenance {
    let hashes: serde_json::Map<String, serde_json::Value> =
        inputs.iter().map(|p| (p.table.clone(), json!({"params_sha256": p.params_sha256, "files_sha256": p.files_sha256}))).collect();
    let mut prov = Provenance::new(
        "aggregate",
        model,
        json!({
            "seed": cfg.seed,
            "resamples": cfg.resamples,
            "level": cfg.level,
            "method": "percentile bootstrap, SplitMix64 streams per cell",
            "findings_rules": FINDINGS_RULES,
            "inputs": hashes
        }),
    );
    prov.weights_sha256 = inputs.iter().flat_map(|p| p.weights_sha256.iter()).next().cloned();
    prov.model_revision = inputs.iter().flat_map(|p| p.model_revisions.iter()).next().cloned();
    prov
}

/// Whether `out` holds an aggregation of the current inputs with these settings (reads only
/// the inputs' footers).
pub fn outputs_are_current(input: &Path, out: &Path, cfg: &AggregateConfig) -> bool {
    let Ok(provs) = input::read_provenance(input, &filter_dir(input, cfg)) else { return false };
    let model = input::model_of(&provs);
    let hash = aggregate_provenance(&provs, &model, cfg).params_hash();
    output_is_current(&out.join("tables/counts.parquet"), &hash) && out.join("report.html").exists() && out.join("summary.json").exists()
}

/// Runs the stage: reads `input`, writes tables, figures and the report under `out`.
pub fn aggregate(input: &Path, out: &Path, cfg: &AggregateConfig) -> Result<Summary, AggregateError> {
    cfg.check()?;
    let inputs = input::read_inputs(input, &filter_dir(input, cfg))?;
    let model = inputs.model();
    let boot = cfg.bootstrap();
    let tables = tables::build_tables(&inputs, &boot)?;
    let prov = aggregate_provenance(&inputs.provenance, &model, cfg);
    let kv = prov.to_kv();

    let mut table_paths = Vec::new();
    for t in tables.all() {
        let base = out.join("tables").join(&t.name);
        write_parquet_atomic(&base.with_extension("parquet"), &[t.to_batch()], &kv)?;
        atomic::write(&base.with_extension("csv"), &t.to_csv()?)?;
        table_paths.extend([base.with_extension("parquet"), base.with_extension("csv")]);
    }

    let limits = limits::limits(&inputs.provenance, &tables);
    let report = findings::findings(&tables, limits.n_layers.value);
    let cx = figures::Context { model: &short_model(&model), resamples: cfg.resamples, seed: cfg.seed };
    let figs = figures::figures(&tables, &cx);
    let mut figure_paths = Vec::new();
    let mut svgs = std::collections::BTreeMap::new();
    for f in &figs {
        let plot_err = |message: String| AggregateError::Plot { figure: f.name.into(), message };
        let svg = plot::render_svg(&f.chart).map_err(plot_err)?;
        let png = plot::render_png(&f.chart).map_err(plot_err)?;
        let base = out.join("figures").join(f.name);
        atomic::write(&base.with_extension("svg"), svg.as_bytes())?;
        atomic::write(&base.with_extension("png"), &png)?;
        figure_paths.extend([base.with_extension("svg"), base.with_extension("png")]);
        svgs.insert(f.name, svg);
    }

    let blocks = report_blocks(&model, input, out, &inputs, &tables, &limits, &report, &figs, &svgs, &prov, cfg);
    let title = format!("Dissecting factual recall — {}", short_model(&model));
    let report_md = out.join("report.md");
    let report_html = out.join("report.html");
    atomic::write(&report_md, report::to_markdown(&blocks).as_bytes())?;
    atomic::write(&report_html, report::to_html(&title, &blocks).as_bytes())?;

    // Counts last: its footer is what `outputs_are_current` checks, so a run killed before
    // this point is not taken as done.
    let counts = out.join("tables/counts");
    atomic::write(&counts.with_extension("csv"), &summary::counts_csv(&tables.counts)?)?;
    let summary = Summary {
        model,
        n_layers: tables.n_layers,
        tables: table_paths.into_iter().chain([counts.with_extension("parquet"), counts.with_extension("csv")]).collect(),
        figures: figure_paths,
        report_md,
        report_html,
        counts: tables.counts.clone(),
        limits,
        findings: report.findings,
        numbers: report.numbers,
        params_sha256: prov.params_hash(),
    };
    let json = serde_json::to_vec_pretty(&summary.relative_to(out)).expect("the summary serializes");
    atomic::write(&out.join("summary.json"), &json)?;
    write_parquet_atomic(&counts.with_extension("parquet"), &[summary::counts_batch(&tables.counts)], &kv)?;
    Ok(summary)
}

/// A path-like model spec shortened to its file name for titles (the report keeps it whole).
fn short_model(model: &str) -> String {
    if model.contains('/') && !model.starts_with("hf:") {
        Path::new(model).file_name().map_or(model.to_string(), |n| n.to_string_lossy().into_owned())
    } else {
        model.to_string()
    }
}

/// `3 of 5 hold, 1 insufficient evidence`.
fn tally(criteria: &[Criterion]) -> String {
    let count = |s: Status| criteria.iter().filter(|c| c.status == s).count();
    let mut out = format!("{} of {} hold", count(Status::Holds), criteria.len());
    if count(Status::Insufficient) > 0 {
        out.push_str(&format!(", {} insufficient evidence", count(Status::Insufficient)));
    }
    out
}

/// Which figures illustrate which finding (by index).
const FINDING_FIGURES: [&[&str]; 3] = [&["knockout"], &["extraction", "patching", "ranks"], &["enrichment", "sublayer_knockout"]];

#[allow(clippy::too_many_arguments)]
fn report_blocks(
    model: &str,
    input: &Path,
    out: &Path,
    inputs: &input::Inputs,
    tables: &Tables,
    limits: &Limits,
    report: &findings::Report,
    figs: &[figures::Figure],
    svgs: &std::collections::BTreeMap<&str, String>,
    prov: &Provenance,
    cfg: &AggregateConfig,
) -> Vec<Block> {
    let model = &paths::show(model, out);
    let json = |v: &serde_json::Value| {
        let mut v = v.clone();
        paths::relativize_json(&mut v, out);
        serde_json::to_string_pretty(&v).expect("JSON values serialize")
    };
    let mut b = vec![Block::Heading(1, format!("Dissecting factual recall — {}", short_model(model)))];
    b.push(Block::Para(format!(
        "A reproduction of Geva et al. 2023, \"Dissecting Recall of Factual Associations in Auto-Regressive Language Models\", on {model}. Generated by dissect {} from {}. Every number below is read from the tables in tables/; intervals are 95% percentile bootstrap intervals over examples ({} resamples, seed {}). Paths are relative to this report's directory.",
        env!("CARGO_PKG_VERSION"),
        paths::relative_to(input, out).display(),
        cfg.resamples,
        cfg.seed
    )));

    b.push(Block::Heading(2, "Limits of this run".into()));
    b.push(Block::List(limits.lines()));

    b.push(Block::Heading(2, "Verdicts".into()));
    b.push(Block::List(report.findings.iter().map(|f| format!("{}: {} (criteria: {})", f.title, f.verdict.label(), tally(&f.criteria))).collect()));

    b.push(Block::Heading(2, "Model and data".into()));
    let mut rows = vec![vec!["model".to_string(), model.to_string()]];
    if let Some(n) = tables.n_layers {
        rows.push(vec!["layers".into(), n.to_string()]);
    }
    if let Some(w) = &prov.weights_sha256 {
        rows.push(vec!["weights sha256".into(), w.clone()]);
    }
    for c in &tables.counts {
        rows.push(vec![c.name.clone(), format!("{} — {}", c.value, c.detail)]);
    }
    b.push(Block::Table { header: vec!["".into(), "value".into()], rows });
    let missing: Vec<&str> = input::EXPERIMENT_TABLES.iter().copied().filter(|t| !inputs.provenance.iter().any(|p| p.table == *t)).collect();
    if !missing.is_empty() {
        b.push(Block::Para(format!("Not in the input (experiments not run): {}.", missing.join(", "))));
    }

    b.push(Block::Heading(2, "The paper's findings on this model".into()));
    b.push(Block::Para(
        format!("Each finding lists the measurements that bear on it and explicit criteria computed from them; each criterion states its numbers and the rule it applies. Most compare point estimates; finding 1's ordering of peaks and finding 3's baseline comparison require the 95% intervals to exclude 0 or to separate. A peak is a curve's largest-magnitude signed effect (the layer with the largest |mean|, sign kept). A criterion whose estimates rest on fewer than {} records, have a 95% CI of width 0 (e.g. all-zero rates) or are missing is not evaluated: it reads \"insufficient evidence\", never counts as holding, and makes its finding's verdict insufficient evidence.", findings::MIN_RECORDS),
    ));
    for (i, f) in report.findings.iter().enumerate() {
        b.push(Block::Heading(3, format!("{}: {}", f.title, f.verdict.label())));
        b.push(Block::Para(format!("Paper: {}", f.claim)));
        if f.evidence.is_empty() {
            b.push(Block::Para("The experiments behind this finding are not in the input.".into()));
        } else {
            b.push(Block::List(f.evidence.clone()));
        }
        if !f.criteria.is_empty() {
            b.push(Block::Para(format!(
                "Criteria ({}; any not evaluated → insufficient evidence, else all hold → supported, none → contradicted, otherwise mixed):",
                tally(&f.criteria)
            )));
            b.push(Block::List(f.criteria.iter().map(|c| format!("[{}] {}", c.status.label(), c.text)).collect()));
        }
        for name in FINDING_FIGURES[i.min(2)] {
            if let (Some(fig), Some(svg)) = (figs.iter().find(|f| f.name == *name), svgs.get(name)) {
                b.push(Block::Figure { name: fig.name.into(), caption: fig.caption.clone(), svg: svg.clone() });
            }
        }
    }

    if let (Some(fig), Some(svg)) = (figs.iter().find(|f| f.name == "parameters"), svgs.get("parameters")) {
        b.push(Block::Heading(2, "Parameters in vocabulary space".into()));
        b.push(Block::Para(
            "Not one of the three findings: the views of the weights the paper's README points to. The per-head and per-neuron token lists are in the experiments' parameters_heads and parameters_mlp tables, and the top (source, destination) token pairs of every head's OV and QK matrices in parameters_matrices.".into(),
        ));
        b.push(Block::Figure { name: fig.name.into(), caption: fig.caption.clone(), svg: svg.clone() });
    }

    b.push(Block::Heading(2, "Tables".into()));
    let mut rows: Vec<Vec<String>> = tables
        .all()
        .iter()
        .map(|t| {
            vec![
                format!("tables/{}.parquet, .csv", t.name),
                t.key_columns.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                t.metric.clone(),
                t.rows.len().to_string(),
            ]
        })
        .collect();
    rows.push(vec!["tables/counts.parquet, .csv".into(), "name".into(), "value".into(), tables.counts.len().to_string()]);
    b.push(Block::Table { header: vec!["file".into(), "keys".into(), "metric".into(), "rows".into()], rows });
    b.push(Block::Para(
        "Layer columns keep the experiments' convention: `layer` and `start_layer` are 0-based blocks, `hidden_state` and `source_hidden_state` are indices into hidden_states (0 = embeddings); `ranks.layer` ℓ pairs the subject-last state after block ℓ (hidden_states[ℓ + 1]) with block ℓ's MHSA output, and the sublayer knockout reads hidden_states[R + 1]. Figures and this report show blocks 1-based, like the paper. Rates are percentages.".into(),
    ));
    b.push(Block::Para(format!(
        "Bootstrap: for each cell the per-example values are sorted by record id; {} resamples of n examples drawn with replacement by a SplitMix64 stream seeded from seed {} and the cell's name; the interval is the 2.5th and 97.5th percentiles (linear interpolation) of the resampled statistic.",
        cfg.resamples, cfg.seed
    )));

    b.push(Block::Heading(2, "Provenance".into()));
    let join = |s: &std::collections::BTreeSet<String>| {
        if s.is_empty() {
            "—".to_string()
        } else {
            s.iter().map(|v| paths::show(v, out)).collect::<Vec<_>>().join(", ")
        }
    };
    let header = ["input", "files", "stage", "model", "dtype", "dissect", "params sha256", "weights sha256"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = inputs
        .provenance
        .iter()
        .map(|p| {
            vec![
                p.table.clone(),
                p.files.to_string(),
                join(&p.stages),
                join(&p.models),
                join(&p.dtypes),
                join(&p.versions),
                join(&p.params_sha256),
                join(&p.weights_sha256),
            ]
        })
        .collect();
    // A column with one value in every row is said once above the table: the table keeps
    // what tells the inputs apart, and stays narrow enough for the page.
    let same: Vec<bool> = (0..header.len()).map(|c| c > 0 && rows.len() > 1 && rows.iter().all(|r| r[c] == rows[0][c])).collect();
    if same.iter().any(|s| *s) {
        let common = header.iter().zip(&same).enumerate().filter(|(_, (_, s))| **s).map(|(c, (h, _))| vec![h.clone(), rows[0][c].clone()]).collect();
        b.push(Block::Para("Common to every input:".into()));
        b.push(Block::Table { header: vec!["".into(), "value".into()], rows: common });
    }
    let keep = |r: &Vec<String>| r.iter().zip(&same).filter(|(_, s)| !**s).map(|(v, _)| v.clone()).collect::<Vec<_>>();
    b.push(Block::Table { header: keep(&header), rows: rows.iter().map(keep).collect() });
    // Tables written by one run share their parameters: print each distinct set once.
    let mut groups: Vec<(Vec<&str>, &serde_json::Value)> = Vec::new();
    for p in &inputs.provenance {
        if let Some(params) = &p.params {
            match groups.iter_mut().find(|(_, v)| *v == params) {
                Some((names, _)) => names.push(&p.table),
                None => groups.push((vec![&p.table], params)),
            }
        }
    }
    // The recorded configurations run to screens of JSON: folded, for whoever needs them.
    for (names, params) in groups {
        b.push(Block::Folded { summary: format!("Parameters of {} (first file of each), JSON", names.join(", ")), body: vec![Block::Code(json(params))] });
    }
    b.push(Block::Folded {
        summary: format!("This aggregation's parameters (sha256 {}), JSON", prov.params_hash()),
        body: vec![Block::Code(json(&prov.params))],
    });
    b
}
