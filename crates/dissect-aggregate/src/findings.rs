//! The paper's three findings, each checked against the summary tables: the numbers that
//! bear on it and explicit criteria, so a reader sees why a finding is called supported,
//! contradicted or mixed on this model. Every number here is read from a [`SummaryTable`]
//! row, so the report and the tables cannot disagree.

use serde::{Deserialize, Serialize};

use crate::bootstrap::Estimate;
use crate::summary::{Key, SummaryRow, SummaryTable};
use crate::tables::Tables;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every criterion holds.
    Supported,
    /// No criterion holds.
    Contradicted,
    Mixed,
    /// The experiments behind the finding were not run.
    NotMeasured,
}

impl Verdict {
    pub fn of(criteria: &[Criterion]) -> Verdict {
        match (criteria.is_empty(), criteria.iter().filter(|c| c.holds).count()) {
            (true, _) => Verdict::NotMeasured,
            (false, k) if k == criteria.len() => Verdict::Supported,
            (false, 0) => Verdict::Contradicted,
            _ => Verdict::Mixed,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::Contradicted => "contradicted",
            Verdict::Mixed => "mixed",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub text: String,
    pub holds: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub title: String,
    /// The paper's claim, in one sentence.
    pub claim: String,
    /// Computed statements with their numbers.
    pub evidence: Vec<String>,
    pub criteria: Vec<Criterion>,
    pub verdict: Verdict,
}

/// Where one knockout set acts most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutEffect {
    pub block: String,
    /// 0-based centre layer of the largest mean drop (most negative mean % change).
    pub peak_layer: u32,
    pub peak: Estimate,
    /// 0-based, inclusive: the contiguous layers around the peak whose mean drop is at least
    /// half the peak's (only the peak itself when the peak is not a drop).
    pub band: (u32, u32),
}

/// The numbers behind the findings (also in the JSON summary, and what tests compare with
/// the written tables).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Numbers {
    pub knockout: Vec<KnockoutEffect>,
    /// (0-based layer, estimate) of the peak clean extraction rate.
    pub mhsa_peak: Option<(u32, Estimate)>,
    pub mlp_peak: Option<(u32, Estimate)>,
    pub mhsa_any: Option<Estimate>,
    pub mlp_any: Option<Estimate>,
    /// Hidden-state index of the peak subject-last attributes rate.
    pub subject_last_peak: Option<(u32, Estimate)>,
    /// The last position's rate at that same index.
    pub last_at_subject_peak: Option<Estimate>,
    /// Lowest rate over early start layers, notebook mode: (0-based start, estimate).
    pub mlp_knockout_min: Option<(u32, Estimate)>,
    pub attn_knockout_min: Option<(u32, Estimate)>,
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

fn curve<'a>(t: &'a SummaryTable, filter: &[(&str, Key)], by: &str) -> Vec<(u32, &'a SummaryRow)> {
    t.series(filter, by).into_iter().filter_map(|(k, r)| Some((k.as_u32()?, r))).filter(|(_, r)| !r.mean.value.is_nan()).collect()
}

fn argmin(c: &[(u32, &SummaryRow)]) -> Option<(u32, Estimate)> {
    c.iter().min_by(|a, b| a.1.mean.value.total_cmp(&b.1.mean.value)).map(|(l, r)| (*l, r.mean))
}

fn argmax(c: &[(u32, &SummaryRow)]) -> Option<(u32, Estimate)> {
    // Ties go to the earliest layer.
    c.iter().rev().max_by(|a, b| a.1.mean.value.total_cmp(&b.1.mean.value)).map(|(l, r)| (*l, r.mean))
}

