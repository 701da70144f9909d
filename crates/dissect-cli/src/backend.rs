//! Running a stage on the backend chosen at run time.

/// Expands `$body` with the type alias `$B` set to the burn backend `$kind` names. Without the
/// `cuda` feature the CUDA arm is unreachable: `BackendKind::check_available` refuses it first
/// with a clear error.
macro_rules! on_backend {
    ($kind:expr, |$B:ident| $body:block) => {{
        match $kind {
            dissect_model::backend::BackendKind::Cpu => {
                type $B = dissect_model::backend::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            dissect_model::backend::BackendKind::Cuda => {
                type $B = dissect_model::backend::Cuda;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            dissect_model::backend::BackendKind::Cuda => {
                unreachable!("check_available refuses cuda in a build without the `cuda` feature")
            }
        }
    }};
}

pub(crate) use on_backend;
