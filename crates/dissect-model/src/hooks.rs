//! Hook points of the forward pass. Every intervention (knockout, patching) and every recording
//! is a [`Hooks`] implementation; the forward pass itself knows nothing about experiments.
//!
//! Sites, in forward order for block `l`:
//! - `block_input(l)`: the residual stream entering block `l` (HF `hidden_states[l]`;
//!   `l = 0` is the embedding output);
//! - `attn_kv(l)`: keys (after rotary embedding) and values of the positions computed;
//! - `attn_scores(l)`: pre-softmax scores `[batch, heads, query, key]`, causal mask applied;
//! - `attn_probs(l)`: post-softmax attention probabilities, same shape;
//! - `attn_out(l)`: what attention adds to the residual (after the output projection and its
//!   bias, and after a post-attention norm where the model has one);
//! - `mlp_act(l)`: the MLP hidden activations, input of the down projection;
//! - `mlp_out(l)`: what the MLP adds to the residual (after a post-MLP norm if any);
//! - `final_residual`: the residual stream after the last block, before the final norm
//!   (HF applies the final norm to its last `hidden_states` entry; we do not).
//!
//! In a parallel block (GPT-J: `parallel_block`), attention and the MLP both read the same
//! normalized block input, and the block returns `h + attn_out + mlp_out`: `attn_out` is the MHSA
//! output and `mlp_out` the MLP output, exactly as in a sequential block, but changing one does not
//! change the other's input in the same block. There is no mid-block residual: the residual stream
//! is read and patched at `block_input` (and `final_residual`) only.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;

use crate::model::{AttnScoresInfo, KvCache};

/// Callbacks at every hook site of the forward pass (see the module docs for their order). Each
/// gets the 0-based block index and the tensor at the site, and returns what the forward pass
/// continues with; the defaults pass everything through unchanged. Tensors are
/// `[batch, seq, ·]` over the positions being computed, which are all positions or, in
/// [`Model::forward_suffix`](crate::Model::forward_suffix), only those after the cached prefix.
#[allow(unused_variables)]
pub trait Hooks<B: Backend> {
    /// The residual stream `[batch, seq, hidden]` entering block `layer` (HF `hidden_states[layer]`).
    fn block_input(&mut self, layer: usize, h: Tensor<B, 3>) -> Tensor<B, 3> {
        h
    }
    /// Keys and values of the positions being computed `[batch, kv_heads, q, head_dim]`,
    /// after rotary embedding and key norm (what a [`KvCache`] holds).
    fn attn_kv(&mut self, layer: usize, k: &Tensor<B, 4>, v: &Tensor<B, 4>) {}
    /// Pre-softmax scores `[batch, heads, query, key]`: scaled, softcapped, causal and window mask
    /// already added; keys span the cached prefix too.
    fn attn_scores(&mut self, layer: usize, scores: Tensor<B, 4>, info: &AttnScoresInfo<'_, B>) -> Tensor<B, 4> {
        scores
    }
    /// Attention probabilities `[batch, heads, query, key]` (rows sum to 1), before they weight the values.
    fn attn_probs(&mut self, layer: usize, probs: Tensor<B, 4>) -> Tensor<B, 4> {
        probs
    }
    /// What attention adds to the residual `[batch, seq, hidden]`: after the output projection and
    /// its bias, and the post-attention norm if any (the paper's MHSA output).
    fn attn_out(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        out
    }
    /// The batch rows whose MLP output at block `layer` is used, ascending; `None` for every
    /// row. The MLP runs on these rows alone (`mlp_act` sees them alone), and the others get a
    /// zero output: for rows whose MLP output is removed at every position anyway.
    fn mlp_rows(&self, layer: usize) -> Option<&[usize]> {
        None
    }
    /// The MLP's hidden activations `[batch, seq, intermediate]`, the down projection's input
    /// (`act(gate) · up` when gated); the rows of [`Hooks::mlp_rows`] where it names some.
    fn mlp_act(&mut self, layer: usize, act: Tensor<B, 3>) -> Tensor<B, 3> {
        act
    }
    /// What the MLP adds to the residual `[batch, seq, hidden]`: after the down projection's bias
    /// and the post-MLP norm if any.
    fn mlp_out(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        out
    }
    /// The residual stream `[batch, seq, hidden]` after the last block, before the final norm.
    fn final_residual(&mut self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        h
    }
}

/// No intervention, nothing recorded.
pub struct NoHooks;

impl<B: Backend> Hooks<B> for NoHooks {}

/// Records every site at every position (for tests and small prompts).
#[derive(Default)]
pub struct RecordAll<B: Backend> {
    /// `n_layers + 1` entries: block inputs, then the final residual.
    pub residual: Vec<Tensor<B, 3>>,
    /// Each block's attention output `[batch, seq, hidden]`, one entry per layer.
    pub attn_out: Vec<Tensor<B, 3>>,
    /// Each block's MLP output `[batch, seq, hidden]`, one entry per layer.
    pub mlp_out: Vec<Tensor<B, 3>>,
    /// Each block's attention probabilities `[batch, heads, query, key]`, one entry per layer.
    pub attn_probs: Vec<Tensor<B, 4>>,
}

impl<B: Backend> Hooks<B> for RecordAll<B> {
    fn block_input(&mut self, _: usize, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.residual.push(h.clone());
        h
    }
    fn attn_probs(&mut self, _: usize, p: Tensor<B, 4>) -> Tensor<B, 4> {
        self.attn_probs.push(p.clone());
        p
    }
    fn attn_out(&mut self, _: usize, o: Tensor<B, 3>) -> Tensor<B, 3> {
        self.attn_out.push(o.clone());
        o
    }
    fn mlp_out(&mut self, _: usize, o: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_out.push(o.clone());
        o
    }
    fn final_residual(&mut self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.residual.push(h.clone());
        h
    }
}

/// Records each layer's keys and values: the prefix cache for [`Model::forward_suffix`](crate::Model::forward_suffix).
#[derive(Default)]
pub struct RecordKv<B: Backend> {
    /// One cache per block, in layer order.
    pub layers: Vec<KvCache<B>>,
}

impl<B: Backend> Hooks<B> for RecordKv<B> {
    fn attn_kv(&mut self, _: usize, k: &Tensor<B, 4>, v: &Tensor<B, 4>) {
        self.layers.push(KvCache { k: k.clone(), v: v.clone() });
    }
}
