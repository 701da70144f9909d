//! Gemma 3 text models: RMSNorm with `(1 + w)`, q/k norms, post-attention and post-MLP norms,
//! embeddings scaled by sqrt(hidden), grouped-query attention, GeGLU, rotate-halves RoPE with a
//! local base on sliding-window layers and a global base on full-attention layers, tied head.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{HfConfig, HfTensors};
use crate::config::{Activation, LayerAttention, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::weights::{HostTensor, HostWeights};

/// Gemma 3 alternates five sliding-window layers with one full-attention layer.
const SLIDING_PATTERN: usize = 6;
const LOCAL_ROPE_BASE: f64 = 10_000.0;

struct Shape {
    vocab: usize,
    hidden: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f64,
    query_pre_attn_scalar: f64,
    context_length: usize,
    /// Per layer: `Some(window)` for sliding-window layers.
    windows: Vec<Option<usize>>,
    global_base: f64,
    local_base: f64,
    /// Linear rope scaling factor of the full-attention layers.
    global_scale: f64,
    final_softcap: Option<f64>,
    attn_softcap: Option<f64>,
    bos: Option<u32>,
    eos: Option<u32>,
}

fn config(s: Shape) -> ModelConfig {
    let layers = s
        .windows
        .iter()
        .map(|w| match w {
            Some(_) => LayerAttention { sliding_window: *w, rope_base: s.local_base, rope_scale: 1.0, rope_inv_freq: None },
            None => LayerAttention { sliding_window: None, rope_base: s.global_base, rope_scale: s.global_scale, rope_inv_freq: None },
        })
        .collect();
    ModelConfig {
        architecture: "gemma3".into(),
        vocab_size: s.vocab,
        hidden: s.hidden,
        n_layers: s.n_layers,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        head_dim: s.head_dim,
        intermediate: s.intermediate,
        norm: NormKind::RmsNorm,
        norm_eps: s.eps,
        activation: Activation::GeluTanh,
        gated_mlp: true,
        parallel_block: false,
        positions: Positions::Rotary { style: RopeStyle::Halves, rotary_dim: s.head_dim },
        layers,
        attention_scale: s.query_pre_attn_scalar.powf(-0.5),
        embed_scale: (s.hidden as f64).sqrt(),
        final_logit_softcap: s.final_softcap,
        attn_logit_softcap: s.attn_softcap,
        context_length: s.context_length,
        bos_token_id: s.bos,
        eos_token_id: s.eos,
    }
}

fn pattern_windows(n_layers: usize, window: usize) -> Vec<Option<usize>> {
    (0..n_layers).map(|i| if (i + 1) % SLIDING_PATTERN == 0 { None } else { Some(window) }).collect()
}

pub(super) fn from_gguf(g: &GgufFile) -> Result<(ModelConfig, HostWeights), ModelError> {
    let k = |s: &str| format!("gemma3.{s}");
    let n_layers = g.u64(&k("block_count"))? as usize;
    let hidden = g.u64(&k("embedding_length"))? as usize;
    let n_heads = g.u64(&k("attention.head_count"))? as usize;
    let head_dim = g.u64(&k("attention.key_length"))? as usize;
    let vocab = g
        .tensors
        .get("token_embd.weight")
        .map(|t| t.shape()[0])
        .ok_or_else(|| ModelError::MissingTensor { origin: g.path().display().to_string(), name: "token_embd.weight".into() })?;
    let global_scale = match g.get(&k("rope.scaling.type")).and_then(|v| v.as_str()) {
        Some("linear") => g.f64(&k("rope.scaling.factor"))?,
        _ => 1.0,
    };
    let shape = Shape {
        vocab,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads: g.u64(&k("attention.head_count_kv"))? as usize,
        head_dim,
        intermediate: g.u64(&k("feed_forward_length"))? as usize,
        // Stored as f32 (9.99999997e-07); HF's GGUF loader carries that value into the config.
        eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
        // llama.cpp and HF scale by head_dim for every size but 27B (62 layers): hidden / heads.
        query_pre_attn_scalar: if n_layers == 62 { (hidden / n_heads) as f64 } else { head_dim as f64 },
        context_length: g.u64(&k("context_length"))? as usize,
        windows: pattern_windows(n_layers, g.u64(&k("attention.sliding_window"))? as usize),
        global_base: g.f64(&k("rope.freq_base"))?,
        local_base: LOCAL_ROPE_BASE,
        global_scale,
        final_softcap: g.get(&k("final_logit_softcapping")).and_then(|v| v.as_f64()),
        attn_softcap: g.get(&k("attn_logit_softcapping")).and_then(|v| v.as_f64()),
        bos: g.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
        eos: g.get("tokenizer.ggml.eos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
    };
    let cfg = config(shape);

    let mut w = HostWeights::new(g.path().display().to_string());
    let get = |name: &str| -> Result<HostTensor, ModelError> {
        let (data, shape) = g.dequantize(name)?;
        Ok(HostTensor::new(data, shape))
    };
    w.insert("embed", get("token_embd.weight")?);
    // GGUF norm weights already hold Gemma's `1 + w`: use them as they are.
    w.insert("final_norm.weight", get("output_norm.weight")?);
    for i in 0..n_layers {
        let src = |s: &str| format!("blk.{i}.{s}.weight");
        let ours = |s: &str| format!("blocks.{i}.{s}.weight");
        for (from, to) in [
            ("attn_norm", "attn_norm"),
            ("attn_q_norm", "q_norm"),
            ("attn_k_norm", "k_norm"),
            ("post_attention_norm", "post_attn_norm"),
            ("ffn_norm", "mlp_norm"),
            ("post_ffw_norm", "post_mlp_norm"),
        ] {
            w.insert(ours(to), get(&src(from))?);
        }
        // GGUF matrices are [out, in] row-major; ours are [in, out].
        for (from, to) in
            [("attn_q", "q"), ("attn_k", "k"), ("attn_v", "v"), ("attn_output", "o"), ("ffn_gate", "gate"), ("ffn_up", "up"), ("ffn_down", "down")]
        {
            w.insert(ours(to), get(&src(from))?.transposed());
        }
    }
    Ok((cfg, w))
}

pub(super) fn from_hf(source: &str, json: &Json, tensors: BTreeMap<String, HostTensor>) -> Result<(ModelConfig, HostWeights), ModelError> {
    let c = HfConfig { source, json };
    let n_layers = c.usize("num_hidden_layers")?;
    let window = c.usize_or("sliding_window", 4096);
    let windows = match json.get("layer_types").and_then(Json::as_array) {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(Some(window)),
                Some("full_attention") => Ok(None),
                _ => Err(c.err("layer_types", &format!("has unknown entry {t}"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => pattern_windows(n_layers, window),
    };
    // transformers >= 5 nests rope settings per layer type in `rope_parameters`.
    let rope = |layer_type: &str, flat_key: &str, default: f64| -> (f64, f64) {
        let p = json.get("rope_parameters").and_then(|r| r.get(layer_type));
        let base = p.and_then(|p| p.get("rope_theta")).and_then(Json::as_f64).unwrap_or_else(|| c.f64_or(flat_key, default));
        let scaling = p.cloned().or_else(|| if layer_type == "full_attention" { json.get("rope_scaling").cloned() } else { None });
        let factor = match scaling.as_ref().and_then(|s| s.get("rope_type")).and_then(Json::as_str) {
            Some("linear") => scaling.as_ref().and_then(|s| s.get("factor")).and_then(Json::as_f64).unwrap_or(1.0),
            _ => 1.0,
        };
        (base, factor)
    };
    let (global_base, global_scale) = rope("full_attention", "rope_theta", 1_000_000.0);
    let (local_base, _) = rope("sliding_attention", "rope_local_base_freq", LOCAL_ROPE_BASE);
    let head_dim = c.usize_or("head_dim", 256);
    if c.str_or("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh" {
        return Err(c.err("hidden_activation", "is not gelu_pytorch_tanh"));
    }
    let shape = Shape {
        vocab: c.usize("vocab_size")?,
        hidden: c.usize("hidden_size")?,
        n_layers,
        n_heads: c.usize("num_attention_heads")?,
        n_kv_heads: c.usize("num_key_value_heads")?,
        head_dim,
        intermediate: c.usize("intermediate_size")?,
        eps: c.f64_or("rms_norm_eps", 1e-6),
        query_pre_attn_scalar: c.f64_or("query_pre_attn_scalar", head_dim as f64),
        context_length: c.usize_or("max_position_embeddings", 32_768),
        windows,
        global_base,
        local_base,
        global_scale,
        final_softcap: c.opt_f64("final_logit_softcapping"),
        attn_softcap: c.opt_f64("attn_logit_softcapping"),
        bos: c.opt_u32("bos_token_id"),
        eos: c.opt_u32("eos_token_id"),
    };
    let cfg = config(shape);

    let tensors = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k.strip_prefix("language_model.").unwrap_or(&k);
            (k.strip_prefix("model.").unwrap_or(k).to_string(), v)
        })
        .collect();
    let mut t = HfTensors { source: source.into(), tensors };
    let mut w = HostWeights::new(source);
    // HF stores Gemma norm weights as w and multiplies by (1 + w): fold the 1 in once here.
    let norm = |t: HostTensor| t.map(|x| 1.0 + x);
    w.insert("embed", t.take("embed_tokens.weight")?);
    w.insert("final_norm.weight", norm(t.take("norm.weight")?));
    for i in 0..n_layers {
        let hf = |s: &str| format!("layers.{i}.{s}.weight");
        let ours = |s: &str| format!("blocks.{i}.{s}.weight");
        for (from, to) in [
            ("input_layernorm", "attn_norm"),
            ("self_attn.q_norm", "q_norm"),
            ("self_attn.k_norm", "k_norm"),
            ("post_attention_layernorm", "post_attn_norm"),
            ("pre_feedforward_layernorm", "mlp_norm"),
            ("post_feedforward_layernorm", "post_mlp_norm"),
        ] {
            w.insert(ours(to), norm(t.take(&hf(from))?));
        }
        for (from, to) in [
            ("self_attn.q_proj", "q"),
            ("self_attn.k_proj", "k"),
            ("self_attn.v_proj", "v"),
            ("self_attn.o_proj", "o"),
            ("mlp.gate_proj", "gate"),
            ("mlp.up_proj", "up"),
            ("mlp.down_proj", "down"),
        ] {
            w.insert(ours(to), t.take(&hf(from))?.transposed());
        }
    }
    // Tied: a saved `lm_head.weight` is a copy of the embedding.
    t.take_opt("lm_head.weight");
    if let Some(name) = t.tensors.keys().next() {
        return Err(ModelError::Config { origin: source.into(), message: format!("unexpected tensor `{name}`") });
    }
    Ok((cfg, w))
}
