use anyhow::Result;
use dissect_model::backend::BackendKind;
use dissect_model::source::DEFAULT_MODEL;

use crate::pipeline::Pipeline;

/// The flags every stage shares: a pipeline gives the defaults, `--model` and `--backend`
/// win over it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StageArgs {
    /// A pipeline (name in pipelines/ or a .toml path) giving every default below.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// `gemma3-270m` (the fetched default), a .gguf file, a directory, or hf:<repo>[@rev].
    #[arg(long)]
    pub model: Option<String>,
    /// `cpu` (the default) or `cuda` (a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long)]
    pub backend: Option<BackendKind>,
}

/// What [`StageArgs`] resolve to.
pub struct Stage {
    pub pipeline: Option<Pipeline>,
    pub model: String,
    pub backend: BackendKind,
}

impl StageArgs {
    /// Loads the pipeline, picks model and backend, and checks that the backend can run here.
    pub fn resolve(&self) -> Result<Stage> {
        let pipeline = self.pipeline.as_deref().map(Pipeline::load).transpose()?;
        let p = pipeline.as_ref();
        let backend = self.backend.or(p.map(|p| p.backend)).unwrap_or_default();
        backend.check_available()?;
        let model = self.model.clone().or(p.map(|p| p.model.clone())).unwrap_or_else(|| DEFAULT_MODEL.into());
        Ok(Stage { pipeline, model, backend })
    }
}
