//! The intervention vocabulary every stage shares: block attention edges, knock out a sublayer,
//! patch the residual stream, record sites — as a [`Plan`] per batch row, executed by the
//! forward pass through [`PlanHooks`]. Positions are absolute token indices of the prompt.

use std::ops::Range;

use burn_tensor::backend::Backend;
use burn_tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::hooks::{Hooks, RecordKv};
use crate::model::{AttnScoresInfo, KvCache, Model};

/// The score added to a blocked attention edge before the softmax (HF's own mask value,
/// `torch.finfo(float32).min`): the edge gets exactly zero weight and the other keys renormalise.
pub const BLOCKED: f32 = f32::MIN;

/// The two sublayers of a block that write to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sublayer {
    /// Multi-head self-attention (MHSA), read at the `attn_out` hook.
    Attn,
    /// The MLP, read at the `mlp_out` hook.
    Mlp,
}

/// What knocking out a sublayer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KnockoutMode {
    /// The paper's notebook: MLP hidden activations set to 0 (the output becomes the down
    /// projection's bias); attention rows fully masked, which leaves uniform attention over the
    /// keys the causal (and sliding-window) mask allows.
    #[default]
    Notebook,
    /// The paper's wording: the sublayer adds exactly nothing to the residual stream.
    Zero,
}

impl Sublayer {
    /// The name in tables and configurations.
    pub fn name(self) -> &'static str {
        match self {
            Sublayer::Attn => "attn",
            Sublayer::Mlp => "mlp",
        }
    }
}

impl KnockoutMode {
    /// The name in tables and configurations.
    pub fn name(self) -> &'static str {
        match self {
            KnockoutMode::Notebook => "notebook",
            KnockoutMode::Zero => "zero",
        }
    }
}

/// How a blocked edge is taken out of the attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EdgeBlocking {
    /// The paper's wording: the edge's score is masked before the softmax, so the edge gets
    /// zero weight and the other keys renormalise (`p_j / Σ_unblocked p`).
    #[default]
    PreSoftmax,
    /// The notebook's attribute-extraction cell: −1e6 is written into the attention
    /// *probabilities* of the blocked keys and the softmax is applied again to the row, so an
    /// unblocked key gets `exp(p_j) / Σ_unblocked exp(p_k)` (a flatter row than the original).
    /// Keys after the query stay at zero weight.
    Notebook,
}

impl EdgeBlocking {
    /// The name in tables and configurations.
    pub fn name(self) -> &'static str {
        match self {
            EdgeBlocking::PreSoftmax => "pre_softmax",
            EdgeBlocking::Notebook => "notebook",
        }
    }
}

/// The value the notebook writes into a blocked attention probability before its second softmax.
pub const NOTEBOOK_BLOCKED_PROB: f32 = -1e6;

/// Block the edges from `query` to `keys` at `layers`, in `heads` (all when `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockEdges {
    /// 0-based blocks, end exclusive.
    pub layers: Range<usize>,
    /// The attending position.
    pub query: usize,
    /// The positions it may no longer attend to; keys after the query are already masked.
    pub keys: Vec<usize>,
    /// 0-based query heads; `None` for every head.
    pub heads: Option<Vec<usize>>,
    /// Before the softmax (default) or the notebook's second softmax over probabilities.
    #[serde(default)]
    pub arithmetic: EdgeBlocking,
}

/// Knock out a sublayer at `layers`, at `positions` (all when `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knockout {
    /// Attention or MLP.
    pub sublayer: Sublayer,
    /// 0-based blocks, end exclusive.
    pub layers: Range<usize>,
    /// The positions whose sublayer output is removed; `None` for every position.
    pub positions: Option<Vec<usize>>,
    /// What removing it means.
    pub mode: KnockoutMode,
}

impl Knockout {
    /// The same knockout in the mode `model` computes most cheaply, with the same values: the
    /// notebook's MLP knockout is the zero knockout where every block it covers has an MLP that
    /// writes nothing without its activations ([`Model::mlp_is_zero_without_activations`]), and a
    /// row whose MLP output is zero everywhere skips the MLP.
    pub fn cheapest<B: Backend>(&self, model: &Model<B>) -> Knockout {
        let zero =
            self.sublayer == Sublayer::Mlp && self.mode == KnockoutMode::Notebook && self.layers.clone().all(|l| model.mlp_is_zero_without_activations(l));
        Knockout { mode: if zero { KnockoutMode::Zero } else { self.mode }, ..self.clone() }
    }
}

