//! Attention knockout (the paper's Fig. 2): block the edges from the last position to a set of
//! positions in a window of layers around each layer, and measure the change in the
//! probability of the clean prediction.

use std::ops::Range;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_data::PositionKind;
use dissect_model::intervene::{record_clean, run_plans, run_staggered, stack_layers, BlockEdges, CleanRun, EdgeBlocking, ExecPath, Plan, RecordSpec};
use dissect_model::predict::top_k;
use dissect_model::project::{map_logit_rows_after_first, Projection};
use dissect_model::softmax::softmax_at;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::ExperimentError;

/// The key positions whose edges from the last position are blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSet {
    /// The subject's tokens.
    Subject,
    /// Every earlier position that is not a subject token (BOS included): the notebook's set.
    NonSubject,
    /// The last position itself: its attention to its own token.
    Last,
    /// The BOS position alone (models whose tokenizer prepends one).
    Bos,
    /// [`BlockSet::NonSubject`] without the BOS position, separating the attention sink from
    /// the prompt's own words.
    NonSubjectNoBos,
    /// The non-subject positions and the last position itself: what the notebook's
    /// attribute-extraction cell calls "MHSA block non-subject".
    NonSubjectAndLast,
}

impl BlockSet {
    /// The notebook's three sets.
    pub const PAPER: [BlockSet; 3] = [BlockSet::Subject, BlockSet::NonSubject, BlockSet::Last];

    /// The notebook's three sets plus BOS alone and non-subject without BOS: what the
    /// checked-in pipelines measure (the BOS sets only apply where the tokenizer prepends one).
    pub const REPORT: [BlockSet; 5] = [BlockSet::Subject, BlockSet::NonSubject, BlockSet::Last, BlockSet::Bos, BlockSet::NonSubjectNoBos];

    /// The name in the tables' `positions` column, as in configurations.
    pub fn name(self) -> &'static str {
        match self {
            BlockSet::Subject => "subject",
            BlockSet::NonSubject => "non_subject",
            BlockSet::Last => "last",
            BlockSet::Bos => "bos",
            BlockSet::NonSubjectNoBos => "non_subject_no_bos",
            BlockSet::NonSubjectAndLast => "non_subject_and_last",
        }
    }

    /// The positions of this set, or `None` when it does not apply (no BOS, empty set).
    pub fn positions(self, len: usize, subject: &Range<usize>, has_bos: bool) -> Option<Vec<usize>> {
        let last = len - 1;
        let non_subject = (0..last).filter(|p| !subject.contains(p));
        let v: Vec<usize> = match self {
            BlockSet::Subject => subject.clone().collect(),
            BlockSet::NonSubject => non_subject.collect(),
            BlockSet::Last => vec![last],
            BlockSet::Bos if has_bos => vec![0],
            BlockSet::Bos => vec![],
            BlockSet::NonSubjectNoBos => non_subject.filter(|&p| !(has_bos && p == 0)).collect(),
            BlockSet::NonSubjectAndLast => non_subject.chain([last]).collect(),
        };
        (!v.is_empty()).then_some(v)
    }
}

/// What attention knockout measures (`[experiments.knockout]` in a pipeline).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnockoutConfig {
    /// Layers blocked around each centre layer ℓ: `[ℓ - window/2, ℓ + window - window/2)`,
    /// clipped to the model (the notebook's k = 9 gives `[ℓ-4, ℓ+5)`).
    pub window: usize,
    /// The sets knocked out at every centre layer; a set that does not apply to a prompt (no
    /// BOS, empty) gives no rows.
    pub sets: Vec<BlockSet>,
    /// Whether the variants recompute only the last position ([`ExecPath::Fast`], exact) or
    /// every position.
    pub path: ExecPath,
    /// Variants per forward pass.
    pub batch: usize,
}

impl Default for KnockoutConfig {
    fn default() -> Self {
        KnockoutConfig { window: 9, sets: BlockSet::PAPER.to_vec(), path: ExecPath::Fast, batch: 128 }
    }
}

/// The blocks knocked out around block `centre`: `window` of them, fewer where the window is
/// clipped to `0..n_layers` (see [`KnockoutConfig::window`]).
pub fn window_layers(centre: usize, window: usize, n_layers: usize) -> Range<usize> {
    let half = window / 2;
    centre.saturating_sub(half)..(centre + window - half).min(n_layers)
}

/// One knocked-out variant of a prompt; the `knockout` table's row without the per-prompt
/// columns ([`dissect_data::table::KnockoutRow`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KnockoutRow {
    /// Centre of the window of knocked-out blocks (0-based block).
    pub layer: usize,
    /// The positions whose edges from the last position are blocked.
    pub block: BlockSet,
    /// p(target) at the last position with the edges blocked (0–1).
    pub p_new: f32,
    /// `100 · (p_new − p_base) / p_base`: the relative change in percent the paper plots.
    pub pct_change: f32,
}

