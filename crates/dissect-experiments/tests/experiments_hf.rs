//! Every experiment on the tiny Hugging Face fixtures (dissect-model's tiny-gpt2 and tiny-gemma3)
//! against `fixtures/experiment_refs.json`, which `fixtures/make_experiment_refs.py` computes the
//! NOTEBOOK's way with transformers hooks and a wrapped eager attention (never with our code):
//! attention knockout (windows 9 and 3, every set, both execution paths), extraction (clean and
//! with last→subject / last→non-subject blocked, both paths), patching of early
//! representations, attributes rate (enrichment, its embedding baseline and the paragraph token
//! set), sublayer knockout on enrichment (MLP/MHSA × notebook/zero), and ranks, each under both
//! projections (notebook `h·Eᵀ` and logit lens).
//!
//! Tolerances: probabilities 1e-4 relative (or 1e-5 absolute); `pct_change` within what 1e-4
//! relative on both probabilities allows, `1e-2 · (p_new/p_base + 1)` percentage points; ranks
//! and top-1 exactly, except inside the reference's near-tie band (logits within
//! `1e-5 · max|logit|` of the target's / of the maximum: `rank_lo..=rank_hi`, `top1_alts`);
//! attribute rates exactly (1e-4), except where the logit gap at the cut-off that decides the
//! kept tokens is inside that band. The fixture as checked in has a few such near-ties (1 rank, 3
//! rates, all on tiny-gemma3); `--nocapture` prints the counts per category.
//!
//! The second test checks the "notebook vs paper wording" pairs of DESIGN.md §4, on the vectors
//! and on the experiments' results (ours, and Hugging Face's in the fixture): MLP knockout
//! notebook (hidden activations 0: output = down bias) vs zero differ on GPT-2 and agree on
//! Gemma (no MLP bias) and on GPT-2 with its MLP output biases zeroed; MHSA knockout notebook
//! (uniform attention over the visible prefix) vs zero differ, and the notebook knockout of
//! position 0 alone (one visible key) changes nothing; projection notebook (`h·Eᵀ`) vs logit
//! lens differ, except that the notebook projection of the final-normed last residual (HF's
//! `hidden_states[L]`) is the logit lens of the raw one, i.e. the model's logits.
//!
//! Every comparison is collected (not stopped at the first failure) and reported per category.
//! Each category was seen to fail under a deliberate bug (window end off by one, pct_change over
//! p_new, blocking after the softmax, blocking at layers 0..=l in extraction, non_subject
//! without BOS, patching source off by one, ranks layer off by one, sublayer span one short,
//! stopwords case-sensitive / length filter `>=` on the top side, lowercase stopwords on the
//! paragraph side, MLP notebook knockout as zero, MHSA notebook knockout as zero, final norm in
//! the notebook projection).
//! Regenerate the fixture: `python3 crates/dissect-experiments/tests/fixtures/make_experiment_refs.py`.

use std::collections::HashSet;
use std::ops::Range;

use burn_tensor::Tensor;
use dissect_data::span::{leading_special_tokens, locate_subject};
use dissect_data::TokenPositions;
use dissect_experiments::clean_hidden;
use dissect_experiments::enrichment::{baseline_subject_ids, enrichment, paragraph_tokens, AttributesConfig, EnrichmentConfig};
use dissect_experiments::extraction::{extraction, ExtractionConfig, ExtractionRow};
use dissect_experiments::knockout::{knockout_sweep, BlockSet, KnockoutConfig};
use dissect_experiments::patching::{patching, PatchingConfig};
use dissect_experiments::ranks::ranks;
use dissect_experiments::sublayer_knockout::{sublayer_knockout, SublayerConfig, SublayerRow};
use dissect_model::intervene::{run_plans, CleanRun, EdgeBlocking, ExecPath, Knockout, KnockoutMode, Plan, RecordSpec, Sublayer};
use dissect_model::project::map_logit_rows;
use dissect_model::project::Projection;
use dissect_model::source::Loaded;
use dissect_model::Model;
use serde_json::Value;

mod common;
use common::{arr, attributes, f, load_tiny, refs, s, strings, u, Check, B};

const PROJECTIONS: [(Projection, &str); 2] = [(Projection::Notebook, "notebook"), (Projection::LogitLens, "logit_lens")];
const ALL_SETS: [BlockSet; 5] = [BlockSet::Subject, BlockSet::NonSubject, BlockSet::Last, BlockSet::Bos, BlockSet::NonSubjectNoBos];

