//! Shared test helpers: fixtures, the real model, comparisons, and the CPU/CUDA test macro.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real Gemma 3 270M GGUF. Missing is a failure, never a skip: CI fetches it first.
pub fn gemma_gguf() -> PathBuf {
    let p = dissect_model::source::named_model_path("gemma3-270m").unwrap();
    assert!(p.exists(), "the real model is missing at {}\nhint: run `cargo xtask fetch-model gemma3-270m` (CI's .ci/run does)", p.display());
    p
}

#[derive(Debug, Clone)]
pub struct Array {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

/// Reads a safetensors file of reference values (f32 arrays; integer arrays converted to f32).
pub fn read_expected(path: &std::path::Path) -> BTreeMap<String, Array> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let raw = v.data();
            let data: Vec<f32> = match v.dtype() {
                safetensors::Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                other => panic!("{name}: dtype {other:?}"),
            };
            (name, Array { data, shape: v.shape().to_vec() })
        })
        .collect()
}

/// `max|ours − theirs| ≤ rel · max|theirs|`: relative to the tensor's scale, so that values near
/// zero do not make the check meaningless.
pub fn assert_close(what: &str, ours: &[f32], theirs: &[f32], rel: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length {} vs {}", ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = (a - b).abs();
        assert!(!d.is_nan(), "{what}: NaN at {i}");
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(worst <= rel * scale, "{what}: max |diff| {worst:e} at {at} (ours {}, HF {}) exceeds {rel:e} × scale {scale:e}", ours[at], theirs[at]);
}

/// One test body, run on CPU, on CUDA (with the `cuda` feature, when a GPU is present) and on
/// burn's wgpu backend (with the `wgpu` feature; any Vulkan driver, Mesa's software one included).
#[macro_export]
macro_rules! test_device {
    ($body:ident, $cpu:ident, $cuda:ident, $wgpu:ident) => {
        #[test]
        fn $cpu() {
            $body::<dissect_model::backend::Cpu>(&Default::default());
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() {
            if dissect_model::backend::BackendKind::Cuda.check_available().is_err() {
                eprintln!("no CUDA device here: the CPU variant of this test covers the code");
                return;
            }
            $body::<dissect_model::backend::Cuda>(&Default::default());
        }
        #[cfg(feature = "wgpu")]
        #[test]
        fn $wgpu() {
            $body::<dissect_model::backend::Wgpu>(&Default::default());
        }
    };
}