/// The knockout sweep of one prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnockoutResult {
    /// The model's top-1 token on the clean run, whose probability every variant tracks.
    pub target_id: u32,
    /// p(target) on the clean run (0–1).
    pub p_base: f32,
    /// The model's number of blocks: the centres are `0..layers`.
    pub layers: usize,
    /// Blocks per window ([`KnockoutConfig::window`]).
    pub window: usize,
    /// One row per centre block and applicable set, block-major.
    pub rows: Vec<KnockoutRow>,
}

/// The knockout sweep of one prompt. The target is the model's own top-1 on the clean run.
pub fn knockout_sweep<B: Backend>(model: &Model<B>, ids: &[u32], subject: Range<usize>, cfg: &KnockoutConfig) -> Result<KnockoutResult, ExperimentError> {
    CleanRun::<B>::check(ids)?;
    let last = ids.len() - 1;
    // One clean forward pass gives the prediction, the stream each variant joins and the keys
    // and values the variants attend over.
    let rec = record_clean(model, ids, RecordSpec { residual: true, kv: true, positions: vec![vec![last]], ..RecordSpec::default() })?;
    knockout_sweep_from(model, &CleanRun::from_kv(ids, rec.kv)?, stack_layers(rec.residual), subject, cfg)
}

/// [`knockout_sweep`] on a prompt whose clean run is already at hand: `last_stream` is its
/// residual stream at the last position, entering every block and after the last
/// (`hidden_states[0..=n_layers]`, `[n_layers + 1, hidden]`), as the activation cache holds it.
pub fn knockout_sweep_from<B: Backend>(
    model: &Model<B>,
    clean: &CleanRun<B>,
    last_stream: Tensor<B, 2>,
    subject: Range<usize>,
    cfg: &KnockoutConfig,
) -> Result<KnockoutResult, ExperimentError> {
    let ids = &clean.ids;
    let s = ids.len();
    let n_layers = model.n_layers();
    let d = model.config.hidden;
    assert_eq!(last_stream.dims(), [n_layers + 1, d], "knockout_sweep_from: the last position's stream is [n_layers + 1, hidden]");
    let last = s - 1;
    let has_bos = model.config.bos_token_id.is_some_and(|b| ids[0] == b);

    let mut variants = Vec::new();
    for layer in 0..n_layers {
        for &set in &cfg.sets {
            let Some(keys) = set.positions(s, &subject, has_bos) else { continue };
            let edges =
                vec![BlockEdges { layers: window_layers(layer, cfg.window, n_layers), query: last, keys, heads: None, arithmetic: EdgeBlocking::PreSoftmax }];
            variants.push((layer, set, Plan { edges, ..Plan::default() }));
        }
    }
    // The clean final residual, then every variant's: one projection reads them all.
    let mut finals = vec![last_stream.clone().slice([n_layers..n_layers + 1])];
    for chunk in variants.chunks(cfg.batch.max(1)) {
        let plans: Vec<Plan> = chunk.iter().map(|(_, _, p)| p.clone()).collect();
        let n = plans.len();
        finals.push(match cfg.path {
            // A variant's last position is the clean one until its window starts: variants join
            // a growing batch there (layer-major order has ascending starts).
            ExecPath::Fast => {
                let starts: Vec<usize> = chunk.iter().map(|(layer, _, _)| window_layers(*layer, cfg.window, n_layers).start).collect();
                let entering = |l: usize| last_stream.clone().slice([l..l + 1]).reshape([1, 1, d]);
                run_staggered(model, &plans, &starts, n_layers, entering, Some(&clean.prefix), last).reshape([n, d])
            }
            ExecPath::Full => run_plans(model, clean, &plans, cfg.path, RecordSpec::default())?.0,
        });
    }
    // The target is the clean run's top-1; every row is read for its probability.
    let (target, probs) = map_logit_rows_after_first(model, Tensor::cat(finals, 0), Projection::LogitLens, |r| top_k(r, 1)[0], |&t, r| softmax_at(r, t));
    let p_base = probs[0];
    let rows = variants
        .iter()
        .zip(&probs[1..])
        .map(|((layer, set, _), &p_new)| KnockoutRow { layer: *layer, block: *set, p_new, pct_change: 100.0 * (p_new - p_base) / p_base })
        .collect();
    Ok(KnockoutResult { target_id: target as u32, p_base, layers: n_layers, window: cfg.window, rows })
}

/// The `knockout` table ([`dissect_data::table::KnockoutRow`]).
pub struct Knockout;

impl crate::record::Measure for Knockout {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        let last = run.cached()?.residual(PositionKind::Last).expect("every prompt has a last position");
        let r = knockout_sweep_from(run.model, run.clean()?, last, run.subject(), &run.cfg.knockout)?;
        for row in r.rows {
            out.push(dissect_data::table::KnockoutRow {
                id: run.id(),
                layer: row.layer as i32,
                positions: row.block.name().into(),
                window: r.window as i32,
                target_id: r.target_id as i32,
                p_base: r.p_base,
                p_new: row.p_new,
                pct_change: row.pct_change,
            });
        }
        Ok(())
    }
}
