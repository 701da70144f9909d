//! The transformer on a burn backend, and its forward pass with hook points.

use burn_tensor::activation::{gelu, gelu_approximate, silu, softmax};
use burn_tensor::backend::Backend;
use burn_tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::config::{Activation, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::ModelError;
use crate::hooks::Hooks;
use crate::weights::{HostTensor, HostWeights};

fn to_device<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    let shape: [usize; D] = t.shape.clone().try_into().expect("rank checked on load");
    Tensor::from_data(TensorData::new(t.data, shape), device)
}

/// An affine map `y = x · W + b` over the last dimension; the weight is stored `[in, out]`
/// (transposed from PyTorch's `nn.Linear`).
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[in, out]`
    pub weight: Tensor<B, 2>,
    /// `[out]`; `None` when the checkpoint has no bias for this projection.
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    fn load(w: &mut HostWeights, name: &str, d_in: usize, d_out: usize, device: &B::Device) -> Result<Self, ModelError> {
        let weight = to_device(w.take(&format!("{name}.weight"), &[d_in, d_out])?, device);
        let bias = w.take_opt(&format!("{name}.bias"), &[d_out])?.map(|b| to_device(b, device));
        Ok(Linear { weight, bias })
    }

    /// `[batch, seq, in]` to `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d_in] = x.dims();
        let d_out = self.weight.dims()[1];
        let x = x.reshape([b * s, d_in]);
        let y = cpu_matmul(&x, &self.weight).unwrap_or_else(|| x.matmul(self.weight.clone()));
        let y = match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, s, d_out])
    }
}

/// `x · w` `[m, k] · [k, n]`: on the CPU backend by its AVX-512 kernel
/// ([`crate::matmul::matmul_into`], each output the sequential FMA sum over `k`), elsewhere by
/// burn's matmul.
pub fn matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    cpu_matmul(&x, &w).unwrap_or_else(|| x.matmul(w))
}

/// `x · w` by the CPU backend's AVX-512 kernel ([`crate::matmul::matmul_into`]); `None` where
/// [`on_host`] declines, where burn's matmul runs instead. A weight that is not row-major (a
/// transposed view) is copied into a row-major one.
fn cpu_matmul<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let w = (w as &dyn std::any::Any).downcast_ref::<Tensor<crate::backend::Cpu, 2>>()?;
    let [k, n] = w.dims();
    on_host(x, |x, [m, _]| {
        let mut out = Vec::new();
        let ran =
            crate::backend::with_f32_storage(w, |ws, strides| strides == [n as isize, 1] && crate::matmul::matmul_into(&x, m, k, &ws[..k * n], n, &mut out))?;
        if !ran {
            crate::matmul::matmul_into(&x, m, k, &w.clone().into_data().into_vec::<f32>().ok()?, n, &mut out).then_some(())?;
        }
        Some((out, [m, n]))
    })
}

/// The tanh-approximated GELU by one AVX-512 pass ([`crate::vmath::gelu_tanh_in_place`], each
/// value within one f32 ulp of the formula); `None` where [`on_host`] declines, where burn's
/// `gelu_approximate` runs.
fn cpu_gelu_tanh<B: Backend>(x: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    on_host(x, |mut v, dims| crate::vmath::gelu_tanh_in_place(&mut v).then_some((v, dims)))
}

/// Runs a host kernel on `x`'s f32 values when the model is on the CPU backend of a CPU with
/// AVX-512F (where the host kernels apply): `f` gets the values and the dims, and returns the
/// output's. `None` on another backend, CPU or dtype, or when `f` declines.
fn on_host<B: Backend, const D: usize, const E: usize>(
    x: &Tensor<B, D>,
    f: impl FnOnce(Vec<f32>, [usize; D]) -> Option<(Vec<f32>, [usize; E])>,
) -> Option<Tensor<B, E>> {
    use std::any::Any;
    type Cpu = crate::backend::Cpu;
    let x = (x as &dyn Any).downcast_ref::<Tensor<Cpu, D>>()?;
    if !crate::matmul::available() {
        return None;
    }
    let device = x.device();
    let (out, dims) = f(x.clone().into_data().into_vec::<f32>().ok()?, x.dims())?;
    let y: Box<dyn Any> = Box::new(Tensor::<Cpu, E>::from_data(burn_tensor::TensorData::new(out, dims), &device));
    y.downcast::<Tensor<B, E>>().ok().map(|y| *y)
}

