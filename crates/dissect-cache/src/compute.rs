//! Running the model over kept records and collecting the sites the cache holds.

use std::collections::BTreeMap;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_data::{KeptRecord, PositionKind};
use dissect_model::intervene::{Plan, PlanHooks, RecordSpec};
use dissect_model::model::KvCache;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;

use crate::error::CacheError;
use crate::schema::{KindResidual, RecordActivations};

/// The kinds a record's residual stream is kept at, in this order.
const SLOTS: [PositionKind; 5] = PositionKind::ALL;

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
        ids.push(encode(tokenizer, r)?);
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out: Vec<Option<RecordActivations>> = vec![None; records.len()];
    for batch in order.chunks(batch_size) {
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
        let recs: Vec<&KeptRecord> = batch.iter().map(|&i| &records[i]).collect();
        for (&i, (acts, _)) in batch.iter().zip(forward_batch(model, &recs, &rows, false)?.0) {
            out[i] = Some(acts);
        }
    }
    Ok(out.into_iter().map(|a| a.expect("every record is in one batch")).collect())
}

/// One record's clean forward pass, for a run without a cache, which reads all of it.
pub struct CleanPass<B: Backend> {
    /// The record's cached activations: the values [`compute`] gives it with a batch of one.
    pub activations: RecordActivations,
    /// The residual stream at every position (`hidden_states[0..=n_layers]`, each `[seq, hidden]`).
    pub stream: Vec<Tensor<B, 2>>,
    /// Every block's keys and values over the whole prompt (`[1, kv_heads, seq, head_dim]`).
    pub kv: Vec<KvCache<B>>,
}

/// [`CleanPass`] of one record: a single forward pass, the one [`compute`] makes for it with a
/// batch of one.
pub fn clean_pass<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, record: &KeptRecord) -> Result<CleanPass<B>, CacheError> {
    let ids = encode(tokenizer, record)?;
    let (mut rows, kv) = forward_batch(model, &[record], &[ids], true)?;
    let (activations, stream) = rows.remove(0);
    Ok(CleanPass { activations, stream, kv })
}

fn encode(tokenizer: &Tokenizer, r: &KeptRecord) -> Result<Vec<u32>, CacheError> {
    let enc = tokenizer.encode(&r.prompt)?.ids;
    if enc.len() != r.n_tokens {
        return Err(CacheError::Record {
            id: r.id,
            message: format!("the prompt tokenizes to {} tokens, the filter stage saw {}: was it filtered with another model?", enc.len(), r.n_tokens),
        });
    }
    Ok(enc)
}

/// Per row, its activations and its residual stream over its own length; and every block's keys
/// and values when `kv` is asked.
type Batch<B> = (Vec<(RecordActivations, Vec<Tensor<B, 2>>)>, Vec<KvCache<B>>);

/// One clean forward pass over `rows` (padded on the right), recording every site at every
/// position.
fn forward_batch<B: Backend>(model: &Model<B>, records: &[&KeptRecord], rows: &[Vec<u32>], kv: bool) -> Result<Batch<B>, CacheError> {
    let (n, d, n_layers) = (rows.len(), model.config.hidden, model.n_layers());
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    let spec = RecordSpec { residual: true, attn_out: true, mlp_out: true, kv, positions: vec![(0..s).collect(); n] };
    let mut hooks = PlanHooks::new(model, &vec![Plan::default(); n], 0, s, spec);
    model.forward(model.ids_tensor(rows)?, &mut hooks);
    let rec = hooks.recorded;
    // [n, layers · s, d]: row r, layer l, position p at ((r · layers + l) · s + p) · d.
    let residual = host(Tensor::cat(rec.residual.clone(), 1));
    let (attn, mlp) = (host(Tensor::cat(rec.attn_out, 1)), host(Tensor::cat(rec.mlp_out, 1)));
    let at = |values: &[f32], layers: usize, r: usize, l: usize, p: usize| {
        let i = ((r * layers + l) * s + p) * d;
        values[i..i + d].to_vec()
    };
    let mut out = Vec::with_capacity(n);
    for (r, rec_r) in records.iter().enumerate() {
        let p = rec_r.positions();
        let mut kinds = BTreeMap::new();
        for kind in SLOTS {
            let Some(token_index) = p.get(kind) else { continue };
            let values = (0..=n_layers).flat_map(|l| at(&residual, n_layers + 1, r, l, token_index)).collect();
            kinds.insert(kind, KindResidual { token_index, values });
        }
        let acts = RecordActivations {
            id: rec_r.id,
            n_layers,
            hidden: d,
            residual: kinds,
            attn_out: (0..n_layers).flat_map(|l| at(&attn, n_layers, r, l, p.last)).collect(),
            mlp_out: (0..n_layers).flat_map(|l| at(&mlp, n_layers, r, l, p.last)).collect(),
        };
        let len = rows[r].len();
        let stream = rec.residual.iter().map(|t| t.clone().slice([r..r + 1, 0..len]).reshape([len, d])).collect();
        out.push((acts, stream));
    }
    Ok((out, rec.kv))
}

fn host<B: Backend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
}
