//! The limits of a run, stated at the top of the report: how many records the numbers rest
//! on, the projection convention, how the notebook's constants (written for GPT-2 XL's 48
//! layers) were applied to this model's depth, and where the paragraph data come from.
//!
//! The settings are read from the experiments tables' provenance (the `params` JSON in every
//! Parquet footer): its `effective` entry (what ran on this model's depth) first, else its
//! `config` entry (the configuration, which lacks some depth-dependent values), else the
//! tables themselves; each value says which of these it came from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::findings::MIN_RECORDS;
use crate::input::TableProvenance;
use crate::tables::Tables;

/// GPT-2 XL's depth in blocks, for which the notebook's constants below were written; the
/// report compares each with this run's value scaled to the model's depth.
pub const PAPER_DEPTH: i32 = 48;
/// The notebook's attention-knockout window: blocks around the centre layer whose edges are blocked.
pub const PAPER_KNOCKOUT_WINDOW: i32 = 9;
/// The notebook's R (0-based block whose output `hidden_states[R + 1]` is read) on GPT-2 XL.
pub const PAPER_REPR_LAYER: i32 = 40;
/// The notebook's sublayer-knockout span: consecutive blocks knocked out from each start layer.
pub const PAPER_SUBLAYER_SPAN: i32 = 11;
/// The notebook's patching sources, `hidden_states` indices (0 = embeddings) patched in.
pub const PAPER_PATCHING_SOURCES: [i32; 5] = [0, 1, 5, 10, 20];

/// Where a value of [`Limits`] was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The provenance's `effective` entry.
    Effective,
    /// The provenance's `config` entry (the effective value was not recorded).
    Config,
    /// The provenance's top-level parameters (e.g. `limit`).
    Params,
    /// The tables' own columns.
    Tables,
    /// Found nowhere: the report says "not recorded".
    #[default]
    NotRecorded,
}

/// A setting of the run as the report states it, with where it was read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setting<T> {
    /// The value; `None` when not recorded.
    pub value: Option<T>,
    /// Where `value` was read ([`Source::NotRecorded`] when it is `None`).
    pub source: Source,
}

impl<T> Setting<T> {
    fn none() -> Self {
        Setting { value: None, source: Source::NotRecorded }
    }
    fn from(value: Option<T>, source: Source) -> Option<Self> {
        value.map(|v| Setting { value: Some(v), source })
    }
}

/// The first of `candidates` that has a value, else "not recorded".
fn first<T>(candidates: impl IntoIterator<Item = Option<Setting<T>>>) -> Setting<T> {
    candidates.into_iter().flatten().next().unwrap_or_else(Setting::none)
}

/// What the numbers of a run rest on (the report's "Limits of this run", `summary.json`'s
/// `limits`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// [`MIN_RECORDS`].
    pub min_records: usize,
    /// Distinct records in the experiment tables (the most over tables).
    pub records: Option<u64>,
    /// Records the filter kept (`filtered.parquet`), when that table was found.
    pub kept: Option<u64>,
    /// Facts the filter read (kept + rejected), when both tables were found.
    pub total_facts: Option<u64>,
    /// `--limit` of the experiments stage: `Some(None)` = recorded, no limit.
    pub experiments_limit: Setting<Option<u64>>,
    /// `--limit` of the filter stage.
    pub filter_limit: Setting<Option<u64>>,
    /// The model's depth in blocks.
    pub n_layers: Setting<i32>,
    /// The depth the notebook's constants were scaled from ([`PAPER_DEPTH`] unless recorded otherwise).
    pub paper_depth: i32,
    /// `notebook` (h·Eᵀ) or `logit-lens`.
    pub projection: Setting<String>,
    /// Attention-knockout window in blocks, as run on this depth.
    pub knockout_window: Setting<i32>,
    /// R: the 0-based block whose output the sublayer knockout reads.
    pub sublayer_repr_layer: Setting<i32>,
    /// The `hidden_states` index read, R + 1.
    pub sublayer_read_hidden_state: Setting<i32>,
    /// Consecutive blocks knocked out from each start layer in the sublayer knockout.
    pub sublayer_span: Setting<i32>,
    /// Patching sources run, as `hidden_states` indices (0 = embeddings).
    pub patching_sources: Setting<Vec<i32>>,
    /// Sources beyond the model's depth, not run.
    pub patching_sources_dropped: Setting<Vec<i32>>,
    /// `pre_softmax` or `notebook`.
    pub extraction_blocking: Setting<String>,
    /// Enrichment hidden-state indices marked `extra` (left out of the findings).
    pub enrichment_extra_layers: Vec<i32>,
    /// Where the subject paragraphs come from and what that does to the attributes rate.
    pub paragraphs: String,
    /// sha256 of the paragraphs file the experiments read, as recorded.
    pub paragraphs_sha256: Option<String>,
    /// Anything else a reader should know (several runs mixed, recorded values that disagree
    /// with the tables).
    pub notes: Vec<String>,
}

