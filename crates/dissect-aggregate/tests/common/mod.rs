//! Synthetic experiment tables with the experiments stage's schemas, written with
//! dissect-data's writer, with effects placed where the paper found them (or, with
//! `mlp_dominant`, against finding 2).

#![allow(dead_code)]

use std::path::Path;

use arrow_array::RecordBatch;
use dissect_data::filtered::{kept_to_batch, rejected_to_batch};
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::table::{
    EnrichmentBaselineRow, EnrichmentRow, ExtractionRow, KnockoutRow, ParametersHeadRow, PatchingRow, RanksRow, Row, SkipReason, SkippedRow,
    SublayerKnockoutRow,
};
use dissect_data::{KeptRecord, Provenance, RejectReason, Rejected, ShardSpec, SubjectSpan};
use serde_json::json;

pub const MODEL: &str = "synthetic-model";

#[derive(Debug, Clone)]
pub struct Synth {
    pub n: u64,
    pub layers: u32,
    pub shards: u32,
    pub mlp_dominant: bool,
    /// Added to every subject-knockout value (to check figures change with the data).
    pub subject_shift: f32,
    /// Experiment tables to write (`skipped` always is).
    pub tables: Vec<&'static str>,
    pub no_paragraphs: Vec<u64>,
    /// Knockout sets `bos` and `non_subject_no_bos`, and extraction rows blocked at
    /// `non_subject_no_bos` (a model that prepends BOS).
    pub with_bos_sets: bool,
    /// With `with_bos_sets`: leave the extraction's `non_subject_no_bos` rows out.
    pub drop_extraction_no_bos: bool,
    /// Centre of the non-subject (and non-subject-without-BOS) knockout effect, as a fraction
    /// of the depth (the subject's is 0.55).
    pub non_subject_centre: f64,
    /// Non-subject knockout values of ±30 by record, whose mean is about 0 at every layer.
    pub non_subject_null: bool,
    /// Added to the last → last knockout at layer 3: a large positive effect.
    pub last_spike: f32,
    /// Where the subject-last attributes rate peaks, as a fraction of the depth.
    pub enrichment_peak: f64,
    /// Added to every embedding-baseline rate.
    pub baseline_shift: f32,
    /// Every attributes rate (enrichment, baseline) 0.
    pub zero_enrichment: bool,
    /// Write the `effective` entry of the experiments' provenance.
    pub record_effective: bool,
    /// The experiments stage's `--limit`.
    pub limit: Option<u64>,
    /// The model spec in every footer (a local model's is its path).
    pub model: String,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            n: 60,
            layers: 12,
            shards: 1,
            mlp_dominant: false,
            subject_shift: 0.0,
            tables: vec!["knockout", "extraction", "patching", "enrichment", "enrichment_baseline", "sublayer_knockout", "ranks", "parameters_heads"],
            no_paragraphs: vec![4, 5, 9],
            with_bos_sets: false,
            drop_extraction_no_bos: false,
            non_subject_centre: 0.15,
            non_subject_null: false,
            last_spike: 0.0,
            enrichment_peak: 0.4,
            baseline_shift: 0.0,
            zero_enrichment: false,
            record_effective: true,
            limit: None,
            model: MODEL.to_string(),
        }
    }
}

/// Deterministic noise in [0, 1).
/// Heads per layer in the synthetic `parameters_heads` table.
pub const PARAM_HEADS: u32 = 4;

pub fn u(id: u64, a: u32, b: u32, salt: u32) -> f64 {
    let mut z = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(a) << 40) ^ (u64::from(b) << 20) ^ u64::from(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn bump(x: f64, c: f64, w: f64) -> f64 {
    (-((x - c) / w).powi(2)).exp()
}

/// A table's rows as one batch, keeping the records a predicate accepts (a shard's).
type ShardBatch = Box<dyn Fn(&dyn Fn(i64) -> bool) -> RecordBatch>;

/// A table's rows, to be split by shard when written.
struct Table {
    name: &'static str,
    batch: ShardBatch,
}

/// Rows of any table; `id` gives each row's record (for the shard split).
fn table<R: Row + Clone + 'static>(rows: Vec<R>, id: fn(&R) -> i64) -> Table {
    Table { name: R::TABLE, batch: Box::new(move |keep| R::to_batch(&rows.iter().filter(|r| keep(id(r))).cloned().collect::<Vec<_>>())) }
}