fn set_name(b: BlockSet) -> &'static str {
    b.name()
}
fn sub_name(x: Sublayer) -> &'static str {
    x.name()
}
fn mode_name(m: KnockoutMode) -> &'static str {
    m.name()
}

/// Our view of one reference prompt.
struct Prompt {
    ids: Vec<u32>,
    subject: Range<usize>,
    positions: TokenPositions,
    target: u32,
    paragraph: HashSet<String>,
    /// The subject's tokens in `" " + prompt`, for the embedding baseline.
    baseline: Vec<u32>,
}

fn prepare(m: &Loaded<B>, p: &Value, stop: &HashSet<String>, attrs: &AttributesConfig, c: &mut Check, tag: &str) -> Prompt {
    let prompt = s(&p["prompt"]);
    let enc = m.tokenizer.encode(prompt).unwrap();
    let ref_ids: Vec<u32> = arr(&p["input_ids"]).iter().map(|x| u(x) as u32).collect();
    c.ok("inputs", enc.ids == ref_ids, || format!("{tag}: ids {:?} vs HF {ref_ids:?}", enc.ids));
    let span = locate_subject(prompt, s(&p["subject"]), &enc.offsets).unwrap();
    let ref_span: Vec<usize> = arr(&p["subject_positions"]).iter().map(u).collect();
    c.ok("inputs", span.positions().collect::<Vec<_>>() == ref_span, || format!("{tag}: subject {span:?} vs HF {ref_span:?}"));
    let positions = TokenPositions::new(span, enc.ids.len(), leading_special_tokens(&enc.offsets));
    let has_bos = m.model.config.bos_token_id.is_some_and(|b| enc.ids[0] == b);
    c.ok("inputs", has_bos == p["has_bos"].as_bool().unwrap(), || format!("{tag}: has_bos {has_bos}"));
    let paragraph = paragraph_tokens(&m.tokenizer, m.model.config.bos_token_id, &strings(&p["paragraphs"]), stop, attrs).unwrap();
    let theirs: HashSet<String> = strings(&p["paragraph_tokens"]).into_iter().collect();
    c.ok("enrichment paragraph tokens", paragraph == theirs, || {
        format!("{tag}: ours-only {:?}, HF-only {:?}", paragraph.difference(&theirs).collect::<Vec<_>>(), theirs.difference(&paragraph).collect::<Vec<_>>())
    });
    let baseline = baseline_subject_ids(&m.tokenizer, prompt, s(&p["subject"])).unwrap();
    Prompt { ids: enc.ids, subject: span.first..span.last + 1, positions, target: u(&p["target_id"]) as u32, paragraph, baseline }
}

fn sublayer_cfg(r: &Value, n_layers: usize, projection: Projection) -> SublayerConfig {
    let repr = u(&r["sublayer"]["repr_layer"]);
    let default = SublayerConfig::default();
    // The default (R = 40 of 48 scaled to the depth) where the reference uses it, so that the
    // scaling rule is tested too; an explicit R otherwise.
    let repr_layer = (default.repr_layer(n_layers) != repr).then_some(repr);
    SublayerConfig { repr_layer, span: u(&r["sublayer"]["span"]), modes: vec![KnockoutMode::Notebook, KnockoutMode::Zero], projection }
}

