//! The stage end to end on synthetic tables.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float64Array, Int32Array, RecordBatch, StringArray, UInt64Array};
use common::{Synth, MODEL};
use dissect_aggregate::findings::{est_pct, f1};
use dissect_aggregate::{aggregate, outputs_are_current, AggregateConfig, AggregateError, Criterion, Finding, Status, Summary, Verdict};
use dissect_data::parquet_io::read_parquet;

const FIGURES: [&str; 7] = ["knockout", "extraction", "patching", "enrichment", "sublayer_knockout", "ranks", "parameters"];
const TABLES: [&str; 11] = [
    "knockout",
    "extraction",
    "extraction_summary",
    "patching",
    "patching_any",
    "enrichment",
    "enrichment_baseline",
    "sublayer_knockout",
    "ranks",
    "parameters",
    "counts",
];

fn run(synth: &Synth, cfg: &AggregateConfig) -> (tempfile::TempDir, PathBuf, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("run");
    synth.write(&input);
    let out = dir.path().join("agg");
    let summary = aggregate(&input, &out, cfg).unwrap();
    (dir, out, summary)
}

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["tables", "figures"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            out.insert(format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn table(out: &Path, name: &str) -> RecordBatch {
    let b = read_parquet(&out.join(format!("tables/{name}.parquet"))).unwrap();
    assert_eq!(b.len(), 1);
    b.into_iter().next().unwrap()
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<f64> {
    b.column_by_name(col).unwrap().as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec()
}
fn strs(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b.column_by_name(col).unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect()
}
fn i32s(b: &RecordBatch, col: &str) -> Vec<Option<i32>> {
    let a = b.column_by_name(col).unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect()
}
fn u64s(b: &RecordBatch, col: &str) -> Vec<u64> {
    b.column_by_name(col).unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().values().to_vec()
}

fn assert_png(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.clone()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 650));
    // Not a blank image: a white background with coloured curves.
    let pixels = &buf[..info.buffer_size()];
    let non_white = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(non_white > 10_000, "{}: only {non_white} non-white pixels", path.display());
    bytes
}

fn assert_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(doc.descendants().filter(|n| n.has_tag_name("text")).count() > 10, "{}: axis labels and legend", path.display());
    text
}