/// A LayerNorm or RMSNorm over the last dimension, with its learned scale (and LayerNorm's shift).
#[derive(Debug, Clone)]
pub struct Norm<B: Backend> {
    /// LayerNorm or RMSNorm, the model's [`ModelConfig::norm`].
    pub kind: NormKind,
    /// Added to the variance or mean square, the model's [`ModelConfig::norm_eps`].
    pub eps: f64,
    /// The scale `[dim]`, applied as it is (Gemma's `1 + w` already folded in on load).
    pub weight: Tensor<B, 1>,
    /// The shift `[dim]` of a LayerNorm that has one; `None` for RMSNorm.
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Norm<B> {
    fn load(w: &mut HostWeights, name: &str, dim: usize, cfg: &ModelConfig, device: &B::Device) -> Result<Self, ModelError> {
        let weight = to_device(w.take(&format!("{name}.weight"), &[dim])?, device);
        let bias = w.take_opt(&format!("{name}.bias"), &[dim])?.map(|b| to_device(b, device));
        Ok(Norm { kind: cfg.norm, eps: cfg.norm_eps, weight, bias })
    }

    fn load_opt(w: &mut HostWeights, name: &str, dim: usize, cfg: &ModelConfig, device: &B::Device) -> Result<Option<Self>, ModelError> {
        if w.tensors.contains_key(&format!("{name}.weight")) {
            Self::load(w, name, dim, cfg, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Normalizes over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = match self.kind {
            NormKind::RmsNorm => {
                let ms = x.clone().square().mean_dim(D - 1);
                x * (ms + self.eps).sqrt().recip()
            }
            NormKind::LayerNorm => {
                let mean = x.clone().mean_dim(D - 1);
                let centered = x - mean;
                let var = centered.clone().square().mean_dim(D - 1);
                centered / (var + self.eps).sqrt()
            }
        };
        let y = y * self.weight.clone().unsqueeze::<D>();
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<D>(),
            None => y,
        }
    }
}

/// One transformer block's weights: attention then MLP (sequential), or both on one norm's output
/// (parallel, GPT-J). Optional norms are those only some architectures have (Gemma 3 has all).
#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    /// Pre-attention norm (HF `input_layernorm` / `ln_1`).
    pub attn_norm: Norm<B>,
    /// Query projection `[hidden, n_heads · head_dim]`.
    pub q: Linear<B>,
    /// Key projection `[hidden, n_kv_heads · head_dim]`.
    pub k: Linear<B>,
    /// Value projection `[hidden, n_kv_heads · head_dim]`.
    pub v: Linear<B>,
    /// Attention output projection `[n_heads · head_dim, hidden]` (HF `o_proj` / `c_proj` / `out_proj`).
    pub o: Linear<B>,
    /// Per-head norm of the queries over `head_dim`, before RoPE (Gemma 3 `q_norm`).
    pub q_norm: Option<Norm<B>>,
    /// Per-head norm of the keys over `head_dim`, before RoPE (Gemma 3 `k_norm`).
    pub k_norm: Option<Norm<B>>,
    /// Norm of the attention output before it joins the residual (Gemma 3 `post_attention_layernorm`).
    pub post_attn_norm: Option<Norm<B>>,
    /// Pre-MLP norm (Llama `post_attention_layernorm`, Gemma 3 `pre_feedforward_layernorm`, GPT-2 `ln_2`).
    /// Absent for parallel blocks, whose MLP reads `attn_norm`'s output.
    pub mlp_norm: Option<Norm<B>>,
    /// MLP input projection `[hidden, intermediate]` (HF `up_proj` / `c_fc` / `fc_in`).
    pub up: Linear<B>,
    /// Gate projection `[hidden, intermediate]` of a gated MLP, the one the activation is applied to.
    pub gate: Option<Linear<B>>,
    /// MLP output projection `[intermediate, hidden]`; its input is what the `mlp_act` hook sees.
    pub down: Linear<B>,
    /// Norm of the MLP output before it joins the residual (Gemma 3 `post_feedforward_layernorm`).
    pub post_mlp_norm: Option<Norm<B>>,
}

/// A decoder-only transformer whose weights live on one device of backend `B`.
#[derive(Debug, Clone)]
pub struct Model<B: Backend> {
    /// The hyperparameters the weights were loaded with.
    pub config: ModelConfig,
    /// `[vocab, hidden]`
    pub embed: Tensor<B, 2>,
    /// Learned position embeddings `[max_positions, hidden]` (GPT-2); `None` with rotary positions.
    pub pos_embed: Option<Tensor<B, 2>>,
    /// The transformer blocks, indexed by 0-based layer.
    pub blocks: Vec<Block<B>>,
    /// The norm between the last block and the unembedding (HF `norm` / `ln_f`).
    pub final_norm: Norm<B>,
    /// Untied unembedding `[hidden, vocab]`; `None` means `embed` is used transposed.
    pub lm_head: Option<Linear<B>>,
    /// Where every weight lives and where input tensors are created.
    pub device: B::Device,
    /// The unembedding packed for the CPU projection kernel, made on first use
    /// ([`crate::project::map_logit_rows`]); `None` inside when the kernel cannot run here.
    pub(crate) packed_unembed: std::sync::OnceLock<Option<std::sync::Arc<crate::matmul::PackedUnembed>>>,
    /// Which reads [`crate::project::read_rows`] answers from a screen ([`crate::screen`]) on a
    /// CPU with AMX: the same answers as the f32 path, which [`crate::screen::Screening::Off`]
    /// forces.
    pub screen: crate::screen::Screening,
    /// The unembedding prepared for screening, made on first use; `None` inside when this CPU
    /// cannot screen.
    pub(crate) screened_unembed: std::sync::OnceLock<Option<std::sync::Arc<crate::screen::Screen>>>,
}

impl<B: Backend> Model<B> {
    /// Uploads canonical-name weights to `device`, checking every shape against `config`; a weight
    /// missing, misshapen or left unplaced is an error.
    pub fn from_host(config: ModelConfig, mut w: HostWeights, device: &B::Device) -> Result<Self, ModelError> {
        let c = &config;
        let (d, hd) = (c.hidden, c.head_dim);
        let embed = to_device(w.take("embed", &[c.vocab_size, d])?, device);
        let pos_embed = match c.positions {
            Positions::Learned { max_positions } => Some(to_device(w.take("pos_embed", &[max_positions, d])?, device)),
            Positions::Rotary { .. } => None,
        };
        let mut blocks = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = |s: &str| format!("blocks.{i}.{s}");
            let gate = if c.gated_mlp { Some(Linear::load(&mut w, &p("gate"), d, c.intermediate, device)?) } else { None };
            blocks.push(Block {
                attn_norm: Norm::load(&mut w, &p("attn_norm"), d, c, device)?,
                q: Linear::load(&mut w, &p("q"), d, c.n_heads * hd, device)?,
                k: Linear::load(&mut w, &p("k"), d, c.n_kv_heads * hd, device)?,
                v: Linear::load(&mut w, &p("v"), d, c.n_kv_heads * hd, device)?,
                o: Linear::load(&mut w, &p("o"), c.n_heads * hd, d, device)?,
                q_norm: Norm::load_opt(&mut w, &p("q_norm"), hd, c, device)?,
                k_norm: Norm::load_opt(&mut w, &p("k_norm"), hd, c, device)?,
                post_attn_norm: Norm::load_opt(&mut w, &p("post_attn_norm"), d, c, device)?,
                mlp_norm: if c.parallel_block { None } else { Some(Norm::load(&mut w, &p("mlp_norm"), d, c, device)?) },
                up: Linear::load(&mut w, &p("up"), d, c.intermediate, device)?,
                gate,
                down: Linear::load(&mut w, &p("down"), c.intermediate, d, device)?,
                post_mlp_norm: Norm::load_opt(&mut w, &p("post_mlp_norm"), d, c, device)?,
            });
        }
        let final_norm = Norm::load(&mut w, "final_norm", d, c, device)?;
        let lm_head = if w.tensors.contains_key("lm_head.weight") { Some(Linear::load(&mut w, "lm_head", d, c.vocab_size, device)?) } else { None };
        if let Some(name) = w.tensors.keys().next() {
            // A weight we did not place is a mapping bug, not something to ignore.
            return Err(ModelError::Config { origin: w.source.clone(), message: format!("unused weight `{name}`") });
        }
        Ok(Model {
            config,
            embed,
            pos_embed,
            blocks,
            final_norm,
            lm_head,
            device: device.clone(),
            packed_unembed: std::sync::OnceLock::new(),
            screen: crate::screen::Screening::default(),
            screened_unembed: std::sync::OnceLock::new(),
        })
    }

