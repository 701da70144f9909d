//! The screened projection against the f32 path on real hidden states: every layer's residual
//! at every position of a few prompts, read for a target's rank and the top 1, and for the top
//! 500. Prints the time of each path per row and how many logits the screen left to the f32
//! arithmetic: `cargo run --release -p dissect-model --example screen_bench [model]`.
#![allow(clippy::print_stdout)] // an example prints its result
use burn_tensor::Tensor;
use dissect_model::backend::Cpu;
use dissect_model::project::{read_rows, Ask, Projection, Screening};
use dissect_model::source::load;
use dissect_model::RecordAll;

fn main() {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "gemma3-270m".into());
    let mut l = load::<Cpu>(&spec, &Default::default()).unwrap();
    let prompts = [
        "The Eiffel Tower is located in the city of",
        "Barack Obama was born in the state of",
        "The native language of Jean Alfred Fournier is",
        "Toyota Camry is produced by",
    ];
    let d = l.model.config.hidden;
    let mut rows = Vec::new();
    let mut target = 0;
    for p in prompts {
        let ids = l.tokenizer.encode(p).unwrap().ids;
        let mut rec = RecordAll::default();
        l.model.forward(l.model.ids_tensor(std::slice::from_ref(&ids)).unwrap(), &mut rec);
        for h in &rec.residual {
            let n = ids.len();
            rows.push(h.clone().reshape([n, d]));
        }
        target = ids[ids.len() - 1] as usize;
    }
    let h = Tensor::cat(rows, 0);
    let n = h.dims()[0];
    println!("{n} rows of {spec}, hidden {d}");
    if std::env::var_os("OUTLIERS").is_some() {
        for (name, x) in [("lens", l.model.final_norm.forward(h.clone())), ("raw", h.clone())] {
            let x = x.into_data().into_vec::<f32>().unwrap();
            let mut ratios = vec![Vec::new(); 4];
            for row in x.chunks(d) {
                let mut sq: Vec<f64> = row.iter().map(|&v| f64::from(v).powi(2)).collect();
                sq.sort_by(|a, b| b.total_cmp(a));
                let total: f64 = sq.iter().sum();
                for (j, m) in [4, 16, 32, 64].into_iter().enumerate() {
                    ratios[j].push((total / sq[m..].iter().sum::<f64>()).sqrt());
                }
            }
            for (j, m) in [4, 16, 32, 64].into_iter().enumerate() {
                let r = &mut ratios[j];
                r.sort_by(|a, b| a.total_cmp(b));
                println!("{name}: |h| / |h without top {m}|: median {:.2}, 10% {:.2}, 90% {:.2}", r[r.len() / 2], r[r.len() / 10], r[r.len() * 9 / 10]);
            }
        }
        return;
    }
    for how in [Projection::LogitLens, Projection::Notebook] {
        for ask in [Ask { rank_of: Some(target), top: 1 }, Ask { rank_of: None, top: 500 }, Ask { rank_of: Some(target), top: 10 }] {
            let mut times = [0f64; 2];
            let mut answers = [Vec::new(), Vec::new()];
            for round in 0..3 {
                for (i, screen) in [Screening::Off, Screening::All].into_iter().enumerate() {
                    l.model.screen = screen;
                    let s0 = dissect_model::screen::stats();
                    let t = std::time::Instant::now();
                    answers[i] = read_rows(&l.model, h.clone(), how, ask);
                    let dt = t.elapsed().as_secs_f64();
                    if round > 0 {
                        times[i] += dt / 2.0;
                    }
                    let s1 = dissect_model::screen::stats();
                    if screen == Screening::All && round == 2 {
                        let rows = (s1[0] - s0[0]).max(1) as f64;
                        println!(
                            "{how:?} {ask:?}: f32 {:.2} ms/row, screened {:.2} ms/row ({:.2}x); narrowed {:.0}/row, recomputed {:.1}/row",
                            times[0] * 1e3 / n as f64,
                            times[1] * 1e3 / n as f64,
                            times[0] / times[1],
                            (s1[1] - s0[1]) as f64 / rows,
                            (s1[2] - s0[2]) as f64 / rows
                        );
                    }
                }
            }
            assert_eq!(answers[0], answers[1], "the screen changed an answer");
        }
    }
}
