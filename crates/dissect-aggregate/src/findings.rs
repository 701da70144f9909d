//! The paper's three findings, each checked against the summary tables: the numbers that
//! bear on it and explicit criteria, so a reader sees why a finding is called supported,
//! contradicted, mixed or left at insufficient evidence on this model. Every number here is
//! read from a [`SummaryTable`] row, so the report and the tables cannot disagree.
//!
//! Rules that hold for every criterion:
//!
//! - A criterion is evaluated only when every estimate it uses rests on at least
//!   [`MIN_RECORDS`] records, is a number, and has a 95% interval of non-zero width (a
//!   zero-width interval means every example gave the same value, e.g. all-zero rates, and
//!   the bootstrap says nothing about its spread). Otherwise, and when a curve it needs is
//!   missing, it is [`Status::Insufficient`]: never counted as holding, and the finding's
//!   verdict is [`Verdict::InsufficientEvidence`].
//! - A "peak" of a curve is its largest-magnitude signed effect: the layer with the largest
//!   |mean| (ties to the earliest layer), reported with its sign. For curves of rates that
//!   are compared with a reference (sublayer knockout against no intervention, patching
//!   against the unpatched rate), the effect is the rate minus the reference.
//! - Each criterion's text states the numbers and the rule it applied.

use serde::{Deserialize, Serialize};

use crate::bootstrap::Estimate;
use crate::summary::{Key, SummaryRow, SummaryTable};
use crate::tables::Tables;

/// The fewest records an estimate may rest on for a criterion that uses it to be evaluated.
/// Below it a 95% bootstrap interval is too unstable to support a verdict (the percentile
/// bootstrap under-covers on small samples), so the criterion reads "insufficient evidence".
pub const MIN_RECORDS: usize = 30;

/// A finding's overall verdict on this model, from its criteria ([`Verdict::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every criterion holds.
    Supported,
    /// No criterion holds.
    Contradicted,
    /// Some criteria hold and some fail (all were evaluated).
    Mixed,
    /// Some criterion could not be evaluated (too few records, degenerate intervals, a
    /// missing curve).
    InsufficientEvidence,
    /// The experiments behind the finding were not run.
    NotMeasured,
}

impl Verdict {
    /// Not measured without criteria; insufficient evidence if any criterion is; else
    /// supported when all hold, contradicted when none does, mixed otherwise.
    pub fn of(criteria: &[Criterion]) -> Verdict {
        if criteria.is_empty() {
            return Verdict::NotMeasured;
        }
        if criteria.iter().any(|c| c.status == Status::Insufficient) {
            return Verdict::InsufficientEvidence;
        }
        match criteria.iter().filter(|c| c.status == Status::Holds).count() {
            k if k == criteria.len() => Verdict::Supported,
            0 => Verdict::Contradicted,
            _ => Verdict::Mixed,
        }
    }

    /// The verdict as the report prints it, e.g. `insufficient evidence`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::Contradicted => "contradicted",
            Verdict::Mixed => "mixed",
            Verdict::InsufficientEvidence => "insufficient evidence",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// The outcome of one criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Evaluated, and the rule is satisfied.
    Holds,
    /// Evaluated, and the rule is not satisfied.
    Fails,
    /// Not evaluated: too few records, a degenerate interval or a missing curve (the text
    /// says which).
    Insufficient,
}

impl Status {
    /// The status as the report prints it in brackets before the criterion.
    pub fn label(self) -> &'static str {
        match self {
            Status::Holds => "holds",
            Status::Fails => "fails",
            Status::Insufficient => "insufficient evidence",
        }
    }
}

/// One explicit check of a finding against this run's estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    /// The statement with its numbers and the rule applied, plus why it was not evaluated if so.
    pub text: String,
    /// `status == Holds`: true only for a criterion that was evaluated and holds.
    pub holds: bool,
    /// Whether it holds, fails or could not be evaluated.
    pub status: Status,
}

impl Criterion {
    /// A criterion on the estimates `uses` (name, estimate; `None` = the curve is missing):
    /// insufficient when one is missing or [`unusable`], or when `rule` says why it cannot
    /// decide (`Err`); else holds or fails as `rule` says. The reasons are appended to `text`.
    pub fn evaluate(text: String, uses: &[(&str, Option<Estimate>)], rule: impl FnOnce() -> Result<bool, String>) -> Criterion {
        let mut why: Vec<String> = uses
            .iter()
            .filter_map(|(name, e)| match e {
                None => Some(format!("{name} is missing")),
                Some(e) => unusable(e).map(|w| format!("{name}: {w}")),
            })
            .collect();
        let status = if !why.is_empty() {
            Status::Insufficient
        } else {
            match rule() {
                Ok(true) => Status::Holds,
                Ok(false) => Status::Fails,
                Err(w) => {
                    why.push(w);
                    Status::Insufficient
                }
            }
        };
        let text = if why.is_empty() { text } else { format!("{text} Insufficient evidence: {}.", why.join("; ")) };
        Criterion { text, holds: status == Status::Holds, status }
    }
}

/// Why `e` cannot carry a criterion; `None` when it can (see the module docs).
pub fn unusable(e: &Estimate) -> Option<String> {
    if e.n < MIN_RECORDS {
        return Some(format!("n = {} is below the minimum of {MIN_RECORDS} records", e.n));
    }
    if !(e.value.is_finite() && e.ci_low.is_finite() && e.ci_high.is_finite()) {
        return Some("no estimate".into());
    }
    if e.ci_high <= e.ci_low {
        let all = if e.value == 0.0 { "all-zero rates" } else { "every example gives the same value" };
        return Some(format!("its 95% CI [{}, {}] has width 0 ({all})", f1(e.ci_low), f1(e.ci_high)));
    }
    None
}

