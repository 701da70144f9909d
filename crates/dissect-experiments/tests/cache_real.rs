//! The experiments stage reading the activation cache, on the real default model (fetched
//! by `cargo xtask fetch-model gemma3-270m`): enrichment, extraction and ranks computed from
//! the cache equal, bit for bit, the same tables computed without one (a cache written with a
//! padded batch differs only in near-tied deep ranks). Fails, never skips, when the model file
//! is missing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use dissect_cache::{cache_parts, cache_provenance, run_resumable, write_part, CacheConfig, CacheReader, StoreDtype};
use dissect_data::filtered::{kept_to_batch, read_kept};
use dissect_data::known::load_known_facts;
use dissect_data::paragraphs::{load_paragraphs, load_stopwords};
use dissect_data::parquet_io::write_parquet_atomic;
use dissect_data::{KeptRecord, PositionKind, ShardSpec};
use dissect_experiments::clean_hidden;
use dissect_experiments::stage::{run, Experiment, ExperimentsConfig, Inputs};
use dissect_filter::{run_filter, FilterConfig};
use dissect_model::backend::Cpu;
use dissect_model::intervene::{run_plans, CleanRun, ExecPath, Plan, RecordSpec};
use dissect_model::source::{load, named_model_path, Loaded};

const MODEL: &str = "gemma3-270m";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name)
}

fn gemma() -> Loaded<Cpu> {
    let path = named_model_path(MODEL).expect("the default model is registered");
    assert!(path.exists(), "{} is missing\nhint: run `cargo xtask fetch-model {MODEL}`", path.display());
    load::<Cpu>(MODEL, &Default::default()).unwrap()
}

/// The first kept records of known_1000 whose subjects have paragraphs, through the filter
/// stage's own table (written and read back with dissect_data).
fn kept(m: &Loaded<Cpu>, paragraphs: &BTreeMap<String, Vec<String>>, n: usize, dir: &Path) -> Vec<KeptRecord> {
    let (facts, _) = load_known_facts(&data("known_1000.json"), Some(24)).unwrap();
    let out = run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig::default()).unwrap();
    let mut kept: Vec<KeptRecord> = out.kept.into_iter().filter(|k| paragraphs.get(&k.subject).is_some_and(|p| !p.is_empty())).take(n).collect();
    assert_eq!(kept.len(), n, "too few kept records with paragraphs among the first 24");
    kept.sort_by_key(|r| r.id);
    let path = dir.join("filtered.parquet");
    write_parquet_atomic(&path, &[kept_to_batch(&kept)], &[]).unwrap();
    let back = read_kept(&path).unwrap();
    assert_eq!(back, kept);
    back
}

