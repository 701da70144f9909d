//! `<file>.sha256` stamps: a verified hash, trusted while the file's size and mtime
//! are unchanged, so that a rerun need not re-hash a large file.
//!
//! A stamp is a cache, never the truth: anything unexpected means "re-hash".

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};

pub(crate) fn path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".sha256");
    file.with_file_name(name)
}

/// Whether `file` (with metadata `meta`) carries a stamp saying it hashes to `sha256`.
pub(crate) fn matches(file: &Path, meta: &Metadata, sha256: &str) -> bool {
    let Ok(text) = fs::read_to_string(path(file)) else {
        return false;
    };
    text == render(sha256, meta).unwrap_or_default()
}

/// Records that `file`, as it is now, hashes to `sha256` (which the caller verified).
pub(crate) fn write(file: &Path, sha256: &str) -> Result<()> {
    let meta = fs::metadata(file).with_context(|| format!("cannot stat {}", file.display()))?;
    let stamp = path(file);
    let text = render(sha256, &meta).context("cannot read the file's mtime")?;
    fs::write(&stamp, text).with_context(|| format!("cannot write {}", stamp.display()))
}

pub(crate) fn remove(file: &Path) {
    let _ = fs::remove_file(path(file));
}

fn render(sha256: &str, meta: &Metadata) -> Option<String> {
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some(format!("sha256 {sha256}\nsize {}\nmtime_ns {mtime}\n", meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::TempDir;

    #[test]
    fn stamp_is_trusted_only_while_the_file_is_unchanged() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let file = dir.path().join("m.gguf");
        assert_eq!(path(&file), dir.path().join("m.gguf.sha256"));

        fs::write(&file, b"abc").unwrap();
        let meta = fs::metadata(&file).unwrap();
        assert!(!matches(&file, &meta, "h"), "no stamp yet");

        write(&file, "h").unwrap();
        assert!(matches(&file, &meta, "h"));
        assert!(!matches(&file, &meta, "other"), "different expected hash");

        fs::write(&file, b"abcd").unwrap();
        assert!(!matches(&file, &fs::metadata(&file).unwrap(), "h"), "size changed");

        remove(&file);
        assert!(!path(&file).exists());
    }
}