    /// The number of blocks ([`ModelConfig::n_layers`]).
    pub fn n_layers(&self) -> usize {
        self.config.n_layers
    }

    /// Whether block `l`'s MLP writes exactly zero to the residual stream when its hidden
    /// activations are zero: no bias on the down projection and no shift in a norm after it
    /// (a norm maps the zero vector to itself). The notebook's MLP knockout (activations set to
    /// zero) is then the same computation as removing the sublayer.
    pub fn mlp_is_zero_without_activations(&self, l: usize) -> bool {
        let blk = &self.blocks[l];
        blk.down.bias.is_none() && blk.post_mlp_norm.as_ref().is_none_or(|n| n.bias.is_none())
    }

    /// Token ids `[batch, seq]` as a device tensor. Rows of unequal length must be padded on the
    /// right: causal attention means padding never changes the real positions' values.
    pub fn ids_tensor(&self, rows: &[Vec<u32>]) -> Result<Tensor<B, 2, Int>, ModelError> {
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        if s == 0 {
            return Err(ModelError::Input { message: "empty input".into() });
        }
        if s > self.config.context_length {
            return Err(ModelError::Input { message: format!("{s} tokens is longer than the model's context of {}", self.config.context_length) });
        }
        let mut flat = Vec::with_capacity(rows.len() * s);
        for r in rows {
            for j in 0..s {
                let id = r.get(j).copied().unwrap_or(0);
                if id as usize >= self.config.vocab_size {
                    return Err(ModelError::Input { message: format!("token id {id} is outside the vocabulary") });
                }
                flat.push(id as i64);
            }
        }
        Ok(Tensor::from_data(TensorData::new(flat, [rows.len(), s]), &self.device))
    }

