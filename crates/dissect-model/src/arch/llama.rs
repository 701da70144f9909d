//! The Llama family (HF `LlamaForCausalLM`, and `Qwen2ForCausalLM` / `MistralForCausalLM`, which
//! share its layout; SmolLM2 is a Llama): RMSNorm with the weight used as it is, SwiGLU,
//! grouped-query attention, rotate-halves RoPE with `rope_theta` and the `default`, `linear` and
//! `llama3` scalings, a tied or untied head, and whatever projection biases the checkpoint has
//! (Llama's `attention_bias` / `mlp_bias`, Qwen2's q/k/v biases). From a Hugging Face directory or
//! from a GGUF with `general.architecture = llama`.
//!
//! llama.cpp's converter permutes the rows of `attn_q` / `attn_k` (and their biases) within each
//! head so that its adjacent-pair rotary kernel computes HF's rotate-halves result. We undo that
//! permutation on load rather than rotating adjacent pairs: q and k, and every hook that sees them,
//! are then laid out exactly as in the HF checkpoint.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{HfConfig, HfTensors};
use crate::config::{Activation, LayerAttention, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::weights::{HostTensor, HostWeights};

/// Rotary settings shared by every layer of the model.
#[derive(Debug, Clone, PartialEq)]
enum Scaling {
    None,
    /// HF divides the inverse frequencies by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
}

/// `1 / base^(2i / dim)` in f32, as HF's `_compute_default_rope_parameters` and the model's own
/// default tables compute it.
fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / dim as f32)).collect()
}

/// The inverse frequencies HF's rope init functions give, with its f32 operation order (a
/// Python scalar over a tensor is `reciprocal(t) * scalar` in torch), so angles round alike.
fn scaled_inv_freq(base: f64, dim: usize, scaling: &Scaling) -> Option<Vec<f32>> {
    let inv = default_inv_freq(base, dim);
    match *scaling {
        Scaling::None => None,
        Scaling::Linear { factor } => Some(inv.iter().map(|f| f / factor as f32).collect()),
        Scaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
            let factor = factor as f32;
            let low_wavelen = (original_max_positions / low_freq_factor) as f32;
            let high_wavelen = (original_max_positions / high_freq_factor) as f32;
            let ramp = (high_freq_factor - low_freq_factor) as f32;
            let two_pi = std::f64::consts::TAU as f32;
            Some(
                inv.iter()
                    .map(|&f| {
                        let wavelen = (1.0 / f) * two_pi;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        if wavelen < high_wavelen || wavelen > low_wavelen {
                            return scaled;
                        }
                        let smooth = ((1.0 / wavelen) * original_max_positions as f32 - low_freq_factor as f32) / ramp;
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    })
                    .collect(),
            )
        }
    }
}

fn scaling_from_json(c: &HfConfig<'_>, params: Option<&Json>) -> Result<Scaling, ModelError> {
    let Some(p) = params.filter(|p| !p.is_null()) else { return Ok(Scaling::None) };
    let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Json::as_str).unwrap_or("default");
    let num = |key: &str| p.get(key).and_then(Json::as_f64).ok_or_else(|| c.err("rope_scaling", &format!("has no `{key}`")));
    Ok(match kind {
        "default" => Scaling::None,
        "linear" => Scaling::Linear { factor: num("factor")? },
        "llama3" => Scaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_positions: num("original_max_position_embeddings")?,
        },
        other => return Err(c.err("rope_scaling", &format!("type `{other}` is not supported (default, linear, llama3 are)"))),
    })
}

struct Shape {
    architecture: String,
    vocab: usize,
    hidden: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f64,
    activation: Activation,
    rope_base: f64,
    inv_freq: Option<Vec<f32>>,
    windows: Vec<Option<usize>>,
    context_length: usize,
    bos: Option<u32>,
    eos: Option<u32>,
}

