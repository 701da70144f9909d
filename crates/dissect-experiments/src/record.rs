//! One record's run: what every experiment reads about the record (its tokens, the clean run,
//! the clean activations, the subject's paragraphs), computed once and only when an experiment
//! asks for it, and the `Measure` trait each experiment implements in its own module.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::ops::Range;

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_cache::CachedRecord;
use dissect_data::filtered::KeptRecord;
use dissect_data::PositionKind;
use dissect_model::intervene::CleanRun;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::Model;

use crate::extraction::{extraction_from, CleanSites, ExtractionRow};
use crate::rows::TableRows;
use crate::stage::{ExperimentsConfig, Inputs};
use crate::{clean_stream, ExperimentError};

/// One experiment: how it measures one record. An experiment's module implements it on the
/// type named after its variant; its line in [`dissect_data::experiment_registry`] registers
/// it and names the tables it writes.
pub(crate) trait Measure {
    /// Pushes the record's rows. On an error nothing pushed is kept and the record is listed in
    /// `skipped` instead.
    fn measure<B: Backend>(run: &RecordRun<'_, B>, out: &mut TableRows) -> Result<(), ExperimentError>;
}

/// Everything the experiments read about one record.
pub struct RecordRun<'a, B: Backend> {
    /// The model under study.
    pub model: &'a Model<B>,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Paragraphs, stopwords and the activation cache.
    pub inputs: &'a Inputs<'a>,
    /// The configuration resolved for the model's depth.
    pub cfg: &'a ExperimentsConfig,
    /// The filtered record.
    pub rec: &'a KeptRecord,
    /// The prompt's token ids, as the filter stage saw them.
    pub ids: Vec<u32>,
    /// The record's clean forward pass, run once when first asked for.
    forward: OnceCell<CleanForward<B>>,
    /// The cached record, from the run's cache.
    cached: OnceCell<CachedRecord<B>>,
    extraction: OnceCell<Vec<ExtractionRow>>,
}

/// What one clean forward pass over the prompt gives.
struct CleanForward<B: Backend> {
    /// The residual stream at every position.
    stream: Vec<Tensor<B, 2>>,
    /// Its keys and values, for the interventions' fast paths.
    clean: CleanRun<B>,
    /// Without a cache, what the cache would hold.
    cached: Option<CachedRecord<B>>,
}

impl<'a, B: Backend> RecordRun<'a, B> {
    /// Tokenizes the prompt, checking it against the filter stage's token count and that the
    /// fast paths can serve it.
    pub fn new(
        model: &'a Model<B>,
        tokenizer: &'a Tokenizer,
        inputs: &'a Inputs<'a>,
        cfg: &'a ExperimentsConfig,
        rec: &'a KeptRecord,
    ) -> Result<Self, ExperimentError> {
        let ids = tokenizer.encode(&rec.prompt)?.ids;
        if ids.len() != rec.n_tokens {
            return Err(ExperimentError::TokenizationMismatch { id: rec.id, tokens: ids.len(), filtered: rec.n_tokens });
        }
        CleanRun::<B>::check(&ids)?;
        Ok(RecordRun { model, tokenizer, inputs, cfg, rec, ids, forward: OnceCell::new(), cached: OnceCell::new(), extraction: OnceCell::new() })
    }

    /// The `id` column's value.
    pub fn id(&self) -> i64 {
        dissect_data::table::id_value(self.rec.id)
    }

    /// The subject's token positions.
    pub fn subject(&self) -> Range<usize> {
        let s = self.rec.positions().subject;
        s.first..s.last + 1
    }

    /// The last subject token's position.
    pub fn subject_last(&self) -> usize {
        self.rec.positions().get(PositionKind::SubjectLast).expect("every record has a subject")
    }

    /// The model's own prediction, the target every experiment tracks.
    pub fn target(&self) -> u32 {
        self.rec.target_id
    }

    /// The clean residual stream entering every block and after the last, at every position.
    pub fn hidden(&self) -> Result<&[Tensor<B, 2>], ExperimentError> {
        Ok(&self.forward()?.stream)
    }

    /// The clean run's keys and values, shared by the interventions' fast paths.
    pub fn clean(&self) -> Result<&CleanRun<B>, ExperimentError> {
        Ok(&self.forward()?.clean)
    }

    /// The record's clean activations as the activation cache holds them: read from the cache
    /// when the run has one, else computed by the cache's own code (in the record's one clean
    /// forward pass), so the tables are the same, bit for bit, either way.
    pub fn cached(&self) -> Result<&CachedRecord<B>, ExperimentError> {
        match self.inputs.cache {
            Some(cache) => once(&self.cached, || crate::cached::cached_record(cache, self.model, self.rec)),
            None => Ok(self.forward()?.cached.as_ref().expect("computed without a cache")),
        }
    }

    /// The one clean forward pass: the cache's own computation when there is no cache (it also
    /// gives the cached record), else one recording the stream and the keys and values alone.
    fn forward(&self) -> Result<&CleanForward<B>, ExperimentError> {
        once(&self.forward, || {
            if self.inputs.cache.is_some() {
                let (stream, clean) = clean_stream(self.model, &self.ids)?;
                return Ok(CleanForward { stream, clean, cached: None });
            }
            let pass = dissect_cache::clean_pass(self.model, self.tokenizer, self.rec)?;
            let cached = Some(CachedRecord::from_host(&pass.activations, &self.model.device));
            Ok(CleanForward { stream: pass.stream, clean: CleanRun::from_kv(&self.ids, pass.kv)?, cached })
        })
    }

    /// Extraction's rows, computed once: ranks reuse the clean ones.
    pub fn extraction_rows(&self) -> Result<&[ExtractionRow], ExperimentError> {
        once(&self.extraction, || {
            let c = self.cached()?;
            let stream = c.residual(PositionKind::Last).expect("every prompt has a last position");
            let sites = CleanSites { attn_out: c.attn_out(), mlp_out: c.mlp_out(), stream };
            extraction_from(self.model, self.clean()?, &self.subject(), self.target(), &self.cfg.extraction, Some(sites))
        })
        .map(Vec::as_slice)
    }

    /// The subject's paragraph tokens (the attributes rate's reference set); an error when the
    /// subject has none, which excludes the record as the paper does.
    pub fn paragraph(&self) -> Result<HashSet<String>, ExperimentError> {
        let paras = self
            .inputs
            .paragraphs
            .get(&self.rec.subject)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ExperimentError::NoParagraphs { id: self.rec.id, subject: self.rec.subject.clone() })?;
        crate::enrichment::paragraph_tokens(self.tokenizer, self.model.config.bos_token_id, paras, self.inputs.stopwords, &self.cfg.attributes)
    }
}

/// The cell's value, computed by `init` the first time. A failure is not kept, so the next
/// experiment that asks tries again and is skipped with its own row.
fn once<T, E>(cell: &OnceCell<T>, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}
