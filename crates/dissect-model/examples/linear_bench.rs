//! The CPU backend's linear-layer matmul `x · W` (`W` row-major `[in, out]`) at the row counts
//! the experiments use, against burn's matmul (a measurement, not a test).
//!
//! ```text
//! cargo run --release -p dissect-model --example linear_bench [-- IN,OUT [ROWS,...]]
//! ```
#![allow(clippy::print_stdout)] // a measurement prints its result
use std::time::Instant;

use burn_tensor::{Distribution, Tensor};
use dissect_model::backend::Cpu;
use dissect_model::matmul::matmul_into;

fn main() {
    let mut args = std::env::args().skip(1);
    let shape: Vec<usize> = args.next().map_or_else(|| vec![640, 2048], |a| a.split(',').map(|x| x.parse().expect("IN,OUT")).collect());
    let rows: Vec<usize> = args.next().map_or_else(|| vec![1, 6, 12, 24, 54, 128], |a| a.split(',').map(|x| x.parse().expect("ROWS")).collect());
    let (k, n) = (shape[0], shape[1]);
    let dev = Default::default();
    let w = Tensor::<Cpu, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &dev);
    let wv = w.clone().into_data().into_vec::<f32>().unwrap();
    println!("x [rows, {k}] . W [{k}, {n}]: GFLOP/s (median of 5 rounds)");
    println!("{:>6} {:>10} {:>10} {:>8}", "rows", "dissect", "burn", "ratio");
    for m in rows {
        let x = Tensor::<Cpu, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
        let xv = x.clone().into_data().into_vec::<f32>().unwrap();
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        let reps = ((0.05 / (gflop / 50.0)).ceil() as usize).clamp(3, 2000);
        let mut out = Vec::new();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                assert!(matmul_into(&xv, m, k, &wv, n, &mut out));
            }
            ours.push(gflop * reps as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            for _ in 0..reps {
                let _ = x.clone().matmul(w.clone()).into_data();
            }
            theirs.push(gflop * reps as f64 / t.elapsed().as_secs_f64());
        }
        ours.sort_by(f64::total_cmp);
        theirs.sort_by(f64::total_cmp);
        println!("{m:>6} {:>10.1} {:>10.1} {:>7.2}x", ours[2], theirs[2], ours[2] / theirs[2]);
    }
}
