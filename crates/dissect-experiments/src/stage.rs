//! The experiments stage: every requested experiment on every kept record, one table per
//! experiment with one row per measurement (not only means), so aggregation and users can
//! slice them. A record that fails is reported in `skipped` and the others go on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow_schema::DataType;
use burn_tensor::backend::Backend;
use dissect_data::filtered::KeptRecord;
use dissect_data::parts::{Parts, RunSummary};
use dissect_data::{PositionKind, Provenance, ShardSpec};
use dissect_model::intervene::{CleanRun, KnockoutMode, Sublayer};
use dissect_model::project::Projection;
use dissect_model::source::ModelInfo;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::enrichment::{baseline_subject_ids, enrichment_at, paragraph_tokens, AttributesConfig, EnrichmentConfig};
use crate::extraction::{extraction_from, ExtractionConfig};
use crate::knockout::{knockout_sweep_from, BlockSet, KnockoutConfig};
use crate::parameters::{head_ov, mlp_values, ParametersConfig};
use crate::patching::{patching, PatchingConfig};
use crate::ranks::ranks_at;
use crate::sublayer::{sublayer_knockout, SublayerConfig};
use crate::table::{Cell, Table};
use crate::{clean_hidden, ExperimentError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    Knockout,
    Extraction,
    Patching,
    Enrichment,
    SublayerKnockout,
    Ranks,
    /// Parameters in vocabulary space (see [`crate::parameters`]).
    Parameters,
}

impl Experiment {
    pub const ALL: [Experiment; 7] = [
        Experiment::Knockout,
        Experiment::Extraction,
        Experiment::Patching,
        Experiment::Enrichment,
        Experiment::SublayerKnockout,
        Experiment::Ranks,
        Experiment::Parameters,
    ];

    /// The table (directory) name.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Knockout => "knockout",
            Experiment::Extraction => "extraction",
            Experiment::Patching => "patching",
            Experiment::Enrichment => "enrichment",
            Experiment::SublayerKnockout => "sublayer_knockout",
            Experiment::Ranks => "ranks",
            // Its per-record table; it also writes `parameters_mlp` and, once per run,
            // `parameters_matrices`.
            Experiment::Parameters => "parameters_heads",
        }
    }
}

impl Experiment {
    /// The name users type (`dissect experiment <label>`, pipeline files, the `skipped` table).
    pub fn label(self) -> &'static str {
        match self {
            Experiment::Parameters => "parameters",
            e => e.name(),
        }
    }
}

impl std::str::FromStr for Experiment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.replace('_', "-");
        Experiment::ALL
            .into_iter()
            .find(|e| [e.name(), e.label()].iter().any(|n| n.replace('_', "-") == norm))
            .ok_or_else(|| format!("unknown experiment `{s}`\nhint: one of knockout, extraction, patching, enrichment, sublayer-knockout, ranks, parameters"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentsConfig {
    pub experiments: Vec<Experiment>,
    /// Records per output part: each part is written as soon as its records are done, so a
    /// killed run loses at most one part's work.
    pub chunk_size: usize,
    /// Projection used by extraction, patching, enrichment and ranks.
    pub projection: Projection,
    pub knockout: KnockoutConfig,
    pub extraction: ExtractionConfig,
    pub patching: PatchingConfig,
    pub enrichment: EnrichmentConfig,
    pub attributes: AttributesConfig,
    pub sublayer: SublayerConfig,
    pub parameters: ParametersConfig,
}

impl ExperimentsConfig {
    /// The configuration that actually runs on a model of `n_layers` blocks: the top-level
    /// projection in every experiment that projects, the sublayer knockout's R resolved, and
    /// patching sources beyond the model's depth dropped. This is what provenance records.
    pub fn effective(&self, n_layers: usize) -> ExperimentsConfig {
        let mut c = self.clone();
        c.extraction.projection = self.projection;
        c.patching.projection = self.projection;
        c.sublayer.projection = self.projection;
        c.sublayer.repr_layer = Some(self.sublayer.repr_layer(n_layers));
        c.patching.sources.retain(|&l| l <= n_layers);
        c
    }

    /// Rejects settings that would silently measure nothing (a zero window, top-k or chunk),
    /// naming the key as it is written in a pipeline's `[experiments]` section.
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("chunk_size", self.chunk_size),
            ("knockout.window", self.knockout.window),
            ("knockout.batch", self.knockout.batch),
            ("attributes.top", self.attributes.top),
            ("attributes.keep", self.attributes.keep),
            ("sublayer.span", self.sublayer.span),
            ("parameters.top_k", self.parameters.top_k),
            ("parameters.neurons", self.parameters.neurons),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(format!("experiments setting `{key}` is 0\nhint: it must be at least 1"));
            }
        }
        Ok(())
    }

    /// How the notebook's constants (written for GPT-2 XL's 48 layers) apply to a model of
    /// `n_layers` blocks: the `effective` entry of the experiments' provenance, which the
    /// report's limits section reads.
    pub fn depth_scaling(&self, n_layers: usize) -> serde_json::Value {
        let e = self.effective(n_layers);
        let dropped: Vec<usize> = self.patching.sources.iter().copied().filter(|&l| l > n_layers).collect();
        let repr = e.sublayer.repr_layer(n_layers);
        serde_json::json!({
            "n_layers": n_layers,
            "paper_depth": crate::sublayer::PAPER_DEPTH,
            "projection": self.projection,
            "knockout_window": e.knockout.window,
            "sublayer_repr_layer": repr,
            "sublayer_read_hidden_state": repr + 1,
            "sublayer_span": e.sublayer.span,
            "patching_sources": e.patching.sources,
            "patching_sources_dropped": dropped,
            "extraction_blocking": e.extraction.blocking.name(),
        })
    }
}

