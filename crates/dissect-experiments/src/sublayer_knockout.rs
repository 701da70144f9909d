//! Sublayer knockout on enrichment (the paper's Fig. 5): knock out the MLP or MHSA sublayers of
//! a run of layers at every position and read the attributes rate at the last subject token in
//! a late layer.

use std::collections::HashSet;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::intervene::{run_staggered, Knockout, KnockoutMode, Plan, Sublayer};
use dissect_model::project::{read_rows, Ask, Projection};
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::enrichment::{attributes_rate, top_tokens, AttributesConfig};
use crate::ExperimentError;

/// GPT-2 XL's depth, the model the notebook's constants were written for.
pub const PAPER_DEPTH: usize = 48;
/// The notebook's `subject_repr_layer` on GPT-2 XL: the block whose output,
/// `hidden_states[40 + 1]`, is read; scaled to other depths by [`SublayerConfig::repr_layer`].
pub const PAPER_REPR_LAYER: usize = 40;

/// What sublayer knockout measures (`[experiments.sublayer]` in a pipeline).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SublayerConfig {
    /// R, the notebook's `subject_repr_layer`: a block index; its output `hidden_states[R + 1]`
    /// is read, and knockouts start at blocks `0..R` and never reach block R. `None`: the
    /// notebook's 40 of 48 scaled to the model's depth, `round(40 · L / 48)`, at most `L - 1`.
    pub repr_layer: Option<usize>,
    /// Blocks knocked out from each start block, cut at R: `start..min(start + span, R)`. The
    /// notebook knocks out 11 (its `num_block_layers` is 10, its range ends at `start + 10 + 1`).
    pub span: usize,
    /// The knockouts run for each start block and sublayer: the notebook's arithmetic, the
    /// paper's exact zero, or both.
    pub modes: Vec<KnockoutMode>,
    /// How the read hidden state is taken to the vocabulary; a stage run replaces it with the
    /// experiments' top-level `projection` ([`crate::stage::ExperimentsConfig::effective`]).
    pub projection: Projection,
}

impl Default for SublayerConfig {
    fn default() -> Self {
        SublayerConfig { repr_layer: None, span: 11, modes: vec![KnockoutMode::Notebook, KnockoutMode::Zero], projection: Projection::Notebook }
    }
}

impl SublayerConfig {
    /// R for a model of `n_layers` blocks.
    pub fn repr_layer(&self, n_layers: usize) -> usize {
        let scaled = ((PAPER_REPR_LAYER * n_layers) as f64 / PAPER_DEPTH as f64).round() as usize;
        self.repr_layer.unwrap_or(scaled).min(n_layers.saturating_sub(1))
    }

    /// The `hidden_states` index read: R + 1.
    pub fn read_layer(&self, n_layers: usize) -> usize {
        self.repr_layer(n_layers) + 1
    }
}

/// One sublayer-knockout variant of a prompt, or its no-intervention row; the
/// `sublayer_knockout` table's row without the record's columns
/// ([`dissect_data::table::SublayerKnockoutRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SublayerRow {
    /// First knocked-out block; `None`: no intervention.
    pub start: Option<usize>,
    /// One past the last knocked-out block (`start..end`).
    pub end: Option<usize>,
    /// The sublayer knocked out in every block of `start..end`; `None`: no intervention.
    pub sublayer: Option<Sublayer>,
    /// How it is knocked out; `None`: no intervention.
    pub mode: Option<KnockoutMode>,
    /// The `hidden_states` index read (R + 1).
    pub read_layer: usize,
    /// Attributes rate at the last subject token, in percent (0–100).
    pub rate: f32,
}

/// The attributes rate at the last subject token of `hidden_states[R + 1]`, first with no
/// intervention, then for every start block `0..R`, sublayer (MLP, then MHSA) and mode.
///
/// `hidden[l]`: the clean residual entering block `l`, `[seq, hidden]`. Only positions up to the
/// last subject token are computed: nothing after it can change what it reads.
#[allow(clippy::too_many_arguments)]
pub fn sublayer_knockout<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    hidden: &[Tensor<B, 2>],
    subject_last: usize,
    paragraph: &HashSet<String>,
    stopwords: &HashSet<String>,
    attrs: &AttributesConfig,
    cfg: &SublayerConfig,
) -> Vec<SublayerRow> {
    let n_layers = model.n_layers();
    let repr = cfg.repr_layer(n_layers);
    let read = repr + 1;
    let q = subject_last + 1;
    let d = model.config.hidden;
    let mut labels = vec![(None, None, None, None)];
    let at_read = |h: Tensor<B, 2>| crate::projected_hidden_state(model, read, h, cfg.projection);
    let clean = at_read(hidden[read].clone().slice([subject_last..q]));
    // Every start's variants in one batch that grows block by block (ascending starts). A
    // variant that computes what another already does runs once (`Knockout::cheapest`: the
    // notebook's MLP knockout is the zero knockout where the MLP writes nothing without its
    // activations).
    let (mut plans, mut starts) = (Vec::<Plan>::new(), Vec::new());
    let mut row_of = vec![0];
    for start in 0..repr {
        let end = (start + cfg.span).min(repr);
        for sublayer in [Sublayer::Mlp, Sublayer::Attn] {
            for &mode in &cfg.modes {
                let knockout = Knockout { sublayer, layers: start..end, positions: None, mode }.cheapest(model);
                let plan = Plan { knockouts: vec![knockout], ..Plan::default() };
                let at = plans.iter().position(|p| *p == plan).unwrap_or_else(|| {
                    plans.push(plan);
                    starts.push(start);
                    plans.len() - 1
                });
                row_of.push(at + 1);
                labels.push((Some(start), Some(end), Some(sublayer), Some(mode)));
            }
        }
    }
    let mut vectors = vec![clean];
    if !plans.is_empty() {
        let n = plans.len();
        // Through block R, whose output is read; the knockouts never reach it.
        let out = run_staggered(model, &plans, &starts, read, |l| hidden[l].clone().slice([0..q]).unsqueeze::<3>(), None, 0);
        vectors.push(at_read(out.slice([0..n, subject_last..q]).reshape([n, d])));
    }
    let ask = Ask { rank_of: None, top: attrs.top };
    let rates: Vec<f32> = read_rows(model, Tensor::cat(vectors, 0), cfg.projection, ask)
        .into_iter()
        .map(|a| attributes_rate(&top_tokens(&a.top, tokenizer, stopwords, attrs), paragraph))
        .collect();
    labels
        .into_iter()
        .zip(row_of)
        .map(|((start, end, sublayer, mode), row)| SublayerRow { start, end, sublayer, mode, read_layer: read, rate: rates[row] })
        .collect()
}

/// The `sublayer_knockout` table ([`dissect_data::table::SublayerKnockoutRow`]).
pub struct SublayerKnockout;

impl crate::record::Measure for SublayerKnockout {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        let para = run.paragraph()?;
        let (cfg, stopwords) = (run.cfg, run.inputs.stopwords);
        for r in sublayer_knockout(run.model, run.tokenizer, run.hidden()?, run.subject_last(), &para, stopwords, &cfg.attributes, &cfg.sublayer) {
            out.push(dissect_data::table::SublayerKnockoutRow {
                id: run.id(),
                start_layer: r.start.map(|l| l as i32),
                end_layer: r.end.map(|l| l as i32),
                sublayer: r.sublayer.map_or("none", Sublayer::name).into(),
                mode: r.mode.map_or("none", KnockoutMode::name).into(),
                read_hidden_state: r.read_layer as i32,
                rate_pct: r.rate,
            });
        }
        Ok(())
    }
}
