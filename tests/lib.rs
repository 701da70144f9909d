//! Helpers for the workspace-level tests: the `dissect` binary (built on first use, in the
//! profile the tests run in), the workspace root, scratch directories.
//!
//! These tests drive `dissect` as a user does, as separate processes, so they live in their
//! own crate rather than beside the CLI's code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the workspace root exists")
}

/// A fresh, empty directory under the system's temporary directory, unique to this process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissect-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a scratch directory");
    d
}

/// The `dissect` binary of this workspace, built by `cargo build -p dissect-cli` in the profile
/// this test binary was built in (once per test process; a no-op when it is current).
///
/// Cargo only provides `CARGO_BIN_EXE_*` to a package's own tests, and these tests are their
/// own package; building here means `cargo test -p dissect-tests` alone never runs a stale
/// binary.
pub fn dissect_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile dir>/deps/<this test binary>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lies in <target>/<profile>/deps").to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("no profile directory above {}", exe.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = profile_dir.parent().expect("the target directory").to_path_buf();
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--quiet", "-p", "dissect-cli", "--bin", "dissect", "--profile", &profile])
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("running cargo build for the dissect binary");
        assert!(status.success(), "cargo build -p dissect-cli failed ({status})");
        let bin = profile_dir.join(format!("dissect{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A `Command` for `dissect`.
pub fn dissect_command() -> Command {
    Command::new(dissect_bin())
}
