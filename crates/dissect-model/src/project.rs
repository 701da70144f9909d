//! Projections of hidden states to the vocabulary.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::Model;
pub use crate::screen::{Answer, Ask, Screening};
use crate::screen::{Screen, Weights};

/// How hidden states are mapped to vocabulary logits; written `notebook` or `logit-lens` in configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Projection {
    /// The paper's notebook: `h · Eᵀ` with the unembedding matrix, no final norm. For a tied
    /// model E is the token embedding; for an untied one (GPT-J) the notebook is silent: we
    /// use the `lm_head` weight without its bias.
    #[default]
    Notebook,
    /// Logit lens: the final norm, then the unembedding with its bias (and the model's final
    /// softcap, if any) — exactly how the model turns its last residual into logits.
    LogitLens,
}

/// Logits `[n, vocab]` of hidden states `[n, hidden]`.
pub fn project<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection) -> Tensor<B, 2> {
    let [n, d] = h.dims();
    match how {
        Projection::LogitLens => model.logits(h.reshape([1, n, d])).reshape([n, model.config.vocab_size]),
        Projection::Notebook => match &model.lm_head {
            Some(head) => h.matmul(head.weight.clone()),
            None => model.tied_unembed(h),
        },
    }
}

/// Rows projected per matmul by [`map_logit_rows`]: 256 rows of Gemma's 262,144-token
/// vocabulary are 256 MiB of logits, and the matmul is at full speed well before that.
const CHUNK_ROWS: usize = 256;

thread_local! {
    /// The host buffer [`map_logit_rows`] writes logits into, kept between calls: a fresh
    /// `rows × vocab` allocation per call costs first-touch page faults on every page (256 MiB
    /// at 256 rows of Gemma), which is a tenth of the matmul's own time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f(logits)` for every row of `h` `[n, hidden]`, in row order (the rows reduced in parallel):
/// the vocabulary view of each row, exactly as [`project`] defines it, without handing the caller
/// `n × vocab` floats.
///
/// On the CPU backend the unembedding is one matmul per 256 rows straight into a host buffer
/// that is reused from call to call: the AVX-512 kernel of [`crate::matmul`] on the
/// unembedding packed at first use (one more copy of it in memory), or the `gemm` crate
/// ([`logits_into`]) on a CPU without AVX-512F. The final norm (logit lens) runs in burn, the
/// bias and the final-logit softcap on the host. Other backends run [`project`]
/// and read its result back. Either way the logits are the same dot products: they differ from
/// [`project`]'s only in f32 summation order.
pub fn map_logit_rows<B: Backend, T: Send>(model: &Model<B>, h: Tensor<B, 2>, how: Projection, f: impl Fn(&[f32]) -> T + Sync) -> Vec<T> {
    let v = model.config.vocab_size;
    let mut out = Vec::with_capacity(h.dims()[0]);
    for_each_logit_chunk(model, h, how, |logits| {
        // Each row's reduction (a rank, a top-k, a softmax: passes over the whole vocabulary)
        // is independent of the others: spread over the threads, collected in row order.
        use rayon::prelude::*;
        out.par_extend(logits.par_chunks(v).map(&f));
    });
    out
}

/// [`map_logit_rows`] where the first row decides what every row is read for: `first` reads row
/// 0, then `each(&decided, row)` reads every row, row 0 included; one projection of all the
/// rows (one pass over the unembedding where two calls would make two). `h` has at least one
/// row.
pub fn map_logit_rows_after_first<B: Backend, F: Sync, T: Send>(
    model: &Model<B>,
    h: Tensor<B, 2>,
    how: Projection,
    first: impl FnOnce(&[f32]) -> F,
    each: impl Fn(&F, &[f32]) -> T + Sync,
) -> (F, Vec<T>) {
    let v = model.config.vocab_size;
    let mut out = Vec::with_capacity(h.dims()[0]);
    let (mut first, mut decided) = (Some(first), None);
    for_each_logit_chunk(model, h, how, |logits| {
        if let Some(first) = first.take() {
            decided = Some(first(&logits[..v]));
        }
        let d = decided.as_ref().expect("decided on the first chunk");
        use rayon::prelude::*;
        out.par_extend(logits.par_chunks(v).map(|row| each(d, row)));
    });
    (decided.expect("h has at least one row"), out)
}

/// The logits of `h`'s rows, [`CHUNK_ROWS`] rows at a time (row-major `[rows, vocab]`), into a
/// host buffer reused from call to call.
fn for_each_logit_chunk<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection, mut each: impl FnMut(&[f32])) {
    let [n, _] = h.dims();
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    for start in (0..n).step_by(CHUNK_ROWS) {
        let rows = h.clone().slice([start..(start + CHUNK_ROWS).min(n)]);
        if !cpu_logits_into(model, &rows, how, &mut buf) {
            let logits = project(model, rows, how).into_data();
            buf.clear();
            buf.extend_from_slice(logits.as_slice::<f32>().expect("logits are f32"));
        }
        each(&buf);
    }
    SCRATCH.with(|s| *s.borrow_mut() = buf);
}

