//! GPT-2 (HF `GPT2LMHeadModel`): learned positions, LayerNorm, fused `c_attn`, `Conv1D`
//! weights already stored `[in, out]`, `gelu_new`, tied unembedding.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{HfConfig, HfTensors};
use crate::config::{Activation, LayerAttention, ModelConfig, NormKind, Positions};
use crate::error::ModelError;
use crate::weights::{HostTensor, HostWeights};

pub(super) fn from_hf(source: &str, json: &Json, tensors: BTreeMap<String, HostTensor>) -> Result<(ModelConfig, HostWeights), ModelError> {
    let c = HfConfig { source, json };
    let hidden = c.usize("n_embd")?;
    let n_heads = c.usize("n_head")?;
    let n_layers = c.usize("n_layer")?;
    let max_positions = c.usize("n_positions")?;
    let activation = match c.str_or("activation_function", "gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(c.err("activation_function", &format!("= {other} is not supported"))),
    };
    for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if json.get(flag).and_then(Json::as_bool) == Some(true) {
            return Err(c.err(flag, "= true is not supported"));
        }
    }
    let head_dim = hidden / n_heads;
    let config = ModelConfig {
        architecture: "gpt2".into(),
        vocab_size: c.usize("vocab_size")?,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads: n_heads,
        head_dim,
        intermediate: c.usize_or("n_inner", 4 * hidden),
        norm: NormKind::LayerNorm,
        norm_eps: c.f64_or("layer_norm_epsilon", 1e-5),
        activation,
        gated_mlp: false,
        parallel_block: false,
        positions: Positions::Learned { max_positions },
        layers: vec![LayerAttention { sliding_window: None, rope_base: 0.0, rope_scale: 1.0, rope_inv_freq: None }; n_layers],
        attention_scale: if json.get("scale_attn_weights").and_then(Json::as_bool) == Some(false) { 1.0 } else { 1.0 / (head_dim as f64).sqrt() },
        embed_scale: 1.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        context_length: max_positions,
        bos_token_id: c.opt_u32("bos_token_id"),
        eos_token_id: c.opt_u32("eos_token_id"),
    };

    // Checkpoints name tensors with or without the `transformer.` prefix.
    let tensors = tensors.into_iter().map(|(k, v)| (k.strip_prefix("transformer.").unwrap_or(&k).to_string(), v)).collect();
    let mut t = HfTensors { source: source.into(), tensors };
    let mut w = HostWeights::new(source);
    w.insert("embed", t.take("wte.weight")?);
    w.insert("pos_embed", t.take("wpe.weight")?);
    for i in 0..n_layers {
        let hf = |s: &str| format!("h.{i}.{s}");
        let ours = |s: &str| format!("blocks.{i}.{s}");
        for (from, to) in [("ln_1", "attn_norm"), ("ln_2", "mlp_norm")] {
            w.insert(ours(&format!("{to}.weight")), t.take(&hf(&format!("{from}.weight")))?);
            w.insert(ours(&format!("{to}.bias")), t.take(&hf(&format!("{from}.bias")))?);
        }
        // Conv1D stores [in, out] already: split the fused q|k|v columns, never transpose.
        let qkv_w = t.take(&hf("attn.c_attn.weight"))?.split_columns(3);
        let qkv_b = t.take(&hf("attn.c_attn.bias"))?.split_flat(3);
        for ((name, wt), b) in ["q", "k", "v"].iter().zip(qkv_w).zip(qkv_b) {
            w.insert(ours(&format!("{name}.weight")), wt);
            w.insert(ours(&format!("{name}.bias")), b);
        }
        for (from, to) in [("attn.c_proj", "o"), ("mlp.c_fc", "up"), ("mlp.c_proj", "down")] {
            w.insert(ours(&format!("{to}.weight")), t.take(&hf(&format!("{from}.weight")))?);
            w.insert(ours(&format!("{to}.bias")), t.take(&hf(&format!("{from}.bias")))?);
        }
        // Causal-mask buffers of old checkpoints are not weights.
        t.take_opt(&hf("attn.bias"));
        t.take_opt(&hf("attn.masked_bias"));
    }
    w.insert("final_norm.weight", t.take("ln_f.weight")?);
    w.insert("final_norm.bias", t.take("ln_f.bias")?);
    // GPT-2 ties the head to `wte`; a saved copy must equal it, so it is dropped.
    t.take_opt("lm_head.weight");
    if let Some(name) = t.tensors.keys().next() {
        return Err(ModelError::Config { origin: source.into(), message: format!("unexpected tensor `{name}`") });
    }
    Ok((config, w))
}