fn config(s: Shape) -> ModelConfig {
    let layers = s
        .windows
        .iter()
        .map(|&sliding_window| LayerAttention { sliding_window, rope_base: s.rope_base, rope_scale: 1.0, rope_inv_freq: s.inv_freq.clone() })
        .collect();
    ModelConfig {
        architecture: s.architecture,
        vocab_size: s.vocab,
        hidden: s.hidden,
        n_layers: s.n_layers,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        head_dim: s.head_dim,
        intermediate: s.intermediate,
        norm: NormKind::RmsNorm,
        norm_eps: s.eps,
        activation: s.activation,
        gated_mlp: true,
        parallel_block: false,
        positions: Positions::Rotary { style: RopeStyle::Halves, rotary_dim: s.head_dim },
        layers,
        attention_scale: (s.head_dim as f64).powf(-0.5),
        embed_scale: 1.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        context_length: s.context_length,
        bos_token_id: s.bos,
        eos_token_id: s.eos,
    }
}

fn activation(c: &HfConfig<'_>) -> Result<Activation, ModelError> {
    match c.str_or("hidden_act", "silu") {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
        "gelu" => Ok(Activation::Gelu),
        other => Err(c.err("hidden_act", &format!("= {other} is not supported"))),
    }
}

/// Per-layer sliding windows: Qwen2's `layer_types`, or Mistral's one `sliding_window` for all.
fn hf_windows(c: &HfConfig<'_>, n_layers: usize) -> Result<Vec<Option<usize>>, ModelError> {
    let window = c.json.get("sliding_window").and_then(Json::as_u64).map(|w| w as usize);
    match c.json.get("layer_types").and_then(Json::as_array) {
        Some(types) if types.len() == n_layers => types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => window.map(Some).ok_or_else(|| c.err("sliding_window", "is missing for sliding_attention layers")),
                _ => Err(c.err("layer_types", &format!("has unknown entry {t}"))),
            })
            .collect(),
        Some(_) => Err(c.err("layer_types", "does not have one entry per layer")),
        None => Ok(vec![window; n_layers]),
    }
}

pub(super) fn from_hf(source: &str, json: &Json, tensors: BTreeMap<String, HostTensor>) -> Result<(ModelConfig, HostWeights), ModelError> {
    let c = HfConfig { source, json };
    let model_type = c.str_or("model_type", "llama");
    let hidden = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let n_layers = c.usize("num_hidden_layers")?;
    let head_dim = match json.get("head_dim") {
        Some(v) if !v.is_null() => c.usize("head_dim")?,
        _ => hidden / n_heads,
    };
    if c.usize_or("pretraining_tp", 1) != 1 {
        return Err(c.err("pretraining_tp", "!= 1 is not supported"));
    }
    // transformers >= 5 keeps theta and scaling together in `rope_parameters`; older configs
    // have `rope_theta` and `rope_scaling`.
    let (rope_base, scaling) = match json.get("rope_parameters").filter(|p| p.is_object()) {
        Some(p) => (p.get("rope_theta").and_then(Json::as_f64).unwrap_or(10_000.0), scaling_from_json(&c, Some(p))?),
        None => (c.f64_or("rope_theta", 10_000.0), scaling_from_json(&c, json.get("rope_scaling"))?),
    };
    let shape = Shape {
        architecture: model_type.to_string(),
        vocab: c.usize("vocab_size")?,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads: c.usize_or("num_key_value_heads", n_heads),
        head_dim,
        intermediate: c.usize("intermediate_size")?,
        eps: c.f64_or("rms_norm_eps", 1e-6),
        activation: activation(&c)?,
        inv_freq: scaled_inv_freq(rope_base, head_dim, &scaling),
        rope_base,
        windows: hf_windows(&c, n_layers)?,
        context_length: c.usize_or("max_position_embeddings", 2048),
        bos: c.opt_u32("bos_token_id"),
        eos: c.opt_u32("eos_token_id"),
    };
    let cfg = config(shape);

    let tensors = tensors.into_iter().map(|(k, v)| (k.strip_prefix("model.").unwrap_or(&k).to_string(), v)).collect();
    let mut t = HfTensors { source: source.into(), tensors };
    let mut w = HostWeights::new(source);
    let embed = t.take("embed_tokens.weight")?;
    w.insert("final_norm.weight", t.take("norm.weight")?);
    for i in 0..n_layers {
        let hf = |s: &str| format!("layers.{i}.{s}");
        let ours = |s: &str| format!("blocks.{i}.{s}");
        w.insert(ours("attn_norm.weight"), t.take(&hf("input_layernorm.weight"))?);
        w.insert(ours("mlp_norm.weight"), t.take(&hf("post_attention_layernorm.weight"))?);
        for (from, to) in [
            ("self_attn.q_proj", "q"),
            ("self_attn.k_proj", "k"),
            ("self_attn.v_proj", "v"),
            ("self_attn.o_proj", "o"),
            ("mlp.gate_proj", "gate"),
            ("mlp.up_proj", "up"),
            ("mlp.down_proj", "down"),
        ] {
            // nn.Linear stores [out, in]; ours are [in, out]. Biases are there or not per model.
            w.insert(ours(&format!("{to}.weight")), t.take(&hf(&format!("{from}.weight")))?.transposed());
            if let Some(b) = t.take_opt(&hf(&format!("{from}.bias"))) {
                w.insert(ours(&format!("{to}.bias")), b);
            }
        }
        // Rotary tables cached by some old checkpoints are not weights.
        t.take_opt(&hf("self_attn.rotary_emb.inv_freq"));
    }
    // LlamaConfig, Qwen2Config and MistralConfig all default to an untied head.
    let tied = json.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false);
    match t.take_opt("lm_head.weight") {
        // A tied head saved anyway is a copy of the embedding.
        Some(head) if !tied => w.insert("lm_head.weight", head.transposed()),
        Some(_) => {}
        None if !tied => return Err(ModelError::MissingTensor { origin: source.into(), name: "lm_head.weight".into() }),
        None => {}
    }
    w.insert("embed", embed);
    if let Some(name) = t.tensors.keys().next() {
        return Err(ModelError::Config { origin: source.into(), message: format!("unexpected tensor `{name}`") });
    }
    Ok((cfg, w))
}

