//! The known-facts dataset (Meng et al. 2022, `known_1000.json`) and the checks every record
//! must pass before a model sees it.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::reject::{RejectReason, Rejected};
use crate::span::subject_byte_range;

/// One record of `known_1000.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownFact {
    /// The record's id in the dataset, unique per file; every later table keys records by it.
    pub known_id: u64,
    /// The subject as it occurs in the prompt (e.g. `Vinson Massif`); its first occurrence gives the subject span.
    pub subject: String,
    /// The object the prompt should be completed with (e.g. `Antarctica`); the model must predict its first token.
    pub attribute: String,
    /// The relation's template with `{}` for the subject (in `known_1000.json` not always worded exactly
    /// like the prompt). Only `known_id`, `subject`, `attribute` and `prompt` are required, so that other
    /// datasets of subject/attribute prompts load without inventing the optional fields; those default to empty.
    #[serde(default)]
    pub template: String,
    /// The continuation the original model (GPT-2 XL) generated when the dataset was made; kept for reference, never used.
    #[serde(default)]
    pub prediction: String,
    /// The text the model reads; the attribute is its expected continuation.
    pub prompt: String,
    /// The Wikidata relation (e.g. `P30`, continent); empty when the dataset has none.
    #[serde(default)]
    pub relation_id: String,
}

impl KnownFact {
    /// What is wrong with this record on its own (duplicates need the whole file).
    pub fn problem(&self) -> Option<RejectReason> {
        if self.prompt.trim().is_empty() {
            return Some(RejectReason::EmptyPrompt);
        }
        if self.subject.trim().is_empty() {
            return Some(RejectReason::EmptySubject);
        }
        if self.attribute.trim().is_empty() {
            return Some(RejectReason::EmptyAttribute);
        }
        if subject_byte_range(&self.prompt, &self.subject).is_none() {
            return Some(RejectReason::SubjectNotInPrompt { subject: self.subject.clone() });
        }
        None
    }
}

/// Reads a file in `known_1000.json`'s format: the records that pass every check, and the
/// others with the reason. `limit` keeps only the first `limit` records of the file (valid or
/// not), so a limited run reports exactly the rejections among those.
///
/// A file that is not a JSON array is an error naming the line and column; a record that is
/// not a well-formed fact only rejects that record.
pub fn load_known_facts(path: &Path, limit: Option<usize>) -> Result<(Vec<KnownFact>, Vec<Rejected>), DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_known_facts(&text, path, limit)
}

/// [`load_known_facts`] on text already read; `origin` names it in errors.
pub fn parse_known_facts(text: &str, origin: &Path, limit: Option<usize>) -> Result<(Vec<KnownFact>, Vec<Rejected>), DataError> {
    let records: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| DataError::Json { path: origin.to_path_buf(), line: e.line(), column: e.column(), message: e.to_string() })?;
    let n = limit.unwrap_or(records.len()).min(records.len());
    let mut checker = FactChecker::default();
    let mut facts = Vec::with_capacity(n);
    let mut rejected = Vec::new();
    for (record, value) in records.into_iter().take(n).enumerate() {
        let id = value.get("known_id").and_then(serde_json::Value::as_u64);
        let fact = match serde_json::from_value::<KnownFact>(value) {
            Ok(f) => f,
            Err(e) => {
                rejected.push(Rejected { id, reason: RejectReason::Malformed { record, message: e.to_string() } });
                continue;
            }
        };
        match checker.check(&fact) {
            Some(reason) => rejected.push(Rejected { id: Some(fact.known_id), reason }),
            None => facts.push(fact),
        }
    }
    Ok((facts, rejected))
}

/// Splits facts into those that pass [`KnownFact::problem`] and have an id not seen before,
/// and the rest, keeping the input order.
pub fn validate_facts(facts: impl IntoIterator<Item = KnownFact>) -> (Vec<KnownFact>, Vec<Rejected>) {
    let mut checker = FactChecker::default();
    let mut kept = Vec::new();
    let mut rejected = Vec::new();
    for f in facts {
        match checker.check(&f) {
            Some(reason) => rejected.push(Rejected { id: Some(f.known_id), reason }),
            None => kept.push(f),
        }
    }
    (kept, rejected)
}

