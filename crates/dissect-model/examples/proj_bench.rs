//! Layouts of the vocabulary projection `h · Eᵀ` on the CPU backend (a measurement, not a test).
#![allow(clippy::print_stdout)] // a measurement prints its result
use std::time::Instant;

use burn_tensor::{Distribution, Tensor};
use dissect_model::backend::Cpu;

fn main() {
    let dev = Default::default();
    let (v, d) = (262_144, 640);
    let n: usize = std::env::args().nth(1).map_or(64, |a| a.parse().unwrap());
    let e = Tensor::<Cpu, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &dev);
    let et = e.clone().transpose().into_data();
    let et = Tensor::<Cpu, 2>::from_data(et, &dev);
    let h = Tensor::<Cpu, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
    let gflop = 2.0 * v as f64 * d as f64 * n as f64 / 1e9;
    for (name, f) in [
        ("h · E.transpose() (view)", Box::new(|| h.clone().matmul(e.clone().transpose())) as Box<dyn Fn() -> Tensor<Cpu, 2>>),
        ("h · Eᵀ (contiguous copy)", Box::new(|| h.clone().matmul(et.clone()))),
        ("(E · hᵀ)ᵀ", Box::new(|| e.clone().matmul(h.clone().transpose()).transpose())),
    ] {
        let _ = f().into_data();
        let t = Instant::now();
        for _ in 0..3 {
            let _ = f().into_data();
        }
        let s = t.elapsed().as_secs_f64() / 3.0;
        println!("{name:30} {:.3}s  {:.1} GFLOP/s", s, gflop / s);
    }
}
