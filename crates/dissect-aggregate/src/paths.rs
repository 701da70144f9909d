//! Paths as the report shows them: relative to the output directory, so a report copied or
//! published elsewhere names no directory of the machine that wrote it.

use std::path::{Component, Path, PathBuf};

/// `path` relative to `base`, both taken relative to the current directory when relative.
/// Existing paths are resolved through symlinks first, so `out/../x` and links compare
/// like the directories they name; others are normalized lexically.
pub fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (p, b) = (absolute(path), absolute(base));
    let (pc, bc): (Vec<Component<'_>>, Vec<Component<'_>>) = (p.components().collect(), b.components().collect());
    let common = pc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    if common == 0 {
        // No shared root (another drive): nothing relative exists, and the name is all that
        // can be shown without the machine's directories.
        return p.file_name().map(PathBuf::from).unwrap_or(p);
    }
    let mut out = PathBuf::new();
    for _ in common..bc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()) };
    std::fs::canonicalize(&joined).unwrap_or_else(|_| normalize(&joined))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `text` with an absolute path made relative to `base`; anything else is returned as it is.
/// Model specs joined with ` + ` are handled part by part.
pub fn show(text: &str, base: &Path) -> String {
    text.split(" + ")
        .map(|part| if is_absolute_path(part) { relative_to(Path::new(part), base).display().to_string() } else { part.to_string() })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn is_absolute_path(s: &str) -> bool {
    !s.is_empty() && !s.contains('\n') && Path::new(s).is_absolute()
}

/// Every string in `value` that is an absolute path, made relative to `base`.
pub fn relativize_json(value: &mut serde_json::Value, base: &Path) {
    match value {
        serde_json::Value::String(s) if s.split(" + ").any(is_absolute_path) => *s = show(s, base),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| relativize_json(v, base)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| relativize_json(v, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_base() {
        assert_eq!(relative_to(Path::new("/a/b/experiments"), Path::new("/a/b/report")), PathBuf::from("../experiments"));
        assert_eq!(relative_to(Path::new("/a/b/report/figures/x.png"), Path::new("/a/b/report")), PathBuf::from("figures/x.png"));
        assert_eq!(relative_to(Path::new("/a/b/report"), Path::new("/a/b/report")), PathBuf::from("."));
        assert_eq!(relative_to(Path::new("/x/./y/../z"), Path::new("/x/w")), PathBuf::from("../z"));
    }

    #[test]
    fn only_absolute_paths_change() {
        let base = Path::new("/r/out");
        assert_eq!(show("gemma3-270m", base), "gemma3-270m");
        assert_eq!(show("hf:google/gemma-3-270m", base), "hf:google/gemma-3-270m");
        assert_eq!(show("/r/models/m + other", base), "../models/m + other");
        let mut v = serde_json::json!({"model": "/r/models/m", "list": ["/r/out/t", 3, "text with /r/x inside"]});
        relativize_json(&mut v, base);
        assert_eq!(v, serde_json::json!({"model": "../models/m", "list": ["t", 3, "text with /r/x inside"]}));
    }
}