/// Checks records in file order: [`KnownFact::problem`], then duplicate ids (the first valid
/// record of an id wins).
#[derive(Debug, Default)]
pub struct FactChecker {
    seen: HashSet<u64>,
}

impl FactChecker {
    /// Why `f` is left out, or `None` to keep it; a kept fact's id counts as seen from then on.
    pub fn check(&mut self, f: &KnownFact) -> Option<RejectReason> {
        f.problem().or_else(|| (!self.seen.insert(f.known_id)).then_some(RejectReason::DuplicateId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Vec<KnownFact>, Vec<Rejected>), DataError> {
        parse_known_facts(text, Path::new("test.json"), None)
    }

    fn record(id: u64, subject: &str, prompt: &str) -> String {
        serde_json::json!({"known_id": id, "subject": subject, "attribute": "X", "template": "",
            "prediction": "", "prompt": prompt, "relation_id": "P1"})
        .to_string()
    }

    #[test]
    fn one_bad_record_does_not_lose_the_others() {
        let text = format!(
            "[{}, {}, {}, {}, {}, {}]",
            record(0, "Paris", "Paris is the capital of"),
            record(1, "Rome", "Milan is in"),
            r#"{"known_id": 2, "subject": 7}"#,
            record(3, "Oslo", ""),
            record(0, "Paris", "Paris is in"),
            record(5, "Bern", "Bern is the capital of"),
        );
        let (facts, rejected) = parse(&text).unwrap();
        assert_eq!(facts.iter().map(|f| f.known_id).collect::<Vec<_>>(), vec![0, 5]);
        let kinds: Vec<(Option<u64>, &str)> = rejected.iter().map(|r| (r.id, r.reason.kind())).collect();
        assert_eq!(kinds, vec![(Some(1), "subject_not_in_prompt"), (Some(2), "malformed"), (Some(3), "empty_prompt"), (Some(0), "duplicate_id")]);
        match &rejected[1].reason {
            RejectReason::Malformed { record, message } => {
                assert_eq!(*record, 2);
                assert!(message.contains("subject") || message.contains("string"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_record_without_an_id_is_rejected_with_no_id() {
        let (facts, rejected) = parse(r#"[{"subject": "A", "attribute": "B", "prompt": "A is"}]"#).unwrap();
        assert!(facts.is_empty());
        assert_eq!(rejected[0].id, None);
        assert!(rejected[0].reason.to_string().contains("record #0"), "{}", rejected[0].reason);
    }

    #[test]
    fn a_malformed_file_names_line_and_column() {
        let text = "[\n  {\"known_id\": 0,\n   \"subject\": \"A\",,\n  }\n]";
        match parse(text) {
            Err(e @ DataError::Json { line, .. }) => {
                assert_eq!(line, 3);
                let shown = e.to_string();
                assert!(shown.starts_with("test.json: line 3, column"), "{shown}");
                assert!(shown.contains("\nhint: "), "{shown}");
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
        assert!(matches!(parse(r#"{"known_id": 0}"#), Err(DataError::Json { .. })));
    }

    #[test]
    fn optional_fields_default_and_limit_counts_records_not_facts() {
        let text = format!(
            "[{}, {}, {}]",
            r#"{"known_id": 9, "subject": "A", "attribute": "B", "prompt": "A is"}"#,
            record(1, "Z", "no subject here"),
            record(2, "C", "C is"),
        );
        let (facts, rejected) = parse_known_facts(&text, Path::new("t.json"), Some(2)).unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].relation_id, "");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].id, Some(1));
    }

    #[test]
    fn blank_attribute_and_subject_are_rejected() {
        let mut f = KnownFact {
            known_id: 0,
            subject: "A".into(),
            attribute: " ".into(),
            template: String::new(),
            prediction: String::new(),
            prompt: "A is".into(),
            relation_id: String::new(),
        };
        assert_eq!(f.problem(), Some(RejectReason::EmptyAttribute));
        f.subject = String::new();
        assert_eq!(f.problem(), Some(RejectReason::EmptySubject));
    }

    #[test]
    fn the_shipped_dataset_loads_whole() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/known_1000.json");
        let (facts, rejected) = load_known_facts(&path, None).unwrap();
        assert_eq!(facts.len(), 1209);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(facts.iter().filter(|f| !f.prompt.is_ascii()).count(), 9);
    }
}
