//! Parameters in vocabulary space: what the weights themselves say, read through the
//! unembedding.
//!
//! Three views, following the works the paper's README cites:
//! - **Head OV of the subject** (per record, layer, head): the subject-last representation
//!   entering the block, normalised as the block normalises it, sent through one head's value
//!   and output projections (`norm(x) · W_V^h (+ b_V^h) · W_O^h`) — what that head would write
//!   to the residual if it attended only to the subject's last token. Projected with the
//!   experiments' projection: the target's rank and the top tokens. The output bias is shared by
//!   all heads and left out; so is a post-attention norm (Gemma), which acts on the sum of heads:
//!   the vector is the head's additive share of the output projection.
//! - **MLP value vectors** (per record, layer, rank): the sub-updates `m_i · v_i` of the MLP at
//!   subject-last on the clean run (`m_i` the activation entering the down projection, `v_i` its
//!   row `i`), the `neurons` largest by `|m_i| · ‖v_i‖` (LM-Debugger's dominant sub-updates),
//!   each projected: its coefficient, the value vector's norm, the target's rank, the top tokens.
//!   A negative coefficient flips the vector, so the tokens are the ones the sub-update promotes.
//! - **OV and QK matrices** (per model, layer, head; Dar et al. 2023): `E_C · W_V^h W_O^h · E_Cᵀ`
//!   and `E_C · W_Q^h (W_K^h)ᵀ · E_Cᵀ` over a candidate vocabulary `C`, and their largest
//!   entries as (source token, destination token) pairs. As in Dar et al., the raw parameter
//!   products: no norms, no biases, no rotary embedding. The full `vocab × vocab` matrix is out of
//!   reach (262,144² entries for Gemma), so `C` is the first `matrix_tokens` token ids whose text,
//!   stripped, is alphabetic and longer than two characters (word pieces; low ids are the
//!   tokenizer's frequent ones) — a choice of ours, recorded in the table's parameters.
//!
//! With grouped-query attention, head `h` reads key/value head `h / (heads / kv_heads)`.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::hooks::Hooks;
use dissect_model::model::matmul;
use dissect_model::project::{read_rows, Ask, Projection};
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::ExperimentError;
use dissect_model::predict::top_k;

/// How much of each parameter view is kept (`[experiments.parameters]` in a pipeline).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ParametersConfig {
    /// Top tokens kept per projected vector.
    pub top_k: usize,
    /// MLP sub-updates kept per layer and record.
    pub neurons: usize,
    /// Size of the candidate vocabulary of the OV/QK matrix view.
    pub matrix_tokens: usize,
    /// (source, destination) pairs kept per head and matrix.
    pub matrix_pairs: usize,
}

impl Default for ParametersConfig {
    fn default() -> Self {
        ParametersConfig { top_k: 10, neurons: 5, matrix_tokens: 4096, matrix_pairs: 20 }
    }
}

/// One head's OV output for the subject ([`head_ov`]); the `parameters_heads` table's row
/// without the record's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadRow {
    /// 0-based block.
    pub layer: usize,
    /// 0-based query head of the block.
    pub head: usize,
    /// 0-based rank of the target in the projection of the head's OV output.
    pub target_rank: usize,
    /// The projection's top [`ParametersConfig::top_k`] token ids, best first.
    pub top: Vec<u32>,
}

/// One dominant MLP sub-update `m_i · v_i` at the last subject token ([`mlp_values`]); the
/// `parameters_mlp` table's row without the record's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronRow {
    /// 0-based block.
    pub layer: usize,
    /// 0 = the largest sub-update of the layer.
    pub rank: usize,
    /// `i`: the MLP's hidden unit, i.e. the row of the down projection holding `v_i`.
    pub neuron: usize,
    /// `m_i`, the unit's activation entering the down projection on the clean run (may be negative).
    pub coefficient: f32,
    /// `‖v_i‖`, the L2 norm of the value vector.
    pub value_norm: f32,
    /// 0-based rank of the target in the projection of `m_i · v_i`.
    pub target_rank: usize,
    /// The projection's top [`ParametersConfig::top_k`] token ids, best first.
    pub top: Vec<u32>,
}

/// Which of a head's two token-to-token matrices (Dar et al. 2023) an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// `E_C · W_V^h W_O^h · E_Cᵀ`: which token a head writes when it attends to a token.
    Ov,
    /// `E_C · W_Q^h (W_K^h)ᵀ · E_Cᵀ`: how strongly a querying token attends to a key token.
    Qk,
}

impl Circuit {
    /// The name in the `parameters_matrices` table's `circuit` column.
    pub fn name(self) -> &'static str {
        match self {
            Circuit::Ov => "ov",
            Circuit::Qk => "qk",
        }
    }
}

