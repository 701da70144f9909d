//! The architecture-neutral description of a decoder-only transformer. Every supported
//! architecture maps onto this in `arch/`; nothing outside `arch/` knows architecture names.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm `x / sqrt(mean(x²) + eps) · w`. Gemma's `(1 + w)` is folded into `w` on load.
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`, Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
    /// exact erf GELU.
    Gelu,
    Silu,
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Dimension i pairs with i + rotary_dim/2 (HF `rotate_half`; Llama, Gemma, NeoX).
    Halves,
    /// Dimension 2i pairs with 2i+1 (GPT-J).
    Interleaved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Positions {
    /// Learned absolute position embeddings (GPT-2).
    Learned {
        max_positions: usize,
    },
    Rotary {
        style: RopeStyle,
        rotary_dim: usize,
    },
}

/// Per-layer attention settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// Keys more than `window - 1` positions behind the query are invisible.
    pub sliding_window: Option<usize>,
    pub rope_base: f64,
    /// Divides positions before the rotary angles are taken (linear rope scaling); 1 if none.
    pub rope_scale: f64,
    /// The rotary inverse frequencies (`rotary_dim / 2` of them) where a scaling scheme makes them
    /// other than `1 / rope_base^(2i / rotary_dim)` (Llama 3 frequency bands, GGUF `rope_freqs`),
    /// computed by the loader the way the reference does; `rope_base` and `rope_scale` are then
    /// not used. Explicit values keep every scheme out of the forward pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_inv_freq: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture name, for provenance only.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub activation: Activation,
    /// MLP is `down(act(gate(x)) · up(x))` rather than `down(act(up(x)))`.
    pub gated_mlp: bool,
    /// Attention and MLP both read the same normalized input and add to the residual together (GPT-J).
    pub parallel_block: bool,
    pub positions: Positions,
    pub layers: Vec<LayerAttention>,
    pub attention_scale: f64,
    /// Inputs are `embedding · embed_scale` (Gemma: sqrt(hidden)).
    pub embed_scale: f64,
    pub final_logit_softcap: Option<f64>,
    pub attn_logit_softcap: Option<f64>,
    pub context_length: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}