fn tables(m: &Loaded<Cpu>, inputs: &Inputs<'_>, cfg: &ExperimentsConfig) -> BTreeMap<&'static str, RecordBatch> {
    run(&m.model, &m.tokenizer, inputs, cfg, |_, _| {}).batches()
}

/// Every column equal; with `deep_ties`, except that a rank deeper than 1000 may move by a few
/// places: among 262,144 logits, many lie within the ~1e-6 relative difference between a
/// batched, padded forward and a forward of the prompt alone, so their order at that depth is a
/// near-tie. Returns how many ranks moved.
fn assert_same_tables(name: &str, a: &RecordBatch, b: &RecordBatch, deep_ties: bool) -> usize {
    use arrow_array::{Array, Int32Array};
    assert_eq!(a.schema(), b.schema(), "{name}");
    assert_eq!(a.num_rows(), b.num_rows(), "{name}");
    let mut moved = 0;
    for (c, field) in a.schema().fields().iter().enumerate() {
        if !deep_ties || !field.name().ends_with("rank") {
            assert_eq!(a.column(c), b.column(c), "{name}: column {} differs when read from the cache", field.name());
            continue;
        }
        let (x, y) = (a.column(c).as_any().downcast_ref::<Int32Array>().unwrap(), b.column(c).as_any().downcast_ref::<Int32Array>().unwrap());
        assert_eq!(x.nulls(), y.nulls(), "{name}: {}", field.name());
        for (i, (p, q)) in x.values().iter().zip(y.values()).enumerate() {
            if p != q {
                let deep = (*p).min(*q) >= 1000 && p.abs_diff(*q) <= 2.max(p / 10_000) as u32;
                assert!(deep, "{name} row {i}: {} {p} without the cache, {q} with it", field.name());
                moved += 1;
            }
        }
    }
    moved
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn experiments_from_the_cache_equal_experiments_that_run_the_model() {
    let m = gemma();
    let (paragraphs, _) = load_paragraphs(&data("subject_paragraphs.csv")).unwrap();
    let stopwords: HashSet<String> = load_stopwords(&data("nltk_stopwords_english.txt")).unwrap().into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let records = kept(&m, &paragraphs, 4, dir.path());

    // As the cache stage computes by default: each prompt alone.
    let cache_dir = dir.path().join("cache");
    let ccfg = CacheConfig::default();
    assert_eq!(ccfg.batch_size, 1);
    let shard = ShardSpec::new(0, 1).unwrap();
    let prov = cache_provenance(&m.info, "w".into(), vec![], None, shard, &ccfg);
    run_resumable(&m.model, &m.tokenizer, &records, &ccfg, &cache_parts(&cache_dir, shard, records.len(), &ccfg, &prov), |_, _| {}).unwrap();
    let cache = CacheReader::open(&cache_dir).unwrap();

    // The cached vectors against the stage's own: clean_hidden (one prompt alone) and the
    // fast path's last-token recomputation.
    let (mut res_diff, mut site_diff) = (0f32, 0f32);
    for r in &records {
        let ids = m.tokenizer.encode(&r.prompt).unwrap().ids;
        let hidden = clean_hidden(&m.model, &ids).unwrap();
        let c = cache.get_host(r.id).unwrap().unwrap();
        for (kind, kr) in &c.residual {
            let p = r.positions().get(*kind).unwrap();
            let own: Vec<f32> = hidden.iter().flat_map(|h| h.clone().slice([p..p + 1]).into_data().to_vec::<f32>().unwrap()).collect();
            res_diff = res_diff.max(max_abs_diff(&kr.values, &own) / own.iter().fold(1f32, |a, x| a.max(x.abs())));
        }
        let clean = CleanRun::new(&m.model, &ids).unwrap();
        let last = ids.len() - 1;
        let spec = RecordSpec { attn_out: true, mlp_out: true, positions: vec![vec![last]], ..RecordSpec::default() };
        let (_, rec) = run_plans(&m.model, &clean, &[Plan::default()], ExecPath::Fast, spec).unwrap();
        let flat = |v: Vec<burn_tensor::Tensor<Cpu, 3>>| v.into_iter().flat_map(|t| t.into_data().to_vec::<f32>().unwrap()).collect::<Vec<f32>>();
        let (attn, mlp) = (flat(rec.attn_out), flat(rec.mlp_out));
        let scale = attn.iter().chain(&mlp).fold(1f32, |a, x| a.max(x.abs()));
        site_diff = site_diff.max(max_abs_diff(&c.attn_out, &attn).max(max_abs_diff(&c.mlp_out, &mlp)) / scale);
    }
    eprintln!("cache vs recomputed: residual {res_diff:e}, attn/mlp at last {site_diff:e} (max |diff| / max |value|)");
    assert!(res_diff < 1e-5 && site_diff < 1e-5, "residual {res_diff}, sites {site_diff}");

    let cfg = ExperimentsConfig { experiments: vec![Experiment::Extraction, Experiment::Enrichment, Experiment::Ranks], ..ExperimentsConfig::default() };
    let without = Inputs { records: &records, paragraphs: &paragraphs, stopwords: &stopwords, cache: None };
    let with = Inputs { cache: Some(&cache), ..without };
    let (a, b) = (tables(&m, &without, &cfg), tables(&m, &with, &cfg));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a["skipped"].num_rows(), 0, "{:?}", a["skipped"]);
    assert!(a["extraction"].num_rows() >= 4 * 18 && a["enrichment"].num_rows() >= 4 * 19 * 4 && a["ranks"].num_rows() > 0);
    for name in a.keys() {
        assert_same_tables(name, &a[name], &b[name], false);
    }

    // All four prompts in one right-padded forward: the same but for near-tied deep ranks.
    let batched_dir = dir.path().join("batched");
    let bcfg = CacheConfig { batch_size: 4, ..CacheConfig::default() };
    let prov = cache_provenance(&m.info, "w".into(), vec![], None, shard, &bcfg);
    run_resumable(&m.model, &m.tokenizer, &records, &bcfg, &cache_parts(&batched_dir, shard, records.len(), &bcfg, &prov), |_, _| {}).unwrap();
    let batched = CacheReader::open(&batched_dir).unwrap();
    let d = tables(&m, &Inputs { cache: Some(&batched), ..without }, &cfg);
    let mut deep_ties = 0;
    for name in a.keys() {
        deep_ties += assert_same_tables(name, &a[name], &d[name], true);
    }
    eprintln!("tables from a batched cache: identical but for {deep_ties} ranks deeper than 1000 that moved by near-ties");

    // The cache is really what is read: change one cached vector and the tables follow.
    let mut tampered = cache.get_host(records[0].id).unwrap().unwrap();
    tampered.attn_out.iter_mut().for_each(|x| *x = 0.0);
    tampered.residual.get_mut(&PositionKind::SubjectLast).unwrap().values.iter_mut().for_each(|x| *x = -*x);
    let bad_dir = dir.path().join("tampered");
    let others: Vec<_> = records[1..].iter().map(|r| cache.get_host(r.id).unwrap().unwrap()).collect();
    write_part(&bad_dir.join("shard=00000/part-00000.parquet"), &[vec![tampered], others].concat(), StoreDtype::F32, &[]).unwrap();
    let bad = CacheReader::open(&bad_dir).unwrap();
    let c = tables(&m, &Inputs { cache: Some(&bad), ..without }, &cfg);
    assert_ne!(a["extraction"], c["extraction"]);
    assert_ne!(a["enrichment"], c["enrichment"]);
    assert_ne!(a["ranks"], c["ranks"]);

    // A cache of other records is refused per record, with the reason in `skipped`.
    let mut shifted = records.clone();
    assert_eq!(shifted[1].first_token, 1, "Gemma prepends BOS");
    shifted[1].first_token = 0;
    let s = tables(&m, &Inputs { records: &shifted, cache: Some(&cache), ..without }, &cfg);
    let skipped = format!("{:?}", s["skipped"]);
    assert!(s["skipped"].num_rows() == 3 && skipped.contains("another filter run"), "{skipped}");
}