impl Default for ExperimentsConfig {
    fn default() -> Self {
        ExperimentsConfig {
            experiments: Experiment::ALL.to_vec(),
            chunk_size: 32,
            projection: Projection::Notebook,
            knockout: KnockoutConfig::default(),
            extraction: ExtractionConfig::default(),
            patching: PatchingConfig::default(),
            enrichment: EnrichmentConfig::default(),
            attributes: AttributesConfig::default(),
            sublayer: SublayerConfig::default(),
            parameters: ParametersConfig::default(),
        }
    }
}

/// What the stage reads besides the model.
pub struct Inputs<'a> {
    pub records: &'a [KeptRecord],
    /// Subject → its Wikipedia paragraphs.
    pub paragraphs: &'a BTreeMap<String, Vec<String>>,
    pub stopwords: &'a HashSet<String>,
    /// The activation cache (`dissect cache`): when given, enrichment, extraction's clean rows
    /// and ranks read the clean activations from it instead of running the model.
    pub cache: Option<&'a dissect_cache::CacheReader>,
}

/// The stage's tables, by name, plus `skipped` (record, experiment, reason).
pub struct Tables {
    pub tables: BTreeMap<&'static str, (Table, Vec<DataType>)>,
}

fn schema(e: Experiment) -> (Vec<&'static str>, Vec<DataType>) {
    use DataType::*;
    let (names, types): (Vec<&'static str>, Vec<DataType>) = match e {
        Experiment::Knockout => vec![
            ("id", UInt64),
            ("layer", UInt32),
            ("block", Utf8),
            ("window", UInt32),
            ("target_id", UInt32),
            ("p_base", Float32),
            ("p_new", Float32),
            ("pct_change", Float32),
        ],
        Experiment::Extraction => {
            vec![("id", UInt64), ("layer", UInt32), ("sublayer", Utf8), ("blocked", Utf8), ("target_rank", UInt32), ("top1", UInt32), ("extracted", Boolean)]
        }
        Experiment::Patching => {
            vec![("id", UInt64), ("layer", UInt32), ("source_layer", UInt32), ("positions", Utf8), ("target_rank", UInt32), ("extracted", Boolean)]
        }
        Experiment::Enrichment => vec![("id", UInt64), ("subject", Utf8), ("layer", UInt32), ("position", Utf8), ("rate", Float32), ("extra", Boolean)],
        Experiment::SublayerKnockout => {
            vec![("id", UInt64), ("start_layer", UInt32), ("end_layer", UInt32), ("sublayer", Utf8), ("mode", Utf8), ("read_layer", UInt32), ("rate", Float32)]
        }
        Experiment::Ranks => vec![("id", UInt64), ("layer", UInt32), ("subject_last_rank", UInt32), ("attn_last_rank", UInt32)],
        Experiment::Parameters => {
            vec![("id", UInt64), ("layer", UInt32), ("head", UInt32), ("target_rank", UInt32), ("top_ids", list_u32()), ("top_tokens", list_utf8())]
        }
    }
    .into_iter()
    .unzip();
    (names, types)
}

