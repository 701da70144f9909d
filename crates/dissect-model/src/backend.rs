//! Backends: the CPU backend (burn's `flex`) always; CUDA behind the `cuda` cargo feature.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The CPU backend.
pub type Cpu = burn_flex::Flex;

/// The CUDA backend: burn-cuda 0.21's `Cuda<F = f32, I = i32>` (fusion + autotune on), f32
/// floats. Its device is `burn_cuda::CudaDevice`, whose `Default` is GPU 0.
///
/// Precision: burn-cuda 0.21 / cubecl 0.10 have **no switch for TF32**. An f32 matmul that gets a
/// tensor-core kernel (cubek-matmul's `adjust_dtypes`: f32 inputs + a device that lists the
/// TF32 type, i.e. every sm_80+ GPU, the H100 included) stages both operands as TF32 (10-bit
/// mantissa, f32 accumulate). Autotune ranks those kernels first for large matmuls, and without
/// autotune `Strategy::Auto` tries `SimpleCyclicCmma` first, so TF32 is in effect on by default.
/// `NVIDIA_TF32_OVERRIDE=0` does not help: it governs cuBLAS/cuDNN, and cubecl emits its own
/// `wmma ... tf32` PTX through NVRTC; `cubecl.toml` / `CUBECL_*` variables have no such option.
/// Expect ~1e-3 relative differences against the CPU backend on matmul outputs (TF32 rounds
/// each operand to 2^-11; not yet measured on a GPU). Ways to get
/// fp32 if the CUDA tests need it: split each operand into two TF32 halves (3xTF32, three matmuls)
/// in the model's matmul helper, or call cubek-matmul's unit (non-tensor-core) kernels directly.
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda<f32, i32>;

/// burn's wgpu backend (f32): the same CubeCL kernels as [`Cuda`], compiled to SPIR-V for any
/// Vulkan driver. Used by the `_wgpu` variants of the device tests, which CI runs on Mesa's
/// software Vulkan (llvmpipe); not a `--backend` of the binary.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn_wgpu::Wgpu;

/// Calls `f` with a CPU tensor's f32 storage from its first element and its two strides (in
/// elements), without a copy; `None`, `f` not called, when the tensor is not f32. What the CPU
/// kernels ([`crate::matmul`], [`crate::project::logits_into`]) read burn-flex's tensors with.
pub(crate) fn with_f32_storage<R>(t: &burn_tensor::Tensor<Cpu, 2>, f: impl FnOnce(&[f32], [isize; 2]) -> R) -> Option<R> {
    let t = t.clone().into_primitive().tensor();
    if t.dtype() != burn_tensor::DType::F32 {
        return None;
    }
    let s = t.layout().strides();
    Some(f(&t.storage::<f32>()[t.layout().start_offset()..], [s[0], s[1]]))
}

/// Which burn backend runs the model: the `--backend` / pipeline setting, written `cpu` or `cuda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex on the host ([`Cpu`]): always built, the reference for the numerical tests.
    #[default]
    Cpu,
    /// burn-cuda (the `Cuda` alias, TF32 matmuls): needs the `cuda` cargo feature, and an NVIDIA driver, NVRTC and the toolkit headers at run time.
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(ModelError::Backend { backend: other.into(), message: "unknown backend".into(), hint: "use cpu or cuda".into() }),
        }
    }
}

impl BackendKind {
    /// Fails with a clear error, rather than a panic on a device thread, when the backend cannot run here.
    pub fn check_available(self) -> Result<(), ModelError> {
        match self {
            BackendKind::Cpu => Ok(()),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(ModelError::Backend {
                backend: "cuda".into(),
                message: "this binary was built without the `cuda` feature".into(),
                hint: "rebuild with `--features cuda`".into(),
            }),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => cuda_driver_present(),
        }
    }
}

/// Everything cubecl-cuda needs at run time, checked up front so that a missing piece is an
/// error here instead of a panic on burn's device thread. The result is computed once.
#[cfg(feature = "cuda")]
fn cuda_driver_present() -> Result<(), ModelError> {
    static RESULT: std::sync::OnceLock<Result<(), (String, String)>> = std::sync::OnceLock::new();
    RESULT.get_or_init(cuda_probe).clone().map_err(|(message, hint)| ModelError::Backend { backend: "cuda".into(), message, hint })
}

