//! Where models come from: a named default, a `.gguf` file, a local Hugging Face directory, or
//! `hf:<repo>[@revision]` through the hf-hub cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn_tensor::backend::Backend;
use half::{bf16, f16};
use serde::Serialize;

use crate::arch;
use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::HostTensor;

/// The model every command uses when neither a flag nor a pipeline names one.
pub const DEFAULT_MODEL: &str = "gemma3-270m";

/// Models known by name, fetched by `cargo xtask fetch-model <name>`: `(name, GGUF file name)`,
/// the file kept under `$DISSECT_HOME/models` (see [`named_model_path`]).
pub const NAMED_MODELS: &[(&str, &str)] = &[("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"), ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf")];

/// A parsed model specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// One of [`NAMED_MODELS`].
    Named(String),
    /// A path ending in `.gguf`.
    Gguf(PathBuf),
    /// A local Hugging Face directory: `config.json`, `model*.safetensors`, `tokenizer.json`.
    Dir(PathBuf),
    /// `hf:<repo>[@revision]`, resolved through the hf-hub cache.
    Hub {
        /// `owner/name` on the Hugging Face hub.
        repo: String,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
    },
}

impl ModelSpec {
    /// Classifies a spec without touching the network: `hf:` prefix, then a known name, an
    /// existing directory, a `.gguf` path (which need not exist yet).
    pub fn parse(spec: &str) -> Result<Self, ModelError> {
        if let Some(rest) = spec.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, v)) => (r, Some(v.to_string())),
                None => (rest, None),
            };
            if repo.is_empty() {
                return Err(not_found(spec, "empty repository name", "write hf:<owner>/<name>[@revision]"));
            }
            return Ok(ModelSpec::Hub { repo: repo.to_string(), revision });
        }
        if NAMED_MODELS.iter().any(|(n, _)| *n == spec) {
            return Ok(ModelSpec::Named(spec.to_string()));
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            return Ok(ModelSpec::Dir(path));
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(ModelSpec::Gguf(path));
        }
        let names: Vec<&str> = NAMED_MODELS.iter().map(|(n, _)| *n).collect();
        Err(not_found(
            spec,
            "not a named model, a .gguf file or a directory",
            &format!("use one of {names:?}, a path to a .gguf file, a directory with config.json, or hf:<repo>"),
        ))
    }
}

fn not_found(spec: &str, message: &str, hint: &str) -> ModelError {
    ModelError::ModelNotFound { spec: spec.into(), message: message.into(), hint: hint.into() }
}

/// `$DISSECT_HOME`, or `~/.cache/dissect`.
pub fn dissect_home() -> PathBuf {
    if let Some(h) = std::env::var_os("DISSECT_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("dissect")
}

/// The environment variable that overrides a named model's path, if it has one.
pub fn named_model_env(name: &str) -> Option<&'static str> {
    match name {
        "gemma3-270m" => Some("DISSECT_GEMMA_GGUF"),
        "smollm2-135m" => Some("DISSECT_SMOLLM2_GGUF"),
        _ => None,
    }
}

/// Where a named model lives once fetched, unless its environment variable
/// ([`named_model_env`]: `DISSECT_GEMMA_GGUF`, `DISSECT_SMOLLM2_GGUF`) says otherwise.
pub fn named_model_path(name: &str) -> Option<PathBuf> {
    let file = NAMED_MODELS.iter().find(|(n, _)| *n == name)?.1;
    if let Some(p) = named_model_env(name).and_then(std::env::var_os) {
        return Some(PathBuf::from(p));
    }
    Some(dissect_home().join("models").join(file))
}

/// What was loaded, for provenance.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The spec as the user wrote it.
    pub spec: String,
    /// The architecture name the config carries (`gemma3`, `llama`, `gpt2`, …).
    pub architecture: String,
    /// The hub revision asked for, if the spec named one.
    pub revision: Option<String>,
    /// The weight files read.
    pub files: Vec<PathBuf>,
}

/// A loaded model with its tokenizer.
pub struct Loaded<B: Backend> {
    /// The weights, on the requested device.
    pub model: Model<B>,
    /// The tokenizer shipped with the weights (`tokenizer.json`, or rebuilt from GGUF metadata).
    pub tokenizer: Tokenizer,
    /// Provenance: spec, architecture, revision, files.
    pub info: ModelInfo,
}

