//! Kernels for the vocabulary projection `h · Eᵀ` (f32, `[rows × hidden] · [hidden × vocab]`,
//! Gemma's 640 × 262,144 by default), timed back to back in one process (a measurement, not a test).
//!
//! ```text
//! cargo run --release -p dissect-model --example proj_kernels [-- ROWS[,ROWS...] [ROUNDS]]
//! ```
//!
//! Candidates (each is skipped with a note when its library is not there):
//! - `burn`: what `Model::tied_unembed` does on the CPU backend (burn-flex's matmul, which calls
//!   the `gemm` crate with `Parallelism::Rayon(0)`; `(E · hᵀ)ᵀ` up to 16 rows, `h · E.transpose()`
//!   above), the result read back with `into_data`.
//! - `dissect`: `matmul::PackedUnembed::logits_into`, the AVX-512 kernel that
//!   `project::map_logit_rows` runs on the CPU backend (the unembedding packed once, before the
//!   timing), its output buffer reused from call to call; `project::logits_into` (the `gemm`
//!   crate) on a CPU without AVX-512F.
//! - `gemm-api`: `project::logits_into`, the `gemm` crate into a reused buffer (the fallback).
//! - `gemm-rayon`, `gemm-1t`: `gemm::gemm` called directly on the row-major buffers, all threads
//!   of the rayon pool or one thread; `gemm-chunks`: one single-threaded `gemm::gemm` per slice
//!   of 32,768 vocabulary columns, the slices spread over the rayon pool; `gemm-fresh`,
//!   `gemm-thp`: `gemm-rayon` into a buffer allocated per call (zeroed; or uninitialised with
//!   transparent huge pages requested), which is what returning a new tensor costs.
//! - `openblas`, `blis`: `cblas_sgemm` of Debian's `libopenblas0-pthread` / `libblis4-pthread`
//!   (`apt-get install libopenblas-dev libblis-dev`), loaded with `dlopen`.
//! - `mkl`: MKL's `sgemm_` inside PyTorch's `libtorch_cpu.so` (the library `torch.matmul` uses),
//!   loaded with `dlopen` when `PROJ_MKL_LIB` names it:
//!   `PROJ_MKL_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib/libtorch_cpu.so`.
//!   `mkl-t`: the same call writing the logits transposed (`[vocab × rows]`, torch's `e @ h.t()`),
//!   MKL's faster layout on this shape; `÷mkl-best` divides by the faster of the two per round.
//!
//! Environment: `PROJ_ONLY` a comma-separated list of the candidates to run (default: all);
//! `PROJ_JSON` a file to write each candidate's GFLOP/s and ratio to MKL's best per row count
//! into (what `cargo xtask bench projection` reads); `PROJ_THREADS` (2) threads for every candidate (rayon's global pool, OpenBLAS,
//! BLIS, MKL through `OMP_NUM_THREADS`); `PROJ_OPENBLAS_LIB`, `PROJ_BLIS_LIB` other library paths.
//!
//! Protocol: every candidate is called once (warm-up, and its output checked against the plain
//! reference), then `ROUNDS` rounds each time every candidate in turn (the order rotated per
//! round) for about 0.3 s of calls. A candidate's GFLOP/s is its median over the rounds; a ratio
//! is the median over the rounds of the ratio within a round, so both sides of a ratio saw about
//! the same machine load. The load average is printed before and after.
//!
//! Check: for up to 8 rows (evenly spaced), the exact dot products (f64 accumulation, rounded to
//! f32) over the whole vocabulary; every candidate's max |difference| to them, and whether its
//! argmax and ordered top-10 are the same. `plain-f32` (a sequential f32 dot product) is listed as
//! the yardstick for the max difference.
#![allow(clippy::print_stdout)] // a measurement prints its result

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Instant;

use burn_tensor::{Tensor, TensorData};
use dissect_model::backend::Cpu;
use dissect_model::matmul::PackedUnembed;
use dissect_model::project::logits_into;
use rayon::prelude::*;

