//! The stage end to end on synthetic tables.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use common::{Synth, MODEL};
use dissect_aggregate::findings::{est_pct, f1};
use dissect_aggregate::{aggregate, outputs_are_current, AggregateConfig, AggregateError, Summary, Verdict};
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
fn u32s(b: &RecordBatch, col: &str) -> Vec<Option<u32>> {
    let a = b.column_by_name(col).unwrap().as_any().downcast_ref::<UInt32Array>().unwrap();
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

    // Knockout: the peak of each set is the table's minimum over layers, as printed.
    let k = table(&out, "knockout");
    let (blocks, layers, means, lo, hi, n) = (strs(&k, "block"), u32s(&k, "layer"), f64s(&k, "mean"), f64s(&k, "ci_low"), f64s(&k, "ci_high"), u64s(&k, "n"));
    for set in ["subject", "non_subject", "last", "bos", "non_subject_no_bos"] {
        let rows: Vec<usize> = (0..k.num_rows()).filter(|&i| blocks[i].as_deref() == Some(set)).collect();
        let best = *rows.iter().min_by(|&&a, &&b| means[a].total_cmp(&means[b])).unwrap();
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
    let (sub, blocked, layers, means) = (strs(&x, "sublayer"), strs(&x, "blocked"), u32s(&x, "layer"), f64s(&x, "mean"));
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
    let (pos, layers, means) = (strs(&e, "position"), u32s(&e, "layer"), f64s(&e, "mean"));
    let (pl, pe) = summary.numbers.subject_last_peak.unwrap();
    let rows: Vec<usize> = (0..e.num_rows()).filter(|&i| pos[i].as_deref() == Some("subject_last")).collect();
    assert_eq!(pe.value, rows.iter().map(|&i| means[i]).fold(f64::NEG_INFINITY, f64::max));
    let last = (0..e.num_rows()).find(|&i| pos[i].as_deref() == Some("last") && layers[i] == Some(pl)).unwrap();
    assert_eq!(summary.numbers.last_at_subject_peak.unwrap().value, means[last]);
    assert!(md.contains(&format!("peaks at hidden state {pl} (the output of layer {pl}; 0 = embeddings): {}", est_pct(&pe))));

    // Sublayer knockout: the no-intervention row and the early minima.
    let k = table(&out, "sublayer_knockout");
    let (sub, mode, start, means) = (strs(&k, "sublayer"), strs(&k, "mode"), u32s(&k, "start_layer"), f64s(&k, "mean"));
    let none = (0..k.num_rows()).find(|&i| sub[i].as_deref() == Some("none")).unwrap();
    assert_eq!(start[none], None);
    assert_eq!(summary.numbers.no_intervention.unwrap().value, means[none]);
    let (ml, me) = summary.numbers.mlp_knockout_min.unwrap();
    let row = (0..k.num_rows()).find(|&i| sub[i].as_deref() == Some("mlp") && mode[i].as_deref() == Some("notebook") && start[i] == Some(ml)).unwrap();
    assert_eq!(me.value, means[row]);
    assert!(md.contains(&format!("with MLPs knocked out {} (start layer {})", est_pct(&me), ml + 1)));

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
    assert!(md.contains("| knockout | 3 | experiments |"), "provenance counts the shard files");
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
    std::fs::copy(input.join("knockout/shard=00000/part-0.parquet"), input.join("knockout/shard=00001/part-0.parquet").parent().map(|p| {
        std::fs::create_dir_all(p).unwrap();
        p.join("part-0.parquet")
    }).unwrap()).unwrap();
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
    std::fs::copy(shard.join("part-0.parquet"), shard.join("part-1.parquet")).unwrap();
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
