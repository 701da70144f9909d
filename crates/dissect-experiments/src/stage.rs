//! The experiments stage: every requested experiment on every kept record, one table per
//! experiment with one row per measurement (not only means), so aggregation and users can
//! slice them. A record that fails is reported in `skipped` and the others go on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow_schema::DataType;
use burn_tensor::backend::Backend;
use dissect_data::filtered::KeptRecord;
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::{PositionKind, ShardSpec};
use dissect_model::intervene::{CleanRun, KnockoutMode, Sublayer};
use dissect_model::project::Projection;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::enrichment::{baseline_subject_ids, enrichment, enrichment_at, paragraph_tokens, AttributesConfig, EnrichmentConfig};
use crate::extraction::{extraction_from, ExtractionConfig};
use crate::knockout::{knockout_sweep_from, BlockSet, KnockoutConfig};
use crate::patching::{patching, PatchingConfig};
use crate::ranks::{ranks, ranks_at};
use crate::sublayer::{sublayer_knockout, SublayerConfig};
use crate::parameters::{head_ov, mlp_values, ParametersConfig};
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
        Experiment::Knockout => vec![("id", UInt64), ("layer", UInt32), ("block", Utf8), ("window", UInt32), ("target_id", UInt32), ("p_base", Float32), ("p_new", Float32), ("pct_change", Float32)],
        Experiment::Extraction => vec![("id", UInt64), ("layer", UInt32), ("sublayer", Utf8), ("blocked", Utf8), ("target_rank", UInt32), ("top1", UInt32), ("extracted", Boolean)],
        Experiment::Patching => vec![("id", UInt64), ("layer", UInt32), ("source_layer", UInt32), ("positions", Utf8), ("target_rank", UInt32), ("extracted", Boolean)],
        Experiment::Enrichment => vec![("id", UInt64), ("subject", Utf8), ("layer", UInt32), ("position", Utf8), ("rate", Float32), ("extra", Boolean)],
        Experiment::SublayerKnockout => vec![("id", UInt64), ("start_layer", UInt32), ("end_layer", UInt32), ("sublayer", Utf8), ("mode", Utf8), ("read_layer", UInt32), ("rate", Float32)],
        Experiment::Ranks => vec![("id", UInt64), ("layer", UInt32), ("subject_last_rank", UInt32), ("attn_last_rank", UInt32)],
        Experiment::Parameters => vec![("id", UInt64), ("layer", UInt32), ("head", UInt32), ("target_rank", UInt32), ("top_ids", list_u32()), ("top_tokens", list_utf8())],
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
    [("id", UInt64), ("layer", UInt32), ("rank", UInt32), ("neuron", UInt32), ("coefficient", Float32), ("value_norm", Float32), ("target_rank", UInt32), ("top_ids", list_u32()), ("top_tokens", list_utf8())]
        .into_iter()
        .unzip()
}

/// The model-level table of the `parameters` experiment.
fn matrices_schema() -> (Vec<&'static str>, Vec<DataType>) {
    use DataType::*;
    [("layer", UInt32), ("head", UInt32), ("circuit", Utf8), ("rank", UInt32), ("source_id", UInt32), ("source", Utf8), ("destination_id", UInt32), ("destination", Utf8), ("value", Float32)]
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
        let cached = inputs.cache.map(|c| crate::cached::cached_record(c, model, rec)).transpose()?;
        let served = |e: &Experiment| cached.is_some() && matches!(e, Experiment::Enrichment | Experiment::Ranks);
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
        let paras = inputs.paragraphs.get(&rec.subject).filter(|p| !p.is_empty()).ok_or_else(|| {
            fail(format!("no paragraphs for subject {:?}: excluded from enrichment, as in the paper", rec.subject))
        })?;
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
                    t.push(vec![id.into(), row.layer.into(), row.block.name().into(), r.window.into(), r.target_id.into(), r.p_base.into(), row.p_new.into(), row.pct_change.into()]);
                }
                Ok(Output::Rows(t))
            }
            Experiment::Extraction | Experiment::Ranks if extraction_rows.is_none() => {
                let rows = extraction_from(model, &clean, &subject, target, &cfg.extraction, cached.as_ref().map(|c| (c.attn_out(), c.mlp_out())))?;
                extraction_rows = Some(rows);
                self_extraction_or_ranks(exp, model, &hidden, cached.as_ref(), &positions, target, extraction_rows.as_deref().unwrap_or_default(), cfg.projection, id, t)
            }
            Experiment::Extraction | Experiment::Ranks => {
                self_extraction_or_ranks(exp, model, &hidden, cached.as_ref(), &positions, target, extraction_rows.as_deref().unwrap_or_default(), cfg.projection, id, t)
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
                let (rows, base) = match &cached {
                    Some(c) => enrichment_at(model, tokenizer, &c.residuals(), &base_ids, &para, inputs.stopwords, ac, ec, cfg.projection),
                    None => enrichment(model, tokenizer, &hidden, &positions, &base_ids, &para, inputs.stopwords, ac, ec, cfg.projection),
                };
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
    hidden: &[burn_tensor::Tensor<B, 2>],
    cached: Option<&dissect_cache::CachedRecord<B>>,
    positions: &dissect_data::TokenPositions,
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
        let last = positions.get(PositionKind::SubjectLast).expect("always present");
        let rows = match cached {
            Some(c) => ranks_at(model, c.residual(PositionKind::SubjectLast).expect("always cached"), target, rows, projection),
            None => ranks(model, hidden, last, target, rows, projection),
        };
        for r in rows {
            t.push(vec![id.into(), r.layer.into(), r.subject_last_rank.into(), r.attn_last_rank.into()]);
        }
    }
    Ok(Output::Rows(t))
}

