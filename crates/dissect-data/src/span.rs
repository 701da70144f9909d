//! Where the subject sits in a tokenized prompt.
//!
//! The rule: the subject is its **first** occurrence in the prompt (byte-exact, case-sensitive),
//! as the notebook's `find_token_range` (from ROME) takes `str.index`, i.e. the first match;
//! the span is every token whose byte range overlaps that occurrence. So a token that
//! straddles the subject's edge (`"▁Eiffel"` with its leading space, or one byte-fallback piece
//! of a multi-byte character) belongs to the span, exactly like ROME's rule "the token where
//! the running decoded length first passes the subject's start, through the token that reaches
//! its end". Working on the tokenizer's byte offsets, not on decoded tokens, is what keeps
//! non-ASCII subjects right: a byte-fallback token decodes to U+FFFD on its own, and ROME's
//! string search then fails or drifts.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::reject::RejectReason;

/// Token indices of the subject, `last` inclusive, in the same indexing as the model's input
/// ids (a prepended BOS counts as index 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectSpan {
    /// Index of the subject's first token.
    pub first: usize,
    /// Index of the subject's last token (inclusive; equals `first` for a one-token subject).
    pub last: usize,
}

impl SubjectSpan {
    /// Number of subject tokens, at least 1.
    pub fn len(&self) -> usize {
        self.last - self.first + 1
    }

    /// Always `false`: a span covers at least one token.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether token index `position` is one of the subject's tokens.
    pub fn contains(&self, position: usize) -> bool {
        (self.first..=self.last).contains(&position)
    }

    /// The subject's token indices, `first..=last`.
    pub fn positions(&self) -> std::ops::RangeInclusive<usize> {
        self.first..=self.last
    }
}

/// The byte range of the first occurrence of `subject` in `prompt`; `None` if it does not
/// occur or is empty.
pub fn subject_byte_range(prompt: &str, subject: &str) -> Option<Range<usize>> {
    if subject.is_empty() {
        return None;
    }
    prompt.find(subject).map(|start| start..start + subject.len())
}

/// The tokens whose byte ranges overlap `bytes`. Zero-width tokens (special tokens such as
/// BOS, which tokenizers report at `(0, 0)`) never belong to a span.
pub fn token_span(offsets: &[(usize, usize)], bytes: Range<usize>) -> Option<SubjectSpan> {
    let overlaps = |&(s, e): &(usize, usize)| s < e && s < bytes.end && e > bytes.start;
    let first = offsets.iter().position(overlaps)?;
    let last = offsets.iter().rposition(overlaps)?;
    Some(SubjectSpan { first, last })
}

/// The subject's token span in a prompt, from the tokenizer's byte offsets of that prompt.
pub fn locate_subject(prompt: &str, subject: &str, offsets: &[(usize, usize)]) -> Result<SubjectSpan, RejectReason> {
    let bytes = subject_byte_range(prompt, subject).ok_or_else(|| RejectReason::SubjectNotInPrompt { subject: subject.to_string() })?;
    token_span(offsets, bytes).ok_or_else(|| RejectReason::SubjectNotTokenized { subject: subject.to_string() })
}

/// How many special tokens the tokenizer put before the text (1 for a
/// tokenizer that prepends BOS, else 0),
/// recognised by their empty byte ranges: every token that comes from the text covers at
/// least one byte of it.
pub fn leading_special_tokens(offsets: &[(usize, usize)]) -> usize {
    offsets.iter().take_while(|(s, e)| s == e).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets of a whitespace-split text where each word token carries its leading space, as
    /// byte-level BPE and SentencePiece tokens do.
    fn word_offsets(text: &str, bos: bool) -> Vec<(usize, usize)> {
        let mut out = if bos { vec![(0, 0)] } else { vec![] };
        let mut start = 0;
        for (i, c) in text.char_indices().skip(1) {
            if c == ' ' {
                out.push((start, i));
                start = i;
            }
        }
        out.push((start, text.len()));
        out
    }

    #[test]
    fn span_of_a_subject_mid_prompt_includes_the_space_carrying_token() {
        let prompt = "The Eiffel Tower is located in";
        let offsets = word_offsets(prompt, true);
        // [BOS, "The", " Eiffel", " Tower", " is", ...]
        let span = locate_subject(prompt, "Eiffel Tower", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 2, last: 3 });
        assert_eq!(span.len(), 2);
        let span = locate_subject(prompt, "The", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 1, last: 1 });
    }

    #[test]
    fn a_subject_occurring_twice_takes_the_first_occurrence() {
        let prompt = "Paris Hilton was born in Paris";
        let offsets = word_offsets(prompt, false);
        let span = locate_subject(prompt, "Paris", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 0, last: 0 });
        // An occurrence inside a longer word counts too, as in ROME's str.index.
        let prompt = "Parisian life is in Paris";
        let span = locate_subject(prompt, "Paris", &word_offsets(prompt, false)).unwrap();
        assert_eq!(span, SubjectSpan { first: 0, last: 0 });
    }

    #[test]
    fn non_ascii_subject_with_byte_fallback_tokens() {
        // "Honoré de Balzac was" with "é" (2 bytes) split into two byte-fallback tokens that
        // both report the whole character's range, as HF tokenizers do.
        let prompt = "Honoré de Balzac was";
        let e_acute = prompt.find('é').unwrap();
        assert_eq!(e_acute, 5);
        let offsets = vec![(0, 0), (0, 5), (5, 7), (5, 7), (7, 10), (10, 17), (17, 21)];
        let span = locate_subject(prompt, "Honoré de Balzac", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 1, last: 5 });
        // A subject that starts inside a multi-byte character's tokens.
        let prompt = "Der Müller ist";
        let offsets = vec![(0, 3), (3, 5), (5, 7), (5, 7), (7, 11), (11, 15)];
        let span = locate_subject(prompt, "üller", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 2, last: 4 });
        // Byte offsets, not character offsets: "ü" shifts the later subject by one byte.
        let span = locate_subject(prompt, "ist", &offsets).unwrap();
        assert_eq!(span, SubjectSpan { first: 5, last: 5 });
    }

    #[test]
    fn missing_subject_and_untokenized_subject_are_reasons() {
        let prompt = "Rome is in";
        assert_eq!(locate_subject(prompt, "Milan", &word_offsets(prompt, false)), Err(RejectReason::SubjectNotInPrompt { subject: "Milan".into() }));
        assert_eq!(locate_subject(prompt, "rome", &word_offsets(prompt, false)).unwrap_err().kind(), "subject_not_in_prompt");
        assert_eq!(locate_subject(prompt, "Rome", &[(0, 0), (0, 0)]), Err(RejectReason::SubjectNotTokenized { subject: "Rome".into() }));
        assert_eq!(subject_byte_range(prompt, ""), None);
    }

    #[test]
    fn special_tokens_are_counted_by_their_empty_ranges() {
        assert_eq!(leading_special_tokens(&[(0, 0), (0, 3), (3, 5)]), 1);
        assert_eq!(leading_special_tokens(&[(0, 3), (3, 5)]), 0);
        assert_eq!(leading_special_tokens(&[]), 0);
    }
}
