//! A record's clean activations as the activation cache (`dissect-cache`) holds them: read
//! from a cache, or computed for the record alone by the cache's own code when the run has
//! none. Enrichment, extraction's clean rows and ranks read only these, so their tables are the
//! same, bit for bit, with and without a cache (written with the default batch of one prompt).

use burn_tensor::backend::Backend;
use dissect_cache::{CacheReader, CachedRecord};
use dissect_data::KeptRecord;
use dissect_model::Model;

use crate::ExperimentError;

/// The cached activations of `rec`, checked against the model (layers, hidden size) and the
/// record (every position kind cached at the token the filter stage located), so a cache of
/// another model or another filter run is an error rather than silently wrong numbers.
pub fn cached_record<B: Backend>(cache: &CacheReader, model: &Model<B>, rec: &KeptRecord) -> Result<CachedRecord<B>, ExperimentError> {
    let fail = |message: String| ExperimentError::Record { id: rec.id.to_string(), message };
    let c = cache.get::<B>(rec.id, &model.device)?.ok_or_else(|| fail(format!("not in the activation cache {}", cache.root().display())))?;
    if (c.n_layers(), c.hidden()) != (model.n_layers(), model.config.hidden) {
        return Err(fail(format!(
            "the cache holds {} layers of size {}, the model has {} of size {}: it was built with another model",
            c.n_layers(),
            c.hidden(),
            model.n_layers(),
            model.config.hidden
        )));
    }
    let wanted: Vec<_> = rec.positions().iter().collect();
    let cached: Vec<_> = c.residuals().iter().map(|(k, _)| (*k, c.token_index(*k).expect("listed kind"))).collect();
    if wanted != cached {
        return Err(fail(format!("the cache has positions {cached:?}, the filtered record {wanted:?}: it was built from another filter run")));
    }
    Ok(c)
}