/// One of the largest entries of a head's OV or QK matrix over the candidate vocabulary
/// ([`matrices`]); model-level, the `parameters_matrices` table's row with token ids only.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRow {
    /// 0-based block.
    pub layer: usize,
    /// 0-based query head of the block.
    pub head: usize,
    /// The matrix the entry is from.
    pub circuit: Circuit,
    /// 0 = the head's largest entry in this matrix.
    pub rank: usize,
    /// For OV: the token attended to; for QK: the querying token.
    pub source: u32,
    /// For OV: the token promoted; for QK: the key token.
    pub destination: u32,
    /// The matrix entry: a raw parameter product, no norms or biases.
    pub value: f32,
}

fn kv_head<B: Backend>(model: &Model<B>, head: usize) -> usize {
    head / (model.config.n_heads / model.config.n_kv_heads.max(1)).max(1)
}

/// Columns `[c0, c0 + width)` of a `[rows, cols]` matrix.
fn cols<B: Backend>(m: &Tensor<B, 2>, c0: usize, width: usize) -> Tensor<B, 2> {
    let [rows, _] = m.dims();
    m.clone().slice([0..rows, c0..c0 + width])
}

/// Rows `[r0, r0 + height)` of a `[rows, cols]` matrix.
fn rows<B: Backend>(m: &Tensor<B, 2>, r0: usize, height: usize) -> Tensor<B, 2> {
    let [_, c] = m.dims();
    m.clone().slice([r0..r0 + height, 0..c])
}

/// Every head's OV output for the subject-last representation entering each block.
/// `hidden[l]` is the clean residual entering block `l`, `[seq, hidden]`.
pub fn head_ov<B: Backend>(
    model: &Model<B>,
    hidden: &[Tensor<B, 2>],
    subject_last: usize,
    target: u32,
    cfg: &ParametersConfig,
    projection: Projection,
) -> Vec<HeadRow> {
    let hd = model.config.head_dim;
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    for (layer, blk) in model.blocks.iter().enumerate() {
        let x = blk.attn_norm.forward(hidden[layer].clone().slice([subject_last..subject_last + 1]));
        let v = matmul(x, blk.v.weight.clone());
        let v = match &blk.v.bias {
            Some(b) => v + b.clone().unsqueeze::<2>(),
            None => v,
        };
        for head in 0..model.config.n_heads {
            let vh = cols(&v, kv_head(model, head) * hd, hd);
            vectors.push(matmul(vh, rows(&blk.o.weight, head * hd, hd)));
            labels.push((layer, head));
        }
    }
    let read = read_answers(model, Tensor::cat(vectors, 0), projection, target, cfg.top_k);
    labels.into_iter().zip(read).map(|((layer, head), (target_rank, top))| HeadRow { layer, head, target_rank, top }).collect()
}

/// The target's rank and the top `k` ids of each row's vocabulary view.
fn read_answers<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, projection: Projection, target: u32, k: usize) -> Vec<(usize, Vec<u32>)> {
    let ask = Ask { rank_of: Some(target as usize), top: k };
    read_rows(model, h, projection, ask).into_iter().map(|a| (a.rank.expect("rank asked"), a.top.into_iter().map(|i| i as u32).collect())).collect()
}

/// Records the MLP activations of one position in every layer.
struct ActAt<B: Backend> {
    position: usize,
    acts: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Hooks<B> for ActAt<B> {
    fn mlp_act(&mut self, _: usize, act: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, _, inter] = act.dims();
        self.acts.push(act.clone().slice([0..1, self.position..self.position + 1, 0..inter]).reshape([inter]));
        act
    }
}

/// The dominant MLP sub-updates at subject-last on the clean run of `ids`.
pub fn mlp_values<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    subject_last: usize,
    target: u32,
    cfg: &ParametersConfig,
    projection: Projection,
) -> Result<Vec<NeuronRow>, ExperimentError> {
    // Nothing after the subject's last token changes what it computes.
    let prefix = ids[..=subject_last].to_vec();
    let mut hooks = ActAt { position: subject_last, acts: Vec::new() };
    model.forward(model.ids_tensor(&[prefix])?, &mut hooks);
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    for (layer, (blk, act)) in model.blocks.iter().zip(hooks.acts).enumerate() {
        let norms = blk.down.weight.clone().square().sum_dim(1).sqrt();
        let norms = norms.into_data().into_vec::<f32>().expect("f32 backend");
        let coef = act.into_data().into_vec::<f32>().expect("f32 backend");
        let score: Vec<f32> = coef.iter().zip(&norms).map(|(m, n)| m.abs() * n).collect();
        for (rank, neuron) in top_k(&score, cfg.neurons).into_iter().enumerate() {
            vectors.push(rows(&blk.down.weight, neuron, 1) * coef[neuron]);
            labels.push((layer, rank, neuron, coef[neuron], norms[neuron]));
        }
    }
    if vectors.is_empty() {
        return Ok(Vec::new());
    }
    let read = read_answers(model, Tensor::cat(vectors, 0), projection, target, cfg.top_k);
    Ok(labels
        .into_iter()
        .zip(read)
        .map(|((layer, rank, neuron, coefficient, value_norm), (target_rank, top))| NeuronRow {
            layer,
            rank,
            neuron,
            coefficient,
            value_norm,
            target_rank,
            top,
        })
        .collect())
}

