//! Hand-made 1-layer, 1-head models whose knockout results are known in closed form: the
//! expected probabilities below are written out by hand from the construction, never computed
//! with our code, and `knockout_sweep` / `run_plans` (the paths the experiments use) must give
//! them. The model is built in memory with `Model::from_host`; no fixture files.
//!
//! # Construction (GPT-2 layout: LayerNorm, learned positions, GELU-tanh MLP, tied unembedding)
//!
//! Vocabulary of V = 8 tokens: `N`=0 (a relation word), `S1`=1, `S2`=2 (the subject), `L`=3 (the
//! last token), `T`=4 (the answer), `F`=5 (a foil), `X`=6, `Y`=7. Hidden size d = 9: one
//! coordinate per token plus a "sink" coordinate 8. The prompt is `[N, S1, S2, L]`, subject
//! span 1..3, so non-subject = {0}, subject = {1, 2}, last = {3}.
//!
//! - Embedding `E_t = e_t − e_sink` (every row sums to 0), position embeddings 0.
//! - Every LayerNorm has weight 2^20, bias 0 and eps 2^40. For the vectors here (variance < 10)
//!   `var + 2^40` rounds to 2^40 in f32, its square root is 2^20, and dividing and multiplying by
//!   powers of two is exact: LN(x) = x − mean(x) (in real arithmetic the factor is
//!   1/sqrt(1 + var/2^40) = 1 − O(1e-11)). Every vector in the residual stream is a combination
//!   of embeddings, so its mean is 0 and LN is the identity.
//! - Logits: tied unembedding after the final LN, `E_v · h = h_v − h_sink`. Writing the residual
//!   as `h = Σ_u z_u E_u`, `h_v = z_v` and `h_sink = −Σ_u z_u`: every logit is shifted by the same
//!   `Σ_u z_u`, so the softmax equals `softmax(z)`. Below, "z" are these coefficients.
//! - Attention (one head, head_dim 9, score scale 1): `W_k = I`, `W_q = A` with one nonzero
//!   entry `A[L][S2] = s`, so the last token's query scores key S2 with `s` and every other key 0
//!   (other queries score everything 0). `W_v = I`; `W_o` row u = `out_u`:
//!   `out_N = b·E_T`, `out_S1 = out_S2 = a·E_T`, `out_L = c·E_F`, `out_X = out_Y = out_T = out_F = 0`;
//!   output bias `bo·E_F`. So the attention output at a position is
//!   `Σ_j α_j out_{t_j} + bo·E_F` with α the softmax of the scores over the visible keys.
//! - MLP (1 hidden unit): `up` reads 10 × coordinate L (bias 0), so the pre-activation is 10 at
//!   the last position (whose residual is `E_L + attention`, attention having no L component) and
//!   0 elsewhere; GELU-tanh(10) = 10 (tanh(√(2/π)(10 + 0.044715·1000)) = tanh(43.7) = 1 to 1e-37)
//!   and GELU(0) = 0. `down` row = (m/10)·E_T, bias `bd·E_F`: the MLP adds `m·E_T + bd·E_F` at the
//!   last position and `bd·E_F` elsewhere.

use burn_tensor::Tensor;
use dissect_experiments::clean_hidden;
use dissect_experiments::knockout::{knockout_sweep, BlockSet, KnockoutConfig};
use dissect_experiments::vocab::probs_of_residual;
use dissect_model::backend::Cpu;
use dissect_model::config::{Activation, LayerAttention, NormKind, Positions};
use dissect_model::intervene::{run_plans, CleanRun, ExecPath, Knockout, KnockoutMode, Plan, PlanHooks, RecordSpec, Sublayer};
use dissect_model::weights::{HostTensor, HostWeights};
use dissect_model::{Model, ModelConfig};

type B = Cpu;

const N: usize = 0;
const S1: usize = 1;
const S2: usize = 2;
const L: usize = 3;
const T: usize = 4;
const F: usize = 5;
const V: usize = 8;
const SINK: usize = 8;
const D: usize = 9;
const PROMPT: [u32; 4] = [N as u32, S1 as u32, S2 as u32, L as u32];
const SUBJECT: std::ops::Range<usize> = 1..3;

/// The free numbers of the construction (see the module docs).
#[derive(Clone, Copy)]
struct Hand {
    /// OV: subject token → a·E_T.
    a: f32,
    /// OV: N → b·E_T.
    b: f32,
    /// OV: L → c·E_F.
    c: f32,
    /// Attention output bias bo·E_F.
    bo: f32,
    /// Score of the edge last → S2 (every other score 0).
    s: f32,
    /// What the MLP writes at the last position: m·E_T.
    m: f32,
    /// MLP output bias bd·E_F.
    bd: f32,
}