    /// Runs the blocks and returns the final residual stream `[batch, seq, hidden]`, before the
    /// final norm. Every intervention and recording goes through `hooks`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, hooks: &mut impl Hooks<B>) -> Tensor<B, 3> {
        self.forward_suffix(ids, None, hooks)
    }

    /// Runs the tokens `ids` `[batch, q]` placed after a cached prefix: `prefix[l]` holds the
    /// keys and values `[1 or batch, kv_heads, p, head_dim]` that layer `l` computed for positions
    /// `0..p` on an earlier run. Causal attention means those never depend on later tokens, so
    /// this gives exactly what a full forward computes at positions `p..p+q` — the basis of the
    /// fast paths that recompute only the last token.
    pub fn forward_suffix(&self, ids: Tensor<B, 2, Int>, prefix: Option<&[KvCache<B>]>, hooks: &mut impl Hooks<B>) -> Tensor<B, 3> {
        let [b, q] = ids.dims();
        let d = self.config.hidden;
        let start = prefix.and_then(|p| p.first()).map_or(0, |kv| kv.k.dims()[2]);
        let mut h = self.embed.clone().select(0, ids.reshape([b * q])).reshape([b, q, d]);
        if self.config.embed_scale != 1.0 {
            // HF multiplies by the scale rounded to the weights' dtype (f32 here).
            h = h * (self.config.embed_scale as f32);
        }
        if let Some(pe) = &self.pos_embed {
            h = h + pe.clone().slice([start..start + q]).unsqueeze::<3>();
        }
        self.run_blocks_after(h, 0..self.n_layers(), prefix, hooks)
    }

    /// Runs blocks `layers` on a residual stream `h` `[batch, seq, hidden]` (positions `0..seq`)
    /// that enters block `layers.start`, and returns the stream leaving block `layers.end - 1`.
    /// Earlier blocks are not run: callers pass the clean run's `hidden_states[layers.start]`
    /// when everything before that layer is unchanged. `final_residual` is called only when the
    /// range reaches the last block.
    pub fn run_blocks(&self, h: Tensor<B, 3>, layers: std::ops::Range<usize>, hooks: &mut impl Hooks<B>) -> Tensor<B, 3> {
        self.run_blocks_after(h, layers, None, hooks)
    }

    /// [`Model::run_blocks`] on positions `p..p+seq` placed after a cached prefix, as in
    /// [`Model::forward_suffix`]: `prefix[l]` holds block `l`'s keys and values of positions
    /// `0..p` (`None`: no prefix, positions `0..seq`).
    pub fn run_blocks_after(
        &self,
        mut h: Tensor<B, 3>,
        layers: std::ops::Range<usize>,
        prefix: Option<&[KvCache<B>]>,
        hooks: &mut impl Hooks<B>,
    ) -> Tensor<B, 3> {
        let q = h.dims()[1];
        let start = prefix.and_then(|p| p.first()).map_or(0, |kv| kv.k.dims()[2]);
        let ctx = AttnContext { start, masks: AttentionMasks::new(&self.config, start, q, &self.device) };
        let end = layers.end;
        for l in layers {
            h = hooks.block_input(l, h);
            h = self.block_forward(l, &self.blocks[l], h, &ctx, prefix.map(|p| &p[l]), hooks);
        }
        if end == self.n_layers() {
            h = hooks.final_residual(h);
        }
        h
    }

    /// Block `l`'s attention sublayer alone on a residual stream `h` `[batch, q, hidden]`
    /// entering it: its output after the post-attention norm (what [`Hooks::attn_out`] sees in
    /// a full block, the same computation), without running the MLP that follows it. `h` holds
    /// positions `0..q`, or with `prefix` (block `l`'s keys and values of positions `0..p`, as
    /// in [`Model::forward_suffix`]) positions `p..p+q`.
    pub fn attn_sublayer(&self, l: usize, h: Tensor<B, 3>, prefix: Option<&KvCache<B>>, hooks: &mut impl Hooks<B>) -> Tensor<B, 3> {
        let q = h.dims()[1];
        let start = prefix.map_or(0, |kv| kv.k.dims()[2]);
        let ctx = AttnContext { start, masks: AttentionMasks::new(&self.config, start, q, &self.device) };
        let h = hooks.block_input(l, h);
        let blk = &self.blocks[l];
        let mut a = self.attention(l, blk, blk.attn_norm.forward(h), &ctx, prefix, hooks);
        if let Some(n) = &blk.post_attn_norm {
            a = n.forward(a);
        }
        hooks.attn_out(l, a)
    }

    fn block_forward(
        &self,
        l: usize,
        blk: &Block<B>,
        h: Tensor<B, 3>,
        ctx: &AttnContext<B>,
        kv: Option<&KvCache<B>>,
        hooks: &mut impl Hooks<B>,
    ) -> Tensor<B, 3> {
        let x = blk.attn_norm.forward(h.clone());
        let mut a = self.attention(l, blk, x.clone(), ctx, kv, hooks);
        if let Some(n) = &blk.post_attn_norm {
            a = n.forward(a);
        }
        let a = hooks.attn_out(l, a);
        if self.config.parallel_block {
            let m = self.mlp(l, blk, x, hooks);
            return h + a + m;
        }
        let h = h + a;
        let x = blk.mlp_norm.as_ref().expect("sequential block has an MLP norm").forward(h.clone());
        let m = self.mlp(l, blk, x, hooks);
        h + m
    }

    fn mlp(&self, l: usize, blk: &Block<B>, x: Tensor<B, 3>, hooks: &mut impl Hooks<B>) -> Tensor<B, 3> {
        let [b, q, d] = x.dims();
        // Rows whose output is removed everywhere skip the MLP; the others run it as a batch of
        // their own (each row's arithmetic does not depend on the batch).
        let rows: Option<Vec<i64>> = hooks.mlp_rows(l).filter(|r| r.len() < b).map(|r| r.iter().map(|&i| i as i64).collect());
        if rows.as_ref().is_some_and(Vec::is_empty) {
            return hooks.mlp_out(l, Tensor::zeros([b, q, d], &self.device));
        }
        let rows = rows.map(|r| {
            let n = r.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(r, [n]), &self.device)
        });
        let x = match &rows {
            Some(idx) => x.select(0, idx.clone()),
            None => x,
        };
        let act = match &blk.gate {
            Some(gate) => self.activate(gate.forward(x.clone())) * blk.up.forward(x),
            None => self.activate(blk.up.forward(x)),
        };
        let act = hooks.mlp_act(l, act);
        let mut m = blk.down.forward(act);
        if let Some(n) = &blk.post_mlp_norm {
            m = n.forward(m);
        }
        let m = match rows {
            Some(idx) => Tensor::zeros([b, q, d], &self.device).select_assign(0, idx, m, IndexingUpdateOp::Add),
            None => m,
        };
        hooks.mlp_out(l, m)
    }

    fn activate(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.config.activation {
            Activation::GeluTanh => cpu_gelu_tanh(&x).unwrap_or_else(|| gelu_approximate(x)),
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
        }
    }

    /// The keys and values block `l` computes for the residual stream `h` `[batch, seq, hidden]`
    /// at positions `0..seq`: what a forward pass over `h` keeps for the positions after it
    /// (rotated and normed as attention uses them).
    pub fn kv_cache(&self, l: usize, h: Tensor<B, 3>) -> KvCache<B> {
        let blk = &self.blocks[l];
        let rope = self.rope(l, 0, h.dims()[1]);
        let (k, v) = self.keys_values(blk, blk.attn_norm.forward(h), rope.as_ref());
        KvCache { k, v }
    }

    /// cos/sin tables for positions `start..start+len` at block `l`; `None` without rotary
    /// embeddings.
    fn rope(&self, l: usize, start: usize, len: usize) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let Positions::Rotary { rotary_dim, .. } = self.config.positions else { return None };
        let layer = &self.config.layers[l];
        Some(rope_tables::<B>(start, len, rotary_dim, layer.rope_base, layer.rope_scale, layer.rope_inv_freq.as_deref(), &self.device))
    }

    /// Keys and values `[batch, kv_heads, seq, head_dim]` of the normed input `x`, with the
    /// key norm and `rope` applied to the keys.
    fn keys_values(&self, blk: &Block<B>, x: Tensor<B, 3>, rope: Option<&(Tensor<B, 2>, Tensor<B, 2>)>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let c = &self.config;
        let [b, len, _] = x.dims();
        let heads = |t: Tensor<B, 3>| t.reshape([b, len, c.n_kv_heads, c.head_dim]).swap_dims(1, 2);
        let mut k = heads(blk.k.forward(x.clone()));
        let v = heads(blk.v.forward(x));
        if let Some(n) = &blk.k_norm {
            k = n.forward(k);
        }
        if let (Some((cos, sin)), &Positions::Rotary { style, rotary_dim }) = (rope, &c.positions) {
            k = apply_rope(k, cos, sin, style, rotary_dim);
        }
        (k, v)
    }

    fn attention(
        &self,
        l: usize,
        blk: &Block<B>,
        x: Tensor<B, 3>,
        ctx: &AttnContext<B>,
        prefix: Option<&KvCache<B>>,
        hooks: &mut impl Hooks<B>,
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [b, q_len, _] = x.dims();
        let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let rope = self.rope(l, ctx.start, q_len);
        let mut q = blk.q.forward(x.clone()).reshape([b, q_len, nh, hd]).swap_dims(1, 2);
        if let Some(n) = &blk.q_norm {
            q = n.forward(q);
        }
        if let (Some((cos, sin)), &Positions::Rotary { style, rotary_dim }) = (&rope, &c.positions) {
            q = apply_rope(q, cos, sin, style, rotary_dim);
        }
        let (mut k, mut v) = self.keys_values(blk, x, rope.as_ref());
        hooks.attn_kv(l, &k, &v);
        if let Some(p) = prefix {
            let [_, _, pl, _] = p.k.dims();
            k = Tensor::cat(vec![p.k.clone().expand([b, nkv, pl, hd]), k], 2);
            v = Tensor::cat(vec![p.v.clone().expand([b, nkv, pl, hd]), v], 2);
        }
        let k_len = k.dims()[2];
        // Grouped-query attention without copying K/V: query heads that share a KV head are
        // stacked along the sequence axis (HF's repeat_kv maps head i to KV head i / group).
        let g = nh / nkv;
        let qg = q.reshape([b, nkv, g * q_len, hd]);
        let mut scores = qg.matmul(k.swap_dims(2, 3)).reshape([b, nh, q_len, k_len]) * (c.attention_scale as f32);
        if let Some(cap) = c.attn_logit_softcap {
            scores = (scores / (cap as f32)).tanh() * (cap as f32);
        }
        let mask = ctx.masks.for_layer(c, l);
        scores = scores + mask.clone().unsqueeze::<4>();
        let scores = hooks.attn_scores(l, scores, &AttnScoresInfo { mask: &mask, q_start: ctx.start });
        let probs = hooks.attn_probs(l, softmax(scores, 3));
        let out = probs.reshape([b, nkv, g * q_len, k_len]).matmul(v).reshape([b, nh, q_len, hd]);
        blk.o.forward(out.swap_dims(1, 2).reshape([b, q_len, nh * hd]))
    }

    /// Final norm, unembedding and softcap: logits `[batch, seq, vocab]` of a residual stream.
    pub fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.unembed(self.final_norm.forward(h))
    }

    /// `h · Eᵀ` for the tied embedding `E`, `[n, hidden]` to `[n, vocab]`. For few rows
    /// `(E · hᵀ)ᵀ` is several times faster on the CPU backend (measured with
    /// `cargo run -p dissect-model --example proj_bench`: n = 8, 48 vs 12 GFLOP/s); the
    /// result is the same dot products.
    pub fn tied_unembed(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        // Measured with `cargo run --release -p dissect-model --example proj_bench N` (Gemma's
        // 262,144 × 640, 2 cores): E·hᵀ wins for a few rows (103 vs 90 GFLOP/s at 16), the
        // transposed view from 32 rows on (115 vs 95 at 32, 173 vs 112 at 256).
        if h.dims()[0] <= 16 {
            self.embed.clone().matmul(h.transpose()).transpose()
        } else {
            h.matmul(self.embed.clone().transpose())
        }
    }

    /// The unembedding alone (`h · Eᵀ`, or the untied head with its bias), with the model's
    /// final-logit softcap if it has one.
    pub fn unembed(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = h.dims();
        let flat = h.reshape([b * s, d]);
        let logits = match &self.lm_head {
            Some(head) => head.forward(flat.reshape([b, s, d])),
            None => self.tied_unembed(flat).reshape([b, s, self.config.vocab_size]),
        };
        match self.config.final_logit_softcap {
            Some(cap) => (logits / (cap as f32)).tanh() * (cap as f32),
            None => logits,
        }
    }
}