/// Replace the residual stream entering block `layer` at `position` with `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// 0-based block whose input is replaced (HF `hidden_states[layer]`), `0..n_layers`: the final residual cannot be patched.
    pub layer: usize,
    /// The position patched.
    pub position: usize,
    /// The new residual vector, `hidden` values.
    pub value: Vec<f32>,
}

/// Everything done to one batch row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Attention edges to block.
    pub edges: Vec<BlockEdges>,
    /// Sublayers to knock out.
    pub knockouts: Vec<Knockout>,
    /// Residual-stream values to overwrite.
    pub patches: Vec<Patch>,
}

impl Plan {
    /// Whether the plan does nothing, so the row computes the unmodified forward pass.
    pub fn is_clean(&self) -> bool {
        self.edges.is_empty() && self.knockouts.is_empty() && self.patches.is_empty()
    }

    /// Whether every intervention only changes what position `pos` computes, so every earlier
    /// position's keys and values equal the clean run's.
    pub fn only_touches(&self, pos: usize) -> bool {
        self.edges.iter().all(|e| e.query == pos)
            && self.knockouts.iter().all(|k| k.positions.as_ref().is_some_and(|p| p.iter().all(|&x| x == pos)))
            && self.patches.iter().all(|p| p.position == pos)
    }

    /// The first layer any intervention acts on.
    pub fn first_layer(&self) -> Option<usize> {
        let e = self.edges.iter().map(|e| e.layers.start);
        let k = self.knockouts.iter().map(|k| k.layers.start);
        let p = self.patches.iter().map(|p| p.layer);
        e.chain(k).chain(p).min()
    }
}

/// Which sites to record, at which positions (absolute, one list per row, equal lengths).
#[derive(Debug, Clone, Default)]
pub struct RecordSpec {
    /// Record the residual stream at every block input and after the last block.
    pub residual: bool,
    /// Record every block's attention output.
    pub attn_out: bool,
    /// Record every block's MLP output.
    pub mlp_out: bool,
    /// Record every block's keys and values at every position the pass computes (every row).
    pub kv: bool,
    /// `positions[row]` lists the absolute positions to keep for that batch row, each computed
    /// in the pass; empty records nothing.
    pub positions: Vec<Vec<usize>>,
}

/// Recorded sites, each `[batch, positions, hidden]`; `residual` has `n_layers + 1` entries
/// (block inputs, then the final residual before the final norm).
#[derive(Debug, Default)]
pub struct Recorded<B: Backend> {
    /// Block inputs `0..n_layers` (after patches), then the final residual; empty unless requested.
    pub residual: Vec<Tensor<B, 3>>,
    /// One entry per layer (after any knockout); empty unless requested.
    pub attn_out: Vec<Tensor<B, 3>>,
    /// One entry per layer (after any knockout); empty unless requested.
    pub mlp_out: Vec<Tensor<B, 3>>,
    /// One cache per layer, `[batch, kv_heads, positions computed, head_dim]`; empty unless requested.
    pub kv: Vec<KvCache<B>>,
}

/// Executes one [`Plan`] per batch row. Built for a forward over positions `q_start..q_start+q`
/// of rows padded to a common length.
pub struct PlanHooks<B: Backend> {
    q_start: usize,
    score_bias: Vec<Option<Tensor<B, 4>>>,
    uniform_rows: Vec<Option<Tensor<B, 4, Bool>>>,
    /// Rows re-softmaxed over their probabilities (the notebook's blocking): which rows, and
    /// what is added to their probabilities first.
    probs_resoftmax: Vec<Option<Resoftmax<B>>>,
    attn_keep: Vec<Option<Tensor<B, 3>>>,
    mlp_act_keep: Vec<Option<Tensor<B, 3>>>,
    mlp_keep: Vec<Option<Tensor<B, 3>>>,
    /// Per layer, the rows whose MLP runs when some skip it ([`Hooks::mlp_rows`]).
    mlp_rows: Vec<Option<Vec<usize>>>,
    patches: Vec<Vec<(usize, usize, Tensor<B, 1>)>>,
    gather: Option<Tensor<B, 1, Int>>,
    n_gather: usize,
    spec: RecordSpec,
    /// What the [`RecordSpec`] asked for, filled as the forward pass runs.
    pub recorded: Recorded<B>,
}