/// One of the paper's findings as checked on this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Numbered title, e.g. `1. Information flow (attention knockout)`.
    pub title: String,
    /// The paper's claim, in one sentence.
    pub claim: String,
    /// Computed statements with their numbers.
    pub evidence: Vec<String>,
    /// The checks the verdict rests on; empty when the experiments behind the finding were not run.
    pub criteria: Vec<Criterion>,
    /// [`Verdict::of`] the criteria.
    pub verdict: Verdict,
}

/// Where one knockout set acts most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutEffect {
    /// The blocked position set (`subject`, `non_subject`, `last`, `bos`, `non_subject_no_bos`).
    pub block: String,
    /// 0-based centre layer of the peak: the largest |mean % change|, with its sign.
    pub peak_layer: i32,
    /// Mean % change of p(target) at the peak, with its interval.
    pub peak: Estimate,
    /// 0-based, inclusive: the contiguous layers around the peak whose mean has the peak's
    /// sign and at least half its magnitude.
    pub band: (i32, i32),
}

/// The numbers behind the findings (also in the JSON summary, and what tests compare with
/// the written tables).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Numbers {
    /// One effect per knockout position set, in the report's order.
    pub knockout: Vec<KnockoutEffect>,
    /// The knockout set finding 1 compares with the subject: `non_subject_no_bos` when the
    /// knockout table has it (models that prepend BOS), else `non_subject`.
    pub flow_non_subject_set: Option<String>,
    /// (0-based layer, estimate) of the peak clean MHSA extraction rate (%).
    pub mhsa_peak: Option<(i32, Estimate)>,
    /// (0-based layer, estimate) of the peak clean MLP extraction rate (%).
    pub mlp_peak: Option<(i32, Estimate)>,
    /// The set finding 2 compares with blocking the subject at the MHSA peak.
    pub extraction_non_subject_set: Option<String>,
    /// % of examples where MHSA extracts the target at some layer (clean run).
    pub mhsa_any: Option<Estimate>,
    /// % of examples where the MLP extracts the target at some layer (clean run).
    pub mlp_any: Option<Estimate>,
    /// (source hidden-state index, estimate): where patching the subject positions moves the
    /// any-layer MHSA extraction rate furthest from the unpatched rate.
    pub patching_subject_peak: Option<(i32, Estimate)>,
    /// The unpatched any-layer MHSA extraction rate (%) on the patched examples.
    pub patching_unpatched: Option<Estimate>,
    /// Hidden-state index of the peak subject-last attributes rate (rows marked `extra` left
    /// out).
    pub subject_last_peak: Option<(i32, Estimate)>,
    /// The last position's rate at that same index.
    pub last_at_subject_peak: Option<Estimate>,
    /// Attributes rate (%) of the mean subject input embedding.
    pub enrichment_baseline: Option<Estimate>,
    /// Over early start layers in the criteria's mode: (0-based start, estimate of the rate)
    /// where the rate moves furthest from no intervention.
    pub mlp_knockout_peak: Option<(i32, Estimate)>,
    /// Like `mlp_knockout_peak`, with the MHSA sublayers knocked out instead.
    pub attn_knockout_peak: Option<(i32, Estimate)>,
    /// Attributes rate (%) at subject-last in the read hidden state without any knockout.
    pub no_intervention: Option<Estimate>,
}

/// `-12.3` style: one decimal, ASCII minus (what the report prints for every percentage).
pub fn f1(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{x:.1}")
    }
}

/// `12.3% [95% CI 10.1, 14.0], n = 200`.
pub fn est_pct(e: &Estimate) -> String {
    format!("{}% [95% CI {}, {}], n = {}", f1(e.value), f1(e.ci_low), f1(e.ci_high), e.n)
}

fn est_plain(e: &Estimate) -> String {
    format!("{} [95% CI {}, {}], n = {}", f1(e.value), f1(e.ci_low), f1(e.ci_high), e.n)
}

/// [`est_pct`], or `n/a` for a missing estimate.
fn opt_pct(e: Option<&Estimate>) -> String {
    e.map_or_else(|| "n/a".into(), est_pct)
}

fn curve<'a>(t: &'a SummaryTable, filter: &[(&str, Key)], by: &str) -> Vec<(i32, &'a SummaryRow)> {
    t.series(filter, by).into_iter().filter_map(|(k, r)| Some((k.as_i32()?, r))).filter(|(_, r)| !r.mean.value.is_nan()).collect()
}

/// The largest-magnitude signed effect of a curve: the layer with the largest |mean −
/// `reference`| (ties to the earliest layer) and that layer's estimate. With reference 0 this
/// is the curve's own peak; for rates (never negative) it is their maximum.
pub fn peak_from(c: &[(i32, &SummaryRow)], reference: f64) -> Option<(i32, Estimate)> {
    let effect = |r: &SummaryRow| (r.mean.value - reference).abs();
    // `max_by` keeps the last of equal elements, so reversing keeps the earliest layer.
    c.iter().rev().max_by(|a, b| effect(a.1).total_cmp(&effect(b.1))).map(|(l, r)| (*l, r.mean))
}

/// [`peak_from`] with reference 0: the layer with the largest |mean| and its estimate.
pub fn peak(c: &[(i32, &SummaryRow)]) -> Option<(i32, Estimate)> {
    peak_from(c, 0.0)
}

