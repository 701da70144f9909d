//! `dissect-model`: a decoder-only transformer forward pass in burn that matches Hugging Face
//! transformers, the weight sources it loads from, and the tokenizers.

#![warn(missing_docs)]

pub mod amx;
pub mod arch;
pub mod backend;
pub mod config;
pub mod error;
pub mod gguf;
pub mod hooks;
pub mod intervene;
pub mod matmul;
pub mod model;
pub mod predict;
pub mod project;
pub mod quant;
pub mod screen;
pub mod softmax;
pub mod source;
pub mod tokenizer;
pub mod vmath;
pub mod weights;

pub use config::ModelConfig;
pub use error::ModelError;
pub use hooks::{Hooks, NoHooks, RecordAll};
pub use model::Model;

/// A seeded xorshift64 stream for the unit tests' pseudo-random inputs.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
