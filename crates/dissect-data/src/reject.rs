//! Why a record was left out. Every stage reports bad records this way and carries on.

use serde::{Deserialize, Serialize};

/// One record a stage did not use, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The record's `known_id`; `None` only when the record is too malformed to have one.
    pub id: Option<u64>,
    /// Why it was left out.
    pub reason: RejectReason,
}

/// Why a record was left out. Its serde form is tagged by [`RejectReason::kind`] (the `kind` field); every
/// variant but [`RejectReason::WrongPrediction`] is bad input rather than a fact the model does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectReason {
    /// The record is not an object with the expected fields and types.
    Malformed {
        /// 0-based index of the record in the file's JSON array.
        record: usize,
        /// serde_json's description of what is missing or mistyped.
        message: String,
    },
    /// The prompt is empty or only whitespace.
    EmptyPrompt,
    /// The subject is empty or only whitespace.
    EmptySubject,
    /// The attribute is empty or only whitespace, or tokenizes to no token after the leading space.
    EmptyAttribute,
    /// The subject is not a byte-exact, case-sensitive substring of the prompt.
    SubjectNotInPrompt {
        /// The subject as given.
        subject: String,
    },
    /// The subject occurs in the prompt but no token covers it (a tokenizer without offsets).
    SubjectNotTokenized {
        /// The subject as given.
        subject: String,
    },
    /// A record with this id came earlier in the file; the first one is kept.
    DuplicateId,
    /// The tokenizer failed on the prompt or the attribute.
    Untokenizable {
        /// The tokenizer's error.
        message: String,
    },
    /// The prompt has more tokens than the model's context window.
    PromptTooLong {
        /// Input ids of the prompt, special tokens included.
        n_tokens: usize,
        /// The model's maximum sequence length (HF `max_position_embeddings` or `n_positions`).
        context_length: usize,
    },
    /// The model's greedy next token is not the first token of `" " + attribute`.
    WrongPrediction {
        /// The argmax token at the last position.
        predicted_id: u32,
        /// That token decoded on its own.
        predicted: String,
        /// Its softmax probability at the last position.
        predicted_prob: f32,
        /// The first token of `" " + attribute`.
        expected_id: u32,
        /// That token decoded on its own.
        expected: String,
        /// Its softmax probability at the last position (0 if the model has no output for it).
        expected_prob: f32,
    },
}

impl RejectReason {
    /// A stable tag, used as the `kind` column of rejection tables.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::Malformed { .. } => "malformed",
            RejectReason::EmptyPrompt => "empty_prompt",
            RejectReason::EmptySubject => "empty_subject",
            RejectReason::EmptyAttribute => "empty_attribute",
            RejectReason::SubjectNotInPrompt { .. } => "subject_not_in_prompt",
            RejectReason::SubjectNotTokenized { .. } => "subject_not_tokenized",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::Untokenizable { .. } => "untokenizable",
            RejectReason::PromptTooLong { .. } => "prompt_too_long",
            RejectReason::WrongPrediction { .. } => "wrong_prediction",
        }
    }

    /// Whether the record itself is bad, as opposed to the model not knowing the fact.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, RejectReason::WrongPrediction { .. })
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::Malformed { record, message } => write!(f, "record #{record} is malformed: {message}"),
            RejectReason::EmptyPrompt => write!(f, "empty prompt"),
            RejectReason::EmptySubject => write!(f, "empty subject"),
            RejectReason::EmptyAttribute => write!(f, "empty attribute"),
            RejectReason::SubjectNotInPrompt { subject } => write!(f, "subject {subject:?} does not occur in the prompt"),
            RejectReason::SubjectNotTokenized { subject } => write!(f, "no token of the prompt covers the subject {subject:?}"),
            RejectReason::DuplicateId => write!(f, "duplicate id (an earlier record has it; that one is kept)"),
            RejectReason::Untokenizable { message } => write!(f, "tokenizer failed: {message}"),
            RejectReason::PromptTooLong { n_tokens, context_length } => {
                write!(f, "prompt is {n_tokens} tokens, longer than the model's context of {context_length}")
            }
            RejectReason::WrongPrediction { predicted_id, predicted, predicted_prob, expected_id, expected, expected_prob } => write!(
                f,
                "wrong prediction: predicted {predicted:?} (id {predicted_id}, p {predicted_prob:.4}), expected {expected:?} (id {expected_id}, p {expected_prob:.4})"
            ),
        }
    }
}