impl<B: Backend> PlanHooks<B> {
    /// `plans[i]` applies to row `i`; queries are positions `q_start..q_start + q`.
    pub fn new(model: &Model<B>, plans: &[Plan], q_start: usize, q: usize, spec: RecordSpec) -> Self {
        Self::with_rows(model, plans, &|_| plans.len(), q_start, q, spec)
    }

    /// For a batch that grows ([`run_staggered`]): block `l` runs the rows of the plans whose
    /// start is at most `l`; `starts` is ascending, so those rows are a prefix of the batch.
    /// Nothing is recorded.
    pub fn staggered(model: &Model<B>, plans: &[Plan], starts: &[usize], q_start: usize, q: usize) -> Self {
        assert_eq!(plans.len(), starts.len(), "one start per plan");
        assert!(starts.is_sorted(), "starts must be ascending");
        // A row is absent from the blocks before its start: an intervention there would be lost.
        assert!(plans.iter().zip(starts).all(|(p, &s)| p.first_layer().is_none_or(|f| f >= s)), "a plan acts before its start");
        Self::with_rows(model, plans, &|l| starts.partition_point(|&s| s <= l), q_start, q, RecordSpec::default())
    }

    /// Block `l` runs rows `0..rows_at(l)`, plan `i` on row `i`.
    fn with_rows(model: &Model<B>, plans: &[Plan], rows_at: &dyn Fn(usize) -> usize, q_start: usize, q: usize, spec: RecordSpec) -> Self {
        let c = &model.config;
        let (nh, n_layers, dev) = (c.n_heads, c.n_layers, &model.device);
        let k = q_start + q;
        let in_q = |pos: usize| (q_start..q_start + q).contains(&pos).then(|| pos - q_start);

        let mut score_bias = vec![None; n_layers];
        let mut uniform_rows = vec![None; n_layers];
        let mut probs_resoftmax = vec![None; n_layers];
        let mut attn_keep = vec![None; n_layers];
        let mut mlp_act_keep = vec![None; n_layers];
        let mut mlp_keep = vec![None; n_layers];
        let mut mlp_rows = vec![None; n_layers];
        let mut patches: Vec<Vec<_>> = vec![Vec::new(); n_layers];
        for l in 0..n_layers {
            let b = rows_at(l);
            let mut bias = vec![0f32; b * nh * q * k];
            let mut uniform = vec![false; b * nh * q * k];
            // (rows, bias), allocated only for a layer that has a notebook-arithmetic edge.
            let mut resoftmax: Option<(Vec<bool>, Vec<f32>)> = None;
            let mut keep = [vec![1f32; b * q], vec![1f32; b * q], vec![1f32; b * q]];
            let (mut any_bias, mut any_uniform, mut any_keep) = (false, false, [false; 3]);
            for (row, plan) in plans[..b].iter().enumerate() {
                for e in plan.edges.iter().filter(|e| e.layers.contains(&l)) {
                    let Some(qi) = in_q(e.query) else { continue };
                    let heads: Vec<usize> = e.heads.clone().unwrap_or_else(|| (0..nh).collect());
                    for h in heads {
                        let at = ((row * nh + h) * q + qi) * k;
                        match e.arithmetic {
                            EdgeBlocking::PreSoftmax => {
                                for &key in e.keys.iter().filter(|&&key| key < k) {
                                    bias[at + key] = BLOCKED;
                                    any_bias = true;
                                }
                            }
                            EdgeBlocking::Notebook => {
                                let (rows, bias) = resoftmax.get_or_insert_with(|| (vec![false; b * nh * q * k], vec![0f32; b * nh * q * k]));
                                rows[at..at + k].iter_mut().for_each(|r| *r = true);
                                // Keys after the query are not part of the notebook's row.
                                bias[at + e.query + 1..at + k].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                                for &key in e.keys.iter().filter(|&&key| key <= e.query) {
                                    bias[at + key] = NOTEBOOK_BLOCKED_PROB;
                                }
                            }
                        }
                    }
                }
                for ko in plan.knockouts.iter().filter(|ko| ko.layers.contains(&l)).map(|ko| ko.cheapest(model)) {
                    let positions: Vec<usize> = match &ko.positions {
                        Some(p) => p.iter().filter_map(|&p| in_q(p)).collect(),
                        None => (0..q).collect(),
                    };
                    match (ko.sublayer, ko.mode) {
                        (Sublayer::Attn, KnockoutMode::Notebook) => {
                            for qi in positions {
                                for h in 0..nh {
                                    let at = ((row * nh + h) * q + qi) * k;
                                    uniform[at..at + k].iter_mut().for_each(|u| *u = true);
                                }
                                any_uniform = true;
                            }
                        }
                        (sub, mode) => {
                            let slot = match (sub, mode) {
                                (Sublayer::Attn, _) => 0,
                                (Sublayer::Mlp, KnockoutMode::Notebook) => 1,
                                (Sublayer::Mlp, KnockoutMode::Zero) => 2,
                            };
                            for qi in positions {
                                keep[slot][row * q + qi] = 0.0;
                                any_keep[slot] = true;
                            }
                        }
                    }
                }
                for p in plan.patches.iter().filter(|p| p.layer == l) {
                    if let Some(qi) = in_q(p.position) {
                        let v = Tensor::<B, 1>::from_data(TensorData::new(p.value.clone(), [p.value.len()]), dev);
                        patches[l].push((row, qi, v));
                    }
                }
            }
            if any_bias {
                score_bias[l] = Some(Tensor::from_data(TensorData::new(bias, [b, nh, q, k]), dev));
            }
            if any_uniform {
                uniform_rows[l] = Some(Tensor::from_data(TensorData::new(uniform, [b, nh, q, k]), dev));
            }
            if let Some((rows, bias)) = resoftmax {
                let rows = Tensor::from_data(TensorData::new(rows, [b, nh, q, k]), dev);
                probs_resoftmax[l] = Some((rows, Tensor::from_data(TensorData::new(bias, [b, nh, q, k]), dev)));
            }
            let [a, ma, m] = keep;
            let to_t = |v: Vec<f32>, rows: usize| Tensor::<B, 3>::from_data(TensorData::new(v, [rows, q, 1]), dev);
            // A row whose MLP output is removed at every position skips the MLP.
            let used: Vec<usize> = (0..b).filter(|&r| m[r * q..(r + 1) * q].iter().any(|&k| k != 0.0)).collect();
            attn_keep[l] = any_keep[0].then(|| to_t(a, b));
            // The activations' mask covers the rows the MLP runs on.
            mlp_act_keep[l] = any_keep[1].then(|| to_t(used.iter().flat_map(|&r| ma[r * q..(r + 1) * q].iter().copied()).collect(), used.len()));
            mlp_rows[l] = (used.len() < b).then_some(used);
            mlp_keep[l] = any_keep[2].then(|| to_t(m, b));
        }
        let n_gather = spec.positions.first().map_or(0, Vec::len);
        let gather = (!spec.positions.is_empty()).then(|| {
            let idx: Vec<i64> = spec
                .positions
                .iter()
                .enumerate()
                .flat_map(|(row, ps)| {
                    assert_eq!(ps.len(), n_gather, "every row records the same number of positions");
                    ps.iter().map(move |&p| (row * q + in_q(p).expect("recorded position is computed in this pass")) as i64)
                })
                .collect();
            Tensor::from_data(TensorData::new(idx, [plans.len() * n_gather]), dev)
        });
        PlanHooks {
            q_start,
            score_bias,
            uniform_rows,
            probs_resoftmax,
            attn_keep,
            mlp_act_keep,
            mlp_keep,
            mlp_rows,
            patches,
            gather,
            n_gather,
            spec,
            recorded: Recorded::default(),
        }
    }

