//! Host-side weights under canonical, architecture-neutral names, before they go to a device.
//!
//! Canonical names (all linear weights stored `[in, out]`, so `y = x · W + b`):
//! `embed` `[vocab, hidden]`, `pos_embed` `[positions, hidden]`,
//! `blocks.{i}.{attn_norm,q_norm,k_norm,post_attn_norm,mlp_norm,post_mlp_norm}.{weight,bias}`,
//! `blocks.{i}.{q,k,v,o,up,gate,down}.{weight,bias}`, `final_norm.{weight,bias}`,
//! `lm_head.{weight,bias}` (absent when tied to `embed`).

use std::collections::BTreeMap;

use crate::error::ModelError;

/// A dense f32 tensor in host memory.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// The values, row-major (last dimension fastest).
    pub data: Vec<f32>,
    /// Dimensions, outermost first, as PyTorch prints them.
    pub shape: Vec<usize>,
}

impl HostTensor {
    /// Wraps row-major `data`; its length must be the product of `shape` (checked in debug builds).
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        HostTensor { data, shape }
    }

    /// Transpose a 2-D tensor (PyTorch `Linear` / GGUF `[out, in]` to our `[in, out]`).
    pub fn transposed(&self) -> HostTensor {
        let [r, c] = [self.shape[0], self.shape[1]];
        let mut out = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        HostTensor::new(out, vec![c, r])
    }

    /// Applies `f` to every value (e.g. Gemma's `1 + w` norm weights).
    pub fn map(mut self, f: impl Fn(f32) -> f32) -> HostTensor {
        self.data.iter_mut().for_each(|x| *x = f(*x));
        self
    }

    /// Split a 2-D `[in, out]` tensor along `out` into equal parts.
    pub fn split_columns(&self, parts: usize) -> Vec<HostTensor> {
        let [r, c] = [self.shape[0], self.shape[1]];
        let w = c / parts;
        (0..parts)
            .map(|p| {
                let mut out = Vec::with_capacity(r * w);
                for i in 0..r {
                    out.extend_from_slice(&self.data[i * c + p * w..i * c + (p + 1) * w]);
                }
                HostTensor::new(out, vec![r, w])
            })
            .collect()
    }

    /// Split a 1-D tensor into equal parts.
    pub fn split_flat(&self, parts: usize) -> Vec<HostTensor> {
        let w = self.data.len() / parts;
        self.data.chunks(w).map(|c| HostTensor::new(c.to_vec(), vec![w])).collect()
    }
}

/// Weights by canonical name, plus where they came from (for error messages).
#[derive(Debug, Default)]
pub struct HostWeights {
    /// The file or directory the weights were read from.
    pub source: String,
    /// The weights not yet taken, by canonical name.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl HostWeights {
    /// No weights yet, from `source`.
    pub fn new(source: impl Into<String>) -> Self {
        HostWeights { source: source.into(), tensors: BTreeMap::new() }
    }

    /// Adds or replaces a weight under its canonical name.
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Removes and returns a required weight, which must have shape `expected`.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<HostTensor, ModelError> {
        let t = self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor { origin: self.source.clone(), name: name.to_string() })?;
        if t.shape != expected {
            return Err(ModelError::TensorShape { origin: self.source.clone(), name: name.to_string(), expected: expected.to_vec(), actual: t.shape });
        }
        Ok(t)
    }

    /// As [`take`](Self::take) for a weight some architectures lack: `Ok(None)` when absent, an error when misshapen.
    pub fn take_opt(&mut self, name: &str, expected: &[usize]) -> Result<Option<HostTensor>, ModelError> {
        if self.tensors.contains_key(name) {
            self.take(name, expected).map(Some)
        } else {
            Ok(None)
        }
    }
}