fn list_u32() -> DataType {
    DataType::List(std::sync::Arc::new(arrow_schema::Field::new("item", DataType::UInt32, true)))
}

fn list_utf8() -> DataType {
    DataType::List(std::sync::Arc::new(arrow_schema::Field::new("item", DataType::Utf8, true)))
}

/// The MLP table of the `parameters` experiment.
fn mlp_schema() -> (Vec<&'static str>, Vec<DataType>) {
    use DataType::*;
    [
        ("id", UInt64),
        ("layer", UInt32),
        ("rank", UInt32),
        ("neuron", UInt32),
        ("coefficient", Float32),
        ("value_norm", Float32),
        ("target_rank", UInt32),
        ("top_ids", list_u32()),
        ("top_tokens", list_utf8()),
    ]
    .into_iter()
    .unzip()
}

/// The model-level table of the `parameters` experiment.
fn matrices_schema() -> (Vec<&'static str>, Vec<DataType>) {
    use DataType::*;
    [
        ("layer", UInt32),
        ("head", UInt32),
        ("circuit", Utf8),
        ("rank", UInt32),
        ("source_id", UInt32),
        ("source", Utf8),
        ("destination_id", UInt32),
        ("destination", Utf8),
        ("value", Float32),
    ]
    .into_iter()
    .unzip()
}

/// `parameters_matrices`: written once per output directory, by shard 0, as
/// `<out>/parameters_matrices/shard=…/part-00000.parquet`.
pub const MATRICES_TABLE: &str = "parameters_matrices";

/// The OV/QK matrix view as a table.
pub fn matrices_table<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, cfg: &ParametersConfig) -> (Table, Vec<DataType>) {
    let (names, types) = matrices_schema();
    let mut t = Table::new(&names);
    for r in crate::parameters::matrices(model, tokenizer, cfg) {
        t.push(vec![
            r.layer.into(),
            r.head.into(),
            r.circuit.name().into(),
            r.rank.into(),
            r.source.into(),
            tokenizer.decode_token(r.source).into(),
            r.destination.into(),
            tokenizer.decode_token(r.destination).into(),
            r.value.into(),
        ]);
    }
    (t, types)
}

/// Runs the stage. `progress` is called after each record with (done, total).
pub fn run<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    mut progress: impl FnMut(usize, usize),
) -> Tables {
    let cfg = &cfg.effective(model.n_layers());
    let mut tables: BTreeMap<&'static str, (Table, Vec<DataType>)> = BTreeMap::new();
    for &e in &cfg.experiments {
        let (names, types) = schema(e);
        tables.insert(e.name(), (Table::new(&names), types));
    }
    use DataType::*;
    let mut skipped = Table::new(&["id", "experiment", "reason"]);
    let mut baseline = Table::new(&["id", "subject", "rate"]);
    let (mlp_names, mlp_types) = mlp_schema();
    let mut mlp = Table::new(&mlp_names);
    for (i, rec) in inputs.records.iter().enumerate() {
        for (exp, result) in run_record(model, tokenizer, inputs, cfg, rec) {
            match result {
                Ok(Output::Rows(t)) => tables.get_mut(exp.name()).expect("requested").0.extend(t),
                Ok(Output::Enrichment(t, base)) => {
                    tables.get_mut(exp.name()).expect("requested").0.extend(t);
                    baseline.push(vec![rec.id.into(), rec.subject.as_str().into(), base.into()]);
                }
                Ok(Output::Parameters(heads, neurons)) => {
                    tables.get_mut(exp.name()).expect("requested").0.extend(heads);
                    mlp.extend(neurons);
                }
                Err(e) => skipped.push(vec![rec.id.into(), exp.label().into(), e.to_string().into()]),
            }
        }
        progress(i + 1, inputs.records.len());
    }
    if cfg.experiments.contains(&Experiment::Enrichment) {
        tables.insert("enrichment_baseline", (baseline, vec![UInt64, Utf8, Float32]));
    }
    if cfg.experiments.contains(&Experiment::Parameters) {
        tables.insert("parameters_mlp", (mlp, mlp_types));
    }
    tables.insert("skipped", (skipped, vec![UInt64, Utf8, Utf8]));
    Tables { tables }
}

enum Output {
    Rows(Table),
    Enrichment(Table, f32),
    /// The heads' and the MLPs' tables.
    Parameters(Table, Table),
}