#[test]
fn writes_every_table_figure_and_the_report() {
    let (_d, out, summary) = run(&Synth::default(), &AggregateConfig::default());
    for t in TABLES {
        assert!(out.join(format!("tables/{t}.parquet")).is_file(), "{t}");
        let csv = std::fs::read_to_string(out.join(format!("tables/{t}.csv"))).unwrap();
        assert_eq!(csv.lines().count(), table(&out, t).num_rows() + 1, "{t}: csv rows");
    }
    for f in FIGURES {
        assert_png(&out.join(format!("figures/{f}.png")));
        let svg = assert_svg(&out.join(format!("figures/{f}.svg")));
        assert!(svg.contains(MODEL), "{f}: the title names the model");
    }
    assert!(std::fs::read_to_string(out.join("figures/knockout.svg")).unwrap().contains("n = 60"));
    assert!(std::fs::read_to_string(out.join("figures/enrichment.svg")).unwrap().contains("n = 57"));
    let html = std::fs::read_to_string(&summary.report_html).unwrap();
    assert_eq!(html.matches("<svg").count(), FIGURES.len(), "figures inlined");
    assert!(!html.contains("src=\"") && !html.contains("href=\"http"), "self-contained");
    let md = std::fs::read_to_string(&summary.report_md).unwrap();
    for f in FIGURES {
        assert!(md.contains(&format!("(figures/{f}.png)")), "{f}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["model"], MODEL);
    // Every output's footer names what produced it.
    let kv = dissect_data::parquet_io::read_kv_metadata(&out.join("tables/knockout.parquet")).unwrap();
    assert_eq!(kv["dissect.stage"], "aggregate");
    assert_eq!(kv["dissect.model"], MODEL);
    assert_eq!(kv["dissect.params_sha256"], summary.params_sha256);
    // No temporary file left behind.
    for sub in ["", "tables", "figures"] {
        for e in std::fs::read_dir(out.join(sub)).unwrap() {
            assert!(!e.unwrap().file_name().to_string_lossy().starts_with('.'));
        }
    }
}

#[test]
fn the_synthetic_effects_support_all_three_findings() {
    let (_d, out, summary) = run(&Synth::default(), &AggregateConfig::default());
    let verdicts: Vec<Verdict> = summary.findings.iter().map(|f| f.verdict).collect();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(verdicts, [Verdict::Supported; 3], "{md}");
    assert!(md.contains("### 1. Information flow (attention knockout): supported"));
}

#[test]
fn an_mlp_dominated_model_does_not_support_finding_two() {
    let synth = Synth { mlp_dominant: true, ..Synth::default() };
    let (_d, _out, summary) = run(&synth, &AggregateConfig::default());
    let f2 = &summary.findings[1];
    assert!(matches!(f2.verdict, Verdict::Contradicted | Verdict::Mixed), "{f2:#?}");
    assert!(f2.criteria.iter().any(|c| !c.holds && c.text.starts_with("The peak MHSA extraction rate exceeds")));
}

#[test]
fn report_numbers_equal_the_tables() {
    let (_d, out, summary) = run(&Synth { with_bos_sets: true, ..Synth::default() }, &AggregateConfig::default());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();

    // Knockout: the peak of each set is its largest |mean| over layers, sign kept, as printed.
    let k = table(&out, "knockout");
    let (blocks, layers, means, lo, hi, n) =
        (strs(&k, "positions"), i32s(&k, "layer"), f64s(&k, "mean"), f64s(&k, "ci_low"), f64s(&k, "ci_high"), u64s(&k, "n"));
    for set in ["subject", "non_subject", "last", "bos", "non_subject_no_bos"] {
        let rows: Vec<usize> = (0..k.num_rows()).filter(|&i| blocks[i].as_deref() == Some(set)).collect();
        let best = *rows.iter().rev().max_by(|&&a, &&b| means[a].abs().total_cmp(&means[b].abs())).unwrap();
        let e = summary.numbers.knockout.iter().find(|e| e.block == set).unwrap();
        assert_eq!(e.peak_layer, layers[best].unwrap());
        assert_eq!((e.peak.value, e.peak.ci_low, e.peak.ci_high, e.peak.n as u64), (means[best], lo[best], hi[best], n[best]));
        let text = format!("centre layer {} of 12: mean {}", layers[best].unwrap() + 1, est_pct(&e.peak));
        assert!(md.contains(&text), "{set}: `{text}` not in the report");
        assert!(html.contains(&text.replace('&', "&amp;")), "{set}: html");
        assert!(md.contains(&format!("{}% [95% CI {}, {}], n = {}", f1(means[best]), f1(lo[best]), f1(hi[best]), n[best])));
    }

    // Extraction: peak MHSA and MLP layers from the table.
    let x = table(&out, "extraction");
    let (sub, blocked, layers, means) = (strs(&x, "sublayer"), strs(&x, "positions"), i32s(&x, "layer"), f64s(&x, "mean"));
    for (s, got) in [("attn", summary.numbers.mhsa_peak), ("mlp", summary.numbers.mlp_peak)] {
        let rows: Vec<usize> = (0..x.num_rows()).filter(|&i| sub[i].as_deref() == Some(s) && blocked[i].as_deref() == Some("none")).collect();
        let max = rows.iter().map(|&i| means[i]).fold(f64::NEG_INFINITY, f64::max);
        let first = *rows.iter().find(|&&i| means[i] == max).unwrap();
        let (layer, est) = got.unwrap();
        assert_eq!((layer, est.value), (layers[first].unwrap(), max), "{s}");
    }
    let (la, a) = summary.numbers.mhsa_peak.unwrap();
    assert!(md.contains(&format!("peaks at layer {} of 12: {}", la + 1, est_pct(&a))));

    // Summary statistics, as printed.
    let s = table(&out, "extraction_summary");
    let stats = strs(&s, "statistic");
    let mean_of = |name: &str| f64s(&s, "mean")[stats.iter().position(|x| x.as_deref() == Some(name)).unwrap()];
    assert_eq!(summary.numbers.mhsa_any.unwrap().value, mean_of("mhsa_extraction_any_layer"));
    assert!(md.contains(&format!("MHSA {}", est_pct(&summary.numbers.mhsa_any.unwrap()))));
    assert!(md.contains(&format!("MHSA's first extracting layer is no later than MLP's in {}%", f1(mean_of("mhsa_first_not_after_mlp")))));

    // Enrichment: subject-last peak and the last position at that layer.
    let e = table(&out, "enrichment");
    let (pos, layers, means) = (strs(&e, "position"), i32s(&e, "hidden_state"), f64s(&e, "mean"));
    let (pl, pe) = summary.numbers.subject_last_peak.unwrap();
    // Hidden state 12 is marked extra: not a candidate.
    let rows: Vec<usize> = (0..e.num_rows()).filter(|&i| pos[i].as_deref() == Some("subject_last") && layers[i] != Some(12)).collect();
    assert_eq!(pe.value, rows.iter().map(|&i| means[i]).fold(f64::NEG_INFINITY, f64::max));
    let last = (0..e.num_rows()).find(|&i| pos[i].as_deref() == Some("last") && layers[i] == Some(pl)).unwrap();
    assert_eq!(summary.numbers.last_at_subject_peak.unwrap().value, means[last]);
    assert!(md.contains(&format!("peaks at hidden state {pl} (the output of layer {pl}; 0 = embeddings): {}", est_pct(&pe))));

    // Sublayer knockout: the no-intervention row and the early minima.
    let k = table(&out, "sublayer_knockout");
    let (sub, mode, start, means) = (strs(&k, "sublayer"), strs(&k, "mode"), i32s(&k, "start_layer"), f64s(&k, "mean"));
    let none = (0..k.num_rows()).find(|&i| sub[i].as_deref() == Some("none")).unwrap();
    assert_eq!(start[none], None);
    assert_eq!(summary.numbers.no_intervention.unwrap().value, means[none]);
    let (ml, me) = summary.numbers.mlp_knockout_peak.unwrap();
    let row = (0..k.num_rows()).find(|&i| sub[i].as_deref() == Some("mlp") && mode[i].as_deref() == Some("notebook") && start[i] == Some(ml)).unwrap();
    assert_eq!(me.value, means[row]);
    assert!(md.contains(&format!("with MLPs knocked out to {} (start layer {})", est_pct(&me), ml + 1)));

    // Counts, as printed.
    let c = table(&out, "counts");
    let (names, values) = (strs(&c, "name"), u64s(&c, "value"));
    let count = |n: &str| values[names.iter().position(|x| x.as_deref() == Some(n)).unwrap()];
    assert_eq!(count("kept"), 60);
    assert_eq!(count("rejected"), 6);
    assert_eq!(count("rejected:wrong_prediction"), 5);
    assert_eq!(count("excluded_no_paragraphs:records"), 3);
    assert_eq!(count("excluded_no_paragraphs:subjects"), 2);
    assert_eq!(count("skipped:patching"), 1);
    assert!(md.contains("| excluded_no_paragraphs:subjects | 2 — "));
    assert!(md.contains("| kept | 60 — "));
}

#[test]
fn a_sharded_input_aggregates_like_an_unsharded_one() {
    let cfg = AggregateConfig::default();
    let (_a, one, _) = run(&Synth::default(), &cfg);
    let (_b, three, s3) = run(&Synth { shards: 3, ..Synth::default() }, &cfg);
    let (x, y) = (files_under(&one), files_under(&three));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (name, bytes) in &x {
        if name.ends_with(".parquet") {
            // The footers differ (input hashes of 3 shards); the data must not.
            assert_eq!(read_parquet(&one.join(name)).unwrap(), read_parquet(&three.join(name)).unwrap(), "{name}");
        } else {
            assert_eq!(bytes, &y[name], "{name}");
        }
    }
    assert_eq!(s3.counts.iter().find(|c| c.name == "kept").unwrap().value, 60);
    let md = std::fs::read_to_string(three.join("report.md")).unwrap();
    // Every input has 3 files, so the count is said once, above the provenance table.
    assert!(md.contains("| files | 3 |"), "provenance counts the shard files");
}

#[test]
fn reruns_are_identical_and_the_seed_matters() {
    let synth = Synth::default();
    let cfg = AggregateConfig::default();
    let (_a, first, _) = run(&synth, &cfg);
    let (_b, second, _) = run(&synth, &cfg);
    assert_eq!(files_under(&first), files_under(&second));
    let (_c, other, _) = run(&synth, &AggregateConfig { seed: 1, ..cfg });
    let (a, b) = (table(&first, "knockout"), table(&other, "knockout"));
    assert_eq!(f64s(&a, "mean"), f64s(&b, "mean"));
    assert_ne!(f64s(&a, "ci_low"), f64s(&b, "ci_low"));
}

#[test]
fn figures_change_when_the_data_change() {
    let cfg = AggregateConfig::default();
    let (_a, base, _) = run(&Synth::default(), &cfg);
    let (_b, shifted, _) = run(&Synth { subject_shift: -15.0, ..Synth::default() }, &cfg);
    let (x, y) = (files_under(&base), files_under(&shifted));
    for f in ["figures/knockout.svg", "figures/knockout.png", "tables/knockout.csv"] {
        assert_ne!(x[f], y[f], "{f} must change");
    }
    for f in ["figures/enrichment.svg", "figures/enrichment.png", "figures/extraction.png"] {
        assert_eq!(x[f], y[f], "{f} must not change");
    }
}

#[test]
fn missing_experiments_are_reported_not_fatal() {
    let synth = Synth { tables: vec!["knockout"], ..Synth::default() };
    let (_d, out, summary) = run(&synth, &AggregateConfig::default());
    assert_eq!(summary.findings[0].verdict, Verdict::Supported);
    assert_eq!(summary.findings[1].verdict, Verdict::NotMeasured);
    assert_eq!(summary.findings[2].verdict, Verdict::NotMeasured);
    assert!(out.join("figures/knockout.png").exists());
    assert!(!out.join("figures/extraction.png").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Not in the input (experiments not run): extraction, patching, enrichment, enrichment_baseline, sublayer_knockout, ranks, parameters_heads, parameters_mlp."), "{md}");
}

#[test]
fn bad_inputs_are_errors_with_hints() {
    let dir = tempfile::tempdir().unwrap();
    let err = aggregate(dir.path(), &dir.path().join("out"), &AggregateConfig::default()).unwrap_err();
    assert!(matches!(err, AggregateError::NoTables { .. }), "{err}");
    assert!(err.to_string().contains("hint:"));

    // The same record in two shards (e.g. runs with different shard counts mixed up).
    let input = dir.path().join("run");
    Synth { tables: vec!["knockout"], ..Synth::default() }.write(&input);
    std::fs::copy(
        input.join("knockout/shard=00000/part-00000.parquet"),
        input
            .join("knockout/shard=00001/part-00000.parquet")
            .parent()
            .map(|p| {
                std::fs::create_dir_all(p).unwrap();
                p.join("part-00000.parquet")
            })
            .unwrap(),
    )
    .unwrap();
    let err = aggregate(&input, &dir.path().join("out"), &AggregateConfig::default()).unwrap_err();
    assert!(matches!(err, AggregateError::Duplicate { .. }), "{err}");

    let err = aggregate(&input, &dir.path().join("out"), &AggregateConfig { resamples: 0, ..AggregateConfig::default() }).unwrap_err();
    assert!(matches!(err, AggregateError::Config(_)), "{err}");
}

#[test]
fn outputs_are_current_until_a_setting_or_input_changes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("run");
    Synth::default().write(&input);
    let out = dir.path().join("agg");
    let cfg = AggregateConfig { resamples: 50, ..AggregateConfig::default() };
    assert!(!outputs_are_current(&input, &out, &cfg));
    aggregate(&input, &out, &cfg).unwrap();
    assert!(outputs_are_current(&input, &out, &cfg));
    assert!(!outputs_are_current(&input, &out, &AggregateConfig { seed: 5, ..cfg.clone() }));
    // New inputs from a run with other parameters.
    Synth { layers: 10, ..Synth::default() }.write(&input);
    let prov = dissect_data::Provenance::new("experiments", MODEL, serde_json::json!({"layers": 10, "window": 9}));
    assert_ne!(prov.params_hash(), dissect_data::Provenance::new("experiments", MODEL, serde_json::json!({"layers": 12, "window": 9})).params_hash());
    assert!(!outputs_are_current(&input, &out, &cfg));
    aggregate(&input, &out, &cfg).unwrap();
    assert!(outputs_are_current(&input, &out, &cfg));
    // A resumed run adds a part with the same parameters: the aggregation is stale.
    let shard = input.join("knockout/shard=00000");
    std::fs::copy(shard.join("part-00000.parquet"), shard.join("part-00001.parquet")).unwrap();
    assert!(!outputs_are_current(&input, &out, &cfg));
}

#[test]
fn parameters_table_is_the_share_of_examples_with_the_target_in_some_heads_top10() {
    let synth = Synth::default();
    let (_d, out, summary) = run(&synth, &AggregateConfig::default());
    assert!(out.join("figures/parameters.png").exists());
    let csv = std::fs::read_to_string(out.join("tables/parameters.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name} in {header:?}"));
    let (view, layer, mean, n) = (col("view"), col("layer"), col("mean"), col("n"));
    let mut seen = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[view], "head_ov");
        let l: u32 = f[layer].parse().unwrap();
        let hits = (0..synth.n).filter(|&id| (0..common::PARAM_HEADS).any(|h| synth.head_rank(id, l, h) < 10)).count();
        let expected = 100.0 * hits as f64 / synth.n as f64;
        let got: f64 = f[mean].parse().unwrap();
        assert!((got - expected).abs() < 1e-9, "layer {l}: {got} vs {expected}");
        assert_eq!(f[n].parse::<u64>().unwrap(), synth.n);
        seen += 1;
    }
    assert_eq!(seen, synth.layers as usize);
    assert!(summary.counts.iter().any(|c| c.name == "examples:parameters_heads" && c.value == synth.n));
}