/// Where a spec's files are, found without reading any weights.
enum Located {
    Gguf(PathBuf),
    Dir { dir: PathBuf, revision: Option<String> },
}

fn locate(spec: &str) -> Result<Located, ModelError> {
    Ok(match ModelSpec::parse(spec)? {
        ModelSpec::Named(name) => {
            let path = named_model_path(&name).expect("named model is registered");
            if !path.exists() {
                return Err(not_found(
                    spec,
                    &format!("{} does not exist", path.display()),
                    &match named_model_env(&name) {
                        Some(var) => format!("run `cargo xtask fetch-model {name}` (or set {var} to the file)"),
                        None => format!("run `cargo xtask fetch-model {name}`"),
                    },
                ));
            }
            Located::Gguf(path)
        }
        ModelSpec::Gguf(path) => {
            if !path.exists() {
                return Err(not_found(spec, &format!("{} does not exist", path.display()), "check the path"));
            }
            Located::Gguf(path)
        }
        ModelSpec::Dir(dir) => Located::Dir { dir, revision: None },
        ModelSpec::Hub { repo, revision } => {
            let dir = hub_snapshot(spec, &repo, revision.as_deref())?;
            Located::Dir { dir, revision }
        }
    })
}

/// What a model is, read from its metadata only (GGUF header or `config.json`): enough to
/// decide whether a stage's outputs are current without loading and dequantizing weights.
#[derive(Debug, Clone, Serialize)]
pub struct ModelHeader {
    /// The same provenance [`load`] would report.
    pub info: ModelInfo,
    /// Transformer blocks.
    pub n_layers: usize,
}

/// The model's [`ModelHeader`]: the same `info` that [`load`] returns, without the weights.
pub fn describe(spec: &str) -> Result<ModelHeader, ModelError> {
    match locate(spec)? {
        Located::Gguf(path) => {
            let g = GgufFile::open(&path)?;
            let (architecture, n_layers) = arch::depth_gguf(&g)?;
            Ok(ModelHeader { info: ModelInfo { spec: spec.into(), architecture, revision: None, files: vec![path] }, n_layers })
        }
        Located::Dir { dir, revision } => {
            let config = read_config(&dir)?;
            let (architecture, n_layers) = arch::depth_hf(&dir.display().to_string(), &config)?;
            let files = weight_files(spec, &dir)?;
            Ok(ModelHeader { info: ModelInfo { spec: spec.into(), architecture, revision, files }, n_layers })
        }
    }
}

/// Loads the model and tokenizer a spec names (see [`ModelSpec`]) onto `device`, weights
/// dequantized or converted to f32.
pub fn load<B: Backend>(spec: &str, device: &B::Device) -> Result<Loaded<B>, ModelError> {
    match locate(spec)? {
        Located::Gguf(path) => load_gguf(spec, &path, device),
        Located::Dir { dir, revision } => load_dir(spec, &dir, revision, device),
    }
}

fn load_gguf<B: Backend>(spec: &str, path: &Path, device: &B::Device) -> Result<Loaded<B>, ModelError> {
    let g = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&g)?;
    let (config, weights) = arch::from_gguf(&g)?;
    let info = ModelInfo { spec: spec.into(), architecture: config.architecture.clone(), revision: None, files: vec![path.into()] };
    let model = Model::from_host(config, weights, device)?;
    Ok(Loaded { model, tokenizer, info })
}

fn read_config(dir: &Path) -> Result<serde_json::Value, ModelError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config { origin: config_path.display().to_string(), message: e.to_string() })
}

fn weight_files(spec: &str, dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // HF names weights `model.safetensors` or `model-0000i-of-0000n.safetensors`; other
        // safetensors files in the directory (e.g. reference outputs) are not weights.
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("model") && name.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(not_found(
            spec,
            &format!("no model*.safetensors in {}", dir.display()),
            "the directory needs config.json, model*.safetensors and tokenizer.json",
        ));
    }
    Ok(files)
}