/// `E_t` as a d-vector.
fn emb(t: usize) -> [f32; D] {
    let mut v = [0f32; D];
    v[t] = 1.0;
    v[SINK] = -1.0;
    v
}

fn scaled(t: usize, k: f32) -> Vec<f32> {
    emb(t).iter().map(|x| x * k).collect()
}

fn build(h: Hand) -> Model<B> {
    let two20 = (1u64 << 20) as f32;
    let mut w = HostWeights::new("handmade");
    let mut put = |name: &str, data: Vec<f32>, shape: &[usize]| w.insert(name, HostTensor::new(data, shape.to_vec()));

    put("embed", (0..V).flat_map(emb).collect(), &[V, D]);
    put("pos_embed", vec![0.0; 8 * D], &[8, D]);
    for norm in ["blocks.0.attn_norm", "blocks.0.mlp_norm", "final_norm"] {
        put(&format!("{norm}.weight"), vec![two20; D], &[D]);
        put(&format!("{norm}.bias"), vec![0.0; D], &[D]);
    }
    // Weights are [in, out]: y = x · W + b.
    let mut a = vec![0f32; D * D];
    a[L * D + S2] = h.s;
    put("blocks.0.q.weight", a, &[D, D]);
    let eye: Vec<f32> = (0..D * D).map(|i| if i / D == i % D { 1.0 } else { 0.0 }).collect();
    put("blocks.0.k.weight", eye.clone(), &[D, D]);
    put("blocks.0.v.weight", eye, &[D, D]);
    let mut o = vec![0f32; D * D];
    for (u, row) in [(N, scaled(T, h.b)), (S1, scaled(T, h.a)), (S2, scaled(T, h.a)), (L, scaled(F, h.c))] {
        o[u * D..(u + 1) * D].copy_from_slice(&row);
    }
    put("blocks.0.o.weight", o, &[D, D]);
    put("blocks.0.o.bias", scaled(F, h.bo), &[D]);
    let mut up = vec![0f32; D];
    up[L] = 10.0;
    put("blocks.0.up.weight", up, &[D, 1]);
    put("blocks.0.up.bias", vec![0.0], &[1]);
    put("blocks.0.down.weight", scaled(T, h.m / 10.0), &[1, D]);
    put("blocks.0.down.bias", scaled(F, h.bd), &[D]);

    let config = ModelConfig {
        architecture: "handmade-gpt2".into(),
        vocab_size: V,
        hidden: D,
        n_layers: 1,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: D,
        intermediate: 1,
        norm: NormKind::LayerNorm,
        norm_eps: (1u64 << 40) as f64,
        activation: Activation::GeluTanh,
        gated_mlp: false,
        parallel_block: false,
        positions: Positions::Learned { max_positions: 8 },
        layers: vec![LayerAttention { sliding_window: None, rope_base: 10000.0, rope_scale: 1.0, rope_inv_freq: None }],
        attention_scale: 1.0,
        embed_scale: 1.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        context_length: 8,
        bos_token_id: None,
        eos_token_id: None,
    };
    Model::from_host(config, w, &Default::default()).unwrap()
}

/// p(T) = e^{z_T} / (e^{z_T} + Σ_{other nonzero z} e^{z} + n_zero · e^0), in f64.
fn p_t(z_t: f64, others: &[f64], n_zero: usize) -> f64 {
    let num = z_t.exp();
    num / (num + others.iter().map(|z| z.exp()).sum::<f64>() + n_zero as f64)
}

fn assert_near(what: &str, got: f32, want: f64, tol: f64) {
    let err = (got as f64 - want).abs();
    assert!(err <= tol, "{what}: got {got}, hand-computed {want} (|diff| {err:.2e} > {tol:.0e})");
}

/// `pct_change` to 1e-5 relative (at least 1e-5 absolute): it is 100 × a ratio of f32
/// probabilities, so near ±90 one f32 ulp is already 7.6e-6 (measured error: ≤ 4.3e-6 absolute).
/// The probabilities themselves are checked to 1e-6 absolute (measured error ≈ 1e-7).
fn assert_pct(what: &str, got: f32, want: f64) {
    assert_near(what, got, want, 1e-5 * want.abs().max(1.0));
}

