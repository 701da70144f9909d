//! The experiments stage: every requested experiment on every kept record, one table per
//! experiment with one row per measurement (not only means), so aggregation and users can
//! slice them. A record that fails is reported in `skipped` and the others go on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use burn_tensor::backend::Backend;
use dissect_data::filtered::KeptRecord;
use dissect_data::parts::{Parts, RunSummary};
use dissect_data::table::{id_value, ParametersMatrixRow, Row, SkippedRow};
use dissect_data::{Provenance, ShardSpec};
use dissect_model::project::{Projection, Screening};
use dissect_model::source::ModelInfo;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::enrichment::{AttributesConfig, EnrichmentConfig};
use crate::extraction::ExtractionConfig;
use crate::knockout::KnockoutConfig;
use crate::parameters::ParametersConfig;
use crate::patching::PatchingConfig;
use crate::record::{Measure, RecordRun};
use crate::rows::TableRows;
use crate::sublayer_knockout::SublayerConfig;
use crate::ExperimentError;

/// Expands [`dissect_data::experiment_registry`] (where an experiment is registered) into the
/// [`Experiment`] enum: each line's variant, its label (the module's name, which is what users
/// type and the `skipped` table records), its [`Measure`] and its tables.
macro_rules! experiments {
    ($( $(#[$doc:meta])* $variant:ident($module:ident) => $($field:ident: $row:ty),+; )+) => {
        /// An experiment of the paper.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum Experiment {
            $( $(#[$doc])* $variant, )+
        }

        impl Experiment {
            /// Every experiment, in the order a run measures them.
            pub const ALL: &'static [Experiment] = &[$(Experiment::$variant,)+];

            /// The name users type (`dissect experiments <label>`, pipeline files, the
            /// `skipped` table).
            pub fn label(self) -> &'static str {
                match self {
                    $(Experiment::$variant => stringify!($module),)+
                }
            }

            /// Declares (empty) every table the experiment writes, so that a chunk whose
            /// records all fail still writes them.
            fn declare(self, out: &mut TableRows) {
                match self {
                    $(Experiment::$variant => { $(out.declare::<$row>();)+ })+
                }
            }

            fn measure<B: Backend>(self, run: &RecordRun<'_, B>, out: &mut TableRows) -> Result<(), ExperimentError> {
                match self {
                    $(Experiment::$variant => <crate::$module::$variant as Measure>::measure(run, out),)+
                }
            }
        }
    };
}

dissect_data::experiment_registry!(experiments);

impl Experiment {
    /// The tables the experiment writes, by name.
    pub fn tables(self) -> Vec<&'static str> {
        let mut t = TableRows::default();
        self.declare(&mut t);
        t.names()
    }
}

impl std::str::FromStr for Experiment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.replace('_', "-");
        Experiment::ALL
            .iter()
            .copied()
            .find(|e| std::iter::once(e.label()).chain(e.tables()).any(|n| n.replace('_', "-") == norm))
            .ok_or_else(|| format!("unknown experiment `{s}`\nhint: one of knockout, extraction, patching, enrichment, sublayer-knockout, ranks, parameters"))
    }
}