fn run_record<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    rec: &KeptRecord,
) -> Vec<(Experiment, Result<Output, ExperimentError>)> {
    let fail = |message: String| ExperimentError::Record { id: rec.id.to_string(), message };
    let prepared = (|| {
        let ids = tokenizer.encode(&rec.prompt)?.ids;
        if ids.len() != rec.n_tokens {
            return Err(fail(format!("tokenizes to {} tokens, the filter stage saw {}: was it filtered with another model?", ids.len(), rec.n_tokens)));
        }
        let clean = CleanRun::new(model, &ids)?;
        // Enrichment, ranks and extraction's clean rows read the clean activations the cache
        // holds; without a cache they are computed here by the cache's own code.
        let uses_cached = cfg.experiments.iter().any(|e| matches!(e, Experiment::Enrichment | Experiment::Ranks | Experiment::Extraction));
        let cached = match inputs.cache {
            Some(c) => Some(crate::cached::cached_record(c, model, rec)?),
            None if uses_cached => Some(crate::cached::computed_record(model, tokenizer, rec)?),
            None => None,
        };
        let served = |e: &Experiment| matches!(e, Experiment::Enrichment | Experiment::Ranks);
        let needs_hidden = cfg.experiments.iter().any(|e| {
            !served(e) && matches!(e, Experiment::Patching | Experiment::Enrichment | Experiment::SublayerKnockout | Experiment::Ranks | Experiment::Parameters)
        });
        let hidden = if needs_hidden { clean_hidden(model, &ids)? } else { Vec::new() };
        Ok((ids, clean, hidden, cached))
    })();
    let (ids, clean, hidden, cached) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            return cfg.experiments.iter().map(|&x| (x, Err(fail(msg.clone())))).collect();
        }
    };
    let positions = rec.positions();
    let subject = positions.subject.first..positions.subject.last + 1;
    let target = rec.target_id;
    let id = rec.id;
    let mut extraction_rows = None;
    let paragraph = || -> Result<HashSet<String>, ExperimentError> {
        let paras = inputs
            .paragraphs
            .get(&rec.subject)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| fail(format!("no paragraphs for subject {:?}: excluded from enrichment, as in the paper", rec.subject)))?;
        paragraph_tokens(tokenizer, model.config.bos_token_id, paras, inputs.stopwords, &cfg.attributes)
    };
    let mut out = Vec::new();
    for &exp in &cfg.experiments {
        let (names, _) = schema(exp);
        let mut t = Table::new(&names);
        let t0 = std::time::Instant::now();
        let result: Result<Output, ExperimentError> = (|| match exp {
            Experiment::Knockout => {
                let r = knockout_sweep_from(model, &clean, subject.clone(), &cfg.knockout)?;
                for row in r.rows {
                    t.push(vec![
                        id.into(),
                        row.layer.into(),
                        row.block.name().into(),
                        r.window.into(),
                        r.target_id.into(),
                        r.p_base.into(),
                        row.p_new.into(),
                        row.pct_change.into(),
                    ]);
                }
                Ok(Output::Rows(t))
            }
            Experiment::Extraction | Experiment::Ranks => {
                // Ranks reuse extraction's clean rows when both run.
                if extraction_rows.is_none() {
                    let sites = cached.as_ref().map(|c| (c.attn_out(), c.mlp_out()));
                    extraction_rows = Some(extraction_from(model, &clean, &subject, target, &cfg.extraction, sites)?);
                }
                let rows = extraction_rows.as_deref().unwrap_or_default();
                self_extraction_or_ranks(exp, model, cached.as_ref(), target, rows, cfg.projection, id, t)
            }
            Experiment::Patching => {
                for r in patching(model, &hidden, &ids, &subject, target, &cfg.patching)? {
                    t.push(vec![id.into(), r.layer.into(), r.source.into(), r.set.name().into(), r.target_rank.into(), r.extracted.into()]);
                }
                Ok(Output::Rows(t))
            }
            Experiment::Enrichment => {
                let para = paragraph()?;
                let base_ids = baseline_subject_ids(tokenizer, &rec.prompt, &rec.subject)?;
                let (ac, ec) = (&cfg.attributes, &cfg.enrichment);
                let c = cached.as_ref().expect("computed when enrichment runs");
                let (rows, base) = enrichment_at(model, tokenizer, &c.residuals(), &base_ids, &para, inputs.stopwords, ac, ec, cfg.projection);
                for r in rows {
                    t.push(vec![id.into(), rec.subject.as_str().into(), r.layer.into(), r.position.name().into(), r.rate.into(), r.extra.into()]);
                }
                Ok(Output::Enrichment(t, base))
            }
            Experiment::SublayerKnockout => {
                let para = paragraph()?;
                let last = positions.get(PositionKind::SubjectLast).expect("always present");
                for r in sublayer_knockout(model, tokenizer, &hidden, last, &para, inputs.stopwords, &cfg.attributes, &cfg.sublayer) {
                    t.push(vec![
                        id.into(),
                        r.start.into(),
                        r.end.into(),
                        r.sublayer.map_or("none", Sublayer::name).into(),
                        r.mode.map_or("none", KnockoutMode::name).into(),
                        r.read_layer.into(),
                        r.rate.into(),
                    ]);
                }
                Ok(Output::Rows(t))
            }
            Experiment::Parameters => {
                let pc = &cfg.parameters;
                let last = positions.get(PositionKind::SubjectLast).expect("always present");
                let words = |top: &[u32]| Cell::Strs(top.iter().map(|&i| tokenizer.decode_token(i)).collect());
                for r in head_ov(model, &hidden, last, target, pc, cfg.projection) {
                    t.push(vec![id.into(), r.layer.into(), r.head.into(), r.target_rank.into(), Cell::U32s(r.top.clone()), words(&r.top)]);
                }
                let (names, _) = mlp_schema();
                let mut m = Table::new(&names);
                for r in mlp_values(model, &ids, last, target, pc, cfg.projection)? {
                    m.push(vec![
                        id.into(),
                        r.layer.into(),
                        r.rank.into(),
                        r.neuron.into(),
                        r.coefficient.into(),
                        r.value_norm.into(),
                        r.target_rank.into(),
                        Cell::U32s(r.top.clone()),
                        words(&r.top),
                    ]);
                }
                Ok(Output::Parameters(t, m))
            }
        })();
        if std::env::var_os("DISSECT_PROFILE").is_some() {
            // Per-record, per-experiment wall time on stderr, for the README's cost table.
            eprintln!("profile: record {id} {} {:.3}s", exp.label(), t0.elapsed().as_secs_f64());
        }
        out.push((exp, result));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn self_extraction_or_ranks<B: Backend>(
    exp: Experiment,
    model: &Model<B>,
    cached: Option<&dissect_cache::CachedRecord<B>>,
    target: u32,
    rows: &[crate::extraction::ExtractionRow],
    projection: Projection,
    id: u64,
    mut t: Table,
) -> Result<Output, ExperimentError> {
    if exp == Experiment::Extraction {
        for r in rows {
            let blocked = r.blocked.map_or("none", BlockSet::name);
            t.push(vec![id.into(), r.layer.into(), r.sublayer.name().into(), blocked.into(), r.target_rank.into(), r.top1.into(), r.extracted.into()]);
        }
    } else {
        let c = cached.expect("computed when ranks run");
        let rows = ranks_at(model, c.residual(PositionKind::SubjectLast).expect("always cached"), target, rows, projection);
        for r in rows {
            t.push(vec![id.into(), r.layer.into(), r.subject_last_rank.into(), r.attn_last_rank.into()]);
        }
    }
    Ok(Output::Rows(t))
}

/// The table names a configuration writes (`skipped` last: it marks a finished chunk).
pub fn table_names(cfg: &ExperimentsConfig) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = cfg.experiments.iter().map(|e| e.name()).collect();
    if cfg.experiments.contains(&Experiment::Enrichment) {
        names.push("enrichment_baseline");
    }
    if cfg.experiments.contains(&Experiment::Parameters) {
        names.push("parameters_mlp");
    }
    names.push("skipped");
    names
}