/// Keys and values one layer computed for a prefix, `[1 or batch, kv_heads, prefix_len, head_dim]`
/// (after rotary embedding and key norm).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Keys `[1 or batch, kv_heads, prefix_len, head_dim]`, rotated and normed.
    pub k: Tensor<B, 4>,
    /// Values `[1 or batch, kv_heads, prefix_len, head_dim]`.
    pub v: Tensor<B, 4>,
}

/// What `attn_scores` hooks get to know besides the scores.
pub struct AttnScoresInfo<'a, B: Backend> {
    /// The additive mask `[queries, keys]` (0 visible, -inf hidden) already in the scores.
    pub mask: &'a Tensor<B, 2>,
    /// Absolute position of the first query.
    pub q_start: usize,
}

struct AttnContext<B: Backend> {
    start: usize,
    masks: AttentionMasks<B>,
}

/// Additive masks `[queries, keys]` (0 or -inf) for queries at `start..start+q` over keys
/// `0..start+q`: causal, and causal within each sliding window the model uses.
struct AttentionMasks<B: Backend> {
    causal: Tensor<B, 2>,
    windowed: Vec<(usize, Tensor<B, 2>)>,
}

impl<B: Backend> AttentionMasks<B> {
    fn new(c: &ModelConfig, start: usize, q: usize, device: &B::Device) -> Self {
        let k = start + q;
        let build = |window: Option<usize>| {
            let mut m = vec![0f32; q * k];
            for qi in 0..q {
                let i = start + qi;
                for j in 0..k {
                    if j > i || window.is_some_and(|w| i - j >= w) {
                        m[qi * k + j] = f32::NEG_INFINITY;
                    }
                }
            }
            Tensor::<B, 2>::from_data(TensorData::new(m, [q, k]), device)
        };
        let mut windows: Vec<usize> = c.layers.iter().filter_map(|l| l.sliding_window).filter(|&w| w < k).collect();
        windows.sort_unstable();
        windows.dedup();
        AttentionMasks { causal: build(None), windowed: windows.into_iter().map(|w| (w, build(Some(w)))).collect() }
    }