impl Synth {
    fn attn_p(&self, layer: u32) -> f64 {
        let l = f64::from(self.layers);
        let attn = 0.05 + 0.6 * bump(f64::from(layer), 0.7 * l, 0.15 * l);
        let mlp = 0.03 + 0.15 * bump(f64::from(layer), 0.8 * l, 0.1 * l);
        if self.mlp_dominant {
            mlp
        } else {
            attn
        }
    }

    fn mlp_p(&self, layer: u32) -> f64 {
        let l = f64::from(self.layers);
        let attn = 0.05 + 0.6 * bump(f64::from(layer), 0.7 * l, 0.15 * l);
        let mlp = 0.03 + 0.15 * bump(f64::from(layer), 0.8 * l, 0.1 * l);
        if self.mlp_dominant {
            attn
        } else {
            mlp
        }
    }

    pub fn attn_extracts(&self, id: u64, layer: u32) -> bool {
        u(id, layer, 0, 11) < self.attn_p(layer)
    }

    /// The target's rank in head `head`'s OV projection: top-10 mostly in the upper layers.
    pub fn head_rank(&self, id: u64, layer: u32, head: u32) -> u32 {
        let p = 0.6 * f64::from(layer) / f64::from(self.layers);
        let x = u(id, layer, head, 61);
        if x < p {
            (x / p * 10.0) as u32
        } else {
            10 + (x * 500.0) as u32
        }
    }

    /// The patching sources run: the notebook's, those within the depth.
    pub fn patching_sources(&self) -> Vec<u32> {
        [0u32, 1, 5, 10, 20].into_iter().filter(|&s| s <= self.layers).collect()
    }

    /// The experiments stage's parameters, shaped as it writes them.
    pub fn experiments_params(&self) -> serde_json::Value {
        let l = self.layers;
        let repr = ((40.0 * f64::from(l)) / 48.0).round() as u32;
        let sources = self.patching_sources();
        let dropped: Vec<u32> = [0u32, 1, 5, 10, 20].into_iter().filter(|&s| s > l).collect();
        let mut sets = vec!["subject", "non_subject", "last"];
        if self.with_bos_sets {
            sets.extend(["bos", "non_subject_no_bos"]);
        }
        let mut params = json!({
            "model": self.model,
            "limit": self.limit,
            "shard": "0/1",
            "paragraphs_sha256": "2e49b44c45ba79eb46400cc32440cf1910a958b8f78aa2ef8b38bc73146e4ad5",
            "config": {
                "projection": "logit-lens",
                "knockout": {"window": 9, "sets": sets},
                "patching": {"sources": sources},
                "sublayer": {"repr_layer": repr, "span": 11, "modes": ["notebook", "zero"]},
                "extraction": {"blocking": "pre_softmax"},
            },
        });
        if self.record_effective {
            params["effective"] = json!({
                "n_layers": l,
                "paper_depth": 48,
                "projection": "logit-lens",
                "knockout_window": 9,
                "sublayer_repr_layer": repr,
                "sublayer_read_hidden_state": repr + 1,
                "sublayer_span": 11,
                "patching_sources": sources,
                "patching_sources_dropped": dropped,
                "extraction_blocking": "pre_softmax",
            });
        }
        params
    }

