//! Running the model over kept records and collecting the sites the cache holds.

use std::collections::BTreeMap;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_data::{KeptRecord, PositionKind};
use dissect_model::intervene::{Plan, PlanHooks, RecordSpec};
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;

use crate::error::CacheError;
use crate::schema::{KindResidual, RecordActivations};

/// Recorded positions per row, in this order; a kind the prompt lacks records `last` in its
/// slot (every row must record equally many positions) and is dropped afterwards.
const SLOTS: [PositionKind; 5] = PositionKind::ALL;
const LAST_SLOT: usize = 4;

/// The cached activations of `records`, in their order, from clean forward passes of
/// `batch_size` prompts each. Prompts are grouped by length so that little is padded; rows
/// are padded on the right, which causal attention makes invisible to the real positions.
///
/// A record whose prompt no longer tokenizes to the filter stage's `n_tokens` is an error:
/// its positions would point at other tokens.
pub fn compute<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, records: &[KeptRecord], batch_size: usize) -> Result<Vec<RecordActivations>, CacheError> {
    if batch_size == 0 {
        return Err(CacheError::BatchSize { batch_size });
    }
    let mut ids = Vec::with_capacity(records.len());
    for r in records {
        let enc = tokenizer.encode(&r.prompt)?.ids;
        if enc.len() != r.n_tokens {
            return Err(CacheError::Record {
                id: r.id,
                message: format!("the prompt tokenizes to {} tokens, the filter stage saw {}: was it filtered with another model?", enc.len(), r.n_tokens),
            });
        }
        ids.push(enc);
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out: Vec<Option<RecordActivations>> = vec![None; records.len()];
    for batch in order.chunks(batch_size) {
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
        let recs: Vec<&KeptRecord> = batch.iter().map(|&i| &records[i]).collect();
        for (&i, acts) in batch.iter().zip(forward_batch(model, &recs, &rows)?) {
            out[i] = Some(acts);
        }
    }
    Ok(out.into_iter().map(|a| a.expect("every record is in one batch")).collect())
}

fn forward_batch<B: Backend>(model: &Model<B>, records: &[&KeptRecord], rows: &[Vec<u32>]) -> Result<Vec<RecordActivations>, CacheError> {
    let (n, d, n_layers) = (rows.len(), model.config.hidden, model.n_layers());
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    let positions: Vec<Vec<usize>> = records
        .iter()
        .map(|r| {
            let p = r.positions();
            let last = p.last;
            SLOTS.iter().map(|&k| p.get(k).unwrap_or(last)).collect()
        })
        .collect();
    let spec = RecordSpec { residual: true, attn_out: true, mlp_out: true, positions: positions.clone() };
    let mut hooks = PlanHooks::new(model, &vec![Plan::default(); n], 0, s, spec);
    model.forward(model.ids_tensor(rows)?, &mut hooks);
    let rec = hooks.recorded;
    let k = SLOTS.len();
    // [n, (n_layers + 1) · slots, d]: row r, layer l, slot j at ((r · (L+1) + l) · slots + j) · d.
    let residual = host(Tensor::cat(rec.residual, 1));
    let at_last = |t: Vec<Tensor<B, 3>>| host(Tensor::cat(t.into_iter().map(|t| t.slice([0..n, LAST_SLOT..LAST_SLOT + 1])).collect(), 1));
    // [n, n_layers, d].
    let (attn, mlp) = (at_last(rec.attn_out), at_last(rec.mlp_out));
    let per_row = n_layers * d;
    let mut out = Vec::with_capacity(n);
    for (r, rec) in records.iter().enumerate() {
        let p = rec.positions();
        let mut kinds = BTreeMap::new();
        for (j, &kind) in SLOTS.iter().enumerate() {
            let Some(token_index) = p.get(kind) else { continue };
            debug_assert_eq!(positions[r][j], token_index);
            let mut values = Vec::with_capacity((n_layers + 1) * d);
            for l in 0..=n_layers {
                let at = ((r * (n_layers + 1) + l) * k + j) * d;
                values.extend_from_slice(&residual[at..at + d]);
            }
            kinds.insert(kind, KindResidual { token_index, values });
        }
        out.push(RecordActivations {
            id: rec.id,
            n_layers,
            hidden: d,
            residual: kinds,
            attn_out: attn[r * per_row..(r + 1) * per_row].to_vec(),
            mlp_out: mlp[r * per_row..(r + 1) * per_row].to_vec(),
        });
    }
    Ok(out)
}

fn host<B: Backend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
}