#[cfg(feature = "cuda")]
fn cuda_probe() -> Result<(), (String, String)> {
    let cpu_hint = "run on a machine with an NVIDIA GPU and driver, or use --backend cpu";
    // 1. Without loading anything: the kernel driver and libcuda on the loader's path.
    let kernel_driver = std::path::Path::new("/proc/driver/nvidia/version").exists();
    let libcuda = libcuda_on_disk();
    if !kernel_driver && libcuda.is_none() {
        return Err(("no NVIDIA driver on this machine (no /proc/driver/nvidia/version, no libcuda.so)".into(), cpu_hint.into()));
    }
    // 2. The driver library as cudarc will load it, a cuInit and at least one device. cudarc
    //    panics on a missing symbol: catch that too. Errors print their raw code (`e.0`): the
    //    Debug of `DriverError` would call cuGetErrorString, one more symbol.
    let driver = std::panic::catch_unwind(|| {
        // SAFETY: only dlopen()s and closes the candidate libraries, as cudarc itself does.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(format!(
                "the CUDA driver library cannot be loaded (libcuda.so.1{})",
                libcuda.as_ref().map(|p| format!(" found at {}, but dlopen failed", p.display())).unwrap_or_default()
            ));
        }
        cudarc::driver::result::init().map_err(|e| format!("cuInit failed: {:?}", e.0))?;
        match cudarc::driver::result::device::get_count() {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("the CUDA driver reports no GPU".to_string()),
            Err(e) => Err(format!("cuDeviceGetCount failed: {:?}", e.0)),
        }
    })
    .unwrap_or_else(|_| Err("the CUDA driver library is missing a symbol (driver older than the CUDA version this binary was built for?)".into()));
    driver.map_err(|m| (m, format!("{cpu_hint}; if a driver is installed, put the folder of libcuda.so.1 on LD_LIBRARY_PATH")))?;
    // 3. NVRTC: cubecl compiles every kernel at run time.
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err((
            "the CUDA run-time compiler NVRTC (libnvrtc.so) cannot be loaded; cubecl compiles its kernels with it".into(),
            "install the CUDA toolkit (or the nvidia-cuda-nvrtc wheel) and put the folder of libnvrtc.so.* on LD_LIBRARY_PATH".into(),
        ));
    }
    // 4. The toolkit's headers, which cubecl-cuda passes to NVRTC (it panics without them).
    let cuda_path = std::env::var_os("CUDA_PATH").map(std::path::PathBuf::from).or_else(|| {
        ["/usr/local/cuda", "/opt/cuda"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| std::path::Path::new("/usr/bin/nvcc").exists().then(|| std::path::PathBuf::from("/usr")))
    });
    match cuda_path {
        Some(p) if p.join("include").is_dir() => Ok(()),
        Some(p) => {
            Err((format!("no CUDA headers in {}/include (cubecl passes them to NVRTC)", p.display()), "set CUDA_PATH to the CUDA toolkit's folder".into()))
        }
        None => Err((
            "no CUDA toolkit found (CUDA_PATH unset, no /usr/local/cuda, /opt/cuda or /usr/bin/nvcc)".into(),
            "set CUDA_PATH to the CUDA toolkit's folder".into(),
        )),
    }
}

/// libcuda.so.1 (or libcuda.so) in LD_LIBRARY_PATH, the usual driver folders, or the loader's
/// cache (`ldconfig -p`); found without loading it.
#[cfg(feature = "cuda")]
fn libcuda_on_disk() -> Option<std::path::PathBuf> {
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib"];
    let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let in_dirs = ld
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(dirs.iter().copied())
        .find_map(|d| ["libcuda.so.1", "libcuda.so"].iter().map(|f| std::path::Path::new(d).join(f)).find(|p| p.exists()));
    in_dirs.or_else(|| {
        let out = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"].iter().find_map(|c| std::process::Command::new(c).arg("-p").output().ok())?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("libcuda.so"))
            .find_map(|l| l.split("=> ").nth(1).map(|p| std::path::PathBuf::from(p.trim())))
    })
}
