//! GPT-J (HF `GPTJForCausalLM`): one LayerNorm per block whose output feeds attention and the MLP
//! in parallel, bias-free q/k/v/out projections, `fc_in`/`fc_out` with biases, `gelu_new`, rotary
//! embeddings on the first `rotary_dim` dimensions of each head with interleaved pairs
//! (`rotate_every_two`), and an untied `lm_head` with a bias.
//!
//! The paper's "MHSA output" and "MLP output" of a GPT-J block are our `attn_out` and `mlp_out`
//! hooks: `attn(ln_1(h))` after `out_proj`, and `fc_out(gelu(fc_in(ln_1(h))))` after its bias.
//! Both read the same `ln_1` output, so patching or zeroing one never changes the other's input
//! within the block; the block's output is `h + attn_out + mlp_out`. The residual stream is
//! read and patched at `block_input` (HF `hidden_states[l]`), which is the only point between two
//! blocks: a parallel block has no mid-block residual.
//!
//! HF builds GPT-J's sinusoids as `1 / 10000^(arange(0, d, 2) / d)` in f32 and multiplies f32
//! positions by them: the same arithmetic as the default rotary tables, so no override is needed.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{HfConfig, HfTensors};
use crate::config::{Activation, LayerAttention, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::ModelError;
use crate::weights::{HostTensor, HostWeights};

/// HF hardcodes the base of GPT-J's sinusoids.
const ROPE_BASE: f64 = 10_000.0;

pub(super) fn from_hf(source: &str, json: &Json, tensors: BTreeMap<String, HostTensor>) -> Result<(ModelConfig, HostWeights), ModelError> {
    let c = HfConfig { source, json };
    let hidden = c.usize("n_embd")?;
    let n_heads = c.usize("n_head")?;
    let n_layers = c.usize("n_layer")?;
    let head_dim = hidden / n_heads;
    // `rotary_dim: null` makes HF build sinusoids of width `n_embd` and apply them to each head,
    // which only runs at all when there is a single head; GPTJConfig's default is 64.
    let rotary_dim = match json.get("rotary_dim") {
        None => 64,
        Some(Json::Null) => return Err(c.err("rotary_dim", "= null is not supported")),
        Some(_) => c.usize("rotary_dim")?,
    };
    if rotary_dim > head_dim || rotary_dim % 2 != 0 {
        return Err(c.err("rotary_dim", &format!("= {rotary_dim} does not fit a head of {head_dim}")));
    }
    let activation = match c.str_or("activation_function", "gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(c.err("activation_function", &format!("= {other} is not supported"))),
    };
    let max_positions = c.usize_or("n_positions", 2048);
    let config = ModelConfig {
        architecture: "gptj".into(),
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
        parallel_block: true,
        positions: Positions::Rotary { style: RopeStyle::Interleaved, rotary_dim },
        layers: vec![LayerAttention { sliding_window: None, rope_base: ROPE_BASE, rope_scale: 1.0, rope_inv_freq: None }; n_layers],
        attention_scale: (head_dim as f64).powf(-0.5),
        embed_scale: 1.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        context_length: max_positions,
        bos_token_id: c.opt_u32("bos_token_id"),
        eos_token_id: c.opt_u32("eos_token_id"),
    };

    let tensors = tensors.into_iter().map(|(k, v)| (k.strip_prefix("transformer.").unwrap_or(&k).to_string(), v)).collect();
    let mut t = HfTensors { source: source.into(), tensors };
    let mut w = HostWeights::new(source);
    let embed = t.take("wte.weight")?;
    for i in 0..n_layers {
        let hf = |s: &str| format!("h.{i}.{s}");
        let ours = |s: &str| format!("blocks.{i}.{s}");
        w.insert(ours("attn_norm.weight"), t.take(&hf("ln_1.weight"))?);
        w.insert(ours("attn_norm.bias"), t.take(&hf("ln_1.bias"))?);
        // nn.Linear stores [out, in]; ours are [in, out].
        for (from, to) in [("attn.q_proj", "q"), ("attn.k_proj", "k"), ("attn.v_proj", "v"), ("attn.out_proj", "o")] {
            w.insert(ours(&format!("{to}.weight")), t.take(&hf(&format!("{from}.weight")))?.transposed());
        }
        for (from, to) in [("mlp.fc_in", "up"), ("mlp.fc_out", "down")] {
            w.insert(ours(&format!("{to}.weight")), t.take(&hf(&format!("{from}.weight")))?.transposed());
            w.insert(ours(&format!("{to}.bias")), t.take(&hf(&format!("{from}.bias")))?);
        }
        // Causal-mask buffers of old checkpoints are not weights.
        t.take_opt(&hf("attn.bias"));
        t.take_opt(&hf("attn.masked_bias"));
    }
    w.insert("final_norm.weight", t.take("ln_f.weight")?);
    w.insert("final_norm.bias", t.take("ln_f.bias")?);
    let tied = json.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false);
    // The head keeps its own bias even when its weight is tied to `wte`.
    let head = match t.take_opt("lm_head.weight") {
        Some(h) if !tied => h,
        _ => embed.clone(),
    };
    w.insert("lm_head.weight", head.transposed());
    w.insert("lm_head.bias", t.take("lm_head.bias")?);
    w.insert("embed", embed);
    if let Some(name) = t.tensors.keys().next() {
        return Err(ModelError::Config { origin: source.into(), message: format!("unexpected tensor `{name}`") });
    }
    Ok((config, w))
}
