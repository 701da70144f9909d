//! Scratch profile of the bench example's forward mode (not part of the CLI): where a batched forward pass
//! of Gemma 3 270M on burn-flex spends its time, op by op, at the benchmark's shapes, with the
//! same ops the model code runs (burn-flex is eager, so each call is done when it returns).
//!
//! usage: cargo run -p dissect-cli --example forward_profile [-- MODEL [BATCH SEQ]]

use std::time::Instant;

use anyhow::Result;
use burn_tensor::activation::{gelu_approximate, softmax};
use burn_tensor::{Distribution, Int, Tensor, TensorData};
use dissect_model::backend::Cpu;
use dissect_model::source::load;
use dissect_model::NoHooks;

type T<const D: usize> = Tensor<Cpu, D>;

/// Median wall time in ms of `reps` calls, after one untimed call.
fn time<R>(name: &str, reps: usize, mut f: impl FnMut() -> R) -> f64 {
    drop(f());
    let mut ms: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            drop(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let med = ms[reps / 2];
    eprintln!("{name:<58} {med:>9.2} ms");
    med
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let spec = argv.get(1).map_or("gemma3-270m", String::as_str);
    let b: usize = argv.get(2).map_or(Ok(16), |s| s.parse())?;
    let s: usize = argv.get(3).map_or(Ok(20), |s| s.parse())?;
    let dev = Default::default();
    let m = load::<Cpu>(spec, &dev)?.model;
    let c = m.config.clone();
    let (d, r) = (c.hidden, b * s);
    eprintln!("batch {b} x seq {s} = {r} rows, {} rayon threads, vocab {} x hidden {d}", rayon::current_num_threads(), c.vocab_size);
    let ids: Tensor<Cpu, 2, Int> = Tensor::from_data(TensorData::new((0..r as i64).map(|i| 1000 + i).collect::<Vec<_>>(), [b, s]), &dev);

    let full = time("forward (all blocks, NoHooks)", 5, || m.forward(ids.clone(), &mut NoHooks));
    let h_last = T::<3>::random([b, 1, d], Distribution::Default, &dev);
    let logits_t = time("logits at last pos (final norm + h·embed.transpose())", 5, || m.logits(h_last.clone()));
    let et: T<2> = Tensor::from_data(m.embed.clone().transpose().into_data(), &dev);
    let h2 = h_last.clone().reshape([b, d]);
    let unembed_c = time("  h·Eᵀ with a pre-transposed contiguous copy [d, V]", 5, || h2.clone().matmul(et.clone()));
    let unembed_t = time("  h·Eᵀ as a transposed view (what the model does)", 5, || h2.clone().matmul(m.embed.clone().transpose()));
    let lg = m.logits(h_last.clone());
    let sm = time("softmax over the vocabulary + into_data", 5, || softmax(lg.clone(), 2).into_data());

    // One block's matmuls at [r, d] (the Linear::forward reshape is free), times n_layers.
    let blk = &m.blocks[0];
    let x = T::<2>::random([r, d], Distribution::Default, &dev);
    let xi = T::<2>::random([r, c.intermediate], Distribution::Default, &dev);
    let xo = T::<2>::random([r, c.n_heads * c.head_dim], Distribution::Default, &dev);
    let mut lin = 0.0;
    for (name, w, inp) in [
        ("q", &blk.q.weight, &x),
        ("k", &blk.k.weight, &x),
        ("v", &blk.v.weight, &x),
        ("o", &blk.o.weight, &xo),
        ("gate", &blk.gate.as_ref().expect("gemma is gated").weight, &x),
        ("up", &blk.up.weight, &x),
        ("down", &blk.down.weight, &xi),
    ] {
        let [k, n] = w.dims();
        lin += time(&format!("  linear {name} [{r},{k}]x[{k},{n}]"), 10, || inp.clone().matmul(w.clone()));
    }
    eprintln!("{:<58} {:>9.2} ms", "linears of one block", lin);

    // Attention core of one layer at the benchmark's shapes (GQA: 4 query heads share 1 KV head).
    let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
    let q = T::<4>::random([b, nkv, nh / nkv * s, hd], Distribution::Default, &dev);
    let kk = T::<4>::random([b, nkv, s, hd], Distribution::Default, &dev);
    let sc = time("  scores q·kᵀ (batched matmul)", 10, || q.clone().matmul(kk.clone().swap_dims(2, 3)));
    let scores = T::<4>::random([b, nh, s, s], Distribution::Default, &dev);
    let smx = time("  softmax of the scores", 10, || softmax(scores.clone(), 3));
    let pv = time("  probs·v (batched matmul)", 10, || scores.clone().reshape([b, nkv, nh / nkv * s, s]).matmul(kk.clone()));
    let h3 = T::<3>::random([b, s, d], Distribution::Default, &dev);
    let norm = time("  one RMSNorm [b,s,d]", 10, || blk.attn_norm.forward(h3.clone()));
    let hi = T::<3>::random([b, s, c.intermediate], Distribution::Default, &dev);
    let gelu = time("  gelu_tanh [b,s,ffn] + gate product", 10, || gelu_approximate(hi.clone()) * hi.clone());
    let add = time("  residual add [b,s,d]", 10, || h3.clone() + h3.clone());
    let swap = time("  heads: reshape + swap_dims + reshape back (copy)", 10, || {
        xo.clone().reshape([b, s, nh, hd]).swap_dims(1, 2).swap_dims(1, 2).reshape([b, s, nh * hd])
    });
    // Per block: 4 norms (input, post-attn, pre-MLP, post-MLP) + q/k norms (smaller), 2 adds.
    let per_block = lin + sc + smx + pv + 6.0 * norm + gelu + 2.0 * add + swap;
    let n = c.n_layers as f64;
    eprintln!("\nsummary for one forward of [{b}, {s}] plus last-position logits:");
    eprintln!("  measured forward {full:.1} ms; linears x{n} = {:.1} ms ({:.0}%)", lin * n, 100.0 * lin * n / full);
    eprintln!("  attention core x{n} = {:.1} ms; norms/gelu/adds/copies x{n} ≈ {:.1} ms", (sc + smx + pv) * n, (6.0 * norm + gelu + 2.0 * add + swap) * n);
    eprintln!("  unaccounted (rope, masks, embedding, small ops) ≈ {:.1} ms", full - per_block * n);
    eprintln!("  logits {logits_t:.1} ms (view {unembed_t:.1} vs contiguous copy {unembed_c:.1}); softmax+copy {sm:.1} ms");
    let flops = 2.0 * (r as f64) * (d * (c.n_heads * c.head_dim * 2 + 2 * c.n_kv_heads * c.head_dim) + 3 * d * c.intermediate) as f64 * n;
    eprintln!("  linear GFLOP/s: {:.1}", flops / (lin * n * 1e-3) / 1e9);
    Ok(())
}
