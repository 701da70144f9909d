//! The fast path (reuse the clean run's keys/values, recompute only the last position) equals
//! full recomputation on every intervention primitive, on tiny models and the real Gemma; a
//! growing batch of variants that start at different blocks equals each variant run alone.

use burn_tensor::backend::Backend;
use dissect_model::intervene::{
    run_plans, run_staggered, BlockEdges, CleanRun, EdgeBlocking, ExecPath, Knockout, KnockoutMode, Patch, Plan, PlanHooks, RecordSpec, Sublayer,
};
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
    let rec = || RecordSpec { residual: true, attn_out: true, mlp_out: true, kv: false, positions: vec![vec![last]; just.len()] };
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

/// Variants starting at blocks 0, 1, mid (twice) and the last, each touching only blocks from
/// its start: knockouts at `positions` (`None`: every position), and the edge from the last position
/// to the one before it (inside every sliding window).
fn staggered_plans(n_layers: usize, last: usize, positions: Option<Vec<usize>>) -> (Vec<Plan>, Vec<usize>) {
    let mid = n_layers / 2;
    let starts = vec![0, 1, mid, mid, n_layers - 1];
    let plans = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| match i % 2 {
            0 => Plan {
                knockouts: vec![Knockout { sublayer: Sublayer::Mlp, layers: start..n_layers, positions: positions.clone(), mode: KnockoutMode::Zero }],
                ..Plan::default()
            },
            _ => Plan {
                edges: vec![BlockEdges { layers: start..start + 2, query: last, keys: vec![last - 1], heads: None, arithmetic: EdgeBlocking::PreSoftmax }],
                ..Plan::default()
            },
        })
        .collect();
    (plans, starts)
}

fn check_staggered<B: Backend>(spec: &str, device: &B::Device) {
    let loaded = load::<B>(spec, device).unwrap();
    let m = &loaded.model;
    let ids = loaded.tokenizer.encode("The Eiffel Tower is located in the city of").unwrap().ids;
    let (s, last, n_layers, d) = (ids.len(), ids.len() - 1, m.n_layers(), m.config.hidden);
    let clean = CleanRun::new(m, &ids).unwrap();
    let (plans, starts) = staggered_plans(n_layers, last, None);
    // On the CPU every row's arithmetic is that of a batch of its own, bit for bit.
    let exact = std::any::TypeId::of::<B>() == std::any::TypeId::of::<dissect_model::backend::Cpu>();
    let v = |t: burn_tensor::Tensor<B, 3>| t.into_data().into_vec::<f32>().unwrap();
    let same = |what: &str, ours: &[f32], alone: &[f32]| {
        if exact {
            assert!(ours.iter().zip(alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{spec} {what}: not bit for bit");
        } else {
            assert_close(&format!("{spec} {what}"), ours, alone, 1e-5);
        }
    };

    // Every position, no prefix: the clean stream entering each block, then the variants.
    let all = RecordSpec { residual: true, positions: vec![(0..s).collect()], ..RecordSpec::default() };
    let entering = run_plans(m, &clean, &[Plan::default()], ExecPath::Full, all).unwrap().1.residual;
    let grown = v(run_staggered(m, &plans, &starts, n_layers, |l| entering[l].clone(), None, 0));
    for (i, (plan, &start)) in plans.iter().zip(&starts).enumerate() {
        let mut hooks = PlanHooks::new(m, std::slice::from_ref(plan), 0, s, RecordSpec::default());
        let alone = v(m.run_blocks(entering[start].clone(), start..n_layers, &mut hooks));
        same(&format!("plan {i} from block {start}, every position"), &grown[i * s * d..(i + 1) * s * d], &alone);
    }

    // The last position after the clean prefix (knockout's fast path), plans touching only it.
    let (plans, starts) = staggered_plans(n_layers, last, Some(vec![last]));
    let at_last = RecordSpec { residual: true, positions: vec![vec![last]], ..RecordSpec::default() };
    let entering = run_plans(m, &clean, &[Plan::default()], ExecPath::Fast, at_last).unwrap().1.residual;
    let grown = v(run_staggered(m, &plans, &starts, n_layers, |l| entering[l].clone(), Some(&clean.prefix), last));
    for (i, plan) in plans.iter().enumerate() {
        let (alone, _) = run_plans(m, &clean, std::slice::from_ref(plan), ExecPath::Fast, RecordSpec::default()).unwrap();
        same(&format!("plan {i}, last position"), &grown[i * d..(i + 1) * d], &alone.into_data().into_vec::<f32>().unwrap());
    }
    // The plans do something: a variant equal to the clean stream would not test the rows' order.
    let clean_last = v(entering[n_layers].clone());
    for i in 0..plans.len() {
        assert!(grown[i * d..(i + 1) * d] != clean_last[..], "{spec}: plan {i} changed nothing");
    }
}

fn staggered_tiny<B: Backend>(device: &B::Device) {
    for dir in ["tiny-gpt2", "tiny-gemma3"] {
        check_staggered::<B>(common::fixtures().join(dir).to_str().unwrap(), device);
    }
    // A plan acting before its start would lose that intervention: refused.
    let loaded = load::<B>(common::fixtures().join("tiny-gpt2").to_str().unwrap(), device).unwrap();
    let (plans, _) = staggered_plans(loaded.model.n_layers(), 3, None);
    let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| PlanHooks::staggered(&loaded.model, &plans[1..2], &[2], 0, 4)));
    assert!(early.is_err(), "a plan starting at block 1 given start 2 must be refused");
}

