//! The architecture-neutral description of a decoder-only transformer. Every supported
//! architecture maps onto this in `arch/`; nothing outside `arch/` knows architecture names.

use serde::{Deserialize, Serialize};

/// The normalization every norm of the model uses (block norms, q/k norms, final norm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm `x / sqrt(mean(x²) + eps) · w`. Gemma's `(1 + w)` is folded into `w` on load.
    RmsNorm,
}

/// The MLP's nonlinearity (on the gate projection when the MLP is gated).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`, Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
    /// exact erf GELU.
    Gelu,
    /// `x · sigmoid(x)` (HF `silu`), the gate of Llama's SwiGLU.
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

/// How token positions enter the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Positions {
    /// Learned absolute position embeddings (GPT-2).
    Learned {
        /// Rows of `pos_embed` (HF `n_positions`).
        max_positions: usize,
    },
    /// Rotary embeddings applied to queries and keys in every layer, with per-layer bases in [`LayerAttention`].
    Rotary {
        /// Which dimensions form the rotated pairs.
        style: RopeStyle,
        /// How many leading dimensions of each head are rotated (even, ≤ `head_dim`; GPT-J's
        /// `rotary_dim`); the rest pass through unchanged.
        rotary_dim: usize,
    },
}

/// Per-layer attention settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// Keys more than `window - 1` positions behind the query are invisible.
    pub sliding_window: Option<usize>,
    /// RoPE θ (HF `rope_theta`; Gemma 3 has one for local and one for global layers); unused with learned positions.
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

/// The hyperparameters of a decoder-only transformer, independent of its architecture; `arch/`
/// fills them from `config.json` or GGUF metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture name, for provenance only.
    pub architecture: String,
    /// Rows of the embedding matrix and columns of the logits (HF `vocab_size`); may exceed the
    /// tokenizer's vocabulary when the checkpoint pads the matrix.
    pub vocab_size: usize,
    /// Width of the residual stream, `d_model` (HF `hidden_size` / `n_embd`).
    pub hidden: usize,
    /// Transformer blocks; layer indices everywhere (hooks, plans, records) are 0-based, `0..n_layers`.
    pub n_layers: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer: fewer than `n_heads` (and dividing it) for grouped-query attention.
    pub n_kv_heads: usize,
    /// Width of one head; not always `hidden / n_heads` (Gemma 3 sets it explicitly).
    pub head_dim: usize,
    /// Width of the MLP's hidden layer, the last dimension of `mlp_act` (HF `intermediate_size` / `n_inner`).
    pub intermediate: usize,
    /// The kind of every norm in the model.
    pub norm: NormKind,
    /// The ε every norm adds to the variance (LayerNorm) or mean square (RMSNorm).
    pub norm_eps: f64,
    /// The MLP's nonlinearity.
    pub activation: Activation,
    /// MLP is `down(act(gate(x)) · up(x))` rather than `down(act(up(x)))`.
    pub gated_mlp: bool,
    /// Attention and MLP both read the same normalized input and add to the residual together (GPT-J).
    pub parallel_block: bool,
    /// Learned or rotary position information.
    pub positions: Positions,
    /// Attention settings of each layer, `n_layers` entries indexed by 0-based layer.
    pub layers: Vec<LayerAttention>,
    /// Multiplies `q · kᵀ` before softcap and mask: `head_dim^-0.5` for most models,
    /// `query_pre_attn_scalar^-0.5` for Gemma 3, 1 for a GPT-2 with `scale_attn_weights = false`.
    pub attention_scale: f64,
    /// Inputs are `embedding · embed_scale` (Gemma: sqrt(hidden)).
    pub embed_scale: f64,
    /// When set, logits become `cap · tanh(logits / cap)` (HF `final_logit_softcapping`).
    pub final_logit_softcap: Option<f64>,
    /// When set, scaled attention scores become `cap · tanh(scores / cap)` before the mask (HF `attn_logit_softcapping`).
    pub attn_logit_softcap: Option<f64>,
    /// Longest input in tokens (HF `max_position_embeddings` / `n_positions`, GGUF `context_length`); longer rows are refused.
    pub context_length: usize,
    /// Beginning-of-sequence token id, if the config or GGUF declares one; experiments use it to
    /// recognise a leading BOS the tokenizer added. The forward pass never reads it.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if the config or GGUF declares one; not used by the forward pass.
    pub eos_token_id: Option<u32>,
}