/// Everything besides the configuration that an experiments run's tables depend on: what
/// [`provenance`] hashes to decide whether existing parts can be reused.
pub struct RunInputs<'a> {
    pub model: &'a ModelInfo,
    /// Transformer blocks (the depth the notebook's constants are scaled to).
    pub n_layers: usize,
    pub weights_sha256: String,
    /// The filter tables' parameter hashes ([`dissect_data::parts::input_hashes`]).
    pub input_hashes: Vec<String>,
    pub paragraphs_sha256: String,
    pub stopwords_sha256: String,
    pub limit: Option<usize>,
    pub shard: ShardSpec,
    /// The activation cache's parameter hashes, when the run reads one.
    pub cache_hashes: Option<Vec<String>>,
}

/// The provenance every experiments table carries. Its parameters record what runs, not
/// what was asked: the configuration resolved for the model's depth ([`ExperimentsConfig::effective`])
/// and how the notebook's constants were scaled ([`ExperimentsConfig::depth_scaling`]).
pub fn provenance(run: &RunInputs<'_>, cfg: &ExperimentsConfig) -> Provenance {
    let mut params = serde_json::json!({
        "model": run.model.spec,
        "weights_sha256": run.weights_sha256,
        "input": run.input_hashes,
        "paragraphs_sha256": run.paragraphs_sha256,
        "stopwords_sha256": run.stopwords_sha256,
        "limit": run.limit,
        "shard": run.shard.to_string(),
        "config": cfg.effective(run.n_layers),
        "effective": cfg.depth_scaling(run.n_layers),
    });
    if let Some(c) = &run.cache_hashes {
        // Only with a cache, so that runs without one keep their parameter hash.
        params["cache"] = serde_json::json!(c);
    }
    let mut prov = Provenance::new("experiments", &run.model.spec, params);
    prov.model_revision = run.model.revision.clone();
    prov.weights_sha256 = Some(run.weights_sha256.clone());
    prov
}