/// The paragraph data's provenance (see `data/SOURCES.md`).
pub const PARAGRAPHS: &str = "The subject paragraphs (data/subject_paragraphs.csv) are not the paper's: Geva et al. retrieved Wikipedia paragraphs with BM25 and never released them. Most of this file's text comes from LAMA (T-REx) Wikipedia evidence sentences, which were selected because they mention the fact's object, so they often name the attribute itself: attributes rates can read higher than the paper's (data/SOURCES.md has the details).";

fn i32_of(v: Option<&Value>) -> Option<i32> {
    v.and_then(Value::as_i64).and_then(|x| i32::try_from(x).ok())
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(String::from)
}

fn i32s_of(v: Option<&Value>) -> Option<Vec<i32>> {
    v.and_then(Value::as_array).and_then(|a| a.iter().map(|x| i32_of(Some(x))).collect())
}

/// A recorded `limit`: a number or null (no limit); `None` when the key is absent.
fn limit_of(params: Option<&Value>) -> Setting<Option<u64>> {
    match params.and_then(|p| p.get("limit")) {
        Some(Value::Null) => Setting { value: Some(None), source: Source::Params },
        Some(v) => Setting { value: v.as_u64().map(Some), source: if v.as_u64().is_some() { Source::Params } else { Source::NotRecorded } },
        None => Setting::none(),
    }
}

/// The params without the entries that differ between shards of one run.
fn run_params(p: &Value) -> Value {
    let mut p = p.clone();
    if let Some(m) = p.as_object_mut() {
        m.remove("shard");
        m.remove("input");
    }
    p
}