const VOCAB: usize = 262_144;
const HIDDEN: usize = 640;
const CHUNK: usize = 32_768;
const TOPK: usize = 10;

/// Deterministic uniform values in [-1, 1) (SplitMix64).
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;

/// A symbol of a shared library loaded with `RTLD_LOCAL` (so two BLAS libraries can live in one
/// process); the library stays loaded for the process's lifetime.
fn load(path: &str, symbols: &[&str]) -> Result<Vec<*mut c_void>, String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlsym/dlerror with NUL-terminated strings; the handle is never closed.
    unsafe {
        let h = dlopen(c.as_ptr(), RTLD_NOW);
        if h.is_null() {
            return Err(std::ffi::CStr::from_ptr(dlerror()).to_string_lossy().into_owned());
        }
        symbols
            .iter()
            .map(|s| {
                let cs = CString::new(*s).map_err(|e| e.to_string())?;
                let p = dlsym(h, cs.as_ptr());
                if p.is_null() {
                    Err(format!("{path}: no symbol {s}"))
                } else {
                    Ok(p)
                }
            })
            .collect()
    }
}

/// `cblas_sgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type CblasSgemm = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);
/// Fortran `sgemm_(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`, column-major.
type FortranSgemm = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const c_int,
    *const c_int,
    *const c_int,
    *const f32,
    *const f32,
    *const c_int,
    *const f32,
    *const c_int,
    *const f32,
    *mut f32,
    *const c_int,
);
const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

/// `c[n × v] = h[n × d] · e[v × d]ᵀ`, all row-major. A kernel that returns a fresh buffer, as
/// the projection API does, copies it into `c` only when told to (for the check, not when timed).
type Kernel<'a> = Box<dyn Fn(&[f32], usize, &mut [f32], bool) + 'a>;

struct Candidate<'a> {
    name: &'static str,
    run: Kernel<'a>,
}

fn cblas_kernel<'a>(f: CblasSgemm, e: &'a [f32], v: usize, d: usize) -> Kernel<'a> {
    Box::new(move |h, n, c, _| {
        // SAFETY: the sizes and leading dimensions describe the three buffers exactly.
        unsafe {
            f(
                CBLAS_ROW_MAJOR,
                CBLAS_NO_TRANS,
                CBLAS_TRANS,
                n as c_int,
                v as c_int,
                d as c_int,
                1.0,
                h.as_ptr(),
                d as c_int,
                e.as_ptr(),
                d as c_int,
                0.0,
                c.as_mut_ptr(),
                v as c_int,
            )
        }
    })
}

/// `c` as a row-major `[n × v]` matrix written through a raw pointer from several threads, each
/// to its own columns.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: the threads write disjoint column ranges.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}
impl Dst {
    /// A method, so that a closure captures the whole `Dst` (Send) rather than its raw pointer.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `gemm::gemm` into `c` (row-major `[n × v]`).
fn gemm_into(e: &[f32], v: usize, d: usize, h: &[f32], n: usize, c: *mut f32, par: gemm::Parallelism) {
    // SAFETY: dst [n × v] row-major, lhs h [n × d] row-major, rhs eᵀ [d × v] (column stride d).
    unsafe { gemm::gemm(n, v, d, c, 1, v as isize, false, h.as_ptr(), 1, d as isize, e.as_ptr(), d as isize, 1, 0.0, 1.0, false, false, false, par) }
}

extern "C" {
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}
const MADV_HUGEPAGE: c_int = 14;

/// `gemm::gemm` into a buffer allocated per call, as a projection that returns a new tensor
/// must: zeroed (`vec![0.0; len]`, what burn-flex's `FlexTensor::empty` does), or uninitialised
/// with transparent huge pages requested before the first write (`thp`).
fn gemm_fresh_kernel<'a>(e: &'a [f32], v: usize, d: usize, par: gemm::Parallelism, thp: bool) -> Kernel<'a> {
    Box::new(move |h, n, c, keep| {
        let len = n * v;
        let out = if thp {
            let mut out: Vec<f32> = Vec::with_capacity(len);
            let (p, page) = (out.as_mut_ptr() as usize, 4096);
            let start = p.next_multiple_of(page);
            // SAFETY: a page-aligned range inside the allocation; advice only, never fails the write.
            unsafe { madvise(start as *mut c_void, (p + len * 4 - start) / page * page, MADV_HUGEPAGE) };
            gemm_into(e, v, d, h, n, out.as_mut_ptr(), par);
            // SAFETY: gemm wrote all n × v elements (read_dst = false).
            unsafe { out.set_len(len) };
            out
        } else {
            let mut out = vec![0f32; len];
            gemm_into(e, v, d, h, n, out.as_mut_ptr(), par);
            out
        };
        if keep {
            c.copy_from_slice(&out);
        }
    })
}