/// The knockout effect of one set, from its curve over centre layers.
pub fn knockout_effect(t: &SummaryTable, block: &str) -> Option<KnockoutEffect> {
    let c = curve(t, &[("block", Key::s(block))], "layer");
    let (peak_layer, peak) = argmin(&c)?;
    let i = c.iter().position(|(l, _)| *l == peak_layer)?;
    let (mut lo, mut hi) = (i, i);
    if peak.value < 0.0 {
        let half = peak.value / 2.0;
        while lo > 0 && c[lo - 1].1.mean.value <= half && c[lo - 1].0 + 1 == c[lo].0 {
            lo -= 1;
        }
        while hi + 1 < c.len() && c[hi + 1].1.mean.value <= half && c[hi].0 + 1 == c[hi + 1].0 {
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

const BLOCK_ORDER: [&str; 5] = ["subject", "non_subject", "last", "bos", "non_subject_no_bos"];
const POSITION_ORDER: [&str; 5] = ["first", "subject_first", "subject_last", "after_subject", "last"];

fn layers_1(band: (u32, u32)) -> String {
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

pub struct Report {
    pub findings: Vec<Finding>,
    pub numbers: Numbers,
}

pub fn findings(t: &Tables) -> Report {
    let mut numbers = Numbers::default();
    let f1_ = information_flow(t, &mut numbers);
    let f2 = extraction(t, &mut numbers);
    let f3 = enrichment(t, &mut numbers);
    Report { findings: vec![f1_, f2, f3], numbers }
}

fn information_flow(t: &Tables, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    let depth = t.n_layers.unwrap_or(0);
    if let Some(k) = &t.knockout {
        for block in ordered(k, "block", &BLOCK_ORDER) {
            if let Some(e) = knockout_effect(k, &block) {
                evidence.push(format!(
                    "Blocking the last position's attention to {} changes p(target) most at centre layer {} of {}: mean {}; the mean drop is at least half that in {}.",
                    set_label(&block),
                    e.peak_layer + 1,
                    depth,
                    est_pct(&e.peak),
                    layers_1(e.band),
                ));
                numbers.knockout.push(e);
            }
        }
        let get = |b: &str| numbers.knockout.iter().find(|e| e.block == b);
        if let (Some(s), Some(ns)) = (get("subject"), get("non_subject")) {
            criteria.push(Criterion {
                text: format!(
                    "Non-subject knockout acts no later than subject knockout: its band starts at layer {}, the subject's at layer {}.",
                    ns.band.0 + 1,
                    s.band.0 + 1
                ),
                holds: ns.peak.value < 0.0 && ns.band.0 <= s.band.0,
            });
        }
        // BOS is an attention sink on models that prepend it: the relation words proper are
        // the non-subject positions without it, so check those too when they were measured.
        if let (Some(s), Some(nb)) = (get("subject"), get("non_subject_no_bos")) {
            criteria.push(Criterion {
                text: format!(
                    "Without BOS, the non-subject positions still act no later than the subject: band from layer {} (peak {}%) vs the subject's from layer {}.",
                    nb.band.0 + 1,
                    f1(nb.peak.value),
                    s.band.0 + 1
                ),
                holds: nb.peak.ci_high < 0.0 && nb.band.0 <= s.band.0,
            });
        }
        if let Some(s) = get("subject") {
            criteria.push(Criterion {
                text: format!("Subject knockout lowers p(target): the 95% CI at its peak ({}, {}) lies below 0.", f1(s.peak.ci_low), f1(s.peak.ci_high)),
                holds: s.peak.ci_high < 0.0,
            });
            criteria.push(Criterion {
                text: format!("The subject effect peaks past the first third of the network: layer {} of {}.", s.peak_layer + 1, depth),
                holds: f64::from(s.peak_layer + 1) > f64::from(depth) / 3.0,
            });
            if let Some(l) = get("last") {
                criteria.push(Criterion {
                    text: format!(
                        "Blocking the last position itself matters less than blocking the subject: largest mean change {}% vs {}%.",
                        f1(l.peak.value),
                        f1(s.peak.value)
                    ),
                    holds: l.peak.value > s.peak.value,
                });
            }
        }
        if let (Some(b), Some(ns)) = (get("bos"), get("non_subject")) {
            evidence.push(format!(
                "BOS as an attention sink: blocking BOS alone gives {}% at its peak, against {}% for all non-subject positions{}.",
                f1(b.peak.value),
                f1(ns.peak.value),
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

fn extraction(t: &Tables, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    let depth = t.n_layers.unwrap_or(0);
    if let Some(x) = &t.extraction {
        let clean = |sub: &str| curve(x, &[("sublayer", Key::s(sub)), ("blocked", Key::s("none"))], "layer");
        numbers.mhsa_peak = argmax(&clean("attn"));
        numbers.mlp_peak = argmax(&clean("mlp"));
        if let (Some((la, a)), Some((lm, m))) = (numbers.mhsa_peak, numbers.mlp_peak) {
            evidence.push(format!(
                "The clean MHSA extraction rate peaks at layer {} of {}: {}; the MLP rate peaks at layer {}: {}.",
                la + 1,
                depth,
                est_pct(&a),
                lm + 1,
                est_pct(&m)
            ));
            criteria.push(Criterion {
                text: format!("The peak MHSA extraction rate exceeds the peak MLP rate ({}% vs {}%).", f1(a.value), f1(m.value)),
                holds: a.value > m.value,
            });
            criteria.push(Criterion {
                text: format!("MHSA extraction peaks in the upper half of the network: layer {} of {}.", la + 1, depth),
                holds: f64::from(la + 1) > f64::from(depth) / 2.0,
            });
            let at_peak = |blocked: &str| x.select(&[("sublayer", Key::s("attn")), ("blocked", Key::s(blocked)), ("layer", Key::u(la))]).first().map(|r| r.mean);
            if let (Some(bs), Some(bn)) = (at_peak("subject"), at_peak("non_subject")) {
                evidence.push(format!(
                    "At layer {}, blocking the last position's attention to the subject in that layer lowers the MHSA rate from {}% to {}%; blocking the non-subject positions, to {}%.",
                    la + 1,
                    f1(a.value),
                    f1(bs.value),
                    f1(bn.value)
                ));
                criteria.push(Criterion {
                    text: format!(
                        "The extracted attribute comes from the subject: blocking it lowers the MHSA rate at layer {} more than blocking the non-subject positions ({}% vs {}%).",
                        la + 1,
                        f1(bs.value),
                        f1(bn.value)
                    ),
                    holds: bs.value < bn.value,
                });
            }
            if let Some(r) = &t.ranks {
                if let Some(row) = r.select(&[("measure", Key::s("subject_last_at_extraction")), ("layer", Key::u(la))]).first() {
                    let m = row.median.unwrap_or(row.mean);
                    evidence.push(format!(
                        "Where MHSA extracts the target at layer {}, the target's median rank in the projection of the subject-last hidden state entering that layer is {} ({} examples).",
                        la + 1,
                        f1(m.value),
                        m.n
                    ));
                }
            }
        }
    }
    if let Some(s) = &t.extraction_summary {
        let stat = |name: &str| s.select(&[("statistic", Key::s(name))]).first().map(|r| r.mean);
        numbers.mhsa_any = stat("mhsa_extraction_any_layer");
        numbers.mlp_any = stat("mlp_extraction_any_layer");
        if let (Some(a), Some(m)) = (numbers.mhsa_any, numbers.mlp_any) {
            evidence.push(format!("Examples with an extraction event at any layer (clean run): MHSA {}; MLP {}.", est_pct(&a), est_pct(&m)));
            criteria.push(Criterion {
                text: format!("More examples have an MHSA extraction event than an MLP one ({}% vs {}%).", f1(a.value), f1(m.value)),
                holds: a.value > m.value,
            });
        }
        if let (Some(a), Some(m)) = (stat("mhsa_extracting_layers"), stat("mlp_extracting_layers")) {
            evidence.push(format!("Mean number of extracting layers per example: MHSA {}; MLP {}.", est_plain(&a), est_plain(&m)));
        }
        if let Some(b) = stat("mhsa_first_not_after_mlp") {
            evidence.push(format!("Among examples where both sublayers extract, MHSA's first extracting layer is no later than MLP's in {}.", est_pct(&b)));
        }
    }
    if let Some(p) = &t.patching_any {
        if let Some(base) = p.select(&[("positions", Key::s("none"))]).first().map(|r| r.mean) {
            evidence.push(format!("Patching early representations: unpatched, MHSA extracts at some layer in {}.", est_pct(&base)));
            for set in ordered(p, "positions", &BLOCK_ORDER).iter().filter(|s| *s != "none") {
                let c = curve(p, &[("positions", Key::s(set))], "source_layer");
                let parts: Vec<String> = c.iter().map(|(src, r)| format!("ℓ'={src}: {}%", f1(r.mean.value))).collect();
                evidence.push(format!(
                    "With the {} positions of one block's input replaced by the hidden state ℓ' (block by block), MHSA extracts at some block in: {}.",
                    set.replace('_', "-"),
                    parts.join(", ")
                ));
                if set == "subject" {
                    if let Some((src, lowest)) = argmin(&c) {
                        criteria.push(Criterion {
                            text: format!(
                                "Replacing the subject representation with an early one (ℓ'={src}) lowers MHSA extraction below the unpatched rate ({}% vs {}%).",
                                f1(lowest.value),
                                f1(base.value)
                            ),
                            holds: lowest.value < base.value,
                        });
                    }
                }
            }
        }
    }
    Finding {
        title: "2. Attribute extraction (MHSA vs MLP)".into(),
        claim: "In the upper layers the attribute is extracted from the subject by attention (MHSA) sublayers rather than MLPs: the MHSA output at the last position, projected to the vocabulary, often has the attribute as its top token.".into(),
        evidence,
        verdict: Verdict::of(&criteria),
        criteria,
    }
}

fn enrichment(t: &Tables, numbers: &mut Numbers) -> Finding {
    let mut evidence = Vec::new();
    let mut criteria = Vec::new();
    if let Some(e) = &t.enrichment {
        let pos = |p: &str| curve(e, &[("position", Key::s(p))], "layer");
        let sl = pos("subject_last");
        numbers.subject_last_peak = argmax(&sl);
        if let Some((peak_layer, peak)) = numbers.subject_last_peak {
            let at = |p: &str| e.select(&[("position", Key::s(p)), ("layer", Key::u(peak_layer))]).first().map(|r| r.mean);
            numbers.last_at_subject_peak = at("last");
            let others: Vec<String> = ordered(e, "position", &POSITION_ORDER)
                .iter()
                .filter(|p| *p != "subject_last")
                .filter_map(|p| at(p).map(|x| format!("{} {}%", p.replace('_', "-"), f1(x.value))))
                .collect();
            evidence.push(format!(
                "The attributes rate at the last subject token peaks at hidden state {} (the output of layer {}; 0 = embeddings): {}; at that layer the other positions reach {}.",
                peak_layer,
                peak_layer,
                est_pct(&peak),
                others.join(", ")
            ));
            if let Some(last) = numbers.last_at_subject_peak {
                criteria.push(Criterion {
                    text: format!(
                        "The last subject token is richer in attributes than the last position at that layer ({}% vs {}%).",
                        f1(peak.value),
                        f1(last.value)
                    ),
                    holds: peak.value > last.value,
                });
            }
            if let Some((_, first)) = sl.first() {
                criteria.push(Criterion {
                    text: format!("The rate at the last subject token rises through the layers: {}% at the embeddings, {}% at the peak.", f1(first.mean.value), f1(peak.value)),
                    holds: peak.value > first.mean.value,
                });
            }
            if let Some(b) = t.enrichment_baseline.as_ref().and_then(|b| b.rows.first()) {
                evidence.push(format!("Baseline (mean of the subject tokens' input embeddings, projected): {}.", est_pct(&b.mean)));
                criteria.push(Criterion {
                    text: format!("The peak exceeds the embedding baseline ({}% vs {}%).", f1(peak.value), f1(b.mean.value)),
                    holds: peak.value > b.mean.value,
                });
            }
        }
    }
    if let Some(s) = &t.sublayer_knockout {
        let read = t.read_layer.unwrap_or(0);
        numbers.no_intervention = s.select(&[("sublayer", Key::s("none"))]).first().map(|r| r.mean);
        // "Early" = start layers in the first half of the layers before the one read.
        let early = |sub: &str, mode: &str| -> Vec<(u32, &SummaryRow)> {
            curve(s, &[("sublayer", Key::s(sub)), ("mode", Key::s(mode))], "start_layer").into_iter().filter(|(l, _)| 2 * l < read).collect()
        };
        let modes = ordered(s, "mode", &["notebook", "zero"]);
        for mode in modes.iter().map(String::as_str).filter(|m| *m != "none") {
            let (m, a) = (argmin(&early("mlp", mode)), argmin(&early("attn", mode)));
            // The criteria use the notebook's mode (the default), else the first one run.
            if numbers.mlp_knockout_min.is_none() {
                numbers.mlp_knockout_min = m;
                numbers.attn_knockout_min = a;
            }
            if let (Some((lm, em)), Some((la, ea))) = (m, a) {
                evidence.push(format!(
                    "Knocking out sublayers ({mode} mode) from an early start layer and reading hidden state {read} at the last subject token: lowest attributes rate with MLPs knocked out {} (start layer {}), with MHSA knocked out {} (start layer {}){}.",
                    est_pct(&em),
                    lm + 1,
                    est_pct(&ea),
                    la + 1,
                    numbers.no_intervention.map(|n| format!("; no intervention {}", est_pct(&n))).unwrap_or_default()
                ));
            }
        }
        if let (Some((lm, m)), Some((la, a))) = (numbers.mlp_knockout_min, numbers.attn_knockout_min) {
            criteria.push(Criterion {
                text: format!(
                    "Early MLP knockout lowers the attributes rate more than early MHSA knockout ({}% from layer {} vs {}% from layer {}).",
                    f1(m.value),
                    lm + 1,
                    f1(a.value),
                    la + 1
                ),
                holds: m.value < a.value,
            });
            if let Some(n) = numbers.no_intervention {
                criteria.push(Criterion {
                    text: format!("Early MLP knockout lowers the attributes rate below no intervention ({}% vs {}%).", f1(m.value), f1(n.value)),
                    holds: m.value < n.value,
                });
            }
        }
    }
    Finding {
        title: "3. Subject enrichment (attributes rate)".into(),
        claim: "The hidden state at the last subject token becomes rich in attributes of the subject through the early-middle layers, driven mainly by early MLP sublayers.".into(),
        evidence,
        verdict: Verdict::of(&criteria),
        criteria,
    }
}
