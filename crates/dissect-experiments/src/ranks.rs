//! Rank comparison (the paper's §5.1 analysis): per block ℓ, the target's rank in the projection
//! of the last subject token's state after block ℓ (`hidden_states[ℓ + 1]`, the notebook's
//! `subject_cache`), beside its rank in the MHSA output of block ℓ at the last position.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::intervene::Sublayer;
use dissect_model::project::Projection;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::extraction::ExtractionRow;
use crate::vocab::rank_and_top1;
use crate::ExperimentError;

/// The target's two ranks at one block; the `ranks` table's row without the record's columns
/// ([`dissect_data::table::RanksRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankRow {
    /// Block index ℓ.
    pub layer: usize,
    /// Rank in the projection of `hidden_states[layer + 1]` (the output of block `layer`) at the
    /// last subject token.
    pub subject_last_rank: usize,
    /// Rank in the MHSA output of block `layer` at the last position.
    pub attn_last_rank: usize,
}

/// The rank rows of one prompt from its clean residual stream at every position (`hidden`:
/// `n_layers + 1` tensors `[seq, hidden]`, block inputs then the raw final residual). The MHSA
/// ranks come from `extraction`'s clean rows; a block without one gets no row.
pub fn ranks<B: Backend>(
    model: &Model<B>,
    hidden: &[Tensor<B, 2>],
    subject_last: usize,
    target: u32,
    extraction: &[ExtractionRow],
    projection: Projection,
) -> Vec<RankRow> {
    let vectors: Vec<Tensor<B, 2>> = hidden.iter().map(|h| h.clone().slice([subject_last..subject_last + 1])).collect();
    ranks_at(model, Tensor::cat(vectors, 0), target, extraction, projection)
}

/// [`ranks`] from the residual stream at the last subject token, `[n_layers + 1, hidden]` (block
/// inputs, then the raw final residual), as the activation cache holds it.
pub fn ranks_at<B: Backend>(model: &Model<B>, subject_last: Tensor<B, 2>, target: u32, extraction: &[ExtractionRow], projection: Projection) -> Vec<RankRow> {
    let n_layers = model.n_layers();
    let after: Vec<Tensor<B, 2>> =
        (1..=n_layers).map(|l| crate::projected_hidden_state(model, l, subject_last.clone().slice([l..l + 1]), projection)).collect();
    let subject = rank_and_top1(model, Tensor::cat(after, 0), projection, target as usize);
    (0..n_layers)
        .filter_map(|layer| {
            let attn = extraction.iter().find(|r| r.layer == layer && r.sublayer == Sublayer::Attn && r.blocked.is_none())?;
            Some(RankRow { layer, subject_last_rank: subject[layer].0, attn_last_rank: attn.target_rank })
        })
        .collect()
}

/// The `ranks` table ([`dissect_data::table::RanksRow`]).
pub struct Ranks;

impl crate::record::Measure for Ranks {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        let extraction = run.extraction_rows()?;
        let subject_last = run.cached()?.residual(dissect_data::PositionKind::SubjectLast).expect("the cache holds every position kind");
        for r in ranks_at(run.model, subject_last, run.target(), extraction, run.cfg.projection) {
            out.push(dissect_data::table::RanksRow {
                id: run.id(),
                layer: r.layer as i32,
                subject_last_rank: r.subject_last_rank as i32,
                attn_last_rank: r.attn_last_rank as i32,
            });
        }
        Ok(())
    }
}
