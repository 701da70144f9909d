//! The one error type of model loading, tokenization and inference: every message names the
//! file, tensor or setting at fault, and the variants users can fix carry a `hint`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file is truncated or inconsistent, or uses a type or version this reader does not support.
    #[error("{path}: malformed GGUF: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong; parse errors give the byte offset where reading stopped.
        message: String,
    },
    /// A GGUF metadata key the architecture's loader requires is absent.
    #[error("{path}: GGUF metadata key `{key}` is missing")]
    MissingMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The full metadata key, e.g. `gemma3.block_count`.
        key: String,
    },
    /// A weight the architecture requires is absent.
    #[error("{origin}: tensor `{name}` is missing")]
    MissingTensor {
        /// The weight source: a file path or a model directory.
        origin: String,
        /// The tensor's name, as the source or our canonical naming spells it.
        name: String,
    },
    /// A weight's shape differs from what the config implies.
    #[error("{origin}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The weight source: a file path or a model directory.
        origin: String,
        /// The canonical tensor name (`blocks.3.q.weight`).
        name: String,
        /// The shape the config implies, row-major (linear weights `[in, out]`).
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// The GGUF `general.architecture` or HF `model_type` has no mapping in `arch/`.
    #[error("{origin}: unsupported architecture `{arch}`\nhint: supported: {supported}")]
    UnsupportedArchitecture {
        /// The weight source: a file path or a model directory.
        origin: String,
        /// The architecture name the source declares.
        arch: String,
        /// The architectures that source format supports, comma-separated.
        supported: String,
    },
    /// A config value is missing, malformed or unsupported, or a weight is left over after loading.
    #[error("{origin}: bad config: {message}")]
    Config {
        /// The config's source: `config.json`'s path, a model directory or a GGUF file.
        origin: String,
        /// What is wrong, naming the key or tensor.
        message: String,
    },
    /// Building the tokenizer or encoding a text failed.
    #[error("tokenizer: {message}")]
    Tokenizer {
        /// The `tokenizers` crate's error, or why a GGUF vocabulary cannot be rebuilt.
        message: String,
    },
    /// A model spec names nothing loadable: unknown name, missing file, unreachable hub repository.
    #[error("model `{spec}` not found: {message}\nhint: {hint}")]
    ModelNotFound {
        /// The spec as the user wrote it.
        spec: String,
        /// What was looked for and not found.
        message: String,
        /// How to get the model (e.g. the `cargo xtask fetch-model` command to run).
        hint: String,
    },
    /// A safetensors file cannot be parsed or holds a dtype other than f32, f16 or bf16.
    #[error("{origin}: safetensors: {message}")]
    Safetensors {
        /// The safetensors file.
        origin: String,
        /// The parser's error or the unsupported tensor.
        message: String,
    },
    /// The token ids cannot be run: empty, longer than `context_length`, outside the vocabulary.
    #[error("input: {message}")]
    Input {
        /// What is wrong with the input.
        message: String,
    },
    /// The requested backend cannot run in this binary or on this machine.
    #[error("backend `{backend}` unavailable: {message}\nhint: {hint}")]
    Backend {
        /// The backend's name as written (`cpu`, `cuda`, or an unknown one).
        backend: String,
        /// The missing piece: cargo feature, driver, NVRTC or toolkit headers.
        message: String,
        /// How to get it, or to fall back to the CPU.
        hint: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn tokenizer(message: impl std::fmt::Display) -> Self {
        ModelError::Tokenizer { message: message.to_string() }
    }
}
