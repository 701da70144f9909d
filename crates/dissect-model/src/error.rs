use std::path::{Path, PathBuf};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed GGUF: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: GGUF metadata key `{key}` is missing")]
    MissingMetadata { path: PathBuf, key: String },
    #[error("{origin}: tensor `{name}` is missing")]
    MissingTensor { origin: String, name: String },
    #[error("{origin}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape { origin: String, name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("{origin}: unsupported architecture `{arch}`\nhint: supported: {supported}")]
    UnsupportedArchitecture { origin: String, arch: String, supported: String },
    #[error("{origin}: bad config: {message}")]
    Config { origin: String, message: String },
    #[error("tokenizer: {message}")]
    Tokenizer { message: String },
    #[error("model `{spec}` not found: {message}\nhint: {hint}")]
    ModelNotFound { spec: String, message: String, hint: String },
    #[error("{origin}: safetensors: {message}")]
    Safetensors { origin: String, message: String },
    #[error("input: {message}")]
    Input { message: String },
    #[error("backend `{backend}` unavailable: {message}\nhint: {hint}")]
    Backend { backend: String, message: String, hint: String },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn tokenizer(message: impl std::fmt::Display) -> Self {
        ModelError::Tokenizer { message: message.to_string() }
    }
}
