//! Pipeline files (`pipelines/*.toml`): one reproducible run — model, data, each stage's
//! parameters, backend, output directory. Every stage subcommand takes `--pipeline NAME|PATH`
//! for its defaults; flags given on the command line win.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dissect_cache::{CacheConfig, StoreDtype};
use dissect_experiments::stage::ExperimentsConfig;
use dissect_filter::FilterConfig;
use dissect_model::backend::BackendKind;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// The file it was read from.
    #[serde(skip)]
    pub file: PathBuf,
    pub model: String,
    /// `cargo xtask fetch-model` name that provides the model, if it can be fetched (read by
    /// `cargo xtask reproduce`; the stages only check that it parses).
    #[serde(default)]
    #[allow(dead_code)]
    pub fetch: Option<String>,
    #[serde(default)]
    pub backend: BackendKind,
    #[serde(default = "f32_name")]
    pub dtype: String,
    pub out: PathBuf,
    pub data: DataPaths,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub experiments: ExperimentsConfig,
    #[serde(default)]
    pub aggregate: AggregateSection,
}

fn f32_name() -> String {
    "f32".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPaths {
    pub dataset: PathBuf,
    pub paragraphs: PathBuf,
    pub stopwords: PathBuf,
}

/// `[cache]`: the cache stage's parameters (as in `dissect_cache::CacheConfig`), and whether
/// the experiments stage reads the cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    pub batch_size: usize,
    pub chunk_size: usize,
    pub dtype: StoreDtype,
    /// `dissect experiments --pipeline` reads `<out>/cache` (written by `dissect cache`, the
    /// stage before it in `cargo xtask reproduce`) instead of recomputing the clean activations
    /// it holds. On by default: the chain is filter → cache → experiments → aggregate, and the
    /// tables are the same either way.
    pub use_in_experiments: bool,
}

impl Default for CacheSection {
    fn default() -> Self {
        let c = CacheConfig::default();
        CacheSection { batch_size: c.batch_size, chunk_size: c.chunk_size, dtype: c.dtype, use_in_experiments: true }
    }
}

impl CacheSection {
    pub fn config(&self) -> CacheConfig {
        CacheConfig { batch_size: self.batch_size, chunk_size: self.chunk_size, dtype: self.dtype }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSection {
    pub seed: u64,
    pub resamples: usize,
}

impl Default for AggregateSection {
    fn default() -> Self {
        AggregateSection { seed: 0, resamples: 1000 }
    }
}

impl Pipeline {
    /// `name_or_path`: a `.toml` file, or a name looked up as `pipelines/<name>.toml` under the
    /// current directory, then under the workspace this binary was built from. Relative paths
    /// inside are taken from the directory holding `pipelines/`.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let path = find(name_or_path)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut p: Pipeline = toml::from_str(&text).with_context(|| format!("{}: not a valid pipeline", path.display()))?;
        p.file = path.clone();
        let base = base_dir(&path);
        for rel in [&mut p.out, &mut p.data.dataset, &mut p.data.paragraphs, &mut p.data.stopwords] {
            if rel.is_relative() {
                *rel = base.join(&*rel);
            }
        }
        if p.dtype != "f32" {
            bail!("{}: dtype `{}` is not supported\nhint: dissect computes in f32", path.display(), p.dtype);
        }
        Ok(p)
    }

    /// The filter stage's kept records: a directory of shard partitions.
    pub fn filtered(&self) -> PathBuf {
        self.out.join("filtered")
    }

    /// Where `dissect cache --pipeline` writes and `dissect experiments` reads the cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.out.join("cache")
    }

    pub fn experiments_dir(&self) -> PathBuf {
        self.out.join("experiments")
    }

    pub fn report_dir(&self) -> PathBuf {
        self.out.join("report")
    }
}

fn find(name_or_path: &str) -> Result<PathBuf> {
    let as_path = PathBuf::from(name_or_path);
    if as_path.extension().is_some_and(|e| e == "toml") {
        if as_path.is_file() {
            return Ok(as_path);
        }
        bail!("pipeline file {} does not exist", as_path.display());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let roots = [PathBuf::from("."), workspace];
    for root in &roots {
        let p = root.join("pipelines").join(format!("{name_or_path}.toml"));
        if p.is_file() {
            return Ok(p);
        }
    }
    // The names on offer are whatever pipelines/ holds, so the hint cannot go stale.
    let mut names: Vec<String> = roots
        .iter()
        .filter_map(|r| std::fs::read_dir(r.join("pipelines")).ok())
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(String::from))
        .collect();
    names.sort();
    names.dedup();
    bail!("no pipeline named `{name_or_path}`\nhint: the names are the files in pipelines/ ({}), or pass a path to a .toml file", names.join(", "))
}

fn base_dir(path: &Path) -> PathBuf {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent };
    if parent.file_name().is_some_and(|n| n == "pipelines") {
        parent.parent().map(Path::to_path_buf).unwrap_or(parent)
    } else {
        parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checked_in_pipeline_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            // Experiments configurations (`--config`) live beside the pipelines.
            if path.extension().is_some_and(|x| x == "json") {
                continue;
            }
            let p = Pipeline::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(p.data.dataset.ends_with("data/known_1000.json"), "{}", path.display());
            assert!(!p.experiments.experiments.is_empty());
            n += 1;
        }
        assert!(n >= 4, "expected the four pipelines, found {n}");
        let g = Pipeline::load("gemma3-270m").unwrap();
        assert_eq!(g.experiments.knockout.window, 9);
        assert_eq!(g.fetch.as_deref(), Some("gemma3-270m"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("dissect-pipeline-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "model = \"x\"\nout = \"o\"\nwindw = 3\n[data]\ndataset = \"a\"\nparagraphs = \"b\"\nstopwords = \"c\"\n").unwrap();
        let err = format!("{:#}", Pipeline::load(f.to_str().unwrap()).unwrap_err());
        assert!(err.contains("windw"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