/// Undoes llama.cpp's `LlamaModel.permute` on the rows of a `[rows, ...]` tensor: within each of
/// `n_head` heads it stored HF row `t·half + j` at row `2j + t`.
fn unpermute_rows(t: HostTensor, n_head: usize) -> HostTensor {
    let rows = t.shape[0];
    let width = t.data.len() / rows;
    let head = rows / n_head;
    let half = head / 2;
    let mut out = vec![0f32; t.data.len()];
    for h in 0..n_head {
        for part in 0..2 {
            for j in 0..half {
                let to = h * head + part * half + j;
                let from = h * head + 2 * j + part;
                out[to * width..(to + 1) * width].copy_from_slice(&t.data[from * width..(from + 1) * width]);
            }
        }
    }
    HostTensor::new(out, t.shape)
}

pub(super) fn from_gguf(g: &GgufFile) -> Result<(ModelConfig, HostWeights), ModelError> {
    let origin = g.path().display().to_string();
    let k = |s: &str| format!("llama.{s}");
    let opt_u64 = |key: &str| g.get(key).and_then(|v| v.as_u64()).map(|v| v as usize);
    let n_layers = g.u64(&k("block_count"))? as usize;
    let hidden = g.u64(&k("embedding_length"))? as usize;
    let n_heads = g.u64(&k("attention.head_count"))? as usize;
    let n_kv_heads = opt_u64(&k("attention.head_count_kv")).unwrap_or(n_heads);
    let head_dim = opt_u64(&k("attention.key_length")).unwrap_or(hidden / n_heads);
    let rotary_dim = opt_u64(&k("rope.dimension_count")).unwrap_or(head_dim);
    if rotary_dim != head_dim {
        return Err(ModelError::Gguf {
            path: g.path().into(),
            message: format!("rope over {rotary_dim} of {head_dim} head dimensions is not supported for llama"),
        });
    }
    let vocab = g
        .tensors
        .get("token_embd.weight")
        .map(|t| t.shape()[0])
        .ok_or_else(|| ModelError::MissingTensor { origin: origin.clone(), name: "token_embd.weight".into() })?;
    let rope_base = g.get(&k("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10_000.0);
    let get = |name: &str| -> Result<HostTensor, ModelError> {
        let (data, shape) = g.dequantize(name)?;
        Ok(HostTensor::new(data, shape))
    };
    // llama.cpp keeps Llama 3 frequency bands as per-frequency divisors in a `rope_freqs` tensor.
    let inv_freq = if g.tensors.contains_key("rope_freqs.weight") {
        let factors = get("rope_freqs.weight")?;
        if factors.data.len() != head_dim / 2 {
            return Err(ModelError::Gguf { path: g.path().into(), message: format!("rope_freqs has {} values, not {}", factors.data.len(), head_dim / 2) });
        }
        Some(default_inv_freq(rope_base, head_dim).iter().zip(&factors.data).map(|(f, d)| f / d).collect())
    } else {
        match g.get(&k("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => None,
            Some("linear") => scaled_inv_freq(rope_base, head_dim, &Scaling::Linear { factor: g.f64(&k("rope.scaling.factor"))? }),
            Some(other) => return Err(ModelError::Gguf { path: g.path().into(), message: format!("rope scaling `{other}` is not supported") }),
        }
    };
    let shape = Shape {
        architecture: "llama".into(),
        vocab,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        intermediate: g.u64(&k("feed_forward_length"))? as usize,
        eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
        activation: Activation::Silu,
        rope_base,
        inv_freq,
        windows: vec![None; n_layers],
        context_length: g.u64(&k("context_length"))? as usize,
        bos: g.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
        eos: g.get("tokenizer.ggml.eos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
    };
    let cfg = config(shape);

    let mut w = HostWeights::new(origin);
    w.insert("embed", get("token_embd.weight")?);
    w.insert("final_norm.weight", get("output_norm.weight")?);
    // Without `output.weight` the head is tied to the embedding.
    if g.tensors.contains_key("output.weight") {
        w.insert("lm_head.weight", get("output.weight")?.transposed());
    }
    for i in 0..n_layers {
        let src = |s: &str| format!("blk.{i}.{s}");
        let ours = |s: &str| format!("blocks.{i}.{s}");
        w.insert(ours("attn_norm.weight"), get(&src("attn_norm.weight"))?);
        w.insert(ours("mlp_norm.weight"), get(&src("ffn_norm.weight"))?);
        for (from, to) in
            [("attn_q", "q"), ("attn_k", "k"), ("attn_v", "v"), ("attn_output", "o"), ("ffn_gate", "gate"), ("ffn_up", "up"), ("ffn_down", "down")]
        {
            let heads = match to {
                "q" => Some(n_heads),
                "k" => Some(n_kv_heads),
                _ => None,
            };
            let fix = |t: HostTensor| match heads {
                Some(n) => unpermute_rows(t, n),
                None => t,
            };
            // GGUF matrices are [out, in] row-major: un-permute rows, then transpose to [in, out].
            w.insert(ours(&format!("{to}.weight")), fix(get(&src(&format!("{from}.weight")))?).transposed());
            let bias = src(&format!("{from}.bias"));
            if g.tensors.contains_key(&bias) {
                w.insert(ours(&format!("{to}.bias")), fix(get(&bias)?));
            }
        }
    }
    Ok((cfg, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (n_head, head, cols) = (2, 6, 3);
        let rows = n_head * head;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..n_head {
            for part in 0..2 {
                for j in 0..head / 2 {
                    let src = h * head + part * (head / 2) + j;
                    let dst = h * head + j * 2 + part;
                    permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let back = unpermute_rows(HostTensor::new(permuted, vec![rows, cols]), n_head);
        assert_eq!(back.data, hf);
    }

    #[test]
    fn llama3_bands() {
        let s = Scaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_positions: 8192.0 };
        let base = default_inv_freq(500_000.0, 128);
        let scaled = scaled_inv_freq(500_000.0, 128, &s).unwrap();
        // Highest frequency untouched, lowest divided by the factor.
        assert_eq!(scaled[0], base[0]);
        assert_eq!(scaled[63], base[63] / 8.0);
        assert!(scaled.iter().zip(&base).all(|(s, b)| s <= b && *s >= b / 8.0));
    }
}