/// The limits of a run from its inputs' provenance and the summary tables (the settings of the
/// first experiments table with parameters; a note says so when tables come from several runs).
pub fn limits(provenance: &[TableProvenance], tables: &Tables) -> Limits {
    let experiments: Vec<&TableProvenance> = provenance.iter().filter(|p| p.stages.contains("experiments") && p.params.is_some()).collect();
    let params = experiments.first().and_then(|p| p.params.as_ref());
    let eff = params.and_then(|p| p.get("effective"));
    let cfg = params.and_then(|p| p.get("config"));
    let e = |k: &str| eff.and_then(|e| e.get(k));
    let c = |path: &[&str]| path.iter().try_fold(cfg?, |v, k| v.get(k));

    let mut notes = Vec::new();
    let mut distinct: Vec<(Value, Vec<&str>)> = Vec::new();
    for p in &experiments {
        let v = run_params(p.params.as_ref().expect("filtered above"));
        match distinct.iter_mut().find(|(d, _)| *d == v) {
            Some((_, names)) => names.push(&p.table),
            None => distinct.push((v, vec![&p.table])),
        }
    }
    if distinct.len() > 1 {
        let groups: Vec<String> = distinct.iter().map(|(_, names)| names.join(", ")).collect();
        notes.push(format!(
            "The experiment tables come from {} runs with different parameters ({}); the settings above are those of the first ({}).",
            distinct.len(),
            groups.join("; "),
            experiments[0].table
        ));
    }

    let repr =
        first([Setting::from(i32_of(e("sublayer_repr_layer")), Source::Effective), Setting::from(i32_of(c(&["sublayer", "repr_layer"])), Source::Config)]);
    let read = first([
        Setting::from(i32_of(e("sublayer_read_hidden_state")), Source::Effective),
        Setting::from(i32_of(c(&["sublayer", "repr_layer"])).map(|r| r + 1), Source::Config),
        Setting::from(tables.read_hidden_state, Source::Tables),
    ]);
    if let (Some(recorded), Some(column)) = (read.value, tables.read_hidden_state) {
        if read.source != Source::Tables && recorded != column {
            notes.push(format!("The sublayer_knockout table's read_hidden_state column is {column}, but the provenance records hidden_states[{recorded}]."));
        }
    }
    let window = first([
        Setting::from(i32_of(e("knockout_window")), Source::Effective),
        Setting::from(i32_of(c(&["knockout", "window"])), Source::Config),
        Setting::from(tables.window, Source::Tables),
    ]);
    let count = |name: &str| tables.count(name);
    let records = tables.counts.iter().filter(|c| c.name.starts_with("examples:")).map(|c| c.value).max();
    let filter_params = provenance.iter().find(|p| p.table == "filtered").and_then(|p| p.params.as_ref());
    Limits {
        min_records: MIN_RECORDS,
        records,
        kept: count("kept"),
        total_facts: count("kept").zip(count("rejected")).map(|(k, r)| k + r),
        experiments_limit: limit_of(params),
        filter_limit: limit_of(filter_params),
        n_layers: first([Setting::from(i32_of(e("n_layers")), Source::Effective), Setting::from(tables.n_layers, Source::Tables)]),
        paper_depth: i32_of(e("paper_depth")).unwrap_or(PAPER_DEPTH),
        projection: first([Setting::from(str_of(e("projection")), Source::Effective), Setting::from(str_of(c(&["projection"])), Source::Config)]),
        knockout_window: window,
        sublayer_repr_layer: repr,
        sublayer_read_hidden_state: read,
        sublayer_span: first([Setting::from(i32_of(e("sublayer_span")), Source::Effective), Setting::from(i32_of(c(&["sublayer", "span"])), Source::Config)]),
        patching_sources: first([
            Setting::from(i32s_of(e("patching_sources")), Source::Effective),
            Setting::from(i32s_of(c(&["patching", "sources"])), Source::Config),
        ]),
        patching_sources_dropped: first([Setting::from(i32s_of(e("patching_sources_dropped")), Source::Effective)]),
        extraction_blocking: first([
            Setting::from(str_of(e("extraction_blocking")), Source::Effective),
            Setting::from(str_of(c(&["extraction", "blocking"])), Source::Config),
        ]),
        enrichment_extra_layers: tables.enrichment_extra_layers.iter().copied().collect(),
        paragraphs: PARAGRAPHS.into(),
        paragraphs_sha256: str_of(params.and_then(|p| p.get("paragraphs_sha256"))),
        notes,
    }
}

const FROM_CONFIG: &str = " [configuration]";
const FROM_TABLES: &str = " [tables]";

/// The marker of a value not read from the `effective` entry (explained by the legend line).
fn from<T>(s: &Setting<T>) -> &'static str {
    match s.source {
        Source::Effective | Source::Params | Source::NotRecorded => "",
        Source::Config => FROM_CONFIG,
        Source::Tables => FROM_TABLES,
    }
}

/// `value` shown by `show`, with where it came from, or "not recorded".
fn show<T>(s: &Setting<T>, f: impl Fn(&T) -> String) -> String {
    match &s.value {
        Some(v) => format!("{}{}", f(v), from(s)),
        None => "not recorded".into(),
    }
}

fn list(v: &[i32]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
    }
}

fn limit_text(s: &Setting<Option<u64>>, what: &str) -> String {
    show(s, |l| match l {
        None => "none".into(),
        Some(n) => format!("{n} (the first {n} {what})"),
    })
}