fn compare_model(r: &Value, c: &mut Check) {
    let name = s(&r["model"]);
    let m = load_tiny(name);
    let model = &m.model;
    let n_layers = model.n_layers();
    c.ok("inputs", n_layers == u(&r["n_layers"]), || format!("{name}: {n_layers} layers"));
    let stop: HashSet<String> = strings(&r["stopwords"]).into_iter().collect();
    let attrs = attributes(&r["attributes"]);
    let sources: Vec<usize> = arr(&r["patching_sources"]).iter().map(u).collect();

    for (pi, p) in arr(&r["prompts"]).iter().enumerate() {
        let tag = format!("{name} prompt {pi}");
        let q = prepare(&m, p, &stop, &attrs, c, &tag);
        let sl = q.positions.subject.last;

        // attention knockout
        for &window in arr(&r["windows"]).iter().map(u).collect::<Vec<_>>().iter() {
            for path in [ExecPath::Fast, ExecPath::Full] {
                let cfg = KnockoutConfig { window, sets: ALL_SETS.to_vec(), path, batch: 64 };
                let res = knockout_sweep(model, &q.ids, q.subject.clone(), &cfg).unwrap();
                let cat = "knockout";
                c.ok(cat, res.target_id == q.target, || format!("{tag}: target {} vs HF {}", res.target_id, q.target));
                c.prob(cat, res.p_base, f(&p["p_base"]), || format!("{tag}: p_base"));
                let theirs: Vec<&Value> = arr(&p["knockout"]).iter().filter(|k| u(&k["window"]) == window).collect();
                c.ok(cat, res.rows.len() == theirs.len(), || format!("{tag} w{window}: {} rows vs HF {}", res.rows.len(), theirs.len()));
                for t in theirs {
                    let (layer, block) = (u(&t["layer"]), s(&t["block"]));
                    let what = || format!("{tag} {path:?} window {window} layer {layer} {block}");
                    let Some(row) = res.rows.iter().find(|x| x.layer == layer && set_name(x.block) == block) else {
                        c.ok(cat, false, || format!("{}: missing", what()));
                        continue;
                    };
                    c.prob(cat, row.p_new, f(&t["p_new"]), || format!("{}: p_new", what()));
                    let (pn, pb) = (f(&t["p_new"]), f(&p["p_base"]));
                    let tol = 1e-2 * (pn / pb + 1.0);
                    c.ok(cat, (row.pct_change as f64 - f(&t["pct_change"])).abs() <= tol, || {
                        format!("{}: pct_change ours {} vs HF {}", what(), row.pct_change, f(&t["pct_change"]))
                    });
                }
            }
        }

        let clean = CleanRun::new(model, &q.ids).unwrap();
        let hidden = clean_hidden(model, &q.ids).unwrap();
        for (projection, pname) in PROJECTIONS {
            // extraction
            let mut clean_rows: Vec<ExtractionRow> = Vec::new();
            for path in [ExecPath::Fast, ExecPath::Full] {
                let cfg = ExtractionConfig { projection, blocked: vec![BlockSet::Subject, BlockSet::NonSubject], path, blocking: EdgeBlocking::PreSoftmax };
                let rows = extraction(model, &clean, &q.subject, q.target, &cfg).unwrap();
                let theirs = arr(&p["extraction"][pname]);
                let cat = format!("extraction {pname}");
                c.ok(&cat, rows.len() == theirs.len(), || format!("{tag}: {} rows vs HF {}", rows.len(), theirs.len()));
                for t in theirs {
                    let (layer, sub, blocked) = (u(&t["layer"]), s(&t["sublayer"]), t["blocked"].as_str());
                    let what = || format!("{tag} {path:?} layer {layer} {sub} blocked {blocked:?}");
                    match rows.iter().find(|x| x.layer == layer && sub_name(x.sublayer) == sub && x.blocked.map(set_name) == blocked) {
                        Some(row) => {
                            c.rank(&cat, row.target_rank, Some(row.top1), t, what);
                            c.ok(&cat, row.extracted == (row.target_rank == 0), || format!("{}: extracted flag", what()));
                        }
                        None => c.ok(&cat, false, || format!("{}: missing", what())),
                    }
                }
                clean_rows = rows;
            }

            // patching
            let cfg = PatchingConfig { sources: sources.clone(), sets: BlockSet::PAPER.to_vec(), projection };
            let rows = patching(model, &hidden, &q.ids, &q.subject, q.target, &cfg).unwrap();
            let theirs = arr(&p["patching"][pname]);
            let cat = format!("patching {pname}");
            c.ok(&cat, rows.len() == theirs.len(), || format!("{tag}: {} rows vs HF {}", rows.len(), theirs.len()));
            for t in theirs {
                let (layer, source, set) = (u(&t["layer"]), u(&t["source"]), s(&t["set"]));
                let what = || format!("{tag} layer {layer} source {source} {set}");
                match rows.iter().find(|x| x.layer == layer && x.source == source && set_name(x.set) == set) {
                    Some(row) => {
                        c.rank(&cat, row.target_rank, None, t, what);
                        c.ok(&cat, row.extracted == (row.target_rank == 0), || format!("{}: extracted flag", what()));
                    }
                    None => c.ok(&cat, false, || format!("{}: missing", what())),
                }
            }

            // ranks
            let rows = ranks(model, &hidden, sl, q.target, &clean_rows, projection);
            let theirs = arr(&p["ranks"][pname]);
            let cat = format!("ranks {pname}");
            c.ok(&cat, rows.len() == theirs.len(), || format!("{tag}: {} rows vs HF {}", rows.len(), theirs.len()));
            for t in theirs {
                let layer = u(&t["layer"]);
                match rows.iter().find(|x| x.layer == layer) {
                    Some(row) => {
                        c.rank(&cat, row.subject_last_rank, None, &t["subject_last"], || format!("{tag} layer {layer} subject_last"));
                        c.rank(&cat, row.attn_last_rank, None, &t["attn_last"], || format!("{tag} layer {layer} attn_last"));
                    }
                    None => c.ok(&cat, false, || format!("{tag} layer {layer}: missing")),
                }
            }

            // enrichment
            let (rows, base) =
                enrichment(model, &m.tokenizer, &hidden, &q.positions, &q.baseline, &q.paragraph, &stop, &attrs, &EnrichmentConfig::default(), projection);
            let theirs = arr(&p["enrichment"][pname]);
            let cat = format!("enrichment {pname}");
            c.ok(&cat, rows.len() == theirs.len(), || format!("{tag}: {} rows vs HF {}", rows.len(), theirs.len()));
            for t in theirs {
                let (layer, pos) = (u(&t["layer"]), s(&t["position"]));
                let what = || format!("{tag} layer {layer} {pos}");
                match rows.iter().find(|x| x.layer == layer && x.position.name() == pos) {
                    Some(row) => c.rate(&cat, row.rate, t, what),
                    None => c.ok(&cat, false, || format!("{}: missing", what())),
                }
            }
            c.rate(&cat, base, &p["enrichment_baseline"][pname], || format!("{tag} subject-embedding baseline"));

            // sublayer knockout
            let scfg = sublayer_cfg(r, n_layers, projection);
            let rows = sublayer_knockout(model, &m.tokenizer, &hidden, sl, &q.paragraph, &stop, &attrs, &scfg);
            let theirs = arr(&p["sublayer"][pname]);
            let cat = format!("sublayer knockout {pname}");
            c.ok(&cat, rows.len() == theirs.len(), || format!("{tag}: {} rows vs HF {}", rows.len(), theirs.len()));
            for t in theirs {
                let key = (t["start"].as_u64().map(|x| x as usize), t["sublayer"].as_str(), t["mode"].as_str());
                let what = || format!("{tag} {key:?}");
                match rows.iter().find(|x| (x.start, x.sublayer.map(sub_name), x.mode.map(mode_name)) == key) {
                    Some(row) => {
                        c.ok(&cat, row.end == t["end"].as_u64().map(|x| x as usize), || format!("{}: end {:?} vs HF {}", what(), row.end, t["end"]));
                        c.ok(&cat, row.read_layer == u(&r["sublayer"]["read_layer"]), || format!("{}: read layer {}", what(), row.read_layer));
                        c.rate(&cat, row.rate, t, what);
                    }
                    None => c.ok(&cat, false, || format!("{}: missing", what())),
                }
            }
        }
    }
}