/// The knockout effect of one set, from its curve over centre layers.
pub fn knockout_effect(t: &SummaryTable, block: &str) -> Option<KnockoutEffect> {
    let c = curve(t, &[("positions", Key::s(block))], "layer");
    let (peak_layer, peak) = peak(&c)?;
    let i = c.iter().position(|(l, _)| *l == peak_layer)?;
    let (mut lo, mut hi) = (i, i);
    if peak.value != 0.0 {
        // Same sign and at least half the magnitude.
        let near = |r: &SummaryRow| r.mean.value / peak.value >= 0.5;
        while lo > 0 && near(c[lo - 1].1) && c[lo - 1].0 + 1 == c[lo].0 {
            lo -= 1;
        }
        while hi + 1 < c.len() && near(c[hi + 1].1) && c[hi].0 + 1 == c[hi + 1].0 {
            hi += 1;
        }
    }
    Some(KnockoutEffect { block: block.into(), peak_layer, peak, band: (c[lo].0, c[hi].0) })
}

/// The distinct values of `column`, those in `preferred` first in that order, then the rest.
fn ordered(t: &SummaryTable, column: &str, preferred: &[&str]) -> Vec<String> {
    let present: Vec<String> = t.distinct(column).iter().filter_map(Key::as_str).map(String::from).collect();
    let mut out: Vec<String> = preferred.iter().map(|p| p.to_string()).filter(|p| present.contains(p)).collect();
    out.extend(present.into_iter().filter(|p| !preferred.contains(&p.as_str())));
    out
}

fn has(t: &SummaryTable, column: &str, value: &str) -> bool {
    t.distinct(column).contains(&Key::s(value))
}

const BLOCK_ORDER: [&str; 5] = ["subject", "non_subject", "last", "bos", "non_subject_no_bos"];
const POSITION_ORDER: [&str; 5] = ["first", "subject_first", "subject_last", "after_subject", "last"];

fn layers_1(band: (i32, i32)) -> String {
    if band.0 == band.1 {
        format!("layer {}", band.0 + 1)
    } else {
        format!("layers {}–{}", band.0 + 1, band.1 + 1)
    }
}

fn set_label(block: &str) -> &str {
    match block {
        "subject" => "the subject positions",
        "non_subject" => "the non-subject positions (BOS included)",
        "last" => "the last position itself",
        "bos" => "the BOS position alone",
        "non_subject_no_bos" => "the non-subject positions without BOS",
        other => other,
    }
}

/// Whether the tables show a model that prepends BOS: the knockout (or extraction) table has
/// the BOS sets, which the experiments stage measures on such models.
fn bos_model(t: &Tables) -> bool {
    let knockout = t.knockout.as_ref().is_some_and(|k| has(k, "positions", "non_subject_no_bos") || has(k, "positions", "bos"));
    let extraction = t.extraction.as_ref().is_some_and(|x| has(x, "positions", "non_subject_no_bos") || has(x, "positions", "bos"));
    knockout || extraction
}

/// The findings and the numbers behind them, as [`findings`] computes them.
pub struct Report {
    /// The three findings, in the paper's order.
    pub findings: Vec<Finding>,
    /// The peaks and rates the criteria used.
    pub numbers: Numbers,
}

/// The three findings. `n_layers` is the model's depth as the experiments recorded it
/// (`None`: as the tables show it).
pub fn findings(t: &Tables, n_layers: Option<i32>) -> Report {
    let depth = n_layers.or(t.n_layers);
    let mut numbers = Numbers::default();
    let f1_ = information_flow(t, depth, &mut numbers);
    let f2 = extraction(t, depth, &mut numbers);
    let f3 = enrichment(t, depth, &mut numbers);
    Report { findings: vec![f1_, f2, f3], numbers }
}

fn depth_text(depth: Option<i32>) -> String {
    depth.map_or_else(|| "?".into(), |d| d.to_string())
}

