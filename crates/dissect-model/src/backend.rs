//! Backends: the CPU backend (burn's `flex`) always; CUDA behind the `cuda` cargo feature.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The CPU backend.
pub type Cpu = burn_flex::Flex;

/// The CUDA backend.
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(ModelError::Backend {
                backend: other.into(),
                message: "unknown backend".into(),
                hint: "use cpu or cuda".into(),
            }),
        }
    }
}

impl BackendKind {
    /// Fails with a clear error, rather than a panic on a device thread, when the backend cannot run here.
    pub fn check_available(self) -> Result<(), ModelError> {
        match self {
            BackendKind::Cpu => Ok(()),
            BackendKind::Cuda if !cfg!(feature = "cuda") => Err(ModelError::Backend {
                backend: "cuda".into(),
                message: "this binary was built without the `cuda` feature".into(),
                hint: "rebuild with `--features cuda`".into(),
            }),
            BackendKind::Cuda => cuda_driver_present(),
        }
    }
}

fn cuda_driver_present() -> Result<(), ModelError> {
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib", "/usr/local/cuda/lib64"];
    let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let found = ld.split(':').chain(dirs).filter(|d| !d.is_empty()).any(|d| std::path::Path::new(d).join("libcuda.so.1").exists() || std::path::Path::new(d).join("libcuda.so").exists());
    if found {
        Ok(())
    } else {
        Err(ModelError::Backend {
            backend: "cuda".into(),
            message: "no CUDA driver (libcuda.so) found on this machine".into(),
            hint: "run on a machine with an NVIDIA GPU and driver, or use --backend cpu".into(),
        })
    }
}
