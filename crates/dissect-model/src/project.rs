//! Projections of hidden states to the vocabulary.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::Model;

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

/// Below this many rows [`project_rows_fast`] leaves the projection to [`project`]: there
/// `Model::tied_unembed`'s `(E · hᵀ)ᵀ` is as fast or faster and the output is small.
const FAST_MIN_ROWS: usize = 17;

/// Opt-in CPU variant of [`project`]: the logits of `h` `[n, hidden]` as one row-major
/// `[n × vocab]` buffer in `out`, which the caller keeps and passes again.
///
/// For the tied [`Projection::Notebook`] (Gemma) with more than 16 rows, `h · Eᵀ` is computed by
/// the `gemm` crate straight into `out` (the same kernel and settings burn-flex's matmul uses).
/// What it saves is not arithmetic but memory traffic: burn-flex allocates a fresh zeroed
/// `n × vocab` output per matmul (256 MiB for 256 rows of Gemma's vocabulary), and
/// `FlexTensor::empty` builds it as a `Vec<u8>` that `Bytes` then copies into a 16-byte-aligned
/// allocation, so every call pays first-touch page faults on two such buffers plus a copy; `out`
/// keeps its pages from one call to the next. Every other case (the logit lens, an untied head,
/// 16 rows or fewer, a non-f32 tensor) runs [`project`] and copies its result into `out`.
///
/// Measured with `cargo run --release -p dissect-model --example proj_kernels` (`fast-api`):
/// 2 threads, 256 rows, about 1.45x the default path's GFLOP/s.
pub fn project_rows_fast(model: &Model<crate::backend::Cpu>, h: Tensor<crate::backend::Cpu, 2>, how: Projection, out: &mut Vec<f32>) {
    let [n, _] = h.dims();
    if how == Projection::Notebook && model.lm_head.is_none() && n >= FAST_MIN_ROWS && tied_logits_into(&model.embed, &h, out) {
        return;
    }
    let logits = project(model, h, how).into_data();
    out.clear();
    out.extend_from_slice(logits.as_slice::<f32>().expect("the CPU backend's logits are f32"));
}

/// `h · Eᵀ` for `e` `[vocab, hidden]` and `h` `[n, hidden]` (any strides) into `out` as a
/// row-major `[n × vocab]` buffer, by `gemm::gemm` on burn-flex's storage without a copy.
/// `false` (and `out` untouched) when either tensor is not f32.
pub fn tied_logits_into(e: &Tensor<crate::backend::Cpu, 2>, h: &Tensor<crate::backend::Cpu, 2>, out: &mut Vec<f32>) -> bool {
    let ([v, d], [n, dh]) = (e.dims(), h.dims());
    assert_eq!(d, dh, "tied_logits_into: hidden sizes differ");
    let (e, h) = (e.clone().into_primitive().tensor(), h.clone().into_primitive().tensor());
    if e.dtype() != burn_tensor::DType::F32 || h.dtype() != burn_tensor::DType::F32 {
        return false;
    }
    let (es, hs) = (e.layout().strides(), h.layout().strides());
    let (e_ptr, h_ptr) = (e.storage::<f32>()[e.layout().start_offset()..].as_ptr(), h.storage::<f32>()[h.layout().start_offset()..].as_ptr());
    out.clear();
    out.reserve(n * v);
    // SAFETY: dst is `out`'s capacity, n × v row-major; lhs h [n × d] with its own row/column
    // strides; rhs Eᵀ [d × v] is e read with its strides swapped. Both stay borrowed (the
    // primitives above hold their storage) for the call. With `read_dst = false` and `beta` 1,
    // gemm writes every element of dst without reading it, so `set_len` covers initialised
    // values only.
    unsafe {
        gemm::gemm(
            n,
            v,
            d,
            out.as_mut_ptr(),
            1,
            v as isize,
            false,
            h_ptr,
            hs[1],
            hs[0],
            e_ptr,
            es[0],
            es[1],
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
        out.set_len(n * v);
    }
    true
}

#[cfg(test)]
mod tests {
    use burn_tensor::{Distribution, Tensor};

    use super::tied_logits_into;
    use crate::backend::Cpu;
    use crate::predict::top_k;

    /// The fast path equals the default one (`Model::tied_unembed`'s `h · E.transpose()`) on
    /// random inputs: the same top-k per row, the same values up to f32 summation order; also
    /// for `h` a slice of a larger tensor and a vocabulary that is no multiple of a block.
    #[test]
    fn tied_logits_into_matches_the_default_path() {
        let dev = Default::default();
        let (v, d) = (4099, 96);
        let e = Tensor::<Cpu, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &dev);
        let big = Tensor::<Cpu, 2>::random([53, d], Distribution::Normal(0.0, 1.0), &dev);
        let mut out = Vec::new();
        for h in [big.clone(), big.clone().slice([5..45]), big.clone().slice([0..1])] {
            let n = h.dims()[0];
            let want = h.clone().matmul(e.clone().transpose()).into_data().into_vec::<f32>().unwrap();
            assert!(tied_logits_into(&e, &h, &mut out));
            assert_eq!(out.len(), n * v);
            let diff = out.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-3, "max |diff| {diff}");
            for (got, want) in out.chunks(v).zip(want.chunks(v)) {
                assert_eq!(top_k(got, 10), top_k(want, 10));
            }
        }
    }
}