/// The answers to `ask` for every row of `h` `[n, hidden]`, in row order: the target's rank and
/// the top tokens of each row's vocabulary view, exactly as [`map_logit_rows`] with
/// [`Ask::answer`] gives them.
///
/// On the CPU backend with AMX, for the reads [`Model::screen`] selects (by default top-k lists
/// without a rank), the answers come from a bf16 screen of every logit and f32 recomputation of
/// the logits the screen's error bound cannot place ([`crate::screen`]): the same answers, bit
/// for bit, for less f32 arithmetic. Anywhere else, and for a logit-lens view of a model with
/// a final softcap (whose `tanh` the bound does not follow), the f32 path answers.
pub fn read_rows<B: Backend>(model: &Model<B>, h: Tensor<B, 2>, how: Projection, ask: Ask) -> Vec<Answer> {
    if let Some(answers) = screened_answers(model, &h, how, &ask) {
        return answers;
    }
    map_logit_rows(model, h, how, |row| ask.answer(row))
}

thread_local! {
    /// The screen's output buffer, kept between calls for the reason [`SCRATCH`] is.
    static SCREEN_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`read_rows`] through the screen; `None` when it does not apply here.
fn screened_answers<B: Backend>(model: &Model<B>, h: &Tensor<B, 2>, how: Projection, ask: &Ask) -> Option<Vec<Answer>> {
    if !model.screen.screens(ask) || !crate::amx::available() {
        return None;
    }
    let (model, h) = on_cpu(model, h)?;
    if how == Projection::LogitLens && model.config.final_logit_softcap.is_some() {
        return None;
    }
    let [n, d] = h.dims();
    let v = model.config.vocab_size;
    let unembed = unembedding(model);
    let bias = match how {
        Projection::LogitLens => head_bias(model),
        Projection::Notebook => None,
    };
    let mut answers = Vec::with_capacity(n);
    let mut buf = SCREEN_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let done = crate::backend::with_f32_storage(&unembed, |data, [sv, sd]| {
        let w = Weights { data, stride_vocab: usize::try_from(sv).ok()?, stride_hidden: usize::try_from(sd).ok()? };
        let screen = model.screened_unembed.get_or_init(|| Screen::new(w, v, d).map(std::sync::Arc::new)).as_ref()?;
        for start in (0..n).step_by(CHUNK_ROWS) {
            let rows = unembedding_input(model, h.clone().slice([start..(start + CHUNK_ROWS).min(n)]), how);
            let m = rows.dims()[0];
            let rows = rows.into_data().into_vec::<f32>().ok()?;
            answers.extend(screen.answer_rows(w, bias.as_deref(), &rows, m, ask, &mut buf)?);
        }
        Some(())
    });
    SCREEN_SCRATCH.with(|s| *s.borrow_mut() = buf);
    done.flatten()?;
    Some(answers)
}

/// The model and `h` as the CPU backend's types; `None` on another backend.
fn on_cpu<'a, B: Backend>(model: &'a Model<B>, h: &'a Tensor<B, 2>) -> Option<(&'a Model<crate::backend::Cpu>, &'a Tensor<crate::backend::Cpu, 2>)> {
    use std::any::Any;
    Some(((model as &dyn Any).downcast_ref()?, (h as &dyn Any).downcast_ref()?))
}

/// `[vocab, hidden]`: the tied embedding, or the untied head `[hidden, vocab]` as a transposed
/// view.
fn unembedding(model: &Model<crate::backend::Cpu>) -> Tensor<crate::backend::Cpu, 2> {
    match &model.lm_head {
        Some(head) => head.weight.clone().transpose(),
        None => model.embed.clone(),
    }
}

/// What the unembedding multiplies: `h` itself, or after the final norm (logit lens).
fn unembedding_input(model: &Model<crate::backend::Cpu>, h: Tensor<crate::backend::Cpu, 2>, how: Projection) -> Tensor<crate::backend::Cpu, 2> {
    match how {
        Projection::Notebook => h,
        Projection::LogitLens => model.final_norm.forward(h),
    }
}

/// The untied head's bias on the host, which the logit lens adds after the product.
fn head_bias(model: &Model<crate::backend::Cpu>) -> Option<Vec<f32>> {
    let bias = model.lm_head.as_ref()?.bias.clone()?;
    Some(bias.into_data().into_vec::<f32>().expect("f32 bias"))
}

