//! Running the model over the facts in length-sorted batches and deciding each one.

use burn_tensor::backend::Backend;
use dissect_data::known::FactChecker;
use dissect_data::reject::{RejectReason, Rejected};
use dissect_data::{KeptRecord, KnownFact};
use dissect_model::predict::{last_position_probs, top_k};
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::error::FilterError;
use crate::prepare::{prepare, Prepared};

/// The filter stage's options; they are part of the output's parameter hash (padding can move a probability's last bits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Prompts per forward pass. Within a chunk, prompts of similar lengths share a batch.
    pub batch_size: usize,
    /// Facts per Parquet part, in input order: each part is written when its facts are
    /// decided, so a killed run loses at most one chunk's work.
    pub chunk_size: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig { batch_size: 16, chunk_size: 256 }
    }
}

impl FilterConfig {
    /// Refuses sizes of 0.
    pub fn check(&self) -> Result<(), FilterError> {
        for (name, value) in [("batch size", self.batch_size), ("chunk size", self.chunk_size)] {
            if value == 0 {
                return Err(FilterError::Size { name });
            }
        }
        Ok(())
    }
}

/// The decision on every fact, each list in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterOutput {
    /// The facts the model predicts, ready for the later stages (the `filtered` table).
    pub kept: Vec<KeptRecord>,
    /// Every other fact with its reason, invalid input and wrong predictions alike (the `rejected` table).
    pub rejected: Vec<Rejected>,
}

impl FilterOutput {
    /// The decisions as `--json` reports them: `kept` (ids) and `rejected` (id, kind, reason).
    pub fn decisions(&self) -> serde_json::Map<String, serde_json::Value> {
        let kept: Vec<u64> = self.kept.iter().map(|k| k.id).collect();
        let rejected: Vec<_> = self.rejected.iter().map(|r| serde_json::json!({"id": r.id, "kind": r.reason.kind(), "reason": r.reason.to_string()})).collect();
        serde_json::Map::from_iter([("kept".into(), kept.into()), ("rejected".into(), rejected.into())])
    }

    /// The records rejected for invalid input rather than a wrong prediction.
    pub fn invalid(&self) -> impl Iterator<Item = &Rejected> {
        self.rejected.iter().filter(|r| r.reason.is_invalid_input())
    }
}

impl std::fmt::Display for FilterOutput {
    /// `kept 41 of 100 (41.0%); rejected 50 wrong predictions and 9 invalid records`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kept, total, invalid) = (self.kept.len(), self.kept.len() + self.rejected.len(), self.invalid().count());
        let pct = if total == 0 { 0.0 } else { 100.0 * kept as f64 / total as f64 };
        write!(f, "kept {kept} of {total} ({pct:.1}%); rejected {} wrong predictions and {invalid} invalid records", self.rejected.len() - invalid)
    }
}

/// [`run_filter_with_progress`] without progress reports.
pub fn run_filter<B: Backend>(model: &Model<B>, tokenizer: &Tokenizer, facts: &[KnownFact], config: &FilterConfig) -> Result<FilterOutput, FilterError> {
    run_filter_with_progress(model, tokenizer, facts, config, &mut |_, _| {})
}

/// Keeps each fact whose greedy next token (argmax at the last position) is the first token
/// of `" " + attribute`. Facts are checked again here (empty fields, subject not in prompt,
/// duplicate ids), so any list of facts can be passed. `progress(done, total)` is called after
/// each batch, counting the facts that go through the model.
pub fn run_filter_with_progress<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    facts: &[KnownFact],
    config: &FilterConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FilterOutput, FilterError> {
    config.check()?;
    let context_length = model.config.context_length;
    let mut outcomes: Vec<Option<Result<KeptRecord, RejectReason>>> = vec![None; facts.len()];
    let mut ready: Vec<(usize, Prepared)> = Vec::new();
    let mut checker = FactChecker::default();
    for (i, fact) in facts.iter().enumerate() {
        match checker.check(fact).map_or_else(|| prepare(tokenizer, fact, context_length), Err) {
            Ok(p) => ready.push((i, p)),
            Err(reason) => outcomes[i] = Some(Err(reason)),
        }
    }
    // Similar lengths together: less padding, and right padding keeps true positions.
    ready.sort_by_key(|(i, p)| (p.ids.len(), *i));
    let total = ready.len();
    let mut done = 0;
    for chunk in ready.chunks(config.batch_size) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|(_, p)| p.ids.clone()).collect();
        let probs = last_position_probs(model, &rows)?;
        for ((i, p), probs) in chunk.iter().zip(probs) {
            outcomes[*i] = Some(decide(tokenizer, &facts[*i], p, &probs));
        }
        done += chunk.len();
        progress(done, total);
    }
    let mut out = FilterOutput::default();
    for (fact, outcome) in facts.iter().zip(outcomes) {
        match outcome.expect("every fact was decided") {
            Ok(k) => out.kept.push(k),
            Err(reason) => out.rejected.push(Rejected { id: Some(fact.known_id), reason }),
        }
    }
    Ok(out)
}

fn decide(tokenizer: &Tokenizer, fact: &KnownFact, p: &Prepared, probs: &[f32]) -> Result<KeptRecord, RejectReason> {
    let predicted = top_k(probs, 1)[0] as u32;
    // A tokenizer may know more ids than the model has outputs; such a token has probability 0.
    let prob = |id: u32| probs.get(id as usize).copied().unwrap_or(0.0);
    if predicted != p.expected_id {
        return Err(RejectReason::WrongPrediction {
            predicted_id: predicted,
            predicted: tokenizer.decode_token(predicted),
            predicted_prob: prob(predicted),
            expected_id: p.expected_id,
            expected: tokenizer.decode_token(p.expected_id),
            expected_prob: prob(p.expected_id),
        });
    }
    Ok(KeptRecord {
        id: fact.known_id,
        prompt: fact.prompt.clone(),
        subject: fact.subject.clone(),
        attribute: fact.attribute.clone(),
        relation_id: fact.relation_id.clone(),
        subject_span: p.subject_span,
        first_token: p.first_token,
        n_tokens: p.ids.len(),
        target_id: predicted,
        target: tokenizer.decode_token(predicted),
        target_prob: prob(predicted),
    })
}

#[cfg(test)]
mod tests {
    use dissect_data::reject::{RejectReason, Rejected};

    use super::FilterOutput;

    /// The counts and the `--json` shape separate wrong predictions from invalid input.
    #[test]
    fn decisions_and_the_summary_line_count_each_kind() {
        let wrong = RejectReason::WrongPrediction {
            predicted_id: 1,
            predicted: " a".into(),
            predicted_prob: 0.5,
            expected_id: 2,
            expected: " b".into(),
            expected_prob: 0.1,
        };
        let out = FilterOutput {
            kept: Vec::new(),
            rejected: vec![
                Rejected { id: Some(3), reason: wrong },
                Rejected { id: None, reason: RejectReason::EmptyPrompt },
                Rejected { id: Some(5), reason: RejectReason::DuplicateId },
            ],
        };
        assert_eq!(out.invalid().count(), 2);
        assert_eq!(out.to_string(), "kept 0 of 3 (0.0%); rejected 1 wrong predictions and 2 invalid records");
        let d = out.decisions();
        assert_eq!(d["kept"], serde_json::json!([]));
        assert_eq!(d["rejected"][0]["kind"], "wrong_prediction");
        assert_eq!(d["rejected"][1]["id"], serde_json::Value::Null);
        assert_eq!(d["rejected"][2]["kind"], "duplicate_id");
    }
}
