//! Turning a fact into model input, its subject span and the token the model must predict.

use dissect_data::reject::RejectReason;
use dissect_data::span::{leading_special_tokens, locate_subject};
use dissect_data::{KnownFact, SubjectSpan};
use dissect_model::tokenizer::Tokenizer;

/// A fact ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The prompt's input ids, special tokens (BOS) included, as the model receives them.
    pub ids: Vec<u32>,
    /// The subject's tokens, indexed into `ids`.
    pub subject_span: SubjectSpan,
    /// Index in `ids` of the first token of the text: the number of leading special tokens (1 after a BOS, else 0).
    pub first_token: usize,
    /// First token of `" " + attribute`.
    pub expected_id: u32,
}

/// Tokenizes the prompt (with the tokenizer's own special tokens, as the model was trained)
/// and the attribute, or says why the fact cannot be used.
pub fn prepare(tokenizer: &Tokenizer, fact: &KnownFact, context_length: usize) -> Result<Prepared, RejectReason> {
    let untokenizable = |e: dissect_model::ModelError| RejectReason::Untokenizable { message: e.to_string() };
    let enc = tokenizer.encode(&fact.prompt).map_err(untokenizable)?;
    if enc.ids.len() > context_length {
        return Err(RejectReason::PromptTooLong { n_tokens: enc.ids.len(), context_length });
    }
    let subject_span = locate_subject(&fact.prompt, &fact.subject, &enc.offsets)?;
    let first_token = leading_special_tokens(&enc.offsets);
    let expected_id = attribute_first_token(tokenizer, &fact.attribute).map_err(untokenizable)?.ok_or(RejectReason::EmptyAttribute)?;
    Ok(Prepared { ids: enc.ids, subject_span, first_token, expected_id })
}

/// The first token of `" " + attribute` as the continuation of a prompt: the special tokens
/// the tokenizer puts before any text (a BOS) are skipped, recognised by their empty byte
/// ranges, so this needs no knowledge of which tokenizer it is.
pub fn attribute_first_token(tokenizer: &Tokenizer, attribute: &str) -> Result<Option<u32>, dissect_model::ModelError> {
    let enc = tokenizer.encode(&format!(" {attribute}"))?;
    Ok(enc.ids.get(leading_special_tokens(&enc.offsets)).copied())
}
