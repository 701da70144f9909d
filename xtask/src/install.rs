//! Writing a file so that it appears at its final path whole and verified, or not at all.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::sha256::HashingWriter;
use crate::temp::TempFile;

/// What the written bytes must be.
pub(crate) struct Expected<'a> {
    pub(crate) sha256: &'a str,
    pub(crate) size: u64,
}

/// The error when the written bytes are not the expected ones.
#[derive(Debug)]
pub(crate) struct Mismatch {
    pub(crate) dest: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) expected_sha256: String,
    pub(crate) expected_size: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the data for {} has sha256 {} ({} bytes), expected {} ({} bytes); it was not installed",
            self.dest.display(),
            self.sha256,
            self.size,
            self.expected_sha256,
            self.expected_size,
        )
    }
}

impl std::error::Error for Mismatch {}

/// Creates `dest` from whatever `fill` writes: into a temporary file beside `dest`, which
/// is checked against `expected` (when given), synced, then renamed over `dest`. On any
/// error the temporary file is removed and `dest` is left as it was.
pub(crate) fn install(dest: &Path, expected: Option<Expected<'_>>, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = dest.parent().context("destination has no parent directory")?;
    let name = dest.file_name().context("destination has no file name")?.to_string_lossy();
    let (tmp, file) = TempFile::new_in(dir, &name)?;

    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    fill(&mut writer)?;
    let (buffered, sha256, size) = writer.finish();
    let file: File = buffered.into_inner().map_err(|e| e.into_error()).context("cannot write")?;

    if let Some(expected) = expected {
        if (sha256.as_str(), size) != (expected.sha256, expected.size) {
            return Err(Mismatch { dest: dest.to_owned(), sha256, size, expected_sha256: expected.sha256.to_owned(), expected_size: expected.size }.into());
        }
    }
    file.sync_all().context("cannot sync")?;
    drop(file);
    tmp.persist(dest)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use anyhow::bail;

    use super::*;
    use crate::temp::TempDir;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// Two "chunk" files on disk, concatenated the way the model is.
    fn chunks(dir: &Path) -> Vec<PathBuf> {
        let chunks = vec![dir.join("c0"), dir.join("c1")];
        fs::write(&chunks[0], b"a").unwrap();
        fs::write(&chunks[1], b"bc").unwrap();
        chunks
    }

    fn concat(chunks: &[PathBuf]) -> impl FnOnce(&mut dyn Write) -> Result<()> + '_ {
        move |out| {
            for chunk in chunks {
                std::io::copy(&mut File::open(chunk)?, out)?;
            }
            Ok(())
        }
    }

    #[test]
    fn installs_verified_concatenation() {
        let src = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dst = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dest = dst.path().join("m.gguf");
        let chunks = chunks(src.path());
        install(&dest, Some(Expected { sha256: ABC, size: 3 }), concat(&chunks)).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abc");
        assert_eq!(names(dst.path()), ["m.gguf"], "no temporary file left");
    }

    #[test]
    fn wrong_hash_leaves_no_file() {
        let src = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dst = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dest = dst.path().join("m.gguf");
        let chunks = chunks(src.path());
        let wrong = "0".repeat(64);
        let err = install(&dest, Some(Expected { sha256: &wrong, size: 3 }), concat(&chunks)).unwrap_err();
        let mismatch = err.downcast_ref::<Mismatch>().expect("a Mismatch error");
        assert_eq!((mismatch.sha256.as_str(), mismatch.size), (ABC, 3));
        assert!(err.to_string().contains(&format!("has sha256 {ABC} (3 bytes), expected {wrong}")), "{err}");
        assert_eq!(names(dst.path()), Vec::<String>::new(), "neither final nor temporary file");
    }

    #[test]
    fn wrong_size_leaves_existing_file_alone() {
        let src = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dst = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dest = dst.path().join("m.gguf");
        fs::write(&dest, b"old").unwrap();
        let chunks = chunks(src.path());
        assert!(install(&dest, Some(Expected { sha256: ABC, size: 4 }), concat(&chunks)).is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(dst.path()), ["m.gguf"]);
    }

    #[test]
    fn failing_fill_leaves_no_file() {
        let dst = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dest = dst.path().join("m.gguf");
        let err = install(&dest, None, |out| {
            out.write_all(b"half")?;
            bail!("network went away")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "network went away");
        assert_eq!(names(dst.path()), Vec::<String>::new());
    }

    #[test]
    fn unchecked_install_replaces_file() {
        let dst = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let dest = dst.path().join("TERMS.html");
        fs::write(&dest, b"old").unwrap();
        install(&dest, None, |out| Ok(out.write_all(b"new")?)).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(names(dst.path()), ["TERMS.html"]);
    }
}