fn row(r: &dissect_experiments::knockout::KnockoutResult, set: BlockSet) -> (f32, f32) {
    let rows: Vec<_> = r.rows.iter().filter(|x| x.block == set).collect();
    assert_eq!(rows.len(), 1, "{set:?}: one window in a 1-layer model");
    assert_eq!(rows[0].layer, 0);
    (rows[0].p_new, rows[0].pct_change)
}

/// Case 1: W_q = 0 (s = 0), so every score is 0 and attention is uniform over the visible keys;
/// the MLP adds 0 (m = bd = 0); no attention bias.
/// a = 6, b = 2, c = 4. At the last position (z_L = 1 from its own embedding; the 5 tokens
/// N, S1, S2, X, Y have z = 0):
/// - clean, keys {0,1,2,3}, α = 1/4:       z_T = (b + 2a)/4 = 3.5,  z_F = c/4 = 1
/// - block subject, keys {0,3}, α = 1/2:    z_T = b/2 = 1,          z_F = c/2 = 2
/// - block non-subject, keys {1,2,3}, 1/3:  z_T = 2a/3 = 4,         z_F = c/3 = 4/3
/// - block last, keys {0,1,2}, α = 1/3:     z_T = (b + 2a)/3 = 14/3, z_F = 0
///
/// p = e^{z_T} / (e^{z_T} + e^{z_F} + e^{1} + 5).
#[test]
fn attention_knockout_uniform_attention() {
    let model = build(Hand { a: 6.0, b: 2.0, c: 4.0, bo: 0.0, s: 0.0, m: 0.0, bd: 0.0 });
    let z_l = 1f64;
    let p_base = p_t(3.5, &[1.0, z_l], 5); // e^3.5 / (e^3.5 + 2e + 5) ≈ 0.76037
    let cases = [
        (BlockSet::Subject, p_t(1.0, &[2.0, z_l], 5)),          // e / (2e + e^2 + 5) ≈ 0.15249
        (BlockSet::NonSubject, p_t(4.0, &[4.0 / 3.0, z_l], 5)), // e^4 / (e^4 + e^{4/3} + e + 5) ≈ 0.82587
        (BlockSet::Last, p_t(14.0 / 3.0, &[0.0, z_l], 5)),      // e^{14/3} / (e^{14/3} + e + 6) ≈ 0.92423
    ];
    for path in [ExecPath::Fast, ExecPath::Full] {
        let cfg = KnockoutConfig { path, ..KnockoutConfig::default() };
        let r = knockout_sweep(&model, &PROMPT, SUBJECT, &cfg).unwrap();
        assert_eq!(r.target_id, T as u32, "the clean top-1 is T");
        assert_eq!(r.layers, 1);
        assert_eq!(r.rows.len(), 3);
        assert_near(&format!("{path:?} p_base"), r.p_base, p_base, 1e-6);
        for (set, p_new) in cases {
            let (got_p, got_pct) = row(&r, set);
            assert_near(&format!("{path:?} {set:?} p_new"), got_p, p_new, 1e-6);
            assert_pct(&format!("{path:?} {set:?} pct_change"), got_pct, 100.0 * (p_new - p_base) / p_base);
        }
    }
}

/// The sublayer-knockout model: a = 4, b = 0, c = 4, bo = 0.5, s = 2, m = 2, bd = 1.5.
fn model_b() -> Model<B> {
    build(Hand { a: 4.0, b: 0.0, c: 4.0, bo: 0.5, s: 2.0, m: 2.0, bd: 1.5 })
}