/// Where one chunk of one table goes: `<out>/<table>/shard=NNNNN/part-CCCCC.parquet`.
pub fn part_path(out: &Path, table: &str, shard: ShardSpec, chunk: usize) -> std::path::PathBuf {
    out.join(table).join(shard.dir_name()).join(format!("part-{chunk:05}.parquet"))
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

/// Runs the stage over `inputs.records` (already restricted to this shard) in chunks of
/// `cfg.chunk_size`, writing each chunk's tables with `kv` metadata. A chunk whose tables all exist
/// with `params_hash` is not recomputed; parts written with other parameters are removed
/// first, so the directory never mixes two runs. Returns (chunks computed, chunks reused).
#[allow(clippy::too_many_arguments)]
pub fn run_resumable<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    out: &Path,
    shard: ShardSpec,
    kv: &[(String, String)],
    params_hash: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<(usize, usize), dissect_data::DataError> {
    let names = table_names(cfg);
    for name in &names {
        remove_stale_parts(&out.join(name).join(shard.dir_name()), params_hash)?;
    }
    if cfg.experiments.contains(&Experiment::Parameters) && shard.index == 0 {
        // Model-level: one part, by the first shard only (the aggregate reads every shard).
        let path = part_path(out, MATRICES_TABLE, shard, 0);
        remove_stale_parts(&out.join(MATRICES_TABLE).join(shard.dir_name()), params_hash)?;
        if !dissect_data::provenance::output_is_current(&path, params_hash) {
            let (table, types) = matrices_table(model, tokenizer, &cfg.parameters);
            write_parquet_atomic(&path, &[table.to_batch(&types)], kv)?;
        }
    }
    let total = inputs.records.len();
    let (mut computed, mut reused) = (0, 0);
    let size = cfg.chunk_size.max(1);
    for (c, chunk) in inputs.records.chunks(size).enumerate() {
        let done = names.iter().all(|n| dissect_data::provenance::output_is_current(&part_path(out, n, shard, c), params_hash));
        if done {
            reused += 1;
        } else {
            let sub = Inputs { records: chunk, paragraphs: inputs.paragraphs, stopwords: inputs.stopwords, cache: inputs.cache };
            let before = c * size;
            let tables = run(model, tokenizer, &sub, cfg, |d, _| progress(before + d, total));
            for name in &names {
                let (table, types) = &tables.tables[name];
                write_parquet_atomic(&part_path(out, name, shard, c), &[table.to_batch(types)], kv)?;
            }
            computed += 1;
        }
        progress((c * size + chunk.len()).min(total), total);
    }
    Ok((computed, reused))
}

fn remove_stale_parts(dir: &Path, params_hash: &str) -> Result<(), dissect_data::DataError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let p = e.path();
        let is_part = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"));
        if is_part && !dissect_data::provenance::output_is_current(&p, params_hash) {
            std::fs::remove_file(&p).map_err(|e| dissect_data::DataError::Io { path: p.clone(), source: e })?;
        }
    }
    Ok(())
}
