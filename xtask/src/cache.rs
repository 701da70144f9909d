//! Where fetched files live: `$DISSECT_HOME`, else `~/.cache/dissect`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The cache directory, from the environment.
pub(crate) fn dir() -> Result<PathBuf> {
    dir_from(std::env::var_os("DISSECT_HOME"), std::env::var_os("HOME"))
}

/// `<cache>/models`.
pub(crate) fn models_dir(cache: &Path) -> PathBuf {
    cache.join("models")
}

/// The cache directory given `$DISSECT_HOME` and `$HOME` (unset and empty are alike).
/// Always absolute, so that a printed path works from any working directory.
pub(crate) fn dir_from(dissect_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = match (non_empty(dissect_home), non_empty(home)) {
        (Some(dissect_home), _) => dissect_home,
        (None, Some(home)) => home.join(".cache").join("dissect"),
        (None, None) => bail!(
            "cannot find the cache directory: neither DISSECT_HOME nor HOME is set\n\
             hint: set DISSECT_HOME to a directory for models and other downloads"
        ),
    };
    std::path::absolute(&dir).with_context(|| format!("cannot make {} absolute", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn dissect_home_wins() {
        assert_eq!(dir_from(os("/d"), os("/h")).unwrap(), Path::new("/d"));
        assert_eq!(dir_from(os("/d"), None).unwrap(), Path::new("/d"));
    }

    #[test]
    fn falls_back_to_home_cache() {
        assert_eq!(dir_from(None, os("/h")).unwrap(), Path::new("/h/.cache/dissect"));
        assert_eq!(dir_from(os(""), os("/h")).unwrap(), Path::new("/h/.cache/dissect"));
    }

    #[test]
    fn relative_dissect_home_is_made_absolute() {
        let dir = dir_from(os("rel/dir"), None).unwrap();
        assert!(dir.is_absolute());
        assert!(dir.ends_with("rel/dir"));
    }

    #[test]
    fn neither_set_is_an_error_with_a_hint() {
        let err = dir_from(None, os("")).unwrap_err().to_string();
        assert!(err.contains("hint: set DISSECT_HOME"), "{err}");
    }

    #[test]
    fn models_dir_is_under_cache() {
        assert_eq!(models_dir(Path::new("/c")), Path::new("/c/models"));
    }
}