/// `kv_cache` of a stream's first positions, as the prefix of an attention over the last one,
/// gives that position's MHSA output as the attention over the whole stream does: the keys and
/// values (rotated, key-normed) are the ones attention computes. A batch of two streams, the
/// second with its first positions changed, so a cache shared between rows would show.
fn kv_cache_tiny<B: Backend>(device: &B::Device) {
    use burn_tensor::Tensor;
    for dir in ["tiny-gpt2", "tiny-gemma3"] {
        let loaded = load::<B>(common::fixtures().join(dir).to_str().unwrap(), device).unwrap();
        let m = &loaded.model;
        let ids = loaded.tokenizer.encode("The Eiffel Tower is located in the city of").unwrap().ids;
        let (s, d) = (ids.len(), m.config.hidden);
        let all = RecordSpec { residual: true, positions: vec![(0..s).collect()], ..RecordSpec::default() };
        let clean = CleanRun::new(m, &ids).unwrap();
        let stream = run_plans(m, &clean, &[Plan::default()], ExecPath::Full, all).unwrap().1.residual;
        let v = |t: Tensor<B, 3>| t.into_data().into_vec::<f32>().unwrap();
        for l in [0, m.n_layers() - 1] {
            let h = stream[l].clone();
            let changed = Tensor::cat(vec![h.clone().slice([0..1, 0..s - 1]).mul_scalar(-0.5), h.clone().slice([0..1, s - 1..s])], 1);
            let h = Tensor::cat(vec![h, changed], 0);
            let whole = m.attn_sublayer(l, h.clone(), None, &mut dissect_model::NoHooks).slice([0..2, s - 1..s]);
            let prefix = m.kv_cache(l, h.clone().slice([0..2, 0..s - 1]));
            let last = m.attn_sublayer(l, h.slice([0..2, s - 1..s]), Some(&prefix), &mut dissect_model::NoHooks);
            let (whole, last) = (v(whole), v(last));
            assert_close(&format!("{dir} block {l}: last position over kv_cache vs whole stream"), &last, &whole, 1e-5);
            assert!(whole[..d].iter().zip(&whole[d..]).any(|(a, b)| (a - b).abs() > 1e-3), "{dir} block {l}: the changed prefix changed nothing");
        }
    }
}

/// `CleanRun::from_kv` on the keys and values of a whole-prompt pass holds the prefix that
/// `CleanRun::new` computes on its own, and serves the fast path as well.
fn clean_run_from_kv<B: Backend>(device: &B::Device) {
    for dir in ["tiny-gpt2", "tiny-gemma3"] {
        let loaded = load::<B>(common::fixtures().join(dir).to_str().unwrap(), device).unwrap();
        let m = &loaded.model;
        let ids = loaded.tokenizer.encode("The Eiffel Tower is located in the city of").unwrap().ids;
        let s = ids.len();
        let all = RecordSpec { kv: true, positions: vec![(0..s).collect()], ..RecordSpec::default() };
        let alone = CleanRun::new(m, &ids).unwrap();
        let kv = run_plans(m, &alone, &[Plan::default()], ExecPath::Full, all).unwrap().1.kv;
        assert_eq!(kv.len(), m.n_layers(), "{dir}: one cache per block");
        let from = CleanRun::from_kv(&ids, kv).unwrap();
        let v = |t: &burn_tensor::Tensor<B, 4>| t.to_data().into_vec::<f32>().unwrap();
        for (l, (a, b)) in from.prefix.iter().zip(&alone.prefix).enumerate() {
            assert_eq!(a.k.dims(), b.k.dims(), "{dir} block {l}: prefix shape");
            assert_close(&format!("{dir} block {l} keys"), &v(&a.k), &v(&b.k), 1e-5);
            assert_close(&format!("{dir} block {l} values"), &v(&a.v), &v(&b.v), 1e-5);
        }
        let plans = plans_on_last(m.n_layers(), s, m.config.hidden);
        let just: Vec<Plan> = plans.iter().map(|(_, p)| p.clone()).collect();
        let fast = |c: &CleanRun<B>| run_plans(m, c, &just, ExecPath::Fast, RecordSpec::default()).unwrap().0.into_data().into_vec::<f32>().unwrap();
        assert_close(&format!("{dir}: fast path over from_kv vs new"), &fast(&from), &fast(&alone), 1e-5);
    }
    assert!(CleanRun::<B>::check(&[1]).is_err(), "a one-token prompt has no prefix");
}

test_device!(clean_run_from_kv, clean_run_from_kv_tiny_cpu, clean_run_from_kv_tiny_cuda, clean_run_from_kv_tiny_wgpu);
test_device!(kv_cache_tiny, kv_cache_is_attentions_prefix_tiny_cpu, kv_cache_is_attentions_prefix_tiny_cuda, kv_cache_is_attentions_prefix_tiny_wgpu);
test_device!(staggered_tiny, staggered_equals_alone_tiny_cpu, staggered_equals_alone_tiny_cuda, staggered_equals_alone_tiny_wgpu);
test_device!(tiny, fast_equals_full_tiny_cpu, fast_equals_full_tiny_cuda, fast_equals_full_tiny_wgpu);
test_device!(real_gemma, fast_equals_full_gemma_cpu, fast_equals_full_gemma_cuda, fast_equals_full_gemma_wgpu);