    fn take(&self, t: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        let idx = self.gather.as_ref()?;
        let [b, q, d] = t.dims();
        Some(t.clone().reshape([b * q, d]).select(0, idx.clone()).reshape([b, self.n_gather, d]))
    }
}

impl<B: Backend> Hooks<B> for PlanHooks<B> {
    fn block_input(&mut self, layer: usize, mut h: Tensor<B, 3>) -> Tensor<B, 3> {
        for (row, qi, v) in &self.patches[layer] {
            let d = v.dims()[0];
            h = h.slice_assign([*row..row + 1, *qi..qi + 1, 0..d], v.clone().reshape([1, 1, d]));
        }
        if self.spec.residual {
            if let Some(t) = self.take(&h) {
                self.recorded.residual.push(t);
            }
        }
        h
    }

    fn attn_scores(&mut self, layer: usize, scores: Tensor<B, 4>, info: &AttnScoresInfo<'_, B>) -> Tensor<B, 4> {
        debug_assert_eq!(info.q_start, self.q_start);
        let mut scores = scores;
        if let Some(bias) = &self.score_bias[layer] {
            scores = scores + bias.clone();
        }
        if let Some(rows) = &self.uniform_rows[layer] {
            // Every score of the row equal: softmax gives uniform weight over visible keys.
            let shape = scores.dims();
            let mask = info.mask.clone().unsqueeze::<4>().expand(shape);
            scores = scores.mask_where(rows.clone(), mask);
        }
        scores
    }