fn information_flow(t: &Tables, depth: Option<i32>, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    if let Some(k) = &t.knockout {
        for block in ordered(k, "positions", &BLOCK_ORDER) {
            if let Some(e) = knockout_effect(k, &block) {
                let band = if e.peak.value < 0.0 { "drop" } else { "rise" };
                evidence.push(format!(
                    "Blocking the last position's attention to {} changes p(target) most at centre layer {} of {}: mean {}; the mean {band} is at least half that in {}.",
                    set_label(&block),
                    e.peak_layer + 1,
                    depth_text(depth),
                    est_pct(&e.peak),
                    layers_1(e.band),
                ));
                numbers.knockout.push(e);
            }
        }
        let get = |b: &str| numbers.knockout.iter().find(|e| e.block == b).cloned();
        // BOS is an attention sink on models that prepend it: there the relation words proper
        // are the non-subject positions without it.
        let ns_set = if has(k, "positions", "non_subject_no_bos") { "non_subject_no_bos" } else { "non_subject" };
        numbers.flow_non_subject_set = Some(ns_set.into());
        let (s, ns, last) = (get("subject"), get(ns_set), get("last"));
        let at = |e: &Option<KnockoutEffect>| e.as_ref().map_or_else(|| "n/a".into(), |e| format!("layer {} ({})", e.peak_layer + 1, est_pct(&e.peak)));
        let ns_name = format!("the {ns_set} peak");
        criteria.push(Criterion::evaluate(
            format!(
                "The last position reads {} before the subject: the {ns_set} effect peaks at {}, the subject effect at {}. Rule: both peaks (largest |mean % change| over centre layers) are drops whose 95% CIs exclude 0, and the {ns_set} peak is at a strictly earlier layer.",
                set_label(ns_set),
                at(&ns),
                at(&s)
            ),
            &[(&ns_name, ns.as_ref().map(|e| e.peak)), ("the subject peak", s.as_ref().map(|e| e.peak))],
            || {
                let (Some(ns), Some(s)) = (&ns, &s) else { return Err("a peak is missing".into()) };
                for (name, e) in [(ns_set, ns), ("subject", s)] {
                    if e.peak.ci_low <= 0.0 && e.peak.ci_high >= 0.0 {
                        return Err(format!("the {name} peak's 95% CI [{}, {}] includes 0", f1(e.peak.ci_low), f1(e.peak.ci_high)));
                    }
                }
                Ok(ns.peak.value < 0.0 && s.peak.value < 0.0 && ns.peak_layer < s.peak_layer)
            },
        ));
        let sp = s.as_ref().map(|e| e.peak);
        criteria.push(Criterion::evaluate(
            format!(
                "Subject knockout lowers p(target): at its peak the 95% CI is [{}, {}]. Rule: the CI lies below 0.",
                f1(sp.map_or(f64::NAN, |e| e.ci_low)),
                f1(sp.map_or(f64::NAN, |e| e.ci_high))
            ),
            &[("the subject peak", sp)],
            || Ok(sp.is_some_and(|e| e.ci_high < 0.0)),
        ));
        criteria.push(Criterion::evaluate(
            format!(
                "The subject effect peaks past the first third of the network: layer {} of {}. Rule: 1-based peak layer > depth / 3.",
                s.as_ref().map_or_else(|| "n/a".into(), |e| (e.peak_layer + 1).to_string()),
                depth_text(depth)
            ),
            &[("the subject peak", sp)],
            || match (&s, depth) {
                (Some(s), Some(d)) => Ok(3 * (s.peak_layer + 1) > d),
                _ => Err("the model's depth is unknown".into()),
            },
        ));
        let lp = last.as_ref().map(|e| e.peak);
        criteria.push(Criterion::evaluate(
            format!(
                "Blocking the last position itself matters less than blocking the subject: peak mean change {}% vs {}%. Rule: |last peak| < |subject peak|.",
                f1(lp.map_or(f64::NAN, |e| e.value)),
                f1(sp.map_or(f64::NAN, |e| e.value))
            ),
            &[("the last peak", lp), ("the subject peak", sp)],
            || match (lp, sp) {
                (Some(l), Some(s)) => Ok(l.value.abs() < s.value.abs()),
                _ => Err("a peak is missing".into()),
            },
        ));
        if let (Some(b), Some(all)) = (get("bos"), get("non_subject")) {
            evidence.push(format!(
                "BOS as an attention sink: blocking BOS alone gives {}% at its peak, against {}% for all non-subject positions{}.",
                f1(b.peak.value),
                f1(all.peak.value),
                get("non_subject_no_bos").map(|x| format!(" and {}% for the non-subject positions without BOS", f1(x.peak.value))).unwrap_or_default()
            ));
        }
    }
    Finding {
        title: "1. Information flow (attention knockout)".into(),
        claim: "The last position first reads from the relation (non-subject) positions, then, in upper-middle layers, from the subject positions.".into(),
        evidence,
        verdict: Verdict::of(&criteria),
        criteria,
    }
}

