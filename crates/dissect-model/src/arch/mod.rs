//! Architecture-specific knowledge: config keys and weight names of each source format, mapped
//! onto [`ModelConfig`] and the canonical names of [`HostWeights`]. The only place in the
//! workspace that knows architecture names.

mod gemma3;
mod gpt2;
mod gptj;
mod llama;

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::weights::{HostTensor, HostWeights};

/// Architectures loadable from a Hugging Face directory (`config.json` `model_type`).
const HF_SUPPORTED: &str = "gpt2, gptj, llama, mistral, qwen2, gemma3_text (gemma3)";
/// Architectures loadable from GGUF (`general.architecture`).
const GGUF_SUPPORTED: &str = "gemma3, llama";

/// Config and weights from a GGUF file.
pub fn from_gguf(g: &GgufFile) -> Result<(ModelConfig, HostWeights), ModelError> {
    let arch = g.require("general.architecture")?.as_str().unwrap_or_default().to_string();
    match arch.as_str() {
        "gemma3" => gemma3::from_gguf(g),
        "llama" => llama::from_gguf(g),
        _ => Err(ModelError::UnsupportedArchitecture { origin: g.path().display().to_string(), arch, supported: GGUF_SUPPORTED.into() }),
    }
}

/// Config and weights from a Hugging Face `config.json` and its safetensors tensors
/// (HF names, HF layouts, converted to f32).
pub fn from_hf(source: &str, config: &Json, tensors: BTreeMap<String, HostTensor>) -> Result<(ModelConfig, HostWeights), ModelError> {
    let model_type = config.get("model_type").and_then(Json::as_str).unwrap_or_default();
    match model_type {
        "gpt2" => gpt2::from_hf(source, config, tensors),
        "gptj" => gptj::from_hf(source, config, tensors),
        "llama" | "mistral" | "qwen2" => llama::from_hf(source, config, tensors),
        "gemma3_text" => gemma3::from_hf(source, config, tensors),
        "gemma3" => {
            let text =
                config.get("text_config").ok_or_else(|| ModelError::Config { origin: source.into(), message: "gemma3 config without text_config".into() })?;
            gemma3::from_hf(source, text, tensors)
        }
        other => Err(ModelError::UnsupportedArchitecture { origin: source.into(), arch: other.into(), supported: HF_SUPPORTED.into() }),
    }
}

/// Typed access to `config.json` fields with errors that name the field.
struct HfConfig<'a> {
    source: &'a str,
    json: &'a Json,
}

impl<'a> HfConfig<'a> {
    fn err(&self, key: &str, what: &str) -> ModelError {
        ModelError::Config { origin: self.source.into(), message: format!("`{key}` {what}") }
    }
    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.json.get(key).and_then(Json::as_u64).map(|v| v as usize).ok_or_else(|| self.err(key, "missing or not an integer"))
    }
    fn usize_or(&self, key: &str, default: usize) -> usize {
        self.json.get(key).and_then(Json::as_u64).map_or(default, |v| v as usize)
    }
    fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.json.get(key).and_then(Json::as_f64).unwrap_or(default)
    }
    fn opt_f64(&self, key: &str) -> Option<f64> {
        self.json.get(key).and_then(Json::as_f64)
    }
    fn opt_u32(&self, key: &str) -> Option<u32> {
        self.json.get(key).and_then(Json::as_u64).map(|v| v as u32)
    }
    fn str_or(&self, key: &str, default: &'a str) -> &'a str {
        self.json.get(key).and_then(Json::as_str).unwrap_or(default)
    }
}

/// Takes HF tensors by name, with the source for errors.
struct HfTensors {
    source: String,
    tensors: BTreeMap<String, HostTensor>,
}

impl HfTensors {
    fn take(&mut self, name: &str) -> Result<HostTensor, ModelError> {
        self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor { origin: self.source.clone(), name: name.into() })
    }
    fn take_opt(&mut self, name: &str) -> Option<HostTensor> {
        self.tensors.remove(name)
    }
}

/// The architecture name and block count from a GGUF header, without reading weights: the
/// same name [`from_gguf`]'s config carries.
pub fn depth_gguf(g: &GgufFile) -> Result<(String, usize), ModelError> {
    let arch = g.require("general.architecture")?.as_str().unwrap_or_default().to_string();
    if !matches!(arch.as_str(), "gemma3" | "llama") {
        return Err(ModelError::UnsupportedArchitecture { origin: g.path().display().to_string(), arch, supported: GGUF_SUPPORTED.into() });
    }
    let n_layers = g.u64(&format!("{arch}.block_count"))? as usize;
    Ok((arch, n_layers))
}

/// The architecture name and block count from a Hugging Face `config.json`, without reading
/// weights: the same name [`from_hf`]'s config carries.
pub fn depth_hf(source: &str, config: &Json) -> Result<(String, usize), ModelError> {
    let model_type = config.get("model_type").and_then(Json::as_str).unwrap_or_default();
    let (arch, section, key) = match model_type {
        "gpt2" | "gptj" => (model_type, config, "n_layer"),
        "llama" | "mistral" | "qwen2" => (model_type, config, "num_hidden_layers"),
        "gemma3_text" => ("gemma3", config, "num_hidden_layers"),
        "gemma3" => ("gemma3", config.get("text_config").unwrap_or(config), "num_hidden_layers"),
        other => {
            return Err(ModelError::UnsupportedArchitecture { origin: source.into(), arch: other.into(), supported: HF_SUPPORTED.into() });
        }
    };
    let n_layers = section
        .get(key)
        .and_then(Json::as_u64)
        .ok_or_else(|| ModelError::Config { origin: source.into(), message: format!("`{key}` is missing or not a number") })?;
    Ok((arch.to_string(), n_layers as usize))
}