fn criterion<'a>(f: &'a Finding, starts: &str) -> &'a Criterion {
    f.criteria.iter().find(|c| c.text.starts_with(starts)).unwrap_or_else(|| panic!("no criterion `{starts}` in {f:#?}"))
}

const FLOW: &str = "The last position reads";
const TWO_THIRDS: &str = "Enrichment at the last subject token peaks in the first two-thirds";
const BASELINE: &str = "The peak lies above the embedding baseline";
const FROM_SUBJECT: &str = "The extracted attribute comes from the subject";

#[test]
fn fewer_than_the_minimum_records_is_insufficient_evidence() {
    let (_d, out, summary) = run(&Synth { n: 20, ..Synth::default() }, &AggregateConfig::default());
    for f in &summary.findings {
        assert_eq!(f.verdict, Verdict::InsufficientEvidence, "{f:#?}");
        assert!(f.criteria.iter().all(|c| c.status == Status::Insufficient && !c.holds), "{f:#?}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("### 1. Information flow (attention knockout): insufficient evidence"), "{md}");
    assert!(md.contains("n = 20 is below the minimum of 30 records"));
    assert!(md.contains("(criteria: 0 of 5 hold, 5 insufficient evidence)"), "{md}");
    assert!(md.contains("- [insufficient evidence] The last position reads"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<h3 class=\"insufficient\">1. Information flow"));
    // The CLI's count of criteria that hold reads `holds`.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["findings"][0]["verdict"], "insufficient_evidence");
    assert_eq!(json["findings"][0]["criteria"][0]["status"], "insufficient");
    assert_eq!(json["findings"][0]["criteria"][0]["holds"], false);
}

#[test]
fn all_zero_rates_are_insufficient_evidence() {
    let (_d, _out, summary) = run(&Synth { zero_enrichment: true, ..Synth::default() }, &AggregateConfig::default());
    let f3 = &summary.findings[2];
    assert_eq!(f3.verdict, Verdict::InsufficientEvidence, "{f3:#?}");
    for c in [TWO_THIRDS, BASELINE] {
        let c = criterion(f3, c);
        assert_eq!(c.status, Status::Insufficient);
        assert!(c.text.contains("has width 0 (all-zero rates)"), "{}", c.text);
    }
    assert_eq!(summary.findings[0].verdict, Verdict::Supported);
    assert_eq!(summary.findings[1].verdict, Verdict::Supported);
}

#[test]
fn a_large_positive_knockout_effect_is_reported_as_the_positive_peak() {
    let (_d, out, summary) = run(&Synth { last_spike: 38.0, ..Synth::default() }, &AggregateConfig::default());
    let last = summary.numbers.knockout.iter().find(|e| e.block == "last").unwrap();
    assert_eq!(last.peak_layer, 3);
    assert!(last.peak.value > 30.0, "{last:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("centre layer 4 of 12: mean {}; the mean rise", est_pct(&last.peak))), "{md}");
    let c = criterion(&summary.findings[0], "Blocking the last position itself matters less");
    assert!(c.text.contains(&format!("peak mean change {}% vs", f1(last.peak.value))), "{}", c.text);
    assert_eq!(c.status, Status::Holds, "|+35| < |-45|");
}

#[test]
fn finding_one_fails_when_the_non_subject_effect_peaks_after_the_subject() {
    let (_d, _out, summary) = run(&Synth { non_subject_centre: 0.8, ..Synth::default() }, &AggregateConfig::default());
    let f1 = &summary.findings[0];
    let c = criterion(f1, FLOW);
    assert_eq!(c.status, Status::Fails, "{}", c.text);
    assert!(matches!(f1.verdict, Verdict::Mixed | Verdict::Contradicted), "{f1:#?}");
}

#[test]
fn finding_one_is_insufficient_when_a_peak_interval_includes_zero() {
    let (_d, _out, summary) = run(&Synth { non_subject_null: true, ..Synth::default() }, &AggregateConfig::default());
    let f1 = &summary.findings[0];
    let c = criterion(f1, FLOW);
    assert_eq!(c.status, Status::Insufficient);
    assert!(c.text.contains("the non_subject peak's 95% CI") && c.text.contains("includes 0"), "{}", c.text);
    assert_eq!(f1.verdict, Verdict::InsufficientEvidence);
}

#[test]
fn finding_one_uses_the_non_subject_set_without_bos_on_bos_models() {
    let (_d, _out, summary) = run(&Synth { with_bos_sets: true, ..Synth::default() }, &AggregateConfig::default());
    assert_eq!(summary.numbers.flow_non_subject_set.as_deref(), Some("non_subject_no_bos"));
    let c = criterion(&summary.findings[0], FLOW);
    assert!(c.text.contains("the non_subject_no_bos effect peaks at"), "{}", c.text);
    assert_eq!(c.status, Status::Holds, "{}", c.text);
}

#[test]
fn finding_two_on_a_bos_model_needs_the_extraction_set_without_bos() {
    let (_d, _out, summary) = run(&Synth { with_bos_sets: true, ..Synth::default() }, &AggregateConfig::default());
    assert_eq!(summary.numbers.extraction_non_subject_set.as_deref(), Some("non_subject_no_bos"));
    let c = criterion(&summary.findings[1], FROM_SUBJECT);
    assert_eq!(c.status, Status::Holds, "{}", c.text);
    assert!(c.text.contains("blocked subject < blocked non_subject_no_bos"), "{}", c.text);

    let (_d, _out, summary) = run(&Synth { with_bos_sets: true, drop_extraction_no_bos: true, ..Synth::default() }, &AggregateConfig::default());
    let c = criterion(&summary.findings[1], FROM_SUBJECT);
    assert_eq!(c.status, Status::Insufficient, "{}", c.text);
    assert!(c.text.contains("the extraction rows with blocked = non_subject_no_bos") && c.text.contains("is missing"), "{}", c.text);
    assert_eq!(summary.findings[1].verdict, Verdict::InsufficientEvidence);
}

#[test]
fn the_patching_criterion_names_the_source_layer_it_tests() {
    let (_d, _out, summary) = run(&Synth::default(), &AggregateConfig::default());
    // The synthetic subject patching hurts most from the embeddings (source 0).
    let (src, _) = summary.numbers.patching_subject_peak.unwrap();
    assert_eq!(src, 0);
    let c = criterion(&summary.findings[1], "Replacing the subject representation");
    assert!(c.text.contains("the source layer tested is hidden_states[0]"), "{}", c.text);
    assert_eq!(c.status, Status::Holds);
}

#[test]
fn finding_three_fails_when_the_peak_is_late_or_within_the_baseline() {
    let (_d, _out, summary) = run(&Synth { enrichment_peak: 0.9, ..Synth::default() }, &AggregateConfig::default());
    let (layer, _) = summary.numbers.subject_last_peak.unwrap();
    assert!(3 * layer >= 2 * 12, "peak at hidden state {layer}");
    let f3 = &summary.findings[2];
    let c = criterion(f3, TWO_THIRDS);
    assert_eq!(c.status, Status::Fails, "{}", c.text);
    assert!(c.text.contains(&format!("at hidden_states[{layer}] of a 12-layer model")) && c.text.contains("< 2/3 × 12 = 8.0"), "{}", c.text);
    assert!(matches!(f3.verdict, Verdict::Mixed | Verdict::Contradicted));

    // The baseline's mean below the peak's, but the intervals overlap: a comparison of point
    // estimates would hold, the interval rule does not.
    let (_d, _out, summary) = run(&Synth { baseline_shift: 37.0, ..Synth::default() }, &AggregateConfig::default());
    let (p, b) = (summary.numbers.subject_last_peak.unwrap().1, summary.numbers.enrichment_baseline.unwrap());
    assert!(b.value < p.value && p.ci_low <= b.ci_high, "{p:?} {b:?}");
    let f3 = &summary.findings[2];
    assert_eq!(criterion(f3, BASELINE).status, Status::Fails);
    assert_eq!(criterion(f3, TWO_THIRDS).status, Status::Holds);
    assert!(matches!(f3.verdict, Verdict::Mixed | Verdict::Contradicted));
}

#[test]
fn enrichment_rows_marked_extra_are_left_out_of_the_findings() {
    let (_d, out, summary) = run(&Synth::default(), &AggregateConfig::default());
    // Hidden state 12 (extra) has a subject-last rate of about 90%.
    let (layer, e) = summary.numbers.subject_last_peak.unwrap();
    assert!(layer < 12 && e.value < 60.0, "{layer} {e:?}");
    assert!(summary.limits.enrichment_extra_layers == [12]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Enrichment rows at hidden_states[12] are marked extra"));
    // Still in the table.
    let t = table(&out, "enrichment");
    assert!(i32s(&t, "hidden_state").contains(&Some(12)));
}

#[test]
fn the_limits_of_the_run_come_first_with_the_recorded_numbers() {
    let (_d, out, summary) = run(&Synth { limit: Some(60), ..Synth::default() }, &AggregateConfig::default());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let limits = md.find("## Limits of this run").expect("a limits section");
    assert!(limits < md.find("## The paper's findings").unwrap());
    assert!(limits < md.find("## Verdicts").unwrap());
    for text in [
        "Records: 60 measured (distinct records in the experiment tables); the filter kept 60 of 66 facts",
        "--limit: experiments stage 60 (the first 60 kept records by id); filter stage not recorded.",
        "at least 30 records",
        "Projection to the vocabulary: logit lens (the final norm, then the unembedding), not the notebook's h·Eᵀ.",
        "Depth: 12 layers; the notebook's constants were written for GPT-2 XL's 48.",
        "Attention knockout window: 9 layers, 75% of the depth (the notebook: 9 of 48 layers).",
        "Sublayer knockout: R = 10 (0-based block; the notebook's 40 of 48 scaled to the depth), reading hidden_states[11] at the last subject token; 11 layers, 92% of the depth knocked out",
        "Patching source layers (hidden_states indices, 0 = embeddings): 0, 1, 5, 10; dropped because the model is shallower than they are: 20 (the notebook: 0, 1, 5, 10, 20).",
        "Attribute-extraction blocking: the blocked edges are removed before the softmax",
        "LAMA (T-REx) Wikipedia evidence sentences",
        "attributes rates can read higher than the paper's",
        "The experiments read a paragraphs file with sha256 2e49b44c45ba79eb46400cc32440cf1910a958b8f78aa2ef8b38bc73146e4ad5.",
    ] {
        let at = md.find(text).unwrap_or_else(|| panic!("`{text}` not in the report:\n{md}"));
        assert!(at < md.find("## Verdicts").unwrap(), "{text}: in the limits section");
    }
    assert!(!md.contains("[configuration]") && !md.contains("[tables]"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.find("<h2>Limits of this run</h2>").unwrap() < html.find("<h2>The paper&#x27;s findings").or(html.find("<h2>The paper's findings")).unwrap());

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let l = &json["limits"];
    assert_eq!(l["min_records"], 30);
    assert_eq!(l["records"], 60);
    assert_eq!(l["total_facts"], 66);
    assert_eq!(l["experiments_limit"]["value"], 60);
    assert_eq!(l["knockout_window"], serde_json::json!({"value": 9, "source": "effective"}));
    assert_eq!(l["sublayer_read_hidden_state"]["value"], 11);
    assert_eq!(l["patching_sources_dropped"]["value"], serde_json::json!([20]));
    assert_eq!(l["projection"]["value"], "logit-lens");
    assert_eq!(summary.limits.sublayer_read_hidden_state.value, Some(11));
    assert!(summary.limits.notes.is_empty(), "{:?}", summary.limits.notes);
}

#[test]
fn without_the_effective_entry_the_limits_fall_back_to_the_configuration() {
    let (_d, out, summary) = run(&Synth { record_effective: false, ..Synth::default() }, &AggregateConfig::default());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for text in [
        "--limit: experiments stage none; filter stage not recorded.",
        "Projection to the vocabulary: logit lens (the final norm, then the unembedding), not the notebook's h·Eᵀ [configuration].",
        "Depth: 12 layers [tables];",
        "Attention knockout window: 9 layers, 75% of the depth [configuration]",
        "Sublayer knockout: R = 10 [configuration] (0-based block",
        "reading hidden_states[11] [configuration] at the last subject token",
        "dropped because the model is shallower than they are: not recorded",
        "[configuration]: from the configuration recorded with the experiments; the value effective on this model's depth was not recorded; [tables]: from the tables' own columns",
    ] {
        assert!(md.contains(text), "`{text}` not in the report:\n{md}");
    }
    assert_eq!(summary.limits.patching_sources_dropped.source, dissect_aggregate::limits::Source::NotRecorded);
    assert_eq!(summary.limits.knockout_window.source, dissect_aggregate::limits::Source::Config);
}

/// Where `needle` occurs in `text`, with some context, for assertion messages.
fn around(text: &str, needle: &str) -> Option<String> {
    let i = text.find(needle)?;
    Some(text[i..].chars().take(160).collect())
}

#[test]
fn the_report_names_no_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    // A local model is recorded as its path: the footers and configurations hold it.
    let model = root.join("models/tiny-model").display().to_string();
    let input = root.join("run/experiments");
    Synth { model: model.clone(), ..Synth::default() }.write(&input);
    let out = root.join("run/report");
    let summary = aggregate(&input, &out, &AggregateConfig::default()).unwrap();
    let home = std::env::var("HOME").unwrap_or_default();
    let cwd = std::env::current_dir().unwrap().display().to_string();
    for name in ["report.md", "report.html", "summary.json"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        for abs in [root.display().to_string(), dir.path().display().to_string(), cwd.clone(), home.clone()].iter().filter(|a| a.len() > 1) {
            assert!(around(&text, abs).is_none(), "{name} names {abs}: …{}…", around(&text, abs).unwrap());
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("from ../experiments."), "the input, relative to the report's directory");
    assert!(md.contains("../../models/tiny-model"), "the model path, relative to the report's directory");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["report_html"], "report.html");
    assert_eq!(json["model"], "../../models/tiny-model");
    assert!(json["figures"].as_array().unwrap().iter().all(|f| f.as_str().unwrap().starts_with("figures/")), "{}", json["figures"]);
    // Read back, the paths are the output directory's files again.
    let back = Summary::read(&out).unwrap();
    assert_eq!(back.report_html, summary.report_html);
    assert_eq!(back.tables, summary.tables);
    assert!(back.figures.iter().all(|f| f.is_file()));
}

#[test]
fn raw_configurations_are_folded_and_tables_scroll_in_their_own_box() {
    let (_d, out, _) = run(&Synth::default(), &AggregateConfig::default());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let opened = html.matches("<details>").count();
    assert!(opened >= 2, "the experiments' and the aggregation's parameters are folded");
    assert_eq!(opened, html.matches("</details>").count());
    assert_eq!(opened, html.matches("<summary>").count());
    // Every JSON block is inside a <details>, none left open on the page.
    let mut depth = 0i32;
    let mut rest = html.as_str();
    while let Some(i) = ["<details>", "</details>", "<pre>"].iter().filter_map(|t| rest.find(t).map(|i| (i, *t))).min() {
        match i.1 {
            "<details>" => depth += 1,
            "</details>" => depth -= 1,
            _ => assert!(depth > 0, "a <pre> outside <details>: …{}…", &rest[i.0..(i.0 + 120).min(rest.len())]),
        }
        rest = &rest[i.0 + i.1.len()..];
    }
    assert!(html.contains("&quot;resamples&quot;: 1000"), "folded, not dropped");
    for (i, _) in html.match_indices("<table>") {
        assert!(html[..i].ends_with("<div class=\"wide\">\n"), "every table in a scrolling box");
    }
    assert!(html.contains(".wide{max-width:100%;overflow-x:auto"));
    assert!(html.contains("<td class=\"hash\">"), "hashes may break anywhere");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("<details>\n<summary>This aggregation's parameters"), "folded in Markdown too");
    assert!(md.contains("\"resamples\": 1000"));
}

/// `points` of every `<polyline>` drawn in `stroke`.
fn polylines(svg: &str, stroke: &str) -> Vec<Vec<(i32, i32)>> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke").is_some_and(|s| s.eq_ignore_ascii_case(stroke)))
        .map(|n| {
            n.attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

#[test]
fn patching_source_layers_are_points_with_whiskers_not_a_line() {
    let (_d, out, _) = run(&Synth::default(), &AggregateConfig::default());
    let svg = std::fs::read_to_string(out.join("figures/patching.svg")).unwrap();
    // The subject set's colour: everything drawn in it is a whisker (vertical) or a
    // whisker's cap (short and horizontal), nothing joins two source layers.
    let lines = polylines(&svg, "#0072B2");
    assert!(lines.len() >= 3 * common::Synth::default().patching_sources().len(), "whiskers and caps at every source layer: {lines:?}");
    for l in &lines {
        assert_eq!(l.len(), 2, "{l:?}");
        let ((x0, y0), (x1, y1)) = (l[0], l[1]);
        assert!(x0 == x1 || (y0 == y1 && (x1 - x0).abs() <= 10), "a line between points: {l:?}");
    }
    // The same check finds the line of a curve.
    let curve = std::fs::read_to_string(out.join("figures/knockout.svg")).unwrap();
    assert!(polylines(&curve, "#0072B2").iter().any(|l| l.len() > 2));
}