#[test]
fn experiments_equal_the_notebook_procedure_in_hf() {
    let refs = refs("experiment_refs.json");
    let mut c = Check::default();
    for r in arr(&refs["models"]) {
        compare_model(r, &mut c);
    }
    for cat in ["knockout", "extraction notebook", "patching logit_lens", "ranks notebook", "enrichment notebook", "sublayer knockout logit_lens"] {
        assert!(c.counts.get(cat).copied().unwrap_or(0) > 50, "{cat}: too few comparisons");
    }
    c.finish();
}

// ------------------------------------------------------------------------------------------
// notebook vs paper wording
// ------------------------------------------------------------------------------------------

/// The residual `hidden_states[read]` at `pos` after knocking out `sublayer` at `layers` (every
/// position) in `mode`, by our intervention path.
fn knocked(model: &Model<B>, ids: &[u32], sublayer: Sublayer, layers: Range<usize>, mode: KnockoutMode, read: usize, pos: usize) -> Vec<f32> {
    let clean = CleanRun::new(model, ids).unwrap();
    let plan = Plan { knockouts: vec![Knockout { sublayer, layers, positions: None, mode }], ..Plan::default() };
    let spec = RecordSpec { residual: true, positions: vec![vec![pos]], ..RecordSpec::default() };
    let (_, rec) = run_plans(model, &clean, &[plan], ExecPath::Full, spec).unwrap();
    rec.residual[read].to_data().into_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Our sublayer-knockout rates of one (sublayer, mode), by start layer.
fn rates_of(rows: &[SublayerRow], sub: Sublayer, mode: KnockoutMode) -> Vec<f32> {
    rows.iter().filter(|r| r.sublayer == Some(sub) && r.mode == Some(mode)).map(|r| r.rate).collect()
}

/// The reference's rates of one (sublayer, mode), by start layer.
fn ref_rates_of(rows: &Value, sub: &str, mode: &str) -> Vec<f64> {
    arr(rows).iter().filter(|r| r["sublayer"].as_str() == Some(sub) && r["mode"].as_str() == Some(mode)).map(|r| f(&r["rate"])).collect()
}

#[test]
fn notebook_and_paper_wording_differ_where_they_should() {
    let refs = refs("experiment_refs.json");
    let mut c = Check::default();
    for r in arr(&refs["models"]) {
        let name = s(&r["model"]);
        let gemma = name.contains("gemma");
        let m = load_tiny(name);
        let model = &m.model;
        let n_layers = model.n_layers();
        let stop: HashSet<String> = strings(&r["stopwords"]).into_iter().collect();
        let attrs = attributes(&r["attributes"]);
        let repr = u(&r["sublayer"]["repr_layer"]);
        let read = repr + 1;
        let span = u(&r["sublayer"]["span"]);
        // The model with every MLP output bias set to 0 (GPT-2's c_proj; Gemma has none): there
        // the MLP notebook knockout is the "zero" one.
        let mut unbiased = model.clone();
        for b in &mut unbiased.blocks {
            b.down.bias = b.down.bias.as_ref().map(|bias| bias.zeros_like());
        }
        let (mut mlp_rates_differ, mut attn_rates_differ, mut hf_mlp_differ, mut hf_attn_differ) = (false, false, false, false);
        let (mut proj_ranks_differ, mut hf_proj_differ) = (false, false);
        for (pi, p) in arr(&r["prompts"]).iter().enumerate() {
            let tag = format!("{name} prompt {pi}");
            let q = prepare(&m, p, &stop, &attrs, &mut c, &tag);
            let sl = q.positions.subject.last;
            let hidden = clean_hidden(model, &q.ids).unwrap();

            // sublayer knockout, on the residual itself
            for layers in [0..span.min(repr), 0..repr] {
                let v = |model: &Model<B>, sub, mode| knocked(model, &q.ids, sub, layers.clone(), mode, read, sl);
                let (nb, zero) = (v(model, Sublayer::Mlp, KnockoutMode::Notebook), v(model, Sublayer::Mlp, KnockoutMode::Zero));
                let d = max_abs_diff(&nb, &zero);
                if gemma {
                    c.ok("mlp notebook == zero (no MLP bias)", d == 0.0, || format!("{tag} {layers:?}: max |diff| {d}"));
                } else {
                    c.ok("mlp notebook != zero (MLP bias)", d > 1e-3, || format!("{tag} {layers:?}: max |diff| {d}"));
                    let d0 = max_abs_diff(&v(&unbiased, Sublayer::Mlp, KnockoutMode::Notebook), &v(&unbiased, Sublayer::Mlp, KnockoutMode::Zero));
                    c.ok("mlp notebook == zero (MLP bias zeroed)", d0 <= 1e-6, || format!("{tag} {layers:?}: max |diff| {d0}"));
                }
                let d = max_abs_diff(&v(model, Sublayer::Attn, KnockoutMode::Notebook), &v(model, Sublayer::Attn, KnockoutMode::Zero));
                c.ok("mhsa notebook (uniform) != zero", d > 1e-3, || format!("{tag} {layers:?}: max |diff| {d}"));
            }
            // attention over a single key is uniform anyway: the MHSA notebook knockout of the
            // first position alone changes nothing
            let clean = knocked(model, &q.ids, Sublayer::Attn, 0..0, KnockoutMode::Notebook, read, sl); // empty range: the clean run
            let plan0 = Plan {
                knockouts: vec![Knockout { sublayer: Sublayer::Attn, layers: 0..n_layers, positions: Some(vec![0]), mode: KnockoutMode::Notebook }],
                ..Plan::default()
            };
            let cr = CleanRun::new(model, &q.ids).unwrap();
            let spec = RecordSpec { residual: true, positions: vec![vec![sl]], ..RecordSpec::default() };
            let (_, rec) = run_plans(model, &cr, &[plan0], ExecPath::Full, spec).unwrap();
            let d = max_abs_diff(&rec.residual[read].to_data().into_vec::<f32>().unwrap(), &clean);
            c.ok("mhsa notebook at position 0 == clean", d <= 1e-6, || format!("{tag}: max |diff| {d}"));

            // the same pairs at the experiment level (attributes rates), ours and HF's
            for (projection, pname) in PROJECTIONS {
                let rows = sublayer_knockout(model, &m.tokenizer, &hidden, sl, &q.paragraph, &stop, &attrs, &sublayer_cfg(r, n_layers, projection));
                let theirs = &p["sublayer"][pname];
                let (ours_nb, ours_zero) = (rates_of(&rows, Sublayer::Mlp, KnockoutMode::Notebook), rates_of(&rows, Sublayer::Mlp, KnockoutMode::Zero));
                let (hf_nb, hf_zero) = (ref_rates_of(theirs, "mlp", "notebook"), ref_rates_of(theirs, "mlp", "zero"));
                if gemma {
                    c.ok("mlp notebook == zero rates (no MLP bias)", ours_nb == ours_zero && hf_nb == hf_zero, || {
                        format!("{tag} {pname}: ours {ours_nb:?} / {ours_zero:?}, HF {hf_nb:?} / {hf_zero:?}")
                    });
                }
                mlp_rates_differ |= ours_nb != ours_zero;
                hf_mlp_differ |= hf_nb != hf_zero;
                attn_rates_differ |= rates_of(&rows, Sublayer::Attn, KnockoutMode::Notebook) != rates_of(&rows, Sublayer::Attn, KnockoutMode::Zero);
                hf_attn_differ |= ref_rates_of(theirs, "attn", "notebook") != ref_rates_of(theirs, "attn", "zero");
            }

            // projection: notebook (h·Eᵀ) vs logit lens (final norm + unembedding)
            let stack = Tensor::cat(hidden.clone(), 0);
            let (nb, ll) = (
                map_logit_rows(model, stack.clone(), Projection::Notebook, <[f32]>::to_vec),
                map_logit_rows(model, stack, Projection::LogitLens, <[f32]>::to_vec),
            );
            let d = nb.iter().zip(&ll).map(|(a, b)| max_abs_diff(a, b)).fold(0.0, f32::max);
            c.ok("projection notebook != logit lens", d > 1e-2, || format!("{tag}: max |diff| {d}"));
            // ... but the notebook projection of the final-normed last residual (HF's
            // hidden_states[L]) is the logit lens of the raw one, which is the model's output
            let last = hidden[n_layers].clone();
            let normed = map_logit_rows(model, model.final_norm.forward(last.clone()), Projection::Notebook, <[f32]>::to_vec);
            let lens = map_logit_rows(model, last.clone(), Projection::LogitLens, <[f32]>::to_vec);
            let [s_len, d_model] = last.dims();
            let out = model.logits(last.reshape([1, s_len, d_model])).into_data().into_vec::<f32>().unwrap();
            let flat = |x: &Vec<Vec<f32>>| x.concat();
            let scale = out.iter().fold(0f32, |a, x| a.max(x.abs()));
            let (d1, d2) = (max_abs_diff(&flat(&normed), &flat(&lens)), max_abs_diff(&flat(&lens), &out));
            c.ok("notebook(final_norm(h_L)) == logit lens(h_L) == logits", d1 <= 1e-5 * scale && d2 <= 1e-5 * scale, || format!("{tag}: {d1} / {d2}"));
            let ext = |projection| {
                let cfg = ExtractionConfig { projection, blocked: vec![], path: ExecPath::Full, blocking: EdgeBlocking::PreSoftmax };
                let cr = CleanRun::new(model, &q.ids).unwrap();
                extraction(model, &cr, &q.subject, q.target, &cfg).unwrap().iter().map(|x| x.target_rank).collect::<Vec<_>>()
            };
            proj_ranks_differ |= ext(Projection::Notebook) != ext(Projection::LogitLens);
            let hf = |pname: &str| arr(&p["extraction"][pname]).iter().map(|x| u(&x["target_rank"])).collect::<Vec<_>>();
            hf_proj_differ |= hf("notebook") != hf("logit_lens");
        }
        if !gemma {
            c.ok("mlp notebook != zero rates (MLP bias)", mlp_rates_differ && hf_mlp_differ, || {
                format!("{name}: ours differ {mlp_rates_differ}, HF differ {hf_mlp_differ}")
            });
        }
        c.ok("mhsa notebook != zero rates", attn_rates_differ && hf_attn_differ, || {
            format!("{name}: ours differ {attn_rates_differ}, HF differ {hf_attn_differ}")
        });
        c.ok("projection notebook != logit lens ranks", proj_ranks_differ && hf_proj_differ, || {
            format!("{name}: ours differ {proj_ranks_differ}, HF differ {hf_proj_differ}")
        });
    }
    c.finish();
}