impl Limits {
    /// The report's lines, one statement each.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let records = self.records.map_or_else(|| "unknown".into(), |n| n.to_string());
        let filter = match (self.kept, self.total_facts) {
            (Some(k), Some(t)) => format!("; the filter kept {k} of {t} facts (the others the model does not predict, or malformed)"),
            (Some(k), None) => format!("; the filter kept {k} records"),
            _ => String::new(),
        };
        out.push(format!("Records: {records} measured (distinct records in the experiment tables){filter}."));
        out.push(format!(
            "--limit: experiments stage {}; filter stage {}.",
            limit_text(&self.experiments_limit, "kept records by id"),
            limit_text(&self.filter_limit, "facts of the dataset")
        ));
        out.push(format!(
            "Every criterion needs each estimate it uses to rest on at least {} records and to have a 95% CI of non-zero width; otherwise it reads \"insufficient evidence\" and never counts as holding.",
            self.min_records
        ));
        out.push(format!(
            "Projection to the vocabulary: {}.",
            show(&self.projection, |p| match p.as_str() {
                "notebook" => "the notebook's h·Eᵀ (the hidden state times the unembedding matrix, no final norm)".to_string(),
                "logit-lens" => "logit lens (the final norm, then the unembedding), not the notebook's h·Eᵀ".to_string(),
                other => other.to_string(),
            })
        ));
        let depth = self.n_layers.value;
        out.push(format!(
            "Depth: {}; the notebook's constants were written for GPT-2 XL's {}.",
            show(&self.n_layers, |n| format!("{n} layers")),
            self.paper_depth
        ));
        let share = |x: i32| depth.filter(|&d| d > 0).map(|d| format!(", {}% of the depth", (100.0 * f64::from(x) / f64::from(d)).round())).unwrap_or_default();
        out.push(format!(
            "Attention knockout window: {} (the notebook: {PAPER_KNOCKOUT_WINDOW} of {PAPER_DEPTH} layers).",
            show(&self.knockout_window, |w| format!("{w} layers{}", share(*w)))
        ));
        out.push(format!(
            "Sublayer knockout: R = {} (0-based block; the notebook's {PAPER_REPR_LAYER} of {PAPER_DEPTH} scaled to the depth), reading {} at the last subject token; {} knocked out from each start layer (the notebook: {PAPER_SUBLAYER_SPAN} of {PAPER_DEPTH}).",
            show(&self.sublayer_repr_layer, i32::to_string),
            show(&self.sublayer_read_hidden_state, |r| format!("hidden_states[{r}]")),
            show(&self.sublayer_span, |s| format!("{s} layers{}", share(*s)))
        ));
        out.push(format!(
            "Patching source layers (hidden_states indices, 0 = embeddings): {}; dropped because the model is shallower than they are: {} (the notebook: {}).",
            show(&self.patching_sources, |v| list(v)),
            show(&self.patching_sources_dropped, |v| list(v)),
            list(&PAPER_PATCHING_SOURCES)
        ));
        out.push(format!(
            "Attribute-extraction blocking: {}.",
            show(&self.extraction_blocking, |b| match b.as_str() {
                "pre_softmax" => "the blocked edges are removed before the softmax (the paper's wording)".to_string(),
                "notebook" => "the notebook's arithmetic (−1e6 written into the attention probabilities, softmax again)".to_string(),
                other => other.to_string(),
            })
        ));
        if !self.enrichment_extra_layers.is_empty() {
            out.push(format!(
                "Enrichment rows at hidden_states[{}] are marked extra (beyond the notebook's measurements): in the table and figure, not in the findings.",
                list(&self.enrichment_extra_layers)
            ));
        }
        let sha = self.paragraphs_sha256.as_ref().map(|h| format!(" The experiments read a paragraphs file with sha256 {h}.")).unwrap_or_default();
        out.push(format!("Paragraph data: {}{sha}", self.paragraphs));
        out.extend(self.notes.iter().cloned());
        let mut legend = Vec::new();
        if out.iter().any(|l| l.contains(FROM_CONFIG)) {
            legend.push(format!(
                "{}: from the configuration recorded with the experiments; the value effective on this model's depth was not recorded",
                FROM_CONFIG.trim()
            ));
        }
        if out.iter().any(|l| l.contains(FROM_TABLES)) {
            legend.push(format!("{}: from the tables' own columns; not recorded in the provenance", FROM_TABLES.trim()));
        }
        if !legend.is_empty() {
            out.push(format!("{}.", legend.join("; ")));
        }
        out
    }
}