fn load_dir<B: Backend>(spec: &str, dir: &Path, revision: Option<String>, device: &B::Device) -> Result<Loaded<B>, ModelError> {
    let config = read_config(dir)?;
    let files = weight_files(spec, dir)?;
    let mut tensors = BTreeMap::new();
    for f in &files {
        read_safetensors(f, &mut tensors)?;
    }
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let (config, weights) = arch::from_hf(&dir.display().to_string(), &config, tensors)?;
    let info = ModelInfo { spec: spec.into(), architecture: config.architecture.clone(), revision, files };
    let model = Model::from_host(config, weights, device)?;
    Ok(Loaded { model, tokenizer, info })
}

/// Reads every tensor of a safetensors file as f32.
///
/// Tensor by tensor, from the header's offsets: holding the whole file while converting it would
/// double the memory at load (a 6.2 GB GPT-2 XL-shaped checkpoint would peak at 12.4 GB).
pub fn read_safetensors(path: &Path, out: &mut BTreeMap<String, HostTensor>) -> Result<(), ModelError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| ModelError::io(path, e);
    let st_err = |m: String| ModelError::Safetensors { origin: path.display().to_string(), message: m };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let header_len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| st_err("header length overflows".into()))?;
    if header_len > 100 << 20 {
        return Err(st_err(format!("header of {header_len} bytes: not a safetensors file")));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header).map_err(io)?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|e| st_err(format!("header: {e}")))?;
    let data_start = 8 + header_len as u64;
    let mut raw = Vec::new();
    for (name, info) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let info: safetensors::tensor::TensorInfo = serde_json::from_value(info.clone()).map_err(|e| st_err(format!("tensor {name}: {e}")))?;
        let (begin, end) = info.data_offsets;
        if end < begin {
            return Err(st_err(format!("tensor {name}: offsets {begin}..{end}")));
        }
        raw.resize(end - begin, 0);
        file.seek(SeekFrom::Start(data_start + begin as u64)).map_err(io)?;
        file.read_exact(&mut raw).map_err(io)?;
        let data: Vec<f32> = match info.dtype {
            safetensors::Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            safetensors::Dtype::F16 => raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            safetensors::Dtype::BF16 => raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(st_err(format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        let elements: usize = info.shape.iter().product();
        if data.len() != elements {
            return Err(st_err(format!("tensor {name}: {} values for shape {:?}", data.len(), info.shape)));
        }
        out.insert(name.clone(), HostTensor::new(data, info.shape.clone()));
    }
    Ok(())
}

/// A local snapshot of a hub repository: from the hf-hub cache, downloading only when
/// `HF_HUB_OFFLINE` is not set (hf-hub itself ignores that variable).
fn hub_snapshot(spec: &str, repo: &str, revision: Option<&str>) -> Result<PathBuf, ModelError> {
    use hf_hub::{Repo, RepoType};
    let rev = revision.unwrap_or("main").to_string();
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, rev);
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let wanted = ["config.json", "tokenizer.json", "model.safetensors"];
    let mut found = Vec::new();
    if offline {
        let cache = hf_hub::Cache::from_env().repo(hub_repo);
        for f in wanted {
            let p = cache.get(f).ok_or_else(|| {
                not_found(
                    spec,
                    &format!("{f} is not in the hf-hub cache and HF_HUB_OFFLINE is set"),
                    "download it once with network access, or unset HF_HUB_OFFLINE",
                )
            })?;
            found.push(p);
        }
    } else {
        let mut builder = hf_hub::api::sync::ApiBuilder::from_env();
        // As the Python client does: HF_TOKEN wins over the token file `hf auth login` writes.
        if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
            builder = builder.with_token(Some(token));
        }
        let api = builder.build().map_err(|e| not_found(spec, &e.to_string(), "check network access to the Hugging Face hub"))?.repo(hub_repo);
        for f in wanted {
            let p = api.get(f).map_err(|e| {
                not_found(spec, &format!("{f}: {e}"), "check the repository name and network access; sharded checkpoints are not supported yet")
            })?;
            found.push(p);
        }
    }
    Ok(found[0].parent().expect("a cached file has a directory").to_path_buf())
}
