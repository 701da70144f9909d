//! Text about each subject (for the attributes rate) and the stopword list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::DataError;

/// Subject → its paragraphs.
pub type Paragraphs = BTreeMap<String, Vec<String>>;

/// A CSV row that was left out, by its line number in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// 1-based line in the file where the row starts (the header is line 1; 0 if unknown).
    pub line: u64,
    /// Why it was skipped (the CSV reader's error, or `empty subject`).
    pub reason: String,
}

/// Subject → its paragraphs, from a CSV with the columns `subject` and `paragraphs` (other
/// columns are ignored). Several rows for one subject add paragraphs in file order; rows with
/// empty text add none. A row that cannot be read (wrong number of fields, bad UTF-8) is
/// skipped and returned; a file without the two columns is an error.
pub fn load_paragraphs(path: &Path) -> Result<(Paragraphs, Vec<SkippedRow>), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    read_paragraphs(file, path)
}

/// [`load_paragraphs`] from any reader; `origin` names it in errors.
pub fn read_paragraphs(reader: impl std::io::Read, origin: &Path) -> Result<(Paragraphs, Vec<SkippedRow>), DataError> {
    let expected = "subject, paragraphs".to_string();
    let csv_err = |line: u64, message: String| DataError::Csv { path: origin.to_path_buf(), line, message, expected: expected.clone() };
    let mut rd = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let headers = rd.headers().map_err(|e| csv_err(1, e.to_string()))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| csv_err(1, format!("no `{name}` column in the header {:?}", headers.iter().collect::<Vec<_>>())))
    };
    let (subject_col, text_col) = (column("subject")?, column("paragraphs")?);
    let mut by_subject = Paragraphs::new();
    let mut skipped = Vec::new();
    for row in rd.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                skipped.push(SkippedRow { line, reason: e.to_string() });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        let subject = row.get(subject_col).unwrap_or_default();
        if subject.is_empty() {
            skipped.push(SkippedRow { line, reason: "empty subject".into() });
            continue;
        }
        let entry = by_subject.entry(subject.to_string()).or_default();
        let text = row.get(text_col).unwrap_or_default();
        if !text.trim().is_empty() {
            entry.push(text.to_string());
        }
    }
    Ok((by_subject, skipped))
}

/// One word a line; blank lines are ignored and words are trimmed. Case is kept: the
/// experiments decide where to compare case-insensitively.
pub fn load_stopwords(path: &Path) -> Result<BTreeSet<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    Ok(text.lines().map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name)
    }

    #[test]
    fn quoted_fields_repeated_subjects_and_a_bad_row() {
        let text = "subject,paragraphs\n\"Paris\",\"The \"\"City of Light\"\", capital\"\nRome,Eternal city\nParis,On the Seine\nbroken,row,extra\nOslo,\n";
        let (map, skipped) = read_paragraphs(text.as_bytes(), Path::new("p.csv")).unwrap();
        assert_eq!(map["Paris"], vec!["The \"City of Light\", capital".to_string(), "On the Seine".to_string()]);
        assert_eq!(map["Rome"], vec!["Eternal city".to_string()]);
        assert!(map["Oslo"].is_empty());
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 5);
    }

    #[test]
    fn a_header_without_the_columns_is_an_error_naming_the_file() {
        let err = read_paragraphs("name,text\nA,b\n".as_bytes(), Path::new("p.csv")).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("p.csv: line 1: no `subject` column"), "{shown}");
        assert!(shown.contains("\nhint: "), "{shown}");
    }

    #[test]
    fn the_shipped_files_load() {
        let (map, skipped) = load_paragraphs(&data("subject_paragraphs.csv")).unwrap();
        assert_eq!(map.len(), 1018);
        assert!(skipped.is_empty());
        assert!(map.values().all(|p| p.len() == 1 && p[0].len() >= 37));
        let stop = load_stopwords(&data("nltk_stopwords_english.txt")).unwrap();
        assert_eq!(stop.len(), 153);
        assert!(stop.contains("the") && stop.contains("ourselves"));
    }
}
