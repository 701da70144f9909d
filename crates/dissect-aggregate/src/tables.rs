//! From per-example rows to the summary tables. Every rate is in percent (an example
//! contributes 100 or 0), so means and intervals read directly as percentages.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::bootstrap::Bootstrap;
use crate::error::AggregateError;
use dissect_data::table::SkipReason;

use crate::input::Inputs;
use crate::summary::{Cells, Count, Key, KeyType, SummaryTable};

/// "Among the top tokens" in the parameters table: the top 10, the experiment's default list.
pub const PARAMETERS_TOP: i32 = 10;

/// Every aggregated table; `None` where the experiment was not in the input.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tables {
    /// `positions`, `layer` (0-based centre of the window): mean `pct_change`.
    pub knockout: Option<SummaryTable>,
    /// `sublayer`, `positions` (blocked; `none` = clean), `layer` (0-based block): extraction rate (%).
    pub extraction: Option<SummaryTable>,
    /// Per-example statistics of the clean (and blocked) extraction runs: `statistic`, `unit`.
    pub extraction_summary: Option<SummaryTable>,
    /// `source_hidden_state`, `positions` (patched), `layer` (0-based block): extraction rate (%).
    pub patching: Option<SummaryTable>,
    /// `source_hidden_state`, `positions`: rate of examples where MHSA extracts at any layer (%); the
    /// row with no source layer and positions `none` is the unpatched baseline (clean
    /// extraction table, same examples).
    pub patching_any: Option<SummaryTable>,
    /// `position`, `hidden_state` (0 = embeddings): attributes rate (%).
    pub enrichment: Option<SummaryTable>,
    /// The `enrichment` layers (hidden-state indices) whose rows the experiments stage marked
    /// `extra` (beyond the notebook's measurements): in the table and figure, not in the
    /// findings.
    pub enrichment_extra_layers: BTreeSet<i32>,
    /// No keys: attributes rate of the mean subject input embedding (%).
    pub enrichment_baseline: Option<SummaryTable>,
    /// `sublayer`, `mode`, `start_layer` (0-based; null with sublayer `none` = no
    /// intervention): attributes rate at subject-last in the read layer (%).
    pub sublayer_knockout: Option<SummaryTable>,
    /// `measure`, `layer` (0-based block ℓ): 1-based rank of the target, mean and median;
    /// `subject_last` is the rank in the subject-last state after block ℓ (`hidden_states[ℓ + 1]`),
    /// `attn_last` in block ℓ's MHSA output at the last position.
    pub ranks: Option<SummaryTable>,
    /// `view` (`head_ov`, `mlp_value`), `layer` (0-based block): % of examples where some head's
    /// OV output for the subject (or some dominant MLP sub-update at subject-last) has the
    /// target among its top [`PARAMETERS_TOP`] tokens.
    pub parameters: Option<SummaryTable>,
    /// The `counts` table: kept and rejected records, distinct records per experiment table,
    /// skipped (record, experiment) pairs and records excluded for lack of paragraphs.
    pub counts: Vec<Count>,
    /// The model's depth as the tables show it.
    pub n_layers: Option<i32>,
    /// The knockout window (layers).
    pub window: Option<i32>,
    /// The hidden-state index the sublayer knockout reads.
    pub read_hidden_state: Option<i32>,
}