fn extraction(t: &Tables, depth: Option<i32>, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    if let Some(x) = &t.extraction {
        let clean = |sub: &str| curve(x, &[("sublayer", Key::s(sub)), ("positions", Key::s("none"))], "layer");
        numbers.mhsa_peak = peak(&clean("attn"));
        numbers.mlp_peak = peak(&clean("mlp"));
        let (a, m) = (numbers.mhsa_peak.map(|p| p.1), numbers.mlp_peak.map(|p| p.1));
        let la = numbers.mhsa_peak.map(|p| p.0);
        let layer_1 = |l: Option<i32>| l.map_or_else(|| "n/a".into(), |l| (l + 1).to_string());
        evidence.push(format!(
            "The clean MHSA extraction rate peaks at layer {} of {}: {}; the MLP rate peaks at layer {}: {}.",
            layer_1(la),
            depth_text(depth),
            opt_pct(a.as_ref()),
            layer_1(numbers.mlp_peak.map(|p| p.0)),
            opt_pct(m.as_ref())
        ));
        let value = |e: Option<Estimate>| f1(e.map_or(f64::NAN, |e| e.value));
        criteria.push(Criterion::evaluate(
            format!("The peak MHSA extraction rate exceeds the peak MLP rate ({}% vs {}%). Rule: point estimates, MHSA > MLP.", value(a), value(m)),
            &[("the MHSA peak", a), ("the MLP peak", m)],
            || match (a, m) {
                (Some(a), Some(m)) => Ok(a.value > m.value),
                _ => Err("a peak is missing".into()),
            },
        ));
        criteria.push(Criterion::evaluate(
            format!(
                "MHSA extraction peaks in the upper half of the network: layer {} of {}. Rule: 1-based peak layer > depth / 2.",
                layer_1(la),
                depth_text(depth)
            ),
            &[("the MHSA peak", a)],
            || match (la, depth) {
                (Some(la), Some(d)) => Ok(2 * (la + 1) > d),
                _ => Err("the model's depth is unknown".into()),
            },
        ));
        // On models that prepend BOS, "non-subject" includes the attention sink: the fair
        // comparison with the subject is the set without it.
        let bos = bos_model(t);
        let ns_set = if bos { "non_subject_no_bos" } else { "non_subject" };
        numbers.extraction_non_subject_set = Some(ns_set.into());
        let at_peak = |blocked: &str| {
            la.and_then(|la| x.select(&[("sublayer", Key::s("attn")), ("positions", Key::s(blocked)), ("layer", Key::u(la))]).first().map(|r| r.mean))
        };
        let (bs, bn) = (at_peak("subject"), at_peak(ns_set));
        if let (Some(la), Some(a), Some(bs), Some(bn)) = (la, a, bs, bn) {
            evidence.push(format!(
                "At layer {}, blocking the last position's attention to the subject in that layer lowers the MHSA rate from {}% to {}%; blocking {}, to {}%.",
                la + 1,
                f1(a.value),
                f1(bs.value),
                set_label(ns_set),
                f1(bn.value)
            ));
        }
        let missing_set = format!(
            "the extraction rows with blocked = {ns_set}{}",
            if bos {
                " (this model prepends BOS, so blocked = non_subject would include the attention sink; add non_subject_no_bos to the extraction's blocked sets)"
            } else {
                ""
            }
        );
        criteria.push(Criterion::evaluate(
            format!(
                "The extracted attribute comes from the subject: blocking it lowers the MHSA rate at layer {} (the MHSA peak) more than blocking {} ({}% vs {}%). Rule: point estimates, blocked subject < blocked {ns_set}.",
                layer_1(la),
                set_label(ns_set),
                value(bs),
                value(bn)
            ),
            &[("the subject-blocked rate at the MHSA peak", bs), (&missing_set, bn)],
            || match (bs, bn) {
                (Some(bs), Some(bn)) => Ok(bs.value < bn.value),
                _ => Err("a rate is missing".into()),
            },
        ));
        if let (Some(r), Some(la)) = (&t.ranks, la) {
            if let Some(row) = r.select(&[("measure", Key::s("subject_last_at_extraction")), ("layer", Key::u(la))]).first() {
                let m = row.median.unwrap_or(row.mean);
                evidence.push(format!(
                    "Where MHSA extracts the target at layer {}, the target's median rank in the projection of the subject-last hidden state after that layer (hidden_states[{}]) is {} ({} examples).",
                    la + 1,
                    la + 1,
                    f1(m.value),
                    m.n
                ));
            }
        }
    }
    if let Some(s) = &t.extraction_summary {
        let stat = |name: &str| s.select(&[("statistic", Key::s(name))]).first().map(|r| r.mean);
        numbers.mhsa_any = stat("mhsa_extraction_any_layer");
        numbers.mlp_any = stat("mlp_extraction_any_layer");
        let (a, m) = (numbers.mhsa_any, numbers.mlp_any);
        if let (Some(a), Some(m)) = (a, m) {
            evidence.push(format!("Examples with an extraction event at any layer (clean run): MHSA {}; MLP {}.", est_pct(&a), est_pct(&m)));
        }
        criteria.push(Criterion::evaluate(
            format!(
                "More examples have an MHSA extraction event than an MLP one ({}% vs {}%). Rule: point estimates, MHSA > MLP.",
                f1(a.map_or(f64::NAN, |e| e.value)),
                f1(m.map_or(f64::NAN, |e| e.value))
            ),
            &[("the MHSA any-layer rate", a), ("the MLP any-layer rate", m)],
            || match (a, m) {
                (Some(a), Some(m)) => Ok(a.value > m.value),
                _ => Err("a rate is missing".into()),
            },
        ));
        if let (Some(a), Some(m)) = (stat("mhsa_extracting_layers"), stat("mlp_extracting_layers")) {
            evidence.push(format!("Mean number of extracting layers per example: MHSA {}; MLP {}.", est_plain(&a), est_plain(&m)));
        }
        if let Some(b) = stat("mhsa_first_not_after_mlp") {
            evidence.push(format!("Among examples where both sublayers extract, MHSA's first extracting layer is no later than MLP's in {}.", est_pct(&b)));
        }
    }
    if let Some(p) = &t.patching_any {
        let base = p.select(&[("positions", Key::s("none"))]).first().map(|r| r.mean);
        numbers.patching_unpatched = base;
        if let Some(base) = base {
            evidence.push(format!("Patching early representations: unpatched, MHSA extracts at some layer in {}.", est_pct(&base)));
        }
        for set in ordered(p, "positions", &BLOCK_ORDER).iter().filter(|s| *s != "none") {
            let c = curve(p, &[("positions", Key::s(set))], "source_hidden_state");
            let parts: Vec<String> = c.iter().map(|(src, r)| format!("ℓ'={src}: {}%", f1(r.mean.value))).collect();
            evidence.push(format!(
                "With the {} positions of one block's input replaced by the hidden state ℓ' (block by block), MHSA extracts at some block in: {}.",
                set.replace('_', "-"),
                parts.join(", ")
            ));
        }
        let c = curve(p, &[("positions", Key::s("subject"))], "source_hidden_state");
        numbers.patching_subject_peak = base.and_then(|b| peak_from(&c, b.value));
        let src = numbers.patching_subject_peak.map(|(s, _)| s);
        let patched = numbers.patching_subject_peak.map(|(_, e)| e);
        criteria.push(Criterion::evaluate(
            format!(
                "Replacing the subject representation with an early one lowers MHSA extraction: the source layer tested is hidden_states[{}] (0 = embeddings; of the sources run, the one whose patching moves the any-layer rate furthest from unpatched), giving {}% vs {}% unpatched. Rule: point estimates, patched < unpatched.",
                src.map_or_else(|| "n/a".into(), |s| s.to_string()),
                f1(patched.map_or(f64::NAN, |e| e.value)),
                f1(base.map_or(f64::NAN, |e| e.value))
            ),
            &[("the subject-patched rate", patched), ("the unpatched rate (clean extraction table)", base)],
            || match (patched, base) {
                (Some(p), Some(b)) => Ok(p.value < b.value),
                _ => Err("a rate is missing".into()),
            },
        ));
    }
    Finding {
        title: "2. Attribute extraction (MHSA vs MLP)".into(),
        claim: "In the upper layers the attribute is extracted from the subject by attention (MHSA) sublayers rather than MLPs: the MHSA output at the last position, projected to the vocabulary, often has the attribute as its top token.".into(),
        evidence,
        verdict: Verdict::of(&criteria),
        criteria,
    }
}

