//! Subject enrichment (the paper's §4): the "attributes rate" of a hidden state — the share of
//! its top projected tokens that occur in text about the subject.

use std::collections::HashSet;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_data::span::locate_subject;
use dissect_data::{PositionKind, TokenPositions};
use dissect_model::project::{read_rows, Ask, Projection};
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;
use serde::{Deserialize, Serialize};

use crate::ExperimentError;

/// The notebook's token filter behind the attributes rate, shared by enrichment and sublayer
/// knockout (`[experiments.attributes]` in a pipeline); the defaults are the notebook's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributesConfig {
    /// Tokens taken from the projection before filtering.
    pub top: usize,
    /// Tokens kept after filtering.
    pub keep: usize,
    /// Tokens whose stripped text is this short or shorter are dropped.
    pub min_len_exclusive: usize,
}

impl Default for AttributesConfig {
    fn default() -> Self {
        AttributesConfig { top: 500, keep: 50, min_len_exclusive: 2 }
    }
}

/// The subject's paragraph tokens: every token of every paragraph, decoded on its own,
/// deduplicated, without stopwords (case-sensitive, as in the notebook) and short tokens.
pub fn paragraph_tokens(
    tokenizer: &Tokenizer,
    bos: Option<u32>,
    paragraphs: &[String],
    stopwords: &HashSet<String>,
    cfg: &AttributesConfig,
) -> Result<HashSet<String>, ExperimentError> {
    let mut out = HashSet::new();
    for p in paragraphs {
        let enc = tokenizer.encode(p)?;
        for &id in enc.ids.iter().filter(|&&id| Some(id) != bos) {
            let t = tokenizer.decode_token(id);
            let stripped = t.trim();
            if stripped.chars().count() > cfg.min_len_exclusive && !stopwords.contains(stripped) {
                out.insert(t);
            }
        }
    }
    Ok(out)
}

/// The projection's top tokens after the notebook's filter: of its top `cfg.top` ids (`top`,
/// best first), those whose stripped lowercase text is not a stopword and whose stripped text
/// is not short, first `cfg.keep`.
pub fn top_tokens(top: &[usize], tokenizer: &Tokenizer, stopwords: &HashSet<String>, cfg: &AttributesConfig) -> Vec<String> {
    top.iter()
        .map(|&id| tokenizer.decode_token(id as u32))
        .filter(|t| {
            let s = t.trim();
            s.chars().count() > cfg.min_len_exclusive && !stopwords.contains(&s.to_lowercase())
        })
        .take(cfg.keep)
        .collect()
}

/// `100 · |set(top) ∩ paragraph| / |top|` on exact token strings (leading space included): as
/// in the notebook, two tokens of the list that decode to the same string are one hit but two
/// entries of the denominator.
pub fn attributes_rate(top: &[String], paragraph: &HashSet<String>) -> f32 {
    if top.is_empty() {
        return 0.0;
    }
    let hits = top.iter().filter(|t| paragraph.contains(*t)).collect::<HashSet<_>>().len();
    100.0 * hits as f32 / top.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_exact_strings() {
        let para: HashSet<String> = [" Paris", " France"].iter().map(|s| s.to_string()).collect();
        let top: Vec<String> = [" Paris", "Paris", " Lyon", " France"].iter().map(|s| s.to_string()).collect();
        assert_eq!(attributes_rate(&top, &para), 50.0);
        assert_eq!(attributes_rate(&[], &para), 0.0);
        // a string twice in the list: one hit, two entries
        let dup: Vec<String> = [" Paris", " Paris", " Lyon", " Rome"].iter().map(|s| s.to_string()).collect();
        assert_eq!(attributes_rate(&dup, &para), 25.0);
    }
}

/// What the enrichment experiment measures beyond the attributes-rate filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichmentConfig {
    /// Also measure `hidden_states[n_layers]` (HF's final-normed last entry, i.e. the model's own
    /// output distribution), which the notebook does not project; its rows are marked `extra`.
    pub final_state: bool,
}

/// One attributes-rate measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichmentRow {
    /// Index into `hidden_states` (0 = embeddings); the notebook plots it as layer `layer + 1`.
    pub layer: usize,
    /// The prompt position the hidden state is read at.
    pub position: PositionKind,
    /// Attributes rate in percent (0–100), see [`attributes_rate`].
    pub rate: f32,
    /// A measurement the notebook does not make (`hidden_states[n_layers]`, with
    /// [`EnrichmentConfig::final_state`]).
    pub extra: bool,
}

/// The subject's token ids for the embedding baseline, as the notebook finds them: it prepends
/// `"<|endoftext|> "` to the prompt ("fix first-position bias"), so a subject that starts the
/// prompt is tokenized with its leading space, like everywhere else in a sentence. The
/// equivalent for every tokenizer: encode `" " + prompt` (with whatever special tokens the
/// tokenizer adds, e.g. a BOS; the notebook's `<|endoftext|>` only shifts positions) and take the
/// tokens of the subject's first occurrence.
pub fn baseline_subject_ids(tokenizer: &Tokenizer, prompt: &str, subject: &str) -> Result<Vec<u32>, ExperimentError> {
    let spaced = format!(" {prompt}");
    let enc = tokenizer.encode(&spaced)?;
    let span =
        locate_subject(&spaced, subject, &enc.offsets).map_err(|reason| ExperimentError::Baseline(format!("subject {subject:?} in {spaced:?}: {reason}")))?;
    Ok(span.positions().map(|p| enc.ids[p]).collect())
}

