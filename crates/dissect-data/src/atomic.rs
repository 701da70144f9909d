//! Atomic file writes: the bytes go to a temporary file in the target's directory, which is
//! synced and renamed over the target, so a reader, or a rerun after a kill, sees the old file
//! or the complete new one, never a partial one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// Writes whatever `fill` writes to `path` atomically; missing parent directories are created.
/// On error nothing is left behind (the temporary file is removed when dropped).
///
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("sub/notes.txt");
/// dissect_data::atomic::write_with(&path, |f| f.write_all(b"first"))?;
/// dissect_data::atomic::write_with(&path, |f| f.write_all(b"second"))?;
/// assert_eq!(std::fs::read_to_string(&path)?, "second");
/// assert_eq!(std::fs::read_dir(path.parent().unwrap())?.count(), 1, "no temporary file is left");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<(), DataError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let mut tmp = tempfile::Builder::new().prefix(".").suffix(".tmp").tempfile_in(&dir).map_err(|e| DataError::io(&dir, e))?;
    fill(tmp.as_file_mut()).map_err(|e| DataError::io(path, e))?;
    tmp.as_file_mut().flush().and_then(|()| tmp.as_file().sync_all()).map_err(|e| DataError::io(path, e))?;
    tmp.persist(path).map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// [`write_with`] for bytes already in memory.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_with(path, |f| f.write_all(bytes))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