fn enrichment(t: &Tables, depth: Option<i32>, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    if let Some(e) = &t.enrichment {
        // Rows the experiments stage marks `extra` are beyond the notebook's measurements.
        let pos = |p: &str| {
            curve(e, &[("position", Key::s(p))], "hidden_state").into_iter().filter(|(l, _)| !t.enrichment_extra_layers.contains(l)).collect::<Vec<_>>()
        };
        let sl = pos("subject_last");
        numbers.subject_last_peak = peak(&sl);
        let peak_layer = numbers.subject_last_peak.map(|p| p.0);
        let pk = numbers.subject_last_peak.map(|p| p.1);
        let at = |p: &str| peak_layer.and_then(|l| e.select(&[("position", Key::s(p)), ("hidden_state", Key::u(l))]).first().map(|r| r.mean));
        numbers.last_at_subject_peak = at("last");
        numbers.enrichment_baseline = t.enrichment_baseline.as_ref().and_then(|b| b.rows.first()).map(|r| r.mean);
        if let (Some(l), Some(p)) = (peak_layer, pk) {
            let others: Vec<String> = ordered(e, "position", &POSITION_ORDER)
                .iter()
                .filter(|p| *p != "subject_last")
                .filter_map(|p| at(p).map(|x| format!("{} {}%", p.replace('_', "-"), f1(x.value))))
                .collect();
            evidence.push(format!(
                "The attributes rate at the last subject token peaks at hidden state {l} (the output of layer {l}; 0 = embeddings): {}; at that layer the other positions reach {}.",
                est_pct(&p),
                others.join(", ")
            ));
        }
        if !t.enrichment_extra_layers.is_empty() {
            let l: Vec<String> = t.enrichment_extra_layers.iter().map(i32::to_string).collect();
            evidence.push(format!(
                "Rows marked extra (hidden state {}, beyond the notebook's measurements) are in the table and figure but not in these criteria.",
                l.join(", ")
            ));
        }
        let value = |e: Option<Estimate>| f1(e.map_or(f64::NAN, |e| e.value));
        let index = peak_layer.map_or_else(|| "n/a".into(), |l| l.to_string());
        criteria.push(Criterion::evaluate(
            format!(
                "Enrichment at the last subject token peaks in the first two-thirds of the network: at hidden_states[{index}] of a {}-layer model. Rule: the hidden_states index (0 = embeddings, ℓ = output of layer ℓ) < 2/3 × {} = {}.",
                depth_text(depth),
                depth_text(depth),
                depth.map_or_else(|| "?".into(), |d| f1(2.0 * f64::from(d) / 3.0))
            ),
            &[("the subject-last peak", pk)],
            || match (peak_layer, depth) {
                (Some(l), Some(d)) => Ok(3 * l < 2 * d),
                _ => Err("the model's depth is unknown".into()),
            },
        ));
        let base = numbers.enrichment_baseline;
        if let Some(b) = base {
            evidence.push(format!("Baseline (mean of the subject tokens' input embeddings, projected): {}.", est_pct(&b)));
        }
        let ci = |e: Option<Estimate>| e.map_or_else(|| "n/a".into(), |e| format!("[{}, {}]", f1(e.ci_low), f1(e.ci_high)));
        criteria.push(Criterion::evaluate(
            format!(
                "The peak lies above the embedding baseline: peak {}% with 95% CI {}, baseline {}% with 95% CI {}. Rule: the peak's CI lies entirely above the baseline's (peak CI low > baseline CI high).",
                value(pk),
                ci(pk),
                value(base),
                ci(base)
            ),
            &[("the subject-last peak", pk), ("the embedding baseline (table enrichment_baseline)", base)],
            || match (pk, base) {
                (Some(p), Some(b)) => Ok(p.ci_low > b.ci_high),
                _ => Err("an estimate is missing".into()),
            },
        ));
        let last = numbers.last_at_subject_peak;
        criteria.push(Criterion::evaluate(
            format!(
                "The last subject token is richer in attributes than the last position at that layer ({}% vs {}%). Rule: point estimates, subject-last > last.",
                value(pk),
                value(last)
            ),
            &[("the subject-last peak", pk), ("the last position's rate at that layer", last)],
            || match (pk, last) {
                (Some(p), Some(l)) => Ok(p.value > l.value),
                _ => Err("a rate is missing".into()),
            },
        ));
        let first = sl.iter().find(|(l, _)| *l == 0).map(|(_, r)| r.mean);
        criteria.push(Criterion::evaluate(
            format!(
                "The rate at the last subject token rises through the layers: {}% at the embeddings (hidden_states[0]), {}% at the peak. Rule: point estimates, peak > embeddings.",
                value(first),
                value(pk)
            ),
            &[("the subject-last rate at the embeddings", first), ("the subject-last peak", pk)],
            || match (pk, first) {
                (Some(p), Some(f)) => Ok(p.value > f.value),
                _ => Err("a rate is missing".into()),
            },
        ));
    }
    if let Some(s) = &t.sublayer_knockout {
        let read = t.read_hidden_state.unwrap_or(0);
        let none = s.select(&[("sublayer", Key::s("none"))]).first().map(|r| r.mean);
        numbers.no_intervention = none;
        // "Early" = start layers in the first half of the layers before the one read.
        let early = |sub: &str, mode: &str| -> Vec<(i32, &SummaryRow)> {
            curve(s, &[("sublayer", Key::s(sub)), ("mode", Key::s(mode))], "start_layer").into_iter().filter(|(l, _)| 2 * l < read).collect()
        };
        let modes = ordered(s, "mode", &["notebook", "zero"]);
        let mut criteria_mode = None;
        for mode in modes.iter().map(String::as_str).filter(|m| *m != "none") {
            let Some(n) = none else { break };
            let (m, a) = (peak_from(&early("mlp", mode), n.value), peak_from(&early("attn", mode), n.value));
            // The criteria use the notebook's mode (the default), else the first one run.
            if criteria_mode.is_none() {
                criteria_mode = Some(mode.to_string());
                numbers.mlp_knockout_peak = m;
                numbers.attn_knockout_peak = a;
            }
            if let (Some((lm, em)), Some((la, ea))) = (m, a) {
                evidence.push(format!(
                    "Knocking out sublayers ({mode} mode) from an early start layer (0-based start ℓ with 2ℓ < {read}) and reading hidden state {read} at the last subject token: the rate moves furthest from no intervention ({}) with MLPs knocked out to {} (start layer {}), with MHSA knocked out to {} (start layer {}).",
                    est_pct(&n),
                    est_pct(&em),
                    lm + 1,
                    est_pct(&ea),
                    la + 1
                ));
            }
        }
        let mode = criteria_mode.unwrap_or_else(|| "n/a".into());
        let (m, a) = (numbers.mlp_knockout_peak, numbers.attn_knockout_peak);
        let change = |e: Option<(i32, Estimate)>| match (e, none) {
            (Some((l, e)), Some(n)) => format!("{} points from start layer {}", f1(e.value - n.value), l + 1),
            _ => "n/a".into(),
        };
        let none_name = "the no-intervention rate (sublayer = none)";
        criteria.push(Criterion::evaluate(
            format!(
                "Early MLP knockout lowers the attributes rate more than early MHSA knockout ({mode} mode): largest changes from no intervention {} (MLP) vs {} (MHSA). Rule: the MLP change is the more negative.",
                change(m),
                change(a)
            ),
            &[("the MLP-knockout peak", m.map(|p| p.1)), ("the MHSA-knockout peak", a.map(|p| p.1)), (none_name, none)],
            || match (m, a) {
                (Some((_, m)), Some((_, a))) => Ok(m.value < a.value),
                _ => Err("a peak is missing".into()),
            },
        ));
        criteria.push(Criterion::evaluate(
            format!(
                "Early MLP knockout lowers the attributes rate below no intervention ({}% vs {}%). Rule: point estimates, MLP-knockout peak < no intervention.",
                f1(m.map_or(f64::NAN, |p| p.1.value)),
                f1(none.map_or(f64::NAN, |e| e.value))
            ),
            &[("the MLP-knockout peak", m.map(|p| p.1)), (none_name, none)],
            || match (m, none) {
                (Some((_, m)), Some(n)) => Ok(m.value < n.value),
                _ => Err("a rate is missing".into()),
            },
        ));
    }
    Finding {
        title: "3. Subject enrichment (attributes rate)".into(),
        claim: "The hidden state at the last subject token becomes rich in attributes of the subject through the early-middle layers, driven mainly by early MLP sublayers.".into(),
        evidence,
        verdict: Verdict::of(&criteria),
        criteria,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Bootstrap;
    use crate::summary::{Cells, KeyType};

    fn boot() -> Bootstrap {
        Bootstrap { resamples: 200, level: 0.95, seed: 1 }
    }

    /// A knockout table with one curve per `(block, per-layer mean)`: n records per cell,
    /// values spread ±`spread` around the mean.
    fn knockout(curves: &[(&str, &[f64])], n: i64, spread: f64) -> SummaryTable {
        let mut cells = Cells::new();
        for (block, means) in curves {
            for (layer, &m) in means.iter().enumerate() {
                let v = (0..n).map(|id| (id, m + spread * if id % 2 == 0 { 1.0 } else { -1.0 } * (1.0 + (id % 5) as f64 / 5.0))).collect();
                cells.insert(vec![Key::s(block), Key::u(layer as i32)], v);
            }
        }
        SummaryTable::build("knockout", "pct_change", &[("positions", KeyType::Str), ("layer", KeyType::I32)], cells, false, &boot()).unwrap()
    }

    #[test]
    fn a_large_positive_effect_is_the_peak_with_its_sign() {
        // The old rule (most negative mean) reported -4.4 at layer 1 here.
        let k = knockout(&[("last", &[-1.0, -4.4, -2.0, 38.0, 1.0, -0.5])], 40, 1.0);
        let e = knockout_effect(&k, "last").unwrap();
        assert_eq!(e.peak_layer, 3);
        assert!((e.peak.value - 38.0).abs() < 1e-9, "{e:?}");
        assert_eq!(e.band, (3, 3));
        // A negative peak keeps its sign, and the band keeps to the peak's sign.
        let k = knockout(&[("subject", &[-1.0, -30.0, -40.0, -25.0, 30.0, 0.0])], 40, 1.0);
        let e = knockout_effect(&k, "subject").unwrap();
        assert_eq!((e.peak_layer, e.band), (2, (1, 3)));
        assert!(e.peak.value < -39.0);
    }

    fn tables(k: SummaryTable) -> Tables {
        Tables { n_layers: Some(6), knockout: Some(k), ..Tables::default() }
    }

    fn status(f: &Finding, starts: &str) -> Status {
        f.criteria.iter().find(|c| c.text.starts_with(starts)).unwrap_or_else(|| panic!("{starts}: {f:#?}")).status
    }

    const SUBJECT: [f64; 6] = [-1.0, -2.0, -10.0, -40.0, -20.0, -3.0];
    const EARLY: [f64; 6] = [-30.0, -35.0, -5.0, -2.0, -1.0, -1.0];
    const LATE: [f64; 6] = [-1.0, -2.0, -3.0, -5.0, -30.0, -2.0];
    const LAST: [f64; 6] = [-1.0, -2.0, -3.0, -2.0, -1.0, -1.0];

    #[test]
    fn information_flow_needs_an_earlier_non_subject_peak_with_intervals_off_zero() {
        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &EARLY), ("last", &LAST)], 40, 2.0)), None);
        assert_eq!(r.findings[0].verdict, Verdict::Supported, "{:#?}", r.findings[0]);

        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &LATE), ("last", &LAST)], 40, 2.0)), None);
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Fails);
        // The same layer is not earlier.
        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &SUBJECT), ("last", &LAST)], 40, 2.0)), None);
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Fails);

        // Wide spread: the peak CIs include 0.
        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &EARLY), ("last", &LAST)], 40, 200.0)), None);
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Insufficient);
        assert_eq!(r.findings[0].verdict, Verdict::InsufficientEvidence);
    }

    #[test]
    fn the_last_position_is_compared_with_the_subject_by_magnitude() {
        // +50 at its peak is a larger effect than the subject's -40, though it is not below it.
        let spike: [f64; 6] = [-1.0, -2.0, 50.0, -2.0, -1.0, -1.0];
        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &EARLY), ("last", &spike)], 40, 2.0)), None);
        assert_eq!(status(&r.findings[0], "Blocking the last position itself matters less"), Status::Fails);
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Holds);
    }

    #[test]
    fn bos_models_compare_the_non_subject_set_without_bos() {
        // non_subject (with BOS) peaks early, non_subject_no_bos late: the latter decides.
        let k = knockout(&[("subject", &SUBJECT), ("non_subject", &EARLY), ("non_subject_no_bos", &LATE), ("last", &LAST)], 40, 2.0);
        let r = findings(&tables(k), None);
        assert_eq!(r.numbers.flow_non_subject_set.as_deref(), Some("non_subject_no_bos"));
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Fails);
    }

    #[test]
    fn too_few_records_or_a_missing_curve_is_insufficient_never_a_pass() {
        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("non_subject", &EARLY), ("last", &LAST)], 20, 2.0)), None);
        assert!(r.findings[0].criteria.iter().all(|c| c.status == Status::Insufficient && !c.holds), "{:#?}", r.findings[0]);
        assert!(r.findings[0].criteria[0].text.contains("n = 20 is below the minimum of 30 records"));
        assert_eq!(r.findings[0].verdict, Verdict::InsufficientEvidence);

        let r = findings(&tables(knockout(&[("subject", &SUBJECT), ("last", &LAST)], 40, 2.0)), None);
        assert_eq!(status(&r.findings[0], "The last position reads"), Status::Insufficient);
        assert!(r.findings[0].criteria[0].text.contains("the non_subject peak is missing"));
    }

    #[test]
    fn verdicts() {
        let c = |status| Criterion { text: String::new(), holds: status == Status::Holds, status };
        assert_eq!(Verdict::of(&[]), Verdict::NotMeasured);
        assert_eq!(Verdict::of(&[c(Status::Holds), c(Status::Holds)]), Verdict::Supported);
        assert_eq!(Verdict::of(&[c(Status::Holds), c(Status::Fails)]), Verdict::Mixed);
        assert_eq!(Verdict::of(&[c(Status::Fails)]), Verdict::Contradicted);
        assert_eq!(Verdict::of(&[c(Status::Holds), c(Status::Insufficient)]), Verdict::InsufficientEvidence);
        let zero = Estimate { n: 100, value: 0.0, ci_low: 0.0, ci_high: 0.0 };
        assert!(unusable(&zero).unwrap().contains("all-zero rates"));
        assert!(unusable(&Estimate { n: 100, value: 1.0, ci_low: 0.5, ci_high: 1.5 }).is_none());
        assert!(unusable(&Estimate { n: 29, value: 1.0, ci_low: 0.5, ci_high: 1.5 }).is_some());
        assert!(unusable(&Estimate { n: 30, value: 1.0, ci_low: 0.5, ci_high: 1.5 }).is_none());
    }
}
