//! Temporary files and directories that remove themselves unless kept, on `tempfile`.
//!
//! Names carry the creating process's id (`<prefix><pid>-<random>`), so that
//! [`remove_stale`] can tell the leftovers of a killed run from those of a live one.

use std::fs::{self, File};
use std::path::Path;

use anyhow::{Context, Result};

/// A directory removed, with its contents, on drop.
pub(crate) struct TempDir {
    inner: tempfile::TempDir,
}

impl TempDir {
    /// A new, empty directory `<parent>/<prefix><pid>-<random>`; `parent` is created if needed.
    pub(crate) fn new_in(parent: &Path, prefix: &str) -> Result<TempDir> {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let inner = with_prefix(prefix, |b| b.tempdir_in(parent)).with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        Ok(TempDir { inner })
    }

    pub(crate) fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// A file removed on drop unless [`TempFile::persist`]ed.
pub(crate) struct TempFile {
    inner: tempfile::TempPath,
}

impl TempFile {
    /// A new file `<dir>/<prefix(name)><pid>-<random>`, hidden and in `dir` so that
    /// [`TempFile::persist`] is a same-filesystem (atomic) rename.
    pub(crate) fn new_in(dir: &Path, name: &str) -> Result<(TempFile, File)> {
        let named = with_prefix(&TempFile::prefix(name), |b| b.tempfile_in(dir)).with_context(|| format!("cannot create a file in {}", dir.display()))?;
        let (file, inner) = named.into_parts();
        Ok((TempFile { inner }, file))
    }

    /// The start of the names of temporary files for `name`, for [`remove_stale`].
    pub(crate) fn prefix(name: &str) -> String {
        format!(".{name}.partial-")
    }

    /// Renames the file to `dest`, atomically replacing whatever is there.
    pub(crate) fn persist(self, dest: &Path) -> Result<()> {
        self.inner.persist(dest).map_err(|e| e.error).with_context(|| format!("cannot rename a temporary file to {}", dest.display()))
    }
}

/// `make` on a builder whose names start `<prefix><pid>-`.
fn with_prefix<T>(prefix: &str, make: impl FnOnce(&tempfile::Builder<'_, '_>) -> std::io::Result<T>) -> std::io::Result<T> {
    let prefix = format!("{prefix}{}-", std::process::id());
    make(tempfile::Builder::new().prefix(&prefix))
}

/// Removes the temporary files and directories `dir/<prefix><pid>-<n>` left behind by
/// processes that are gone (killed before they could clean up). Only where `/proc`
/// tells which processes are alive; elsewhere nothing is removed.
pub(crate) fn remove_stale(dir: &Path, prefix: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|name| name.strip_prefix(prefix)).and_then(|suffix| suffix.split_once('-')).and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        eprintln!("removing {}, left behind by an interrupted run", path.display());
        let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        // A pid above the Linux maximum (2^22) is never alive.
        let dead = dir.path().join(".m.partial-4194999-0");
        let ours = dir.path().join(format!(".m.partial-{}-0", std::process::id()));
        let other = dir.path().join("m");
        let dead_dir = dir.path().join(".fetch-4194999-0");
        for file in [&dead, &ours, &other] {
            fs::write(file, b"x").unwrap();
        }
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("f"), b"x").unwrap();
        remove_stale(dir.path(), &TempFile::prefix("m"));
        remove_stale(dir.path(), ".fetch-");
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists() && !dead_dir.exists());
        }
        assert!(ours.exists() && other.exists());
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let parent = std::env::temp_dir();
        let dir = TempDir::new_in(&parent, "xtask-test-").unwrap();
        let path = dir.path().to_owned();
        fs::write(path.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn temp_file_is_removed_unless_persisted() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "xtask-test-").unwrap();
        let (tmp, _file) = TempFile::new_in(dir.path(), "a").unwrap();
        drop(tmp);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        let (tmp, _file) = TempFile::new_in(dir.path(), "a").unwrap();
        tmp.persist(&dir.path().join("a")).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a"]);
    }
}