    fn attn_probs(&mut self, layer: usize, probs: Tensor<B, 4>) -> Tensor<B, 4> {
        match &self.probs_resoftmax[layer] {
            Some((rows, bias)) => {
                let again = burn_tensor::activation::softmax(probs.clone() + bias.clone(), 3);
                probs.mask_where(rows.clone(), again)
            }
            None => probs,
        }
    }

    fn attn_out(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        let out = match &self.attn_keep[layer] {
            Some(keep) => out * keep.clone(),
            None => out,
        };
        if self.spec.attn_out {
            if let Some(t) = self.take(&out) {
                self.recorded.attn_out.push(t);
            }
        }
        out
    }

    fn mlp_rows(&self, layer: usize) -> Option<&[usize]> {
        self.mlp_rows[layer].as_deref()
    }

    fn mlp_act(&mut self, layer: usize, act: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.mlp_act_keep[layer] {
            Some(keep) => act * keep.clone(),
            None => act,
        }
    }

    fn mlp_out(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        let out = match &self.mlp_keep[layer] {
            Some(keep) => out * keep.clone(),
            None => out,
        };
        if self.spec.mlp_out {
            if let Some(t) = self.take(&out) {
                self.recorded.mlp_out.push(t);
            }
        }
        out
    }

    fn attn_kv(&mut self, _: usize, k: &Tensor<B, 4>, v: &Tensor<B, 4>) {
        if self.spec.kv {
            self.recorded.kv.push(KvCache { k: k.clone(), v: v.clone() });
        }
    }

    fn final_residual(&mut self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.spec.residual {
            if let Some(t) = self.take(&h) {
                self.recorded.residual.push(t);
            }
        }
        h
    }
}

/// How plans over one prompt are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecPath {
    /// Reuse the clean run's keys/values and recompute only the last position, when every plan
    /// only touches the last position (exact in arithmetic; falls back to `Full` otherwise).
    #[default]
    Fast,
    /// Recompute every position for every plan.
    Full,
}

/// A prompt's clean run, kept for the fast path.
pub struct CleanRun<B: Backend> {
    /// The prompt's token ids, at least two.
    pub ids: Vec<u32>,
    /// Keys/values of positions `0..len-1` at every layer.
    pub prefix: Vec<KvCache<B>>,
}

impl<B: Backend> CleanRun<B> {
    /// Runs every position but the last once, without interventions, keeping its keys and values;
    /// fails on a prompt shorter than two tokens.
    pub fn new(model: &Model<B>, ids: &[u32]) -> Result<Self, crate::ModelError> {
        Self::check(ids)?;
        let mut kv = RecordKv::default();
        model.forward(model.ids_tensor(&[ids[..ids.len() - 1].to_vec()])?, &mut kv);
        Ok(CleanRun { ids: ids.to_vec(), prefix: kv.layers })
    }

    /// The clean run from the keys and values a clean forward pass over the whole prompt
    /// recorded (batch of one, [`RecordSpec::kv`]): those of every position but the last. Causal
    /// attention makes them the ones [`CleanRun::new`] computes, up to the last bits: with one
    /// more key, attention's products may group their sums differently.
    pub fn from_kv(ids: &[u32], kv: Vec<KvCache<B>>) -> Result<Self, crate::ModelError> {
        Self::check(ids)?;
        let s = ids.len();
        let prefix = kv
            .into_iter()
            .map(|c| {
                let [b, h, len, d] = c.k.dims();
                assert!(b == 1 && len == s, "from_kv: keys of a batch of one over the whole prompt");
                KvCache { k: c.k.slice([0..1, 0..h, 0..s - 1, 0..d]), v: c.v.slice([0..1, 0..h, 0..s - 1, 0..d]) }
            })
            .collect();
        Ok(CleanRun { ids: ids.to_vec(), prefix })
    }

    /// A prompt the fast path can serve: at least two tokens.
    pub fn check(ids: &[u32]) -> Result<(), crate::ModelError> {
        if ids.len() < 2 {
            return Err(crate::ModelError::Input { message: "a prompt needs at least two tokens".into() });
        }
        Ok(())
    }
}