/// The experiments stage's configuration: a pipeline's `[experiments]` section or a
/// `--config` JSON file; every key has a default, so a partial one is enough.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentsConfig {
    /// The experiments run, in this order for each record (default: all).
    pub experiments: Vec<Experiment>,
    /// Records per output part: each part is written as soon as its records are done, so a
    /// killed run loses at most one part's work.
    pub chunk_size: usize,
    /// Projection used by extraction, patching, enrichment and ranks.
    pub projection: Projection,
    /// Which reads of the vocabulary view a bf16 screen with exact f32 recomputation answers
    /// where the CPU has AMX ([`dissect_model::screen`]): `top-k` (the default), `all` or `off`.
    /// The answers are the f32 path's whatever the setting; probabilities always take the f32
    /// path.
    pub screen: Screening,
    /// Attention knockout.
    pub knockout: KnockoutConfig,
    /// Attribute extraction (its clean rows also feed ranks).
    pub extraction: ExtractionConfig,
    /// Extraction under patching.
    pub patching: PatchingConfig,
    /// Subject enrichment beyond the attributes-rate filter.
    pub enrichment: EnrichmentConfig,
    /// The attributes rate's token filter, shared by enrichment and sublayer knockout.
    pub attributes: AttributesConfig,
    /// Sublayer knockout.
    pub sublayer: SublayerConfig,
    /// Parameters in vocabulary space.
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
            "paper_depth": crate::sublayer_knockout::PAPER_DEPTH,
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
            screen: Screening::TopK,
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
    /// The filtered records to measure; a stage run passes those of its shard.
    pub records: &'a [KeptRecord],
    /// Subject → its Wikipedia paragraphs.
    pub paragraphs: &'a BTreeMap<String, Vec<String>>,
    /// Words dropped from the attributes rate's token lists (NLTK's English list by default).
    pub stopwords: &'a HashSet<String>,
    /// The activation cache (`dissect cache`): when given, enrichment, extraction's clean rows
    /// and ranks read the clean activations from it instead of running the model.
    pub cache: Option<&'a dissect_cache::CacheReader>,
}

/// `parameters_matrices`: written once per output directory, by shard 0, as
/// `<out>/parameters_matrices/shard=…/part-00000.parquet`.
pub const MATRICES_TABLE: &str = ParametersMatrixRow::TABLE;

/// The OV/QK matrix view as table rows.
pub fn matrices_rows<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, cfg: &ParametersConfig) -> Vec<ParametersMatrixRow> {
    crate::parameters::matrices(model, tokenizer, cfg)
        .into_iter()
        .map(|r| ParametersMatrixRow {
            layer: r.layer as i32,
            head: r.head as i32,
            circuit: r.circuit.name().into(),
            pair_rank: r.rank as i32,
            source_id: r.source as i32,
            source: tokenizer.decode_token(r.source),
            destination_id: r.destination as i32,
            destination: tokenizer.decode_token(r.destination),
            value: r.value,
        })
        .collect()
}

/// Runs the stage on `inputs.records`: every table of every requested experiment, plus
/// `skipped`. `progress` is called after each record with (done, total).
pub fn run<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    mut progress: impl FnMut(usize, usize),
) -> TableRows {
    let cfg = &cfg.effective(model.n_layers());
    let mut out = declared(cfg);
    for (i, rec) in inputs.records.iter().enumerate() {
        run_record(model, tokenizer, inputs, cfg, rec, &mut out);
        progress(i + 1, inputs.records.len());
    }
    out
}

