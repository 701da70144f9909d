//! Attribute extraction (the paper's §5): does the MHSA or MLP output at the last position,
//! projected to the vocabulary, have the target as its top-1 token — in the clean run, and when
//! the last position's edges to the subject (or non-subject) positions are blocked in that
//! same layer.

use std::ops::Range;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::intervene::{run_plans, stack_layers, BlockEdges, CleanRun, EdgeBlocking, ExecPath, Plan, PlanHooks, RecordSpec, Sublayer};
use dissect_model::project::Projection;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::knockout::BlockSet;
use crate::vocab::rank_and_top1;
use crate::ExperimentError;

/// What attribute extraction measures (`[experiments.extraction]` in a pipeline).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractionConfig {
    /// How sublayer outputs are read in vocabulary space; a stage run replaces it with the
    /// experiments' top-level `projection` ([`crate::stage::ExperimentsConfig::effective`]).
    pub projection: Projection,
    /// Sets whose edges from the last position are blocked at the layer read ("none" is always run).
    pub blocked: Vec<BlockSet>,
    /// Whether the runs recompute only the last position ([`ExecPath::Fast`], exact) or every position.
    pub path: ExecPath,
    /// How the blocked edges are removed: before the softmax (the paper's wording, default) or
    /// the notebook cell's arithmetic (−1e6 written into the probabilities, softmax again),
    /// which reproduces the notebook's figure exactly.
    pub blocking: EdgeBlocking,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        ExtractionConfig {
            projection: Projection::Notebook,
            blocked: vec![BlockSet::Subject, BlockSet::NonSubject],
            path: ExecPath::Fast,
            blocking: EdgeBlocking::PreSoftmax,
        }
    }
}

/// One extraction measurement of a record; the `extraction` table's row without the record's
/// columns ([`dissect_data::table::ExtractionRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractionRow {
    /// 0-based block whose sublayer output at the last position is projected.
    pub layer: usize,
    /// MHSA or MLP; the blocked variants are MHSA only.
    pub sublayer: Sublayer,
    /// `None`: clean run; else the set whose edges from the last position were blocked at `layer`.
    pub blocked: Option<BlockSet>,
    /// 0-based rank of the target in the projection.
    pub target_rank: usize,
    /// Token id at the top of the projection.
    pub top1: u32,
    /// `target_rank == 0`: the sublayer extracts the attribute.
    pub extracted: bool,
}

/// Every extraction row of one prompt: per block, the clean MHSA and MLP outputs at the last
/// position, then MHSA with the edges from the last position to each set of `cfg.blocked`
/// blocked in that block alone (sets that do not apply are left out). `subject` is the
/// subject's token positions, `target` the clean top-1 token.
pub fn extraction<B: Backend>(
    model: &Model<B>,
    clean: &CleanRun<B>,
    subject: &Range<usize>,
    target: u32,
    cfg: &ExtractionConfig,
) -> Result<Vec<ExtractionRow>, ExperimentError> {
    extraction_from(model, clean, subject, target, cfg, None)
}

/// The clean run at the last position: what [`extraction_from`] reads there.
pub struct CleanSites<B: Backend> {
    /// Every block's MHSA output `[n_layers, hidden]`.
    pub attn_out: Tensor<B, 2>,
    /// Every block's MLP output `[n_layers, hidden]`.
    pub mlp_out: Tensor<B, 2>,
    /// The residual stream entering every block and after the last
    /// (`hidden_states[0..=n_layers]`, `[n_layers + 1, hidden]`).
    pub stream: Tensor<B, 2>,
}