    fn for_layer(&self, c: &ModelConfig, l: usize) -> Tensor<B, 2> {
        match c.layers[l].sliding_window {
            Some(w) => self.windowed.iter().find(|(ww, _)| *ww == w).map_or(&self.causal, |(_, m)| m).clone(),
            None => self.causal.clone(),
        }
    }
}

/// cos/sin tables `[q, rotary_dim]` for positions `start..start+q`, computed in f32 the way HF
/// does (inv_freq, then position · inv_freq, then cos and sin), so angles round identically.
fn rope_tables<B: Backend>(
    start: usize,
    s: usize,
    rotary_dim: usize,
    base: f64,
    scale: f64,
    inv_freq: Option<&[f32]>,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = rotary_dim / 2;
    let inv_freq: Vec<f32> = match inv_freq {
        Some(f) => f.to_vec(),
        None => (0..half).map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / rotary_dim as f32)).collect(),
    };
    let mut cos = Vec::with_capacity(s * rotary_dim);
    let mut sin = Vec::with_capacity(s * rotary_dim);
    for p in start..start + s {
        let pos = p as f32 / scale as f32;
        let angles: Vec<f32> = inv_freq.iter().map(|f| pos * f).collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    (Tensor::from_data(TensorData::new(cos, [s, rotary_dim]), device), Tensor::from_data(TensorData::new(sin, [s, rotary_dim]), device))
}