/// Attributes rate of `hidden_states[l]` at every position kind of the prompt for `l` in
/// `0..n_layers` (as the notebook; with `ecfg.final_state` also `l = n_layers`, marked extra),
/// and of the mean of the input embeddings of `baseline_subject` ([`baseline_subject_ids`]),
/// returned separately. `hidden` holds the block inputs and the raw final residual
/// (`n_layers + 1` entries); at `l = n_layers` the projected vector is HF's
/// `hidden_states[n_layers]` (see [`crate::projected_hidden_state`]).
#[allow(clippy::too_many_arguments)]
pub fn enrichment<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    hidden: &[Tensor<B, 2>],
    positions: &TokenPositions,
    baseline_subject: &[u32],
    paragraph: &HashSet<String>,
    stopwords: &HashSet<String>,
    cfg: &AttributesConfig,
    ecfg: &EnrichmentConfig,
    projection: Projection,
) -> (Vec<EnrichmentRow>, f32) {
    let kinds: Vec<(PositionKind, usize)> = positions.iter().collect();
    let labels: Vec<PositionKind> = kinds.iter().map(|&(k, _)| k).collect();
    let vector = |layer: usize, j: usize| hidden[layer].clone().slice([kinds[j].1..kinds[j].1 + 1]);
    rates(model, tokenizer, &labels, vector, baseline_subject, paragraph, stopwords, cfg, ecfg, projection)
}

/// [`enrichment`] from the residual stream at each position kind only, `[n_layers + 1,
/// hidden]` per kind (what the activation cache holds), instead of every position. The
/// vectors are projected in the same order, so equal inputs give bit-identical rows.
#[allow(clippy::too_many_arguments)]
pub fn enrichment_at<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    residuals: &[(PositionKind, Tensor<B, 2>)],
    baseline_subject: &[u32],
    paragraph: &HashSet<String>,
    stopwords: &HashSet<String>,
    cfg: &AttributesConfig,
    ecfg: &EnrichmentConfig,
    projection: Projection,
) -> (Vec<EnrichmentRow>, f32) {
    let labels: Vec<PositionKind> = residuals.iter().map(|(k, _)| *k).collect();
    let vector = |layer: usize, j: usize| residuals[j].1.clone().slice([layer..layer + 1]);
    rates(model, tokenizer, &labels, vector, baseline_subject, paragraph, stopwords, cfg, ecfg, projection)
}

/// Rates of `vector(layer, j)` (`[1, hidden]`, kind `kinds[j]`) for every layer and kind,
/// layer-major, then the subject-embedding baseline.
#[allow(clippy::too_many_arguments)]
fn rates<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    kinds: &[PositionKind],
    vector: impl Fn(usize, usize) -> Tensor<B, 2>,
    baseline_subject: &[u32],
    paragraph: &HashSet<String>,
    stopwords: &HashSet<String>,
    cfg: &AttributesConfig,
    ecfg: &EnrichmentConfig,
    projection: Projection,
) -> (Vec<EnrichmentRow>, f32) {
    let d = model.config.hidden;
    let n_layers = model.n_layers();
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    for layer in 0..n_layers + usize::from(ecfg.final_state) {
        for (j, &kind) in kinds.iter().enumerate() {
            vectors.push(crate::projected_hidden_state(model, layer, vector(layer, j), projection));
            labels.push((layer, kind));
        }
    }
    let subject: Vec<i64> = baseline_subject.iter().map(|&id| i64::from(id)).collect();
    let n_subject = subject.len();
    let idx = Tensor::from_data(burn_tensor::TensorData::new(subject, [n_subject]), &model.device);
    vectors.push(model.embed.clone().select(0, idx).mean_dim(0).reshape([1, d]));
    let ask = Ask { rank_of: None, top: cfg.top };
    let mut rates: Vec<f32> = read_rows(model, Tensor::cat(vectors, 0), projection, ask)
        .iter()
        .map(|a| attributes_rate(&top_tokens(&a.top, tokenizer, stopwords, cfg), paragraph))
        .collect();
    let baseline = rates.pop().expect("baseline row");
    let out = labels.into_iter().zip(rates).map(|((layer, position), rate)| EnrichmentRow { layer, position, rate, extra: layer == n_layers }).collect();
    (out, baseline)
}

/// The `enrichment` and `enrichment_baseline` tables ([`dissect_data::table::EnrichmentRow`],
/// [`dissect_data::table::EnrichmentBaselineRow`]).
pub struct Enrichment;

impl crate::record::Measure for Enrichment {
    fn measure<B: Backend>(run: &crate::record::RecordRun<'_, B>, out: &mut crate::rows::TableRows) -> Result<(), ExperimentError> {
        let para = run.paragraph()?;
        let rec = run.rec;
        let base_ids = baseline_subject_ids(run.tokenizer, &rec.prompt, &rec.subject)?;
        let (cfg, stopwords) = (run.cfg, run.inputs.stopwords);
        let residuals = run.cached()?.residuals();
        let (rows, base) = enrichment_at(run.model, run.tokenizer, &residuals, &base_ids, &para, stopwords, &cfg.attributes, &cfg.enrichment, cfg.projection);
        for r in rows {
            out.push(dissect_data::table::EnrichmentRow {
                id: run.id(),
                subject: rec.subject.clone(),
                hidden_state: r.layer as i32,
                position: r.position.name().into(),
                rate_pct: r.rate,
                extra: r.extra,
            });
        }
        out.push(dissect_data::table::EnrichmentBaselineRow { id: run.id(), subject: rec.subject.clone(), rate_pct: base });
        Ok(())
    }
}