/// [`extraction`], with the clean run's sites at the last position given instead of computed
/// (e.g. from the activation cache). The blocked variants still run the model.
pub fn extraction_from<B: Backend>(
    model: &Model<B>,
    clean: &CleanRun<B>,
    subject: &Range<usize>,
    target: u32,
    cfg: &ExtractionConfig,
    clean_sites: Option<CleanSites<B>>,
) -> Result<Vec<ExtractionRow>, ExperimentError> {
    let s = clean.ids.len();
    let last = s - 1;
    let n_layers = model.n_layers();
    let d = model.config.hidden;
    let has_bos = model.config.bos_token_id.is_some_and(|b| clean.ids[0] == b);
    // Everything is projected at the end, in one call: wide matmuls run the fastest.
    let mut vectors: Vec<Tensor<B, 2>> = Vec::new();
    let mut labels: Vec<(usize, Sublayer, Option<BlockSet>)> = Vec::new();

    let spec = |n: usize, mlp: bool| RecordSpec { attn_out: true, mlp_out: mlp, positions: vec![vec![last]; n], ..RecordSpec::default() };
    let sites = match clean_sites {
        Some(sites) => sites,
        None => {
            let (_, rec) = run_plans(model, clean, &[Plan::default()], cfg.path, RecordSpec { residual: true, ..spec(1, true) })?;
            CleanSites { attn_out: stack_layers(rec.attn_out), mlp_out: stack_layers(rec.mlp_out), stream: stack_layers(rec.residual) }
        }
    };
    vectors.extend([sites.attn_out, sites.mlp_out]);
    labels.extend((0..n_layers).map(|l| (l, Sublayer::Attn, None)).chain((0..n_layers).map(|l| (l, Sublayer::Mlp, None))));

    let sets: Vec<(BlockSet, Vec<usize>)> = cfg.blocked.iter().filter_map(|&set| Some((set, set.positions(s, subject, has_bos)?))).collect();
    // The plan that blocks the edges from the last position to `keys` at block l alone.
    let block_at = |l: usize, keys: &[usize]| Plan {
        edges: vec![BlockEdges { layers: l..l + 1, query: last, keys: keys.to_vec(), heads: None, arithmetic: cfg.blocking }],
        ..Plan::default()
    };
    if cfg.path == ExecPath::Fast && !sets.is_empty() {
        // A row blocks edges at layer l only and reads that layer's MHSA output, so everything
        // before it is the clean run: block l's attention alone, on the clean last-position
        // residual and the prompt's cached keys and values, one row per set.
        let mut blocked = vec![Vec::new(); sets.len()];
        for l in 0..n_layers {
            let h = sites.stream.clone().slice([l..l + 1]);
            let plans: Vec<Plan> = sets.iter().map(|(_, keys)| block_at(l, keys)).collect();
            let mut hooks = PlanHooks::new(model, &plans, last, 1, RecordSpec::default());
            let a = model.attn_sublayer(l, h.reshape([1, 1, d]).expand([sets.len(), 1, d]), Some(&clean.prefix[l]), &mut hooks);
            for (i, row) in a.reshape([sets.len(), d]).chunk(sets.len(), 0).into_iter().enumerate() {
                blocked[i].push(row);
            }
        }
        for ((set, _), rows) in sets.iter().zip(blocked) {
            vectors.extend(rows);
            labels.extend((0..n_layers).map(|l| (l, Sublayer::Attn, Some(*set))));
        }
    } else {
        for (set, keys) in sets {
            // Row l blocks only at layer l, whose MHSA output it reads.
            let plans: Vec<Plan> = (0..n_layers).map(|l| block_at(l, &keys)).collect();
            let (_, rec) = run_plans(model, clean, &plans, cfg.path, spec(n_layers, false))?;
            let d = model.config.hidden;
            vectors.extend(rec.attn_out.into_iter().enumerate().map(|(l, t)| t.slice([l..l + 1]).reshape([1, d])));
            labels.extend((0..n_layers).map(|l| (l, Sublayer::Attn, Some(set))));
        }
    }
    let ranks = rank_and_top1(model, Tensor::cat(vectors, 0), cfg.projection, target as usize);
    Ok(labels
        .into_iter()
        .zip(ranks)
        .map(|((layer, sublayer, blocked), (target_rank, top1))| ExtractionRow { layer, sublayer, blocked, target_rank, top1, extracted: target_rank == 0 })
        .collect())
}

/// The `extraction` table ([`dissect_data::table::ExtractionRow`]).
pub struct Extraction;

impl crate::record::Measure for Extraction {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        for r in run.extraction_rows()? {
            out.push(dissect_data::table::ExtractionRow {
                id: run.id(),
                layer: r.layer as i32,
                sublayer: r.sublayer.name().into(),
                positions: r.blocked.map_or("none", BlockSet::name).into(),
                target_rank: r.target_rank as i32,
                top1_id: r.top1 as i32,
                extracted: r.extracted,
            });
        }
        Ok(())
    }
}