/// The parts an experiments run owns: per-record tables ([`table_names`]) in chunks of
/// `cfg.chunk_size` records, and, with the parameters experiment on shard 0, the model-level
/// [`MATRICES_TABLE`] as one part.
pub struct StageParts {
    pub records: Parts,
    pub matrices: Option<Parts>,
}

impl StageParts {
    pub fn new(out: &Path, cfg: &ExperimentsConfig, shard: ShardSpec, n_records: usize, provenance: &Provenance) -> Self {
        let dirs = table_names(cfg).into_iter().map(|n| out.join(n)).collect();
        // At least one chunk: a shard without records writes empty tables, so that it reads
        // as done and the aggregate sees every table.
        let records = Parts::new(dirs, shard, n_records.div_ceil(cfg.chunk_size.max(1)).max(1), provenance);
        // Model-level: one part, by the first shard only (the aggregate reads every shard).
        let matrices =
            (cfg.experiments.contains(&Experiment::Parameters) && shard.index == 0).then(|| Parts::new(vec![out.join(MATRICES_TABLE)], shard, 1, provenance));
        StageParts { records, matrices }
    }

    /// Whether every table is written with these parameters.
    pub fn all_current(&self) -> bool {
        self.records.all_current() && self.matrices.as_ref().is_none_or(Parts::all_current)
    }

    /// `--force`: removes this shard's parts.
    pub fn clear(&self) -> Result<(), dissect_data::DataError> {
        self.records.clear()?;
        self.matrices.as_ref().map_or(Ok(()), Parts::clear)
    }
}

/// Runs the stage over `inputs.records` (already restricted to this shard) with the
/// resumable engine ([`Parts::run`]): each chunk's tables are written as soon as the chunk is
/// done, current chunks are reused, parts of other runs are removed first.
pub fn run_resumable<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    parts: &StageParts,
    progress: impl FnMut(usize, usize),
) -> Result<RunSummary, dissect_data::DataError> {
    // Within a chunk (per record) and after each chunk, computed or reused.
    let progress = std::cell::RefCell::new(progress);
    if let Some(m) = &parts.matrices {
        m.run::<(), dissect_data::DataError>(
            &[()],
            1,
            |_, _| {
                let (table, types) = matrices_table(model, tokenizer, &cfg.parameters);
                Ok(vec![(table.to_batch(&types), vec![])])
            },
            |_, _| {},
        )?;
    }
    let names = table_names(cfg);
    let total = inputs.records.len();
    let size = cfg.chunk_size.max(1);
    parts.records.run::<KeptRecord, dissect_data::DataError>(
        inputs.records,
        size,
        |c, chunk| {
            let sub = Inputs { records: chunk, paragraphs: inputs.paragraphs, stopwords: inputs.stopwords, cache: inputs.cache };
            let tables = run(model, tokenizer, &sub, cfg, |d, _| (progress.borrow_mut())(c * size + d, total));
            Ok(names.iter().map(|n| (tables.tables[n].0.to_batch(&tables.tables[n].1), vec![])).collect())
        },
        |d, t| (progress.borrow_mut())(d, t),
    )
}
