//! The token positions the experiments read, with the names every Parquet table uses.
//!
//! "First token" is the first token of the *text*: a BOS that the tokenizer prepends is
//! skipped, because its hidden state is the same for every prompt (an attention sink, not a
//! word of the prompt). The notebook's model has no BOS, so there index 0 is the first word;
//! on any model without BOS the two readings agree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::span::SubjectSpan;

/// A kind of token position. The string names are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionKind {
    /// The first token of the text (after any BOS).
    #[serde(rename = "first")]
    FirstToken,
    /// The first token of the subject span (`subject_first`).
    SubjectFirst,
    /// The last token of the subject span (`subject_last`), where the paper finds the attributes are enriched.
    SubjectLast,
    /// The token right after the subject (the notebook's "subject subseq."); it may be the
    /// last token, which the notebook keeps under both names.
    AfterSubject,
    /// The prompt's last token, whose next-token prediction is the attribute.
    Last,
}

impl PositionKind {
    /// Every kind in prompt order; tables and caches list kinds in this order.
    pub const ALL: [PositionKind; 5] =
        [PositionKind::FirstToken, PositionKind::SubjectFirst, PositionKind::SubjectLast, PositionKind::AfterSubject, PositionKind::Last];

    /// The on-disk name (`first`, `subject_first`, `subject_last`, `after_subject`, `last`), also the serde form.
    pub fn name(self) -> &'static str {
        match self {
            PositionKind::FirstToken => "first",
            PositionKind::SubjectFirst => "subject_first",
            PositionKind::SubjectLast => "subject_last",
            PositionKind::AfterSubject => "after_subject",
            PositionKind::Last => "last",
        }
    }
}

impl fmt::Display for PositionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`PositionKind::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown position kind `{0}`\nhint: one of first, subject_first, subject_last, after_subject, last")]
pub struct UnknownPositionKind(pub String);

impl FromStr for PositionKind {
    type Err = UnknownPositionKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PositionKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownPositionKind(s.to_string()))
    }
}

/// The positions of one tokenized prompt, in input-id indexing (BOS, if any, is index 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPositions {
    /// The first token of the text: the number of leading special tokens (1 after a BOS, else 0).
    pub first_token: usize,
    /// The subject's tokens.
    pub subject: SubjectSpan,
    /// The last input id, `n_tokens - 1`.
    pub last: usize,
}

impl TokenPositions {
    /// The positions of a prompt of `n_tokens` input ids. `n_special` is the number of special tokens
    /// before the text ([`crate::span::leading_special_tokens`]). Panics if the span ends past the prompt.
    pub fn new(subject: SubjectSpan, n_tokens: usize, n_special: usize) -> Self {
        assert!(subject.last < n_tokens, "subject span {subject:?} past the {n_tokens} tokens");
        TokenPositions { first_token: n_special, subject, last: n_tokens - 1 }
    }

    /// The index of a position kind; `None` for [`PositionKind::AfterSubject`] when the
    /// subject ends the prompt.
    pub fn get(&self, kind: PositionKind) -> Option<usize> {
        match kind {
            PositionKind::FirstToken => Some(self.first_token),
            PositionKind::SubjectFirst => Some(self.subject.first),
            PositionKind::SubjectLast => Some(self.subject.last),
            PositionKind::AfterSubject => Some(self.subject.last + 1).filter(|&p| p <= self.last),
            PositionKind::Last => Some(self.last),
        }
    }

    /// Every kind that exists for this prompt with its index, in [`PositionKind::ALL`] order.
    /// Kinds may share an index (a prompt that starts with its subject).
    pub fn iter(&self) -> impl Iterator<Item = (PositionKind, usize)> + '_ {
        PositionKind::ALL.into_iter().filter_map(|k| self.get(k).map(|p| (k, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_the_on_disk_ones() {
        let names: Vec<&str> = PositionKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["first", "subject_first", "subject_last", "after_subject", "last"]);
        for k in PositionKind::ALL {
            assert_eq!(k.name().parse::<PositionKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.name()));
        }
        assert!("First".parse::<PositionKind>().is_err());
    }

    #[test]
    fn positions_with_bos_skip_it_for_the_first_token() {
        // [BOS, "The", " Eiffel", " Tower", " is", " in"]
        let p = TokenPositions::new(SubjectSpan { first: 2, last: 3 }, 6, 1);
        let got: Vec<(PositionKind, usize)> = p.iter().collect();
        assert_eq!(
            got,
            vec![
                (PositionKind::FirstToken, 1),
                (PositionKind::SubjectFirst, 2),
                (PositionKind::SubjectLast, 3),
                (PositionKind::AfterSubject, 4),
                (PositionKind::Last, 5)
            ]
        );
    }

    #[test]
    fn after_subject_is_kept_when_it_is_the_last_token() {
        // ["Apple", " makes"]: subject-last + 1 is the last token, kept as the notebook keeps it.
        let p = TokenPositions::new(SubjectSpan { first: 0, last: 0 }, 2, 0);
        assert_eq!(p.get(PositionKind::AfterSubject), Some(1));
        assert_eq!(p.get(PositionKind::Last), Some(1));
        assert_eq!(p.get(PositionKind::FirstToken), Some(0));
        assert_eq!(p.iter().count(), 5);
        // ["Paris", " Apple"] with the subject last: no token after it.
        let p = TokenPositions::new(SubjectSpan { first: 1, last: 1 }, 2, 0);
        assert_eq!(p.get(PositionKind::AfterSubject), None);
    }
}