/// Case 1b: attention knockout where the clean attention is not uniform (last → S2 scores 2),
/// so blocking must renormalise the remaining keys' own weights. Key weights e^{score}:
/// N 1, S1 1, S2 e², L 1. At the last position z_L = 1, 5 tokens have z = 0, and
/// z_T = a·(w_S1 + w_S2)/W + m, z_F = c·w_L/W + bo + bd over the visible keys (W their sum):
/// - clean, W = 3 + e²:            z_T = 4(1 + e²)/(3 + e²) + 2,  z_F = 4/(3 + e²) + 2   p ≈ 0.90954
/// - block subject, {N, L}:        z_T = 2,                        z_F = 4/2 + 2 = 4    p ≈ 0.10600
/// - block non-subject, {S1,S2,L}: z_T = 4(1 + e²)/(2 + e²) + 2,  z_F = 4/(2 + e²) + 2   p ≈ 0.93263
/// - block last, {N,S1,S2}:        z_T = 4(1 + e²)/(2 + e²) + 2,  z_F = 2               p ≈ 0.94577
///
/// p = e^{z_T} / (e^{z_T} + e^{z_F} + e^{1} + 5).
#[test]
fn attention_knockout_renormalises_nonuniform_attention() {
    let model = model_b();
    let e2 = 2f64.exp();
    let p_base = p_t(4.0 * (1.0 + e2) / (3.0 + e2) + 2.0, &[4.0 / (3.0 + e2) + 2.0, 1.0], 5);
    let cases = [
        (BlockSet::Subject, p_t(2.0, &[4.0, 1.0], 5)),
        (BlockSet::NonSubject, p_t(4.0 * (1.0 + e2) / (2.0 + e2) + 2.0, &[4.0 / (2.0 + e2) + 2.0, 1.0], 5)),
        (BlockSet::Last, p_t(4.0 * (1.0 + e2) / (2.0 + e2) + 2.0, &[2.0, 1.0], 5)),
    ];
    for path in [ExecPath::Fast, ExecPath::Full] {
        let cfg = KnockoutConfig { path, ..KnockoutConfig::default() };
        let r = knockout_sweep(&model, &PROMPT, SUBJECT, &cfg).unwrap();
        assert_eq!(r.target_id, T as u32);
        assert_near(&format!("{path:?} p_base"), r.p_base, p_base, 1e-6);
        for (set, p_new) in cases {
            let (got_p, got_pct) = row(&r, set);
            assert_near(&format!("{path:?} {set:?} p_new"), got_p, p_new, 1e-6);
            assert_pct(&format!("{path:?} {set:?} pct_change"), got_pct, 100.0 * (p_new - p_base) / p_base);
        }
    }
}

fn knockout(sublayer: Sublayer, mode: KnockoutMode, positions: Option<Vec<usize>>) -> Plan {
    Plan { knockouts: vec![Knockout { sublayer, layers: 0..1, positions, mode }], ..Plan::default() }
}

const VARIANTS: [(&str, Option<(Sublayer, KnockoutMode)>); 5] = [
    ("clean", None),
    ("mlp notebook", Some((Sublayer::Mlp, KnockoutMode::Notebook))),
    ("mlp zero", Some((Sublayer::Mlp, KnockoutMode::Zero))),
    ("attn notebook", Some((Sublayer::Attn, KnockoutMode::Notebook))),
    ("attn zero", Some((Sublayer::Attn, KnockoutMode::Zero))),
];

fn plans(positions: Option<Vec<usize>>) -> Vec<Plan> {
    VARIANTS.iter().map(|(_, v)| v.map_or_else(Plan::default, |(s, m)| knockout(s, m, positions.clone()))).collect()
}

/// Case 2: sublayer knockout semantics on model B, every position knocked out (as the
/// sublayer experiment does), read at the last position (3) and at subject-last (2).
///
/// Last position (z_L = 1, 5 zeros; clean attention weights N 1, S1 1, S2 e², L 1 over
/// W = 3 + e²; the MLP fires, pre-activation 10):
/// - clean:         z_T = 4(1 + e²)/W + 2,  z_F = 4/W + 0.5 + 1.5                       p ≈ 0.90954
/// - MLP notebook:  hidden activation 0, output = bias 1.5·E_F:  z_T = 4(1 + e²)/W,  z_F = 4/W + 2     p ≈ 0.57640
/// - MLP zero:      output 0:                                    z_T = 4(1 + e²)/W,  z_F = 4/W + 0.5   p ≈ 0.71368
/// - MHSA notebook: uniform 1/4 over the causal prefix {0..3}:   z_T = 2·4/4 + 2 = 4, z_F = 4/4 + 2 = 3 p ≈ 0.66258
/// - MHSA zero:     no attention output (nor its bias):          z_T = 2,            z_F = 1.5         p ≈ 0.37720
///
/// p = e^{z_T} / (e^{z_T} + e^{z_F} + e^{1} + 5).
///
/// Subject-last, position 2 (token S2: z_S2 = 1; the 5 tokens N, S1, L, X, Y have z = 0; its
/// query scores everything 0, so clean attention is already uniform over {0, 1, 2}; the MLP
/// does not fire, pre-activation 0, so it adds only its bias):
/// - clean:         z_T = (0 + 4 + 4)/3 = 8/3, z_F = 0.5 + 1.5 = 2                       p ≈ 0.48787
/// - MLP notebook:  the same as clean (GELU(0)·W + bias = bias)                          p ≈ 0.48787
/// - MLP zero:      z_T = 8/3, z_F = 0.5                                                  p ≈ 0.60575
/// - MHSA notebook: uniform over the causal prefix {0, 1, 2} (not over all 4 keys): as clean
///   (uniform over all 4 keys would give z_T = 2, z_F = 3)                                p ≈ 0.48787
/// - MHSA zero:     z_T = 0, z_F = 1.5                                                    p ≈ 0.07576
///
/// p = e^{z_T} / (e^{z_T} + e^{z_F} + e^{z_S2 = 1} + 5).
fn expected_b() -> ([f64; 5], [f64; 5]) {
    let e2 = 2f64.exp();
    let w = 3.0 + e2;
    let zt = 4.0 * (1.0 + e2) / w;
    let last = [
        p_t(zt + 2.0, &[4.0 / w + 2.0, 1.0], 5),
        p_t(zt, &[4.0 / w + 2.0, 1.0], 5),
        p_t(zt, &[4.0 / w + 0.5, 1.0], 5),
        p_t(4.0, &[3.0, 1.0], 5),
        p_t(2.0, &[1.5, 1.0], 5),
    ];
    let sub = [
        p_t(8.0 / 3.0, &[2.0, 1.0], 5),
        p_t(8.0 / 3.0, &[2.0, 1.0], 5),
        p_t(8.0 / 3.0, &[0.5, 1.0], 5),
        p_t(8.0 / 3.0, &[2.0, 1.0], 5),
        p_t(0.0, &[1.5, 1.0], 5),
    ];
    (last, sub)
}