/// The candidate vocabulary of the matrix view: the first `n` ids whose stripped text is
/// alphabetic and longer than two characters.
pub fn candidate_tokens(tokenizer: &Tokenizer, vocab: usize, n: usize) -> Vec<u32> {
    (0..vocab.min(tokenizer.vocab_size()) as u32)
        .filter(|&id| {
            let t = tokenizer.decode_token(id);
            let s = t.trim();
            s.chars().count() > 2 && s.chars().all(char::is_alphabetic)
        })
        .take(n)
        .collect()
}

/// The largest entries of every head's OV and QK matrices over the candidate vocabulary.
pub fn matrices<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, cfg: &ParametersConfig) -> Vec<MatrixRow> {
    let cand = candidate_tokens(tokenizer, model.config.vocab_size, cfg.matrix_tokens);
    if cand.is_empty() {
        return Vec::new();
    }
    let index = Tensor::<B, 1, burn_tensor::Int>::from_ints(cand.iter().map(|&c| c as i32).collect::<Vec<_>>().as_slice(), &model.device);
    let e = model.embed.clone().select(0, index);
    let hd = model.config.head_dim;
    let mut out = Vec::new();
    for (layer, blk) in model.blocks.iter().enumerate() {
        let ev = matmul(e.clone(), blk.v.weight.clone());
        let eq = matmul(e.clone(), blk.q.weight.clone());
        let ek = matmul(e.clone(), blk.k.weight.clone());
        // W_O^h · E_Cᵀ for each head: `[hd, n]`.
        let oe = matmul(blk.o.weight.clone(), e.clone().transpose());
        for head in 0..model.config.n_heads {
            let kvh = kv_head(model, head);
            let ov = matmul(cols(&ev, kvh * hd, hd), rows(&oe, head * hd, hd));
            let qk = matmul(cols(&eq, head * hd, hd), cols(&ek, kvh * hd, hd).transpose());
            for (circuit, m) in [(Circuit::Ov, ov), (Circuit::Qk, qk)] {
                let values = m.into_data().into_vec::<f32>().expect("f32 backend");
                for (rank, flat) in top_k(&values, cfg.matrix_pairs).into_iter().enumerate() {
                    let (i, j) = (flat / cand.len(), flat % cand.len());
                    out.push(MatrixRow { layer, head, circuit, rank, source: cand[i], destination: cand[j], value: values[flat] });
                }
            }
        }
    }
    out
}

/// The `parameters_heads` and `parameters_mlp` tables ([`dissect_data::table::ParametersHeadRow`],
/// [`dissect_data::table::ParametersMlpRow`]); the model-level `parameters_matrices` is written
/// once per run by the stage.
pub struct Parameters;

impl crate::record::Measure for Parameters {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        let (pc, projection, last, target) = (&run.cfg.parameters, run.cfg.projection, run.subject_last(), run.target());
        let ids = |top: &[u32]| top.iter().map(|&t| t as i32).collect::<Vec<i32>>();
        let words = |top: &[u32]| top.iter().map(|&t| run.tokenizer.decode_token(t)).collect::<Vec<String>>();
        for r in head_ov(run.model, run.hidden()?, last, target, pc, projection) {
            out.push(dissect_data::table::ParametersHeadRow {
                id: run.id(),
                layer: r.layer as i32,
                head: r.head as i32,
                target_rank: r.target_rank as i32,
                top_ids: ids(&r.top),
                top_tokens: words(&r.top),
            });
        }
        for r in mlp_values(run.model, &run.ids, last, target, pc, projection)? {
            out.push(dissect_data::table::ParametersMlpRow {
                id: run.id(),
                layer: r.layer as i32,
                update_rank: r.rank as i32,
                neuron: r.neuron as i32,
                coefficient: r.coefficient,
                value_norm: r.value_norm,
                target_rank: r.target_rank as i32,
                top_ids: ids(&r.top),
                top_tokens: words(&r.top),
            });
        }
        Ok(())
    }
}