    pub fn write(&self, dir: &Path) {
        let l = self.layers;
        let lf = f64::from(l);
        let ids: Vec<u64> = (0..self.n).collect();
        let mut tables: Vec<Table> = Vec::new();
        let (i, ly) = (|id: u64| id as i64, |layer: u32| layer as i32);

        let mut k = Vec::new();
        let mut blocks = vec!["subject", "non_subject", "last"];
        if self.with_bos_sets {
            blocks.extend(["bos", "non_subject_no_bos"]);
        }
        for &id in &ids {
            for layer in 0..l {
                let x = f64::from(layer);
                for (bi, b) in blocks.iter().enumerate() {
                    let c = self.non_subject_centre;
                    let base = match *b {
                        "subject" => -45.0 * bump(x, 0.55 * lf, 0.15 * lf),
                        "non_subject" => -55.0 * bump(x, c * lf, 0.15 * lf),
                        "bos" => -45.0 * bump(x, 0.15 * lf, 0.2 * lf),
                        "non_subject_no_bos" => -12.0 * bump(x, (c + 0.05) * lf, 0.15 * lf),
                        _ => -3.0,
                    };
                    let null = self.non_subject_null && b.starts_with("non_subject");
                    let mut pct = if null {
                        (if id % 2 == 0 { 30.0 } else { -30.0 }) + (0.5 * bump(x, c * lf, 0.15 * lf)) as f32
                    } else {
                        (base + 10.0 * (u(id, layer, bi as u32, 1) - 0.5)) as f32
                    };
                    if *b == "subject" {
                        pct += self.subject_shift;
                    }
                    if *b == "last" && layer == 3 {
                        pct += self.last_spike;
                    }
                    let p_base = 0.5f32;
                    let p_new = p_base * (1.0 + pct / 100.0);
                    k.push(KnockoutRow { id: i(id), layer: ly(layer), positions: b.to_string(), window: 9, target_id: 7, p_base, p_new, pct_change: pct });
                }
            }
        }
        tables.push(table(k, |r| r.id));

        let mut e = Vec::new();
        for &id in &ids {
            for layer in 0..l {
                for (si, sub) in ["attn", "mlp"].into_iter().enumerate() {
                    let mut sets = vec!["none", "subject", "non_subject"];
                    if self.with_bos_sets && !self.drop_extraction_no_bos {
                        sets.push("non_subject_no_bos");
                    }
                    for (bi, blocked) in sets.into_iter().enumerate() {
                        let p = if sub == "attn" { self.attn_p(layer) } else { self.mlp_p(layer) };
                        let extracted = match (sub, blocked) {
                            ("attn", "none") => self.attn_extracts(id, layer),
                            (_, "subject") => u(id, layer, (si * 3 + bi) as u32, 12) < p * 0.2,
                            (_, "non_subject" | "non_subject_no_bos") => u(id, layer, (si * 4 + bi) as u32, 12) < p * 0.8,
                            _ => u(id, layer, si as u32, 13) < p,
                        };
                        let target_rank = if extracted { 0 } else { 1 + (u(id, layer, 0, 14) * 100.0) as i32 };
                        let (sublayer, positions, top1_id) = (sub.to_string(), blocked.to_string(), if extracted { 7 } else { 8 });
                        e.push(ExtractionRow { id: i(id), layer: ly(layer), sublayer, positions, target_rank, top1_id, extracted });
                    }
                }
            }
        }
        tables.push(table(e, |r| r.id));

        let mut p = Vec::new();
        for &id in &ids {
            for layer in 0..l {
                for source in self.patching_sources() {
                    for (si, set) in ["subject", "non_subject", "last"].into_iter().enumerate() {
                        let factor = match set {
                            "subject" => 0.15 + 0.85 * f64::from(source) / lf,
                            "non_subject" => 0.9,
                            _ => 0.95,
                        };
                        let extracted = u(id, layer, source * 3 + si as u32, 21) < self.attn_p(layer) * factor;
                        let (source_hidden_state, positions, target_rank) = (ly(source), set.to_string(), if extracted { 0 } else { 5 });
                        p.push(PatchingRow { id: i(id), layer: ly(layer), source_hidden_state, positions, target_rank, extracted });
                    }
                }
            }
        }
        tables.push(table(p, |r| r.id));

        let with_paragraphs: Vec<u64> = ids.iter().copied().filter(|i| !self.no_paragraphs.contains(i)).collect();
        // hidden_states[0..l) as the notebook, and hidden_states[l] marked extra with a
        // subject-last rate far above the rest (which the findings must leave out).
        let mut en = Vec::new();
        let mut base = Vec::new();
        let top = self.enrichment_peak * lf;
        for &id in &with_paragraphs {
            let subject = subject_of(id);
            for layer in 0..=l {
                let x = f64::from(layer);
                let extra = layer == l;
                for (pi, pos) in ["first", "subject_first", "subject_last", "after_subject", "last"].into_iter().enumerate() {
                    let mean = match pos {
                        _ if extra && pos == "subject_last" => 90.0,
                        "subject_last" if x <= top => 42.0 * x / top,
                        "subject_last" => 42.0 - 20.0 * (x - top) / (lf - top),
                        "subject_first" => 15.0 * (1.0 - (-x / (0.3 * lf)).exp()),
                        "last" => 8.0 + 6.0 * x / lf,
                        "after_subject" => 10.0,
                        _ => 4.0,
                    };
                    let rate = (mean + 12.0 * (u(id, layer, pi as u32, 31) - 0.5)).clamp(0.0, 100.0);
                    let rate = if self.zero_enrichment { 0.0 } else { ((rate / 2.0).round() * 2.0) as f32 };
                    let (subject, position) = (subject.clone(), pos.to_string());
                    en.push(EnrichmentRow { id: i(id), subject, hidden_state: ly(layer), position, rate_pct: rate, extra });
                }
            }
            let b = (2.0 * (u(id, 0, 0, 32) * 4.0).round()) as f32 + self.baseline_shift;
            base.push(EnrichmentBaselineRow { id: i(id), subject, rate_pct: if self.zero_enrichment { 0.0 } else { b } });
        }
        tables.push(table(en, |r| r.id));
        tables.push(table(base, |r| r.id));

        // R scaled from the notebook's 40 of 48; the table reads hidden_states[R + 1].
        let repr = ((40.0 * lf) / 48.0).round() as u32;
        let read = repr + 1;
        let mut sk = Vec::new();
        let row = |id: u64, range: Option<(u32, u32)>, sublayer: &str, mode: &str, rate: f64| SublayerKnockoutRow {
            id: i(id),
            start_layer: range.map(|r| ly(r.0)),
            end_layer: range.map(|r| ly(r.1)),
            sublayer: sublayer.into(),
            mode: mode.into(),
            read_hidden_state: ly(read),
            rate_pct: rate as f32,
        };
        for &id in &with_paragraphs {
            let none = 40.0 + 8.0 * (u(id, 0, 0, 41) - 0.5);
            sk.push(row(id, None, "none", "none", none));
            for start in 0..read {
                let x = f64::from(start);
                for (si, sub) in ["mlp", "attn"].into_iter().enumerate() {
                    for (mi, mode) in ["notebook", "zero"].into_iter().enumerate() {
                        let drop = if sub == "mlp" { 28.0 * (-x / (0.2 * lf)).exp() } else { 4.0 + 2.0 * mi as f64 };
                        let rate = (none - drop + 6.0 * (u(id, start, (si * 2 + mi) as u32, 42) - 0.5)).max(0.0);
                        sk.push(row(id, Some((start, (start + 11).min(read))), sub, mode, rate));
                    }
                }
            }
        }
        tables.push(table(sk, |r| r.id));

        let mut r = Vec::new();
        for &id in &ids {
            for layer in 0..l {
                let subject_last_rank = (1000.0 * (-f64::from(layer) / (0.3 * lf)).exp() * (0.5 + u(id, layer, 0, 51))) as i32;
                let attn_last_rank = if self.attn_extracts(id, layer) { 0 } else { 1 + (u(id, layer, 0, 52) * 50.0) as i32 };
                r.push(RanksRow { id: i(id), layer: ly(layer), subject_last_rank, attn_last_rank });
            }
        }
        tables.push(table(r, |r| r.id));

        let mut ph = Vec::new();
        for &id in &ids {
            for layer in 0..l {
                for head in 0..PARAM_HEADS {
                    let target_rank = self.head_rank(id, layer, head) as i32;
                    ph.push(ParametersHeadRow { id: i(id), layer: ly(layer), head: head as i32, target_rank, top_ids: vec![], top_tokens: vec![] });
                }
            }
        }
        tables.push(table(ph, |r| r.id));

        let mut skipped = Vec::new();
        for &id in &self.no_paragraphs {
            for exp in ["enrichment", "sublayer_knockout"] {
                let message =
                    format!("record {id}: no paragraphs for subject {:?}: excluded from enrichment and sublayer knockout, as in the paper", subject_of(id));
                skipped.push(SkippedRow { id: i(id), experiment: exp.into(), reason: SkipReason::NoParagraphs, message });
            }
        }
        let message = "record 1: some other failure".to_string();
        skipped.push(SkippedRow { id: 1, experiment: "patching".into(), reason: SkipReason::Error, message });
        // A failure whose message mentions paragraphs: not an exclusion, which is told by the
        // reason, never by the words.
        let message = "record 1: no paragraphs could be read: the file is truncated".to_string();
        skipped.push(SkippedRow { id: 1, experiment: "sublayer_knockout".into(), reason: SkipReason::Error, message });

        let prov = Provenance::new("experiments", &self.model, self.experiments_params());
        let kv = prov.to_kv();
        let shards: Vec<ShardSpec> = (0..self.shards).map(|i| ShardSpec::new(i, self.shards).unwrap()).collect();
        for t in tables.iter().filter(|t| self.tables.contains(&t.name)).chain([table(skipped, |r| r.id)].iter()) {
            for sh in &shards {
                let batch = (t.batch)(&|id| sh.contains(id as u64));
                write_parquet_atomic(&sh.part_path(&dir.join(t.name), 0), &[batch], &kv).unwrap();
            }
        }

        let kept: Vec<KeptRecord> = ids
            .iter()
            .map(|&id| KeptRecord {
                id,
                prompt: format!("{} is located in", subject_of(id)),
                subject: subject_of(id),
                attribute: "Paris".into(),
                relation_id: "P131".into(),
                subject_span: SubjectSpan { first: 1, last: 2 },
                first_token: 1,
                n_tokens: 6,
                target_id: 7,
                target: " Paris".into(),
                target_prob: 0.5,
            })
            .collect();
        let rejected: Vec<Rejected> = (self.n..self.n + 5)
            .map(|id| Rejected {
                id: Some(id),
                reason: RejectReason::WrongPrediction {
                    predicted_id: 1,
                    predicted: " the".into(),
                    predicted_prob: 0.3,
                    expected_id: 7,
                    expected: " Paris".into(),
                    expected_prob: 0.1,
                },
            })
            .chain([Rejected { id: None, reason: RejectReason::Malformed { record: 99, message: "missing field `prompt`".into() } }])
            .collect();
        let fprov = Provenance::new("filter", &self.model, json!({"batch_size": 16}));
        if self.shards == 1 {
            write_parquet_atomic(&dir.join("filtered.parquet"), &[kept_to_batch(&kept)], &fprov.to_kv()).unwrap();
            write_parquet_atomic(&dir.join("rejected.parquet"), &[rejected_to_batch(&rejected)], &fprov.to_kv()).unwrap();
        } else {
            for sh in &shards {
                let k: Vec<KeptRecord> = kept.iter().filter(|r| sh.contains(r.id)).cloned().collect();
                let r: Vec<Rejected> = rejected.iter().filter(|r| r.id.map_or(sh.index == 0, |id| sh.contains(id))).cloned().collect();
                write_parquet_atomic(&sh.part_path(&dir.join("filtered"), 0), &[kept_to_batch(&k)], &fprov.to_kv()).unwrap();
                write_parquet_atomic(&sh.part_path(&dir.join("rejected"), 0), &[rejected_to_batch(&r)], &fprov.to_kv()).unwrap();
            }
        }
    }
}

/// Records 2k and 2k+1 share a subject (so excluded subjects < excluded records).
pub fn subject_of(id: u64) -> String {
    format!("Subject {}", id / 2)
}