fn probs_t(model: &Model<B>, h: Tensor<B, 2>) -> Vec<f32> {
    probs_of_residual(model, h).into_iter().map(|p| p[T]).collect()
}

#[test]
fn sublayer_knockout_notebook_vs_zero() {
    let model = model_b();
    // The notebook's MLP knockout leaves the down projection's bias: not the zero knockout.
    assert!(!model.mlp_is_zero_without_activations(0), "the MLP has an output bias");
    let (want_last, want_sub) = expected_b();
    // Every hand value differs from the others where the modes should differ.
    assert!((want_last[1] - want_last[2]).abs() > 0.05 && (want_last[3] - want_last[4]).abs() > 0.05);
    assert!((want_last[0] - want_last[3]).abs() > 0.05, "clean attention is not uniform at the last position");

    let clean = CleanRun::new(&model, &PROMPT).unwrap();
    let all = plans(None);
    // Full path over the whole prompt, recording the final residual at positions 2 and 3.
    let spec = RecordSpec { residual: true, positions: vec![vec![2, 3]; all.len()], ..RecordSpec::default() };
    let (h_last, rec) = run_plans(&model, &clean, &all, ExecPath::Full, spec).unwrap();
    assert_eq!(rec.residual.len(), 2, "block input and final residual");
    let fin = rec.residual[1].clone();
    let n = all.len();
    let at = |pos: usize| fin.clone().slice([0..n, pos - 2..pos - 1]).reshape([n, D]);
    let got_last = probs_t(&model, h_last);
    let got_last_rec = probs_t(&model, at(3));
    let got_sub = probs_t(&model, at(2));
    for (i, (name, _)) in VARIANTS.iter().enumerate() {
        assert_near(&format!("{name}: p(T) at the last position"), got_last[i], want_last[i], 1e-6);
        assert_near(&format!("{name}: p(T) at the last position (recorded)"), got_last_rec[i], want_last[i], 1e-6);
        assert_near(&format!("{name}: p(T) at subject-last"), got_sub[i], want_sub[i], 1e-6);
    }

    // Knocked out at the last position only: the fast path (cached prefix keys/values).
    let (h_fast, _) = run_plans(&model, &clean, &plans(Some(vec![3])), ExecPath::Fast, RecordSpec::default()).unwrap();
    for (i, p) in probs_t(&model, h_fast).into_iter().enumerate() {
        assert_near(&format!("{}: p(T) at the last position, fast path", VARIANTS[i].0), p, want_last[i], 1e-6);
    }

    // The sublayer experiment's own path: run_blocks from the clean hidden_states[0] on the
    // prompt cut after subject-last (positions 0..=2).
    let hidden = clean_hidden(&model, &PROMPT).unwrap();
    let q = 3;
    let input = hidden[0].clone().slice([0..q]).unsqueeze::<3>().expand([n, q, D]);
    let mut hooks = PlanHooks::new(&model, &all, 0, q, RecordSpec::default());
    let out = model.run_blocks(input, 0..1, &mut hooks);
    let got = probs_t(&model, out.slice([0..n, 2..3]).reshape([n, D]));
    for (i, (name, _)) in VARIANTS.iter().enumerate() {
        assert_near(&format!("{name}: p(T) at subject-last via run_blocks"), got[i], want_sub[i], 1e-6);
    }
}