/// Every experiment on one record; a failure becomes a `skipped` row and the others go on.
fn run_record<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, inputs: &Inputs<'_>, cfg: &ExperimentsConfig, rec: &KeptRecord, out: &mut TableRows) {
    let skip = |out: &mut TableRows, e: Experiment, err: &ExperimentError| {
        let row = SkippedRow { id: id_value(rec.id), experiment: e.label().into(), reason: err.skip_reason(), message: err.to_string() };
        out.push(row);
    };
    let run = match RecordRun::new(model, tokenizer, inputs, cfg, rec) {
        Ok(r) => r,
        Err(err) => {
            for &e in &cfg.experiments {
                skip(out, e, &err);
            }
            return;
        }
    };
    for &e in &cfg.experiments {
        let t0 = std::time::Instant::now();
        let screened0 = dissect_model::screen::stats();
        // Rows go to a table of their own first, so a failure halfway leaves none behind.
        let mut rows = TableRows::default();
        match e.measure(&run, &mut rows) {
            Ok(()) => out.append(rows),
            Err(err) => skip(out, e, &err),
        }
        if std::env::var_os("DISSECT_PROFILE").is_some() {
            // Per-record, per-experiment wall time on stderr, for the README's cost table.
            // With the rows the screen answered and the logits it narrowed and recomputed.
            let [rows, narrowed, exact] = dissect_model::screen::stats();
            let [rows, narrowed, exact] = [rows - screened0[0], narrowed - screened0[1], exact - screened0[2]];
            eprintln!(
                "profile: record {} {} {:.3}s screened {rows} rows {narrowed} narrowed {exact} recomputed",
                rec.id,
                e.label(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// The table names a configuration writes (`skipped` last: it marks a finished chunk).
pub fn table_names(cfg: &ExperimentsConfig) -> Vec<&'static str> {
    let mut names = declared(cfg).names();
    names.retain(|&n| n != SkippedRow::TABLE);
    names.push(SkippedRow::TABLE);
    names
}

/// Every table of the configuration's experiments, plus `skipped`, empty.
fn declared(cfg: &ExperimentsConfig) -> TableRows {
    let mut out = TableRows::default();
    for &e in &cfg.experiments {
        e.declare(&mut out);
    }
    out.declare::<SkippedRow>();
    out
}

/// Everything besides the configuration that an experiments run's tables depend on: what
/// [`provenance`] hashes to decide whether existing parts can be reused.
pub struct RunInputs<'a> {
    /// The model as loaded: its spec and hub revision go into the provenance.
    pub model: &'a ModelInfo,
    /// Transformer blocks (the depth the notebook's constants are scaled to).
    pub n_layers: usize,
    /// SHA-256 of each weight file, comma-separated.
    pub weights_sha256: String,
    /// The filter tables' parameter hashes ([`dissect_data::parts::input_hashes`]).
    pub input_hashes: Vec<String>,
    /// SHA-256 of the subject paragraphs file.
    pub paragraphs_sha256: String,
    /// SHA-256 of the stopwords file.
    pub stopwords_sha256: String,
    /// `--limit`: only the first records by `known_id`, taken before sharding.
    pub limit: Option<usize>,
    /// The shard this run measures.
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
        "layout": dissect_data::table::LAYOUT_VERSION,
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
    /// The per-record tables, `skipped` last.
    pub records: Parts,
    /// The model-level `parameters_matrices` table; `None` unless this run writes it.
    pub matrices: Option<Parts>,
}

impl StageParts {
    /// The parts of a run writing under `out` (one directory per table) for `n_records`
    /// records of `shard`, each part carrying `provenance`.
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
/// done, current chunks are reused, parts of other runs are removed first. The model reads
/// the vocabulary view with the configuration's screening policy (`cfg.screen`).
pub fn run_resumable<B: Backend>(
    model: &mut Model<B>,
    tokenizer: &Tokenizer,
    inputs: &Inputs<'_>,
    cfg: &ExperimentsConfig,
    parts: &StageParts,
    progress: impl FnMut(usize, usize),
) -> Result<RunSummary, dissect_data::DataError> {
    model.screen = cfg.screen;
    let model = &*model;
    // Within a chunk (per record) and after each chunk, computed or reused.
    let progress = std::cell::RefCell::new(progress);
    if let Some(m) = &parts.matrices {
        m.run::<(), dissect_data::DataError>(
            &[()],
            1,
            |_, _| Ok(vec![(ParametersMatrixRow::to_batch(&matrices_rows(model, tokenizer, &cfg.parameters)), vec![])]),
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
            Ok(names.iter().map(|n| (tables.batch(n).expect("every table is declared"), vec![])).collect())
        },
        |d, t| (progress.borrow_mut())(d, t),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_gives_each_experiment_its_label_and_tables() {
        let by_label: Vec<(&str, Vec<&str>)> = Experiment::ALL.iter().map(|e| (e.label(), e.tables())).collect();
        assert_eq!(
            by_label,
            [
                ("knockout", vec!["knockout"]),
                ("extraction", vec!["extraction"]),
                ("patching", vec!["patching"]),
                ("enrichment", vec!["enrichment", "enrichment_baseline"]),
                ("sublayer_knockout", vec!["sublayer_knockout"]),
                ("ranks", vec!["ranks"]),
                ("parameters", vec!["parameters_heads", "parameters_mlp"]),
            ]
        );
        for name in ["sublayer-knockout", "sublayer_knockout", "enrichment_baseline", "parameters-mlp"] {
            assert!(name.parse::<Experiment>().is_ok(), "{name}");
        }
        assert!("sublayer".parse::<Experiment>().is_err());
    }
}
