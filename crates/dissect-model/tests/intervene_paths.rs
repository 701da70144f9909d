//! The fast path (reuse the clean run's keys/values, recompute only the last position) equals
//! full recomputation on every intervention primitive, on tiny models and the real Gemma.

use burn_tensor::backend::Backend;
use dissect_model::intervene::{run_plans, BlockEdges, CleanRun, EdgeBlocking, ExecPath, Knockout, KnockoutMode, Patch, Plan, RecordSpec, Sublayer};
use dissect_model::source::load;

mod common;
use common::assert_close;

fn plans_on_last(n_layers: usize, len: usize, hidden: usize) -> Vec<(&'static str, Plan)> {
    let last = len - 1;
    let mid = n_layers / 2;
    let ko = |sublayer, mode| Plan { knockouts: vec![Knockout { sublayer, layers: 0..mid + 1, positions: Some(vec![last]), mode }], ..Plan::default() };
    let patch_value: Vec<f32> = (0..hidden).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
    vec![
        ("clean", Plan::default()),
        (
            "block subject-ish",
            Plan {
                edges: vec![BlockEdges { layers: 0..n_layers, query: last, keys: vec![1, 2], heads: None, arithmetic: EdgeBlocking::PreSoftmax }],
                ..Plan::default()
            },
        ),
        (
            "block one head",
            Plan {
                edges: vec![BlockEdges {
                    layers: mid..n_layers,
                    query: last,
                    keys: (0..last).collect(),
                    heads: Some(vec![1]),
                    arithmetic: EdgeBlocking::PreSoftmax,
                }],
                ..Plan::default()
            },
        ),
        (
            "block subject-ish, notebook arithmetic",
            Plan {
                edges: vec![BlockEdges { layers: mid..n_layers, query: last, keys: vec![1, 2], heads: None, arithmetic: EdgeBlocking::Notebook }],
                ..Plan::default()
            },
        ),
        (
            "block last->last late",
            Plan {
                edges: vec![BlockEdges { layers: n_layers - 1..n_layers, query: last, keys: vec![last], heads: None, arithmetic: EdgeBlocking::PreSoftmax }],
                ..Plan::default()
            },
        ),
        ("attn notebook", ko(Sublayer::Attn, KnockoutMode::Notebook)),
        ("attn zero", ko(Sublayer::Attn, KnockoutMode::Zero)),
        ("mlp notebook", ko(Sublayer::Mlp, KnockoutMode::Notebook)),
        ("mlp zero", ko(Sublayer::Mlp, KnockoutMode::Zero)),
        ("patch last", Plan { patches: vec![Patch { layer: mid, position: last, value: patch_value }], ..Plan::default() }),
    ]
}

fn check<B: Backend>(spec: &str, prompt: &str, device: &B::Device) {
    let loaded = load::<B>(spec, device).unwrap();
    let m = &loaded.model;
    let ids = loaded.tokenizer.encode(prompt).unwrap().ids;
    let last = ids.len() - 1;
    let clean = CleanRun::new(m, &ids).unwrap();
    let plans = plans_on_last(m.n_layers(), ids.len(), m.config.hidden);
    let just: Vec<Plan> = plans.iter().map(|(_, p)| p.clone()).collect();
    let rec = || RecordSpec { residual: true, attn_out: true, mlp_out: true, positions: vec![vec![last]; just.len()] };
    let (fast, fr) = run_plans(m, &clean, &just, ExecPath::Fast, rec()).unwrap();
    let (full, ur) = run_plans(m, &clean, &just, ExecPath::Full, rec()).unwrap();
    let v = |t: burn_tensor::Tensor<B, 2>| t.into_data().into_vec::<f32>().unwrap();
    let v3 = |t: &burn_tensor::Tensor<B, 3>| t.to_data().into_vec::<f32>().unwrap();
    let (fast, full) = (v(fast), v(full));
    let d = m.config.hidden;
    for (i, (name, _)) in plans.iter().enumerate() {
        assert_close(&format!("{spec} {name}: final residual fast vs full"), &fast[i * d..(i + 1) * d], &full[i * d..(i + 1) * d], 1e-4);
    }
    assert_eq!(fr.residual.len(), m.n_layers() + 1, "fast path records every layer");
    for (what, a, b) in [("residual", &fr.residual, &ur.residual), ("attn_out", &fr.attn_out, &ur.attn_out), ("mlp_out", &fr.mlp_out, &ur.mlp_out)] {
        assert_eq!(a.len(), b.len());
        for (l, (x, y)) in a.iter().zip(b).enumerate() {
            assert_close(&format!("{spec} {what}[{l}] fast vs full"), &v3(x), &v3(y), 1e-4);
        }
    }
    // Every intervention changes something (a plan silently ignored would pass the above).
    for (i, (name, _)) in plans.iter().enumerate().skip(1) {
        let moved = fast[i * d..(i + 1) * d].iter().zip(&fast[..d]).any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(moved, "{spec} {name} changed nothing");
    }
}

fn tiny<B: Backend>(device: &B::Device) {
    for dir in ["tiny-gpt2", "tiny-gemma3"] {
        let p = common::fixtures().join(dir);
        check::<B>(p.to_str().unwrap(), "The Eiffel Tower is located in the city of", device);
    }
}

fn real_gemma<B: Backend>(device: &B::Device) {
    check::<B>(common::gemma_gguf().to_str().unwrap(), "Mount Kilimanjaro belongs to the continent of", device);
}

test_device!(tiny, fast_equals_full_tiny_cpu, fast_equals_full_tiny_cuda, fast_equals_full_tiny_wgpu);
test_device!(real_gemma, fast_equals_full_gemma_cpu, fast_equals_full_gemma_cuda, fast_equals_full_gemma_wgpu);