/// One clean forward pass over the prompt `ids` (a batch of one, every position), recording
/// what `record` asks for; its positions are absolute indices of the prompt.
pub fn record_clean<B: Backend>(model: &Model<B>, ids: &[u32], record: RecordSpec) -> Result<Recorded<B>, crate::ModelError> {
    let mut hooks = PlanHooks::new(model, &[Plan::default()], 0, ids.len(), record);
    model.forward(model.ids_tensor(&[ids.to_vec()])?, &mut hooks);
    Ok(hooks.recorded)
}

/// One site recorded at one position of a batch of one, every layer's entry stacked:
/// `[entries, hidden]`.
pub fn stack_layers<B: Backend>(site: Vec<Tensor<B, 3>>) -> Tensor<B, 2> {
    let n = site.len();
    let d = site.first().map_or(0, |t| t.dims()[2]);
    Tensor::cat(site, 1).reshape([n, d])
}

/// Runs `plans` over one prompt, one batch row each. Returns the final residual (before the
/// final norm) at the last position `[plans, hidden]` and what `record` asked for. With
/// `ExecPath::Fast` and plans that only touch the last position, only the last position is
/// recomputed (recording is then limited to the last position).
pub fn run_plans<B: Backend>(
    model: &Model<B>,
    clean: &CleanRun<B>,
    plans: &[Plan],
    path: ExecPath,
    record: RecordSpec,
) -> Result<(Tensor<B, 2>, Recorded<B>), crate::ModelError> {
    let s = clean.ids.len();
    let last = s - 1;
    let fast = path == ExecPath::Fast && plans.iter().all(|p| p.only_touches(last)) && record.positions.iter().flatten().all(|&p| p == last);
    let d = model.config.hidden;
    let n = plans.len();
    let (h, recorded) = if fast {
        let ids = model.ids_tensor(&vec![vec![clean.ids[last]]; n])?;
        let mut hooks = PlanHooks::new(model, plans, last, 1, record);
        let h = model.forward_suffix(ids, Some(&clean.prefix), &mut hooks);
        (h.reshape([n, d]), hooks.recorded)
    } else {
        let ids = model.ids_tensor(&vec![clean.ids.clone(); n])?;
        let mut hooks = PlanHooks::new(model, plans, 0, s, record);
        let h = model.forward(ids, &mut hooks);
        (h.slice([0..n, last..s]).reshape([n, d]), hooks.recorded)
    };
    Ok((h, recorded))
}

/// Runs plans that start at different blocks as one batch that grows: plan `i`'s row joins at
/// block `starts[i]` (ascending) with `entering(starts[i])` `[1, seq, hidden]`, the clean
/// stream entering that block (no plan may touch an earlier block), and every row runs to
/// block `end - 1`. Each block runs once over the rows that have joined, where a batch per
/// start would run it once per start: a block's weights are read once, and each row's
/// arithmetic is what it would be in a batch of its own. `prefix` and `q_start` as in
/// [`Model::run_blocks_after`]. Returns the stream leaving block `end - 1` `[plans, seq,
/// hidden]`, rows in plan order.
pub fn run_staggered<B: Backend>(
    model: &Model<B>,
    plans: &[Plan],
    starts: &[usize],
    end: usize,
    entering: impl Fn(usize) -> Tensor<B, 3>,
    prefix: Option<&[KvCache<B>]>,
    q_start: usize,
) -> Tensor<B, 3> {
    assert!(!starts.is_empty() && starts.iter().all(|&s| s < end), "at least one plan, every one starting before `end`");
    let mut first = Some(entering(starts[0]));
    let q = first.as_ref().expect("just set").dims()[1];
    let mut hooks = PlanHooks::staggered(model, plans, starts, q_start, q);
    let mut h: Option<Tensor<B, 3>> = None;
    let mut joined = 0;
    // From one start to the next, the batch is fixed: those blocks run in one call.
    while joined < starts.len() {
        let start = starts[joined];
        let joining = starts[joined..].iter().take_while(|&&s| s == start).count();
        joined += joining;
        let until = starts.get(joined).copied().unwrap_or(end);
        let new = first.take().unwrap_or_else(|| entering(start));
        let [_, s, d] = new.dims();
        let new = new.expand([joining, s, d]);
        let rows = match h {
            Some(h) => Tensor::cat(vec![h, new], 0),
            None => new,
        };
        h = Some(model.run_blocks_after(rows, start..until, prefix, &mut hooks));
    }
    h.expect("at least one plan")
}

/// The rows to re-softmax and what is added to their probabilities first.
type Resoftmax<B> = (Tensor<B, 4, Bool>, Tensor<B, 4>);