impl Tables {
    /// The summary tables that exist, in a fixed order.
    pub fn all(&self) -> Vec<&SummaryTable> {
        [
            &self.knockout,
            &self.extraction,
            &self.extraction_summary,
            &self.patching,
            &self.patching_any,
            &self.enrichment,
            &self.enrichment_baseline,
            &self.sublayer_knockout,
            &self.ranks,
            &self.parameters,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The value of the count `name` (e.g. `examples:knockout`); `None` when it was not counted.
    pub fn count(&self, name: &str) -> Option<u64> {
        self.counts.iter().find(|c| c.name == name).map(|c| c.value)
    }
}

fn pct(b: bool) -> f64 {
    if b {
        100.0
    } else {
        0.0
    }
}

/// Every summary table and count from the inputs, each cell bootstrapped with `boot`; fails
/// with [`AggregateError::Duplicate`] when a record appears twice in one cell.
pub fn build_tables(inputs: &Inputs, boot: &Bootstrap) -> Result<Tables, AggregateError> {
    use KeyType::{Str, I32};
    let mut t = Tables::default();
    let mut depth: Option<i32> = None;
    let mut see_layer = |n: i32| depth = Some(depth.map_or(n, |d| d.max(n)));

    if let Some(rows) = &inputs.knockout {
        let mut cells = Cells::new();
        for r in rows {
            cells.entry(vec![Key::s(&r.positions), Key::u(r.layer)]).or_default().push((r.id, f64::from(r.pct_change)));
            see_layer(r.layer + 1);
            t.window = Some(r.window);
        }
        t.knockout = Some(SummaryTable::build("knockout", "pct_change", &[("positions", Str), ("layer", I32)], cells, false, boot)?);
    }

    // Per example: the layers where each (sublayer, blocked) extracts.
    let mut extracting: BTreeMap<(String, String), BTreeMap<i64, BTreeSet<i32>>> = BTreeMap::new();
    if let Some(rows) = &inputs.extraction {
        let mut cells = Cells::new();
        for r in rows {
            cells.entry(vec![Key::s(&r.sublayer), Key::s(&r.positions), Key::u(r.layer)]).or_default().push((r.id, pct(r.extracted)));
            let layers = extracting.entry((r.sublayer.clone(), r.positions.clone())).or_default().entry(r.id).or_default();
            if r.extracted {
                layers.insert(r.layer);
            }
            see_layer(r.layer + 1);
        }
        t.extraction =
            Some(SummaryTable::build("extraction", "extraction_rate_pct", &[("sublayer", Str), ("positions", Str), ("layer", I32)], cells, false, boot)?);
        t.extraction_summary = Some(extraction_summary(&extracting, boot)?);
    }

    if let Some(rows) = &inputs.patching {
        let mut cells = Cells::new();
        let mut any: BTreeMap<(i32, String), BTreeMap<i64, bool>> = BTreeMap::new();
        for r in rows {
            cells.entry(vec![Key::u(r.source_hidden_state), Key::s(&r.positions), Key::u(r.layer)]).or_default().push((r.id, pct(r.extracted)));
            *any.entry((r.source_hidden_state, r.positions.clone())).or_default().entry(r.id).or_default() |= r.extracted;
            see_layer(r.layer + 1);
        }
        t.patching = Some(SummaryTable::build(
            "patching",
            "extraction_rate_pct",
            &[("source_hidden_state", I32), ("positions", Str), ("layer", I32)],
            cells,
            false,
            boot,
        )?);
        let mut cells = Cells::new();
        let patched_ids: BTreeSet<i64> = any.values().flat_map(|m| m.keys().copied()).collect();
        for ((source, set), per_id) in any {
            cells.insert(vec![Key::u(source), Key::s(&set)], per_id.into_iter().map(|(id, e)| (id, pct(e))).collect());
        }
        // The unpatched baseline: clean MHSA extraction at any layer, on the same examples.
        if let Some(clean) = extracting.get(&("attn".to_string(), "none".to_string())) {
            let base: Vec<(i64, f64)> = clean.iter().filter(|(id, _)| patched_ids.contains(id)).map(|(&id, l)| (id, pct(!l.is_empty()))).collect();
            cells.insert(vec![Key::I32(None), Key::s("none")], base);
        }
        t.patching_any =
            Some(SummaryTable::build("patching_any", "any_layer_extraction_pct", &[("source_hidden_state", I32), ("positions", Str)], cells, false, boot)?);
    }

    if let Some(rows) = &inputs.enrichment {
        let mut cells = Cells::new();
        for r in rows {
            cells.entry(vec![Key::s(&r.position), Key::u(r.hidden_state)]).or_default().push((r.id, f64::from(r.rate_pct)));
            // Unmarked rows are hidden_states[0..n_layers); a marked one may be
            // hidden_states[n_layers].
            if r.extra {
                see_layer(r.hidden_state);
                t.enrichment_extra_layers.insert(r.hidden_state);
            } else {
                see_layer(r.hidden_state + 1);
            }
        }
        t.enrichment = Some(SummaryTable::build("enrichment", "attributes_rate_pct", &[("position", Str), ("hidden_state", I32)], cells, false, boot)?);
    }
    if let Some(rows) = &inputs.enrichment_baseline {
        let mut cells = Cells::new();
        cells.insert(vec![], rows.iter().map(|r| (r.id, f64::from(r.rate_pct))).collect());
        t.enrichment_baseline = Some(SummaryTable::build("enrichment_baseline", "attributes_rate_pct", &[], cells, false, boot)?);
    }
    if let Some(rows) = &inputs.sublayer {
        let mut cells = Cells::new();
        for r in rows {
            cells.entry(vec![Key::s(&r.sublayer), Key::s(&r.mode), Key::I32(r.start_layer)]).or_default().push((r.id, f64::from(r.rate_pct)));
            t.read_hidden_state = Some(r.read_hidden_state);
        }
        t.sublayer_knockout = Some(SummaryTable::build(
            "sublayer_knockout",
            "attributes_rate_pct",
            &[("sublayer", Str), ("mode", Str), ("start_layer", I32)],
            cells,
            false,
            boot,
        )?);
    }
    if let Some(rows) = &inputs.ranks {
        let mut cells = Cells::new();
        for r in rows {
            let rank = |x: i32| f64::from(x) + 1.0;
            cells.entry(vec![Key::s("subject_last"), Key::u(r.layer)]).or_default().push((r.id, rank(r.subject_last_rank)));
            cells.entry(vec![Key::s("attn_last"), Key::u(r.layer)]).or_default().push((r.id, rank(r.attn_last_rank)));
            if r.attn_last_rank == 0 {
                cells.entry(vec![Key::s("subject_last_at_extraction"), Key::u(r.layer)]).or_default().push((r.id, rank(r.subject_last_rank)));
            }
            see_layer(r.layer + 1);
        }
        t.ranks = Some(SummaryTable::build("ranks", "target_rank_1based", &[("measure", Str), ("layer", I32)], cells, true, boot)?);
    }
    let heads = inputs.parameters_heads.as_ref().map(|rows| rows.iter().map(|r| (r.layer, r.id, r.target_rank)).collect::<Vec<_>>());
    let mlp = inputs.parameters_mlp.as_ref().map(|rows| rows.iter().map(|r| (r.layer, r.id, r.target_rank)).collect::<Vec<_>>());
    let views = [("head_ov", heads), ("mlp_value", mlp)];
    if views.iter().any(|(_, rows)| rows.is_some()) {
        let mut cells = Cells::new();
        for (view, rows) in views {
            let mut best: BTreeMap<(i32, i64), i32> = BTreeMap::new();
            for &(layer, id, target_rank) in rows.iter().flatten() {
                let b = best.entry((layer, id)).or_insert(i32::MAX);
                *b = (*b).min(target_rank);
                see_layer(layer + 1);
            }
            for ((layer, id), rank) in best {
                cells.entry(vec![Key::s(view), Key::u(layer)]).or_default().push((id, pct(rank < PARAMETERS_TOP)));
            }
        }
        t.parameters = Some(SummaryTable::build("parameters", "target_in_top10_pct", &[("view", Str), ("layer", I32)], cells, false, boot)?);
    }
    t.n_layers = depth;
    t.counts = counts(inputs);
    Ok(t)
}

/// The notebook's per-example extraction statistics.
fn extraction_summary(extracting: &BTreeMap<(String, String), BTreeMap<i64, BTreeSet<i32>>>, boot: &Bootstrap) -> Result<SummaryTable, AggregateError> {
    let get = |sub: &str, blocked: &str| extracting.get(&(sub.to_string(), blocked.to_string()));
    let mut cells = Cells::new();
    let mut put = |stat: String, unit: &str, values: Vec<(i64, f64)>| {
        cells.insert(vec![Key::Str(stat), Key::s(unit)], values);
    };
    for (sub, label) in [("attn", "mhsa"), ("mlp", "mlp")] {
        if let Some(per_id) = get(sub, "none") {
            put(format!("{label}_extraction_any_layer"), "% of examples", per_id.iter().map(|(&id, l)| (id, pct(!l.is_empty()))).collect());
            put(format!("{label}_extracting_layers"), "layers", per_id.iter().map(|(&id, l)| (id, l.len() as f64)).collect());
        }
    }
    if let (Some(attn), Some(mlp)) = (get("attn", "none"), get("mlp", "none")) {
        let both: Vec<(i64, f64)> = attn
            .iter()
            .filter_map(|(id, a)| {
                let m = mlp.get(id)?;
                Some((*id, pct(a.first()? <= m.first()?)))
            })
            .collect();
        put("mhsa_first_not_after_mlp".into(), "% of examples where both extract", both);
    }
    for ((sub, blocked), per_id) in extracting {
        if blocked != "none" {
            let label = if sub == "attn" { "mhsa" } else { sub.as_str() };
            put(format!("{label}_extraction_any_layer_blocked_{blocked}"), "% of examples", per_id.iter().map(|(&id, l)| (id, pct(!l.is_empty()))).collect());
        }
    }
    SummaryTable::build("extraction_summary", "per_example", &[("statistic", KeyType::Str), ("unit", KeyType::Str)], cells, false, boot)
}

fn counts(inputs: &Inputs) -> Vec<Count> {
    let mut out = Vec::new();
    let mut push = |name: String, value: usize, detail: &str| out.push(Count { name, value: value as u64, detail: detail.into() });
    if let Some(kept) = &inputs.kept {
        push("kept".into(), kept.len(), "records the model predicts correctly (filtered.parquet)");
    }
    if let Some(rejected) = &inputs.rejected {
        push("rejected".into(), rejected.values().sum(), "records left out by the filter stage (rejected.parquet)");
        for (kind, n) in rejected {
            push(format!("rejected:{kind}"), *n, "rejected records of this kind");
        }
    }
    let distinct = |ids: &mut dyn Iterator<Item = i64>| ids.collect::<BTreeSet<i64>>().len();
    let tables: [(&str, Option<usize>); 9] = [
        ("knockout", inputs.knockout.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("extraction", inputs.extraction.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("patching", inputs.patching.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("enrichment", inputs.enrichment.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("enrichment_baseline", inputs.enrichment_baseline.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("sublayer_knockout", inputs.sublayer.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("ranks", inputs.ranks.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("parameters_heads", inputs.parameters_heads.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
        ("parameters_mlp", inputs.parameters_mlp.as_ref().map(|r| distinct(&mut r.iter().map(|x| x.id)))),
    ];
    for (name, n) in tables {
        if let Some(n) = n {
            push(format!("examples:{name}"), n, "distinct records in this experiment table");
        }
    }
    if let Some(skipped) = &inputs.skipped {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for s in skipped {
            *per.entry(s.experiment.as_str()).or_default() += 1;
        }
        push("skipped".into(), skipped.len(), "(record, experiment) pairs the experiments stage skipped");
        for (e, n) in per {
            push(format!("skipped:{e}"), n, "records skipped in this experiment");
        }
        let ids: BTreeSet<i64> = skipped
            .iter()
            .filter(|s| matches!(s.experiment.as_str(), "enrichment" | "sublayer_knockout") && s.reason == SkipReason::NoParagraphs)
            .map(|s| s.id)
            .collect();
        push("excluded_no_paragraphs:records".into(), ids.len(), "records excluded from enrichment: their subject has no paragraphs");
        if let Some(kept) = &inputs.kept {
            let subjects: BTreeSet<&String> = ids.iter().filter_map(|id| kept.get(id)).collect();
            push("excluded_no_paragraphs:subjects".into(), subjects.len(), "distinct subjects without paragraphs");
        }
    }
    out
}
