//! `project::map_logit_rows` (the CPU backend's gemm into a reused buffer) gives the logits of
//! `project::project` (burn's matmul), for both projections, tied and untied heads, a head bias
//! and a final-logit softcap, and for more rows than one chunk; `project::read_rows` gives the
//! same ranks and top-k lists whether the screen answers or not.

use burn_tensor::{Distribution, Tensor};
use dissect_model::backend::Cpu;
use dissect_model::predict::top_k;
use dissect_model::project::{map_logit_rows, map_logit_rows_after_first, project, read_rows, Ask, Projection, Screening};
use dissect_model::source::load;

mod common;

fn check(dir: &str, softcap: Option<f64>) {
    let dev = Default::default();
    let path = common::fixtures().join(dir);
    let mut loaded = load::<Cpu>(path.to_str().unwrap(), &dev).unwrap();
    loaded.model.config.final_logit_softcap = softcap;
    let model = &loaded.model.clone();
    let v = model.config.vocab_size;
    // Over one chunk of 256 rows, a few outlier-norm rows among them.
    let h = Tensor::<Cpu, 2>::random([300, model.config.hidden], Distribution::Normal(0.0, 1.0), &dev);
    let h = h.clone() + h.slice([0..300, 0..1]).greater_elem(2.0).float() * 50.0;
    for how in [Projection::Notebook, Projection::LogitLens] {
        let want = project(model, h.clone(), how).into_data().into_vec::<f32>().unwrap();
        let got = map_logit_rows(model, h.clone(), how, <[f32]>::to_vec);
        assert_eq!(got.len(), 300, "{dir} {how:?}: rows");
        for (i, (g, w)) in got.iter().zip(want.chunks(v)).enumerate() {
            let scale = w.iter().fold(1f32, |m, x| m.max(x.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{dir} {how:?} row {i}: max |diff| {diff} (scale {scale})");
            assert_eq!(top_k(g, 5), top_k(w, 5), "{dir} {how:?} row {i}: top 5");
        }
        check_reads(&mut loaded.model.clone(), &h, how, &got);
        // The first row decides what every row is read for, across chunks.
        let (top, at) = map_logit_rows_after_first(model, h.clone(), how, |r| top_k(r, 1)[0], |&t, r| r[t]);
        assert_eq!(top, top_k(&got[0], 1)[0], "{dir} {how:?}: decided on the first row");
        let want_at: Vec<f32> = got.iter().map(|r| r[top]).collect();
        assert_eq!(at, want_at, "{dir} {how:?}: every row read for the first row's top-1");
        assert!(got.iter().any(|r| top_k(r, 1)[0] != top), "{dir}: the rows' own top-1s would pass too");
    }
}

/// `read_rows` under every screening policy answers as the f32 path's logits `logits` do.
fn check_reads(model: &mut dissect_model::Model<Cpu>, h: &Tensor<Cpu, 2>, how: Projection, logits: &[Vec<f32>]) {
    for ask in [Ask { rank_of: Some(7), top: 1 }, Ask { rank_of: None, top: 50 }, Ask { rank_of: Some(3), top: 10 }] {
        let want: Vec<_> = logits.iter().map(|row| ask.answer(row)).collect();
        for policy in [Screening::Off, Screening::TopK, Screening::All] {
            model.screen = policy;
            assert_eq!(read_rows(model, h.clone(), how, ask), want, "{how:?} {ask:?} {policy:?}");
        }
    }
}

#[test]
fn tied_head() {
    check("tiny-gpt2", None);
}

#[test]
fn tied_head_with_softcap() {
    check("tiny-gemma3", Some(3.0));
}

#[test]
fn untied_head_with_bias() {
    check("tiny-gptj", None);
}