fn gemm_kernel<'a>(e: &'a [f32], v: usize, d: usize, par: gemm::Parallelism) -> Kernel<'a> {
    Box::new(move |h, n, c, _| gemm_into(e, v, d, h, n, c.as_mut_ptr(), par))
}

fn gemm_chunks_kernel<'a>(e: &'a [f32], v: usize, d: usize) -> Kernel<'a> {
    Box::new(move |h, n, c, _| {
        let dst = Dst(c.as_mut_ptr());
        (0..v.div_ceil(CHUNK)).into_par_iter().for_each(|i| {
            let (j0, w) = (i * CHUNK, CHUNK.min(v - i * CHUNK));
            // SAFETY: columns j0..j0 + w of dst (row stride v) and rows j0..j0 + w of e.
            unsafe {
                gemm::gemm(
                    n,
                    w,
                    d,
                    dst.at(j0),
                    1,
                    v as isize,
                    false,
                    h.as_ptr(),
                    1,
                    d as isize,
                    e.as_ptr().add(j0 * d),
                    d as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
    })
}

fn plain_f32(h: &[f32], e: &[f32], d: usize, c: &mut [f32]) {
    c.par_iter_mut().enumerate().for_each(|(j, out)| {
        let er = &e[j * d..(j + 1) * d];
        let mut s = 0f32;
        for k in 0..d {
            s += h[k] * er[k];
        }
        *out = s;
    });
}

fn exact(h: &[f32], e: &[f32], d: usize, c: &mut [f32]) {
    c.par_iter_mut().enumerate().for_each(|(j, out)| {
        let er = &e[j * d..(j + 1) * d];
        *out = h.iter().zip(er).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() as f32;
    });
}

fn top(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.select_nth_unstable_by(k, |&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    idx
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "?".into(), |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    let n = x.len();
    if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: Vec<usize> =
        args.next().map_or_else(|| vec![1, 8, 64, 256], |a| a.split(',').map(|r| r.parse().expect("ROWS: comma-separated integers")).collect());
    let rounds: usize = args.next().map_or(5, |a| a.parse().expect("ROUNDS: an integer"));
    let threads: usize = std::env::var("PROJ_THREADS").map_or(2, |t| t.parse().expect("PROJ_THREADS: an integer"));
    let (v, d) = (VOCAB, HIDDEN);
    // MKL (libgomp) and OpenBLAS read these when they are loaded; OpenBLAS's idle threads
    // otherwise spin for ~0.1 s after each call, on the cores the next candidate runs on.
    for (k, val) in [("OMP_NUM_THREADS", threads.to_string()), ("MKL_NUM_THREADS", threads.to_string()), ("OPENBLAS_THREAD_TIMEOUT", "4".into())] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, val); // before any other thread exists
        }
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");

    let e = random(v * d, 1);
    let dev = Default::default();
    let e_burn = Tensor::<Cpu, 2>::from_data(TensorData::new(e.clone(), [v, d]), &dev);

    let fast_out = std::cell::RefCell::new(Vec::new());
    let gemm_out = std::cell::RefCell::new(Vec::new());
    let packed = PackedUnembed::pack(&e, v, d, d, 1);
    let mkl_t_out = std::cell::RefCell::new(Vec::new());
    let mut cands: Vec<Candidate<'_>> = vec![
        Candidate {
            name: "burn",
            run: Box::new(|h, n, c, keep| {
                let ht = Tensor::<Cpu, 2>::from_data(TensorData::new(h.to_vec(), [n, d]), &dev);
                let logits = if n <= 16 { e_burn.clone().matmul(ht.transpose()).transpose() } else { ht.matmul(e_burn.clone().transpose()) };
                let data = logits.into_data();
                if keep {
                    c.copy_from_slice(data.as_slice::<f32>().expect("f32"));
                }
            }),
        },
        Candidate {
            name: "dissect",
            run: Box::new(|h, n, c, keep| {
                let mut out = fast_out.borrow_mut();
                match &packed {
                    Some(p) => p.logits_into(h, n, &mut out),
                    None => assert!(logits_into(&e_burn, &Tensor::<Cpu, 2>::from_data(TensorData::new(h.to_vec(), [n, d]), &dev), &mut out)),
                }
                if keep {
                    c.copy_from_slice(&out);
                }
            }),
        },
        Candidate {
            name: "gemm-api",
            run: Box::new(|h, n, c, keep| {
                let ht = Tensor::<Cpu, 2>::from_data(TensorData::new(h.to_vec(), [n, d]), &dev);
                let mut out = gemm_out.borrow_mut();
                assert!(logits_into(&e_burn, &ht, &mut out));
                if keep {
                    c.copy_from_slice(&out);
                }
            }),
        },
        Candidate { name: "gemm-rayon", run: gemm_kernel(&e, v, d, gemm::Parallelism::Rayon(threads)) },
        Candidate { name: "gemm-chunks", run: gemm_chunks_kernel(&e, v, d) },
        Candidate { name: "gemm-1t", run: gemm_kernel(&e, v, d, gemm::Parallelism::None) },
        Candidate { name: "gemm-fresh", run: gemm_fresh_kernel(&e, v, d, gemm::Parallelism::Rayon(threads), false) },
        Candidate { name: "gemm-thp", run: gemm_fresh_kernel(&e, v, d, gemm::Parallelism::Rayon(threads), true) },
    ];
    let mut notes = Vec::new();
    let lib = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    match load(&lib("PROJ_OPENBLAS_LIB", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"), &["cblas_sgemm", "openblas_set_num_threads"]) {
        Ok(s) => {
            // SAFETY: the symbols' C signatures.
            let (f, set): (CblasSgemm, unsafe extern "C" fn(c_int)) =
                unsafe { (std::mem::transmute::<*mut c_void, CblasSgemm>(s[0]), std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int)>(s[1])) };
            unsafe { set(threads as c_int) };
            cands.push(Candidate { name: "openblas", run: cblas_kernel(f, &e, v, d) });
        }
        Err(err) => notes.push(format!("openblas skipped: {err}")),
    }
    match load(&lib("PROJ_BLIS_LIB", "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4"), &["cblas_sgemm", "bli_thread_set_num_threads"]) {
        Ok(s) => {
            // SAFETY: the symbols' C signatures (`bli_thread_set_num_threads(dim_t)`, dim_t = i64).
            let (f, set): (CblasSgemm, unsafe extern "C" fn(i64)) =
                unsafe { (std::mem::transmute::<*mut c_void, CblasSgemm>(s[0]), std::mem::transmute::<*mut c_void, unsafe extern "C" fn(i64)>(s[1])) };
            unsafe { set(threads as i64) };
            cands.push(Candidate { name: "blis", run: cblas_kernel(f, &e, v, d) });
        }
        Err(err) => notes.push(format!("blis skipped: {err}")),
    }
    let mkl = match std::env::var("PROJ_MKL_LIB") {
        Ok(path) => match load(&path, &["sgemm_"]) {
            Ok(s) => {
                // SAFETY: the symbol's Fortran signature.
                let f: FortranSgemm = unsafe { std::mem::transmute::<*mut c_void, FortranSgemm>(s[0]) };
                let e = &e;
                cands.push(Candidate {
                    name: "mkl",
                    run: Box::new(move |h, n, c, _| {
                        // Row-major c [n × v] is column-major cᵀ [v × n] = eᵀᵀ · hᵀ: e read as a
                        // column-major [d × v] matrix, transposed; h as a column-major [d × n].
                        let (m, nn, k, one, zero) = (v as c_int, n as c_int, d as c_int, 1f32, 0f32);
                        // SAFETY: the sizes and leading dimensions describe the three buffers.
                        unsafe { f(c"T".as_ptr(), c"N".as_ptr(), &m, &nn, &k, &one, e.as_ptr(), &k, h.as_ptr(), &k, &zero, c.as_mut_ptr(), &m) }
                    }),
                });
                cands.push(Candidate {
                    name: "mkl-t",
                    run: Box::new(move |h, n, c, keep| {
                        // The logits transposed, row-major [v × n] (torch's `e @ h.t()`, MKL's
                        // faster layout here): column-major c [n × v] = hᵀᵀ · eᵀ.
                        let mut t = mkl_t_out.borrow_mut();
                        t.resize(n * v, 0.0);
                        let (nn, vv, k, one, zero) = (n as c_int, v as c_int, d as c_int, 1f32, 0f32);
                        // SAFETY: the sizes and leading dimensions describe the three buffers.
                        unsafe { f(c"T".as_ptr(), c"N".as_ptr(), &nn, &vv, &k, &one, h.as_ptr(), &k, e.as_ptr(), &k, &zero, t.as_mut_ptr(), &nn) }
                        if keep {
                            for (j, col) in t.chunks(n).enumerate() {
                                for (r, &x) in col.iter().enumerate() {
                                    c[r * v + j] = x;
                                }
                            }
                        }
                    }),
                });
                true
            }
            Err(err) => {
                notes.push(format!("mkl skipped: {err}"));
                false
            }
        },
        Err(_) => {
            notes.push("mkl skipped: PROJ_MKL_LIB not set".into());
            false
        }
    };

    if let Ok(only) = std::env::var("PROJ_ONLY") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        cands.retain(|c| only.contains(&c.name));
    }
    let mkl = mkl && cands.iter().any(|c| c.name.starts_with("mkl"));
    let mut json_rows = Vec::new();
    println!("vocab {v}, hidden {d}, {threads} threads, {rounds} rounds; load average {}", loadavg());
    for n in notes {
        println!("  {n}");
    }
    for &n in &rows {
        let h = random(n * d, 1000 + n as u64);
        let gflop = 2.0 * (n * v * d) as f64 / 1e9;

        // The plain reference on up to 8 evenly spaced rows.
        let checked: Vec<usize> = if n <= 8 { (0..n).collect() } else { (0..8).map(|i| i * (n - 1) / 7).collect() };
        let mut reference = vec![vec![0f32; v]; checked.len()];
        let mut plain = vec![vec![0f32; v]; checked.len()];
        for (i, &r) in checked.iter().enumerate() {
            exact(&h[r * d..(r + 1) * d], &e, d, &mut reference[i]);
            plain_f32(&h[r * d..(r + 1) * d], &e, d, &mut plain[i]);
        }
        let check = |c: &[f32]| {
            let (mut diff, mut argmax_bad, mut top_bad) = (0f32, 0, 0);
            for (i, &r) in checked.iter().enumerate() {
                let row = &c[r * v..(r + 1) * v];
                diff = row.iter().zip(&reference[i]).fold(diff, |m, (a, b)| m.max((a - b).abs()));
                let (t, tr) = (top(row, TOPK), top(&reference[i], TOPK));
                argmax_bad += usize::from(t[0] != tr[0]);
                top_bad += usize::from(t != tr);
            }
            (diff, argmax_bad, top_bad)
        };
        let plain_diff = plain.iter().zip(&reference).fold(0f32, |m, (p, r)| p.iter().zip(r).fold(m, |m, (a, b)| m.max((a - b).abs())));

        let mut c = vec![0f32; n * v];
        let mut checks = Vec::new();
        let mut reps = Vec::new();
        for cand in &cands {
            c.fill(f32::NAN);
            let t = Instant::now();
            (cand.run)(&h, n, &mut c, true);
            let s = t.elapsed().as_secs_f64();
            checks.push(check(&c));
            reps.push(((0.3 / s).round() as usize).clamp(1, 100));
        }
        let mut secs = vec![Vec::new(); cands.len()];
        for round in 0..rounds {
            for j in 0..cands.len() {
                let i = (j + round) % cands.len();
                let t = Instant::now();
                for _ in 0..reps[i] {
                    (cands[i].run)(&h, n, &mut c, false);
                }
                secs[i].push(t.elapsed().as_secs_f64() / reps[i] as f64);
            }
        }
        let ratio = |i: usize, base: usize| median((0..rounds).map(|r| secs[base][r] / secs[i][r]).collect());
        let mkl_idx: Vec<usize> = if mkl { (0..cands.len()).filter(|&i| cands[i].name.starts_with("mkl")).collect() } else { Vec::new() };
        // Per round, the faster of MKL's two output layouts.
        let vs_mkl_best = |i: usize| median((0..rounds).map(|r| mkl_idx.iter().map(|&m| secs[m][r]).fold(f64::INFINITY, f64::min) / secs[i][r]).collect());
        println!();
        println!("rows {n} ({gflop:.2} GFLOP/call; {} rows checked, plain-f32 max |diff| {plain_diff:.2e}); load average {}", checked.len(), loadavg());
        println!(
            "  {:12} {:>9} {:>9} {:>8} {:>9} {:>8} {:>11} {:>7} {:>7}",
            "kernel", "GFLOP/s", "ms/call", "÷mkl", "÷mkl-best", "÷burn", "max|diff|", "argmax", "top-10"
        );
        let mut kernels = serde_json::Map::new();
        for (i, cand) in cands.iter().enumerate() {
            let s = median(secs[i].clone());
            let (diff, a, t) = checks[i];
            kernels.insert(
                cand.name.into(),
                serde_json::json!({
                    "gflops": gflop / s,
                    "vs_mkl_best": if mkl { Some(vs_mkl_best(i)) } else { None },
                    "argmax_equal": a == 0,
                    "top10_equal": t == 0,
                    "max_abs_diff": diff,
                }),
            );
        }
        json_rows.push(serde_json::json!({ "rows": n, "kernels": kernels }));
        for (i, cand) in cands.iter().enumerate() {
            let s = median(secs[i].clone());
            let (vs_mkl, vs_best) = match mkl_idx.first() {
                Some(&m) => (format!("{:.2}", ratio(i, m)), format!("{:.2}", vs_mkl_best(i))),
                None => ("-".into(), "-".into()),
            };
            let (diff, a, t) = checks[i];
            let k = checked.len();
            println!(
                "  {:12} {:>9.1} {:>9.1} {:>8} {:>9} {:>8.2} {:>11.2e} {:>7} {:>7}",
                cand.name,
                gflop / s,
                s * 1e3,
                vs_mkl,
                vs_best,
                ratio(i, 0),
                diff,
                format!("{}/{k}", k - a),
                format!("{}/{k}", k - t)
            );
        }
    }
    println!();
    println!("load average {}", loadavg());
    if let Ok(path) = std::env::var("PROJ_JSON") {
        let doc = serde_json::json!({ "vocab": v, "hidden": d, "threads": threads, "rounds": rounds, "results": json_rows });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("PROJ_JSON: cannot write the file");
    }
}