/// [`project`] on the CPU backend into `out` (row-major `[rows × vocab]`); `false`, `out`
/// untouched, for another backend or a non-f32 tensor.
fn cpu_logits_into<B: Backend>(model: &Model<B>, h: &Tensor<B, 2>, how: Projection, out: &mut Vec<f32>) -> bool {
    let Some((model, h)) = on_cpu(model, h) else {
        return false;
    };
    let h = unembedding_input(model, h.clone(), how);
    let unembed = unembedding(model);
    let packed = model.packed_unembed.get_or_init(|| pack(&unembed).map(std::sync::Arc::new));
    match packed {
        Some(packed) => {
            let [n, _] = h.dims();
            let Ok(h) = h.into_data().into_vec::<f32>() else { return false };
            packed.logits_into(&h, n, out);
        }
        None if !logits_into(&unembed, &h, out) => return false,
        None => {}
    }
    if how == Projection::Notebook {
        return true;
    }
    let v = model.config.vocab_size;
    if let Some(bias) = head_bias(model) {
        for row in out.chunks_mut(v) {
            row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
        }
    }
    if let Some(cap) = model.config.final_logit_softcap {
        let cap = cap as f32;
        out.iter_mut().for_each(|x| *x = (*x / cap).tanh() * cap);
    }
    true
}

/// `w` `[vocab, hidden]` (any strides) packed for the AVX-512 kernel; `None` when the CPU lacks
/// AVX-512F or `w` is not f32.
fn pack(w: &Tensor<crate::backend::Cpu, 2>) -> Option<crate::matmul::PackedUnembed> {
    let [v, d] = w.dims();
    crate::backend::with_f32_storage(w, |data, [sv, sd]| crate::matmul::PackedUnembed::pack(data, v, d, usize::try_from(sv).ok()?, usize::try_from(sd).ok()?))?
}

/// `h · Wᵀ` for `w` `[vocab, hidden]` and `h` `[n, hidden]` (any strides, so a transposed view
/// works for either) into `out` as a row-major `[n × vocab]` buffer, by `gemm::gemm` on
/// burn-flex's storage without a copy. `false` (and `out` untouched) when either tensor is not
/// f32.
///
/// The `gemm` crate is the kernel burn-flex's own matmul calls, with the same settings; what
/// calling it here saves is memory traffic, not arithmetic: burn-flex allocates a fresh zeroed
/// output per matmul and copies it once more into an aligned allocation, while `out` keeps its
/// pages from one call to the next.
pub fn logits_into(w: &Tensor<crate::backend::Cpu, 2>, h: &Tensor<crate::backend::Cpu, 2>, out: &mut Vec<f32>) -> bool {
    let ([v, d], [n, dh]) = (w.dims(), h.dims());
    assert_eq!(d, dh, "logits_into: hidden sizes differ");
    use crate::backend::with_f32_storage;
    let done = with_f32_storage(w, |w, ws| {
        with_f32_storage(h, |h, hs| {
            out.clear();
            out.reserve(n * v);
            // SAFETY: dst is `out`'s capacity, n × v row-major; lhs h [n × d] with its own
            // row/column strides; rhs Wᵀ [d × v] is w read with its strides swapped. Both storages
            // stay borrowed for the call. With `read_dst = false` and `beta` 1, gemm writes every
            // element of dst without reading it, so `set_len` covers initialised values only.
            unsafe {
                gemm::gemm(
                    n,
                    v,
                    d,
                    out.as_mut_ptr(),
                    1,
                    v as isize,
                    false,
                    h.as_ptr(),
                    hs[1],
                    hs[0],
                    w.as_ptr(),
                    ws[0],
                    ws[1],
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
                out.set_len(n * v);
            }
        })
    });
    done.flatten().is_some()
}

#[cfg(test)]
mod tests {
    use burn_tensor::{Distribution, Tensor};

    use super::logits_into;
    use crate::backend::Cpu;
    use crate::predict::top_k;

    /// The fast path equals the default one (`Model::tied_unembed`'s `h · E.transpose()`) on
    /// random inputs: the same top-k per row, the same values up to f32 summation order; also
    /// for `h` a slice of a larger tensor and a vocabulary that is no multiple of a block.
    #[test]
    fn logits_into_matches_the_default_path() {
        let dev = Default::default();
        let (v, d) = (4099, 96);
        let e = Tensor::<Cpu, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &dev);
        let big = Tensor::<Cpu, 2>::random([53, d], Distribution::Normal(0.0, 1.0), &dev);
        let mut out = Vec::new();
        for h in [big.clone(), big.clone().slice([5..45]), big.clone().slice([0..1])] {
            let n = h.dims()[0];
            let want = h.clone().matmul(e.clone().transpose()).into_data().into_vec::<f32>().unwrap();
            assert!(logits_into(&e, &h, &mut out));
            assert_eq!(out.len(), n * v);
            let diff = out.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-3, "max |diff| {diff}");
            for (got, want) in out.chunks(v).zip(want.chunks(v)) {
                assert_eq!(top_k(got, 10), top_k(want, 10));
            }
        }
    }
}