fn apply_rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>, style: RopeStyle, rotary_dim: usize) -> Tensor<B, 4> {
    let [b, h, s, hd] = x.dims();
    let (rot, pass) = if rotary_dim < hd { (x.clone().narrow(3, 0, rotary_dim), Some(x.narrow(3, rotary_dim, hd - rotary_dim))) } else { (x, None) };
    let cos = cos.clone().unsqueeze::<4>();
    let sin = sin.clone().unsqueeze::<4>();
    let half = rotary_dim / 2;
    let rotated = match style {
        RopeStyle::Halves => {
            let x1 = rot.clone().narrow(3, 0, half);
            let x2 = rot.clone().narrow(3, half, half);
            rot * cos + Tensor::cat(vec![x2.neg(), x1], 3) * sin
        }
        RopeStyle::Interleaved => {
            // Pairs (2i, 2i+1) share angle i: the tables are laid out in halves, so regroup them.
            let pairs = rot.clone().reshape([b, h, s, half, 2]);
            let x1 = pairs.clone().narrow(4, 0, 1);
            let x2 = pairs.narrow(4, 1, 1);
            let rot_half = Tensor::cat(vec![x2.neg(), x1], 4).reshape([b, h, s, rotary_dim]);
            let inter = |t: Tensor<B, 4>| t.narrow(3, 0, half).reshape([1, 1, s, half, 1]).repeat_dim(4, 2).reshape([1, 1, s, rotary_dim]);
            rot * inter(cos) + rot_half * inter(sin)
        }
    };
    match pass {
        Some(p) => Tensor::cat(vec![rotated, p], 3),
        None => rotated,
    }
}
