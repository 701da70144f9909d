//! Extraction under patching of early representations (the paper's §5.2): replace the input of
//! block ℓ at a set of positions with the same prompt's hidden state from layer ℓ', and test
//! whether MHSA at ℓ still extracts the target.

use std::ops::Range;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::intervene::Sublayer;
use dissect_model::project::Projection;
use dissect_model::{Model, NoHooks};
use serde::{Deserialize, Serialize};

use crate::extraction::ExtractionRow;
use crate::knockout::BlockSet;
use crate::vocab::rank_and_top1;
use crate::ExperimentError;

/// What the patching experiment measures (`[experiments.patching]` in a pipeline).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatchingConfig {
    /// Source layers ℓ' (0 = embeddings). Those beyond the model's depth are dropped.
    pub sources: Vec<usize>,
    /// The position sets whose block input is patched; a set that does not apply to a prompt
    /// gives no rows.
    pub sets: Vec<BlockSet>,
    /// How MHSA outputs are read in vocabulary space; a stage run replaces it with the
    /// experiments' top-level `projection` ([`crate::stage::ExperimentsConfig::effective`]).
    pub projection: Projection,
}

impl Default for PatchingConfig {
    fn default() -> Self {
        PatchingConfig { sources: vec![0, 1, 5, 10, 20], sets: BlockSet::PAPER.to_vec(), projection: Projection::Notebook }
    }
}

/// One patched variant of a prompt; the `patching` table's row without the record's columns
/// ([`dissect_data::table::PatchingRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchingRow {
    /// 0-based block ℓ whose input is patched and whose MHSA output at the last position is projected.
    pub layer: usize,
    /// ℓ', the index into Hugging Face's `hidden_states` patched in (0 = the embeddings).
    pub source: usize,
    /// The positions patched.
    pub set: BlockSet,
    /// 0-based rank of the target in the projection of the MHSA output.
    pub target_rank: usize,
    /// `target_rank == 0`: MHSA in block ℓ still extracts the attribute.
    pub extracted: bool,
}

/// For every block ℓ, source ℓ' and set, patches `hidden_states[ℓ']` into the input of block ℓ
/// at the set's positions, runs block ℓ alone and reads its MHSA output at the last position.
///
/// `hidden[l]` is the clean residual entering block `l` (`[seq, hidden]`), `l = 0..=n_layers`.
/// A source layer equal to `n_layers` patches in HF's `hidden_states[n_layers]`, which has the
/// final norm applied ([`crate::hf_hidden_state`]), as the notebook would.
pub fn patching<B: Backend>(
    model: &Model<B>,
    hidden: &[Tensor<B, 2>],
    ids: &[u32],
    subject: &Range<usize>,
    target: u32,
    cfg: &PatchingConfig,
) -> Result<Vec<PatchingRow>, ExperimentError> {
    let s = ids.len();
    let last = s - 1;
    let n_layers = model.n_layers();
    let has_bos = model.config.bos_token_id.is_some_and(|b| ids[0] == b);
    let sources: Vec<usize> = cfg.sources.iter().copied().filter(|&l| l <= n_layers).collect();
    // Projected at the end, in one call: wide matmuls run the fastest.
    let mut attn_outs = Vec::new();
    let mut labels = Vec::new();
    // Each label's row among the projected ones.
    let mut row_of = Vec::new();
    let mut rows = 0;
    for layer in 0..n_layers {
        let mut inputs = Vec::new();
        // Patching a layer's own states back changes nothing: one clean row serves every set.
        let mut clean_row = None;
        for &source in &sources {
            for &set in &cfg.sets {
                let Some(positions) = set.positions(s, subject, has_bos) else { continue };
                labels.push((layer, source, set));
                if source == layer {
                    if clean_row.is_none() {
                        inputs.push(hidden[layer].clone().unsqueeze::<3>());
                        clean_row = Some(rows + inputs.len() - 1);
                    }
                    row_of.push(clean_row.expect("just set"));
                    continue;
                }
                let mut h = hidden[layer].clone();
                for p in positions {
                    h = h.slice_assign([p..p + 1], crate::hf_hidden_state(model, source, hidden[source].clone().slice([p..p + 1])));
                }
                inputs.push(h.unsqueeze::<3>());
                row_of.push(rows + inputs.len() - 1);
            }
        }
        if inputs.is_empty() {
            continue;
        }
        // Blocks before `layer` are unchanged: only block `layer`'s attention runs, on the
        // patched input (its MLP comes after what is read), and only the last position's
        // output is read: the earlier positions give their keys and values alone.
        let n = inputs.len();
        rows += n;
        let h = Tensor::cat(inputs, 0);
        let a = match last {
            0 => model.attn_sublayer(layer, h, None, &mut NoHooks),
            _ => {
                let prefix = model.kv_cache(layer, h.clone().slice([0..n, 0..last]));
                model.attn_sublayer(layer, h.slice([0..n, last..s]), Some(&prefix), &mut NoHooks)
            }
        };
        attn_outs.push(a.reshape([n, model.config.hidden]));
    }
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let ranks = rank_and_top1(model, Tensor::cat(attn_outs, 0), cfg.projection, target as usize);
    Ok(labels
        .into_iter()
        .zip(row_of)
        .map(|((layer, source, set), row)| {
            let target_rank = ranks[row].0;
            PatchingRow { layer, source, set, target_rank, extracted: target_rank == 0 }
        })
        .collect())
}

/// The unpatched baseline of the patching figure: the clean extraction rows of MHSA.
pub fn baseline(extraction: &[ExtractionRow]) -> Vec<(usize, bool)> {
    extraction.iter().filter(|r| r.sublayer == Sublayer::Attn && r.blocked.is_none()).map(|r| (r.layer, r.extracted)).collect()
}

/// The `patching` table ([`dissect_data::table::PatchingRow`]).
pub struct Patching;

impl crate::record::Measure for Patching {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        for r in patching(run.model, run.hidden()?, &run.ids, &run.subject(), run.target(), &run.cfg.patching)? {
            out.push(dissect_data::table::PatchingRow {
                id: run.id(),
                layer: r.layer as i32,
                source_hidden_state: r.source as i32,
                positions: r.set.name().into(),
                target_rank: r.target_rank as i32,
                extracted: r.extracted,
            });
        }
        Ok(())
    }
}
