//! End-to-end runs of the `dissect` binary on the real model, stage by stage as `cargo xtask
//! reproduce` runs them (filter → cache → experiments → aggregate): the tables are the same with
//! and without the activation cache, a changed experiment parameter reruns the experiments but
//! reuses the cache, shards run as separate processes give the unsharded result, and a run
//! killed mid-stage resumes without recomputing what it had finished and ends with the same
//! tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_cast::display::array_value_to_string;
use dissect_tests::{dissect_command, scratch, workspace};

const LIMIT: &str = "16";

/// A small pipeline: the real model, a few quick experiments, two records per output part.
fn pipeline(dir: &Path) -> PathBuf {
    pipeline_with(dir, "test.toml", "")
}

/// [`pipeline`] with `knockout` appended to the `[experiments.knockout]` table, written to
/// `dir/name` (same output directory).
fn pipeline_with(dir: &Path, name: &str, knockout: &str) -> PathBuf {
    let gguf = dissect_model::source::named_model_path("gemma3-270m").unwrap();
    assert!(gguf.exists(), "the real model is missing at {}\nhint: run `cargo xtask fetch-model gemma3-270m`", gguf.display());
    let data = workspace().join("data");
    let toml = format!(
        r#"model = "{gguf}"
out = "{out}"
[data]
dataset = "{data}/known_1000.json"
paragraphs = "{data}/subject_paragraphs.csv"
stopwords = "{data}/nltk_stopwords_english.txt"
[experiments]
experiments = ["knockout", "enrichment", "ranks", "parameters"]
chunk_size = 2
# Small, so that the model-level OV/QK table (written once, by shard 0) stays quick.
[experiments.parameters]
neurons = 2
matrix_tokens = 128
matrix_pairs = 5
[experiments.knockout]
{knockout}
[aggregate]
resamples = 200
"#,
        gguf = gguf.display(),
        out = dir.join("out").display(),
        data = data.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, toml).unwrap();
    p
}

fn dissect(args: &[&str]) {
    let out = dissect_command().args(args).output().unwrap();
    assert!(out.status.success(), "dissect {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `dissect <args> --json`: the stage's summary.
fn dissect_json(args: &[&str]) -> serde_json::Value {
    let out = dissect_command().args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "dissect {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("dissect {args:?}: stdout is not JSON ({e})"))
}

/// Every table under `dir` as sorted text rows, so shard order does not matter.
fn tables(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let batches = dissect_data::parquet_io::read_parquet(&path).unwrap();
        let mut rows: Vec<String> = batches.iter().flat_map(rows_of).collect();
        rows.sort();
        out.insert(path.file_name().unwrap().to_string_lossy().into_owned(), rows);
    }
    out
}

/// Fails with the tables and the first rows that differ, rather than two whole dumps.
fn assert_same(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>, what_a: &str, what_b: &str) {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut diffs = Vec::new();
    for n in names {
        let (x, y) = (a.get(n).cloned().unwrap_or_default(), b.get(n).cloned().unwrap_or_default());
        if x != y {
            let only_a: Vec<&String> = x.iter().filter(|r| !y.contains(r)).take(3).collect();
            let only_b: Vec<&String> = y.iter().filter(|r| !x.contains(r)).take(3).collect();
            diffs.push(format!("{n}: {} vs {} rows; only {what_a}: {only_a:?}; only {what_b}: {only_b:?}", x.len(), y.len()));
        }
    }
    assert!(diffs.is_empty(), "tables {what_a} differ from those {what_b}:\n{}", diffs.join("\n"));
}

fn rows_of(b: &RecordBatch) -> Vec<String> {
    (0..b.num_rows()).map(|r| b.columns().iter().map(|c| array_value_to_string(c, r).unwrap()).collect::<Vec<_>>().join("|")).collect()
}

fn part_mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    for f in dissect_data::parquet_io::parquet_files(&dir.join("skipped")).unwrap_or_default() {
        out.insert(f.clone(), std::fs::metadata(&f).unwrap().modified().unwrap());
    }
    for t in ["knockout", "enrichment", "ranks", "parameters_heads", "parameters_mlp", "parameters_matrices"] {
        for f in dissect_data::parquet_io::parquet_files(&dir.join(t)).unwrap_or_default() {
            out.insert(f.clone(), std::fs::metadata(&f).unwrap().modified().unwrap());
        }
    }
    out
}

#[test]
fn the_chain_reads_the_cache_shards_as_separate_processes_equal_the_unsharded_run_and_a_killed_run_resumes() {
    // Unsharded reference: the four stages, the experiments reading the activation cache.
    let a = scratch("whole");
    let pa = pipeline(&a);
    let pa = pa.to_str().unwrap();
    dissect(&["filter", "--pipeline", pa, "--limit", LIMIT]);
    let cache = dissect_json(&["cache", "--pipeline", pa]);
    assert!(cache["chunks_computed"].as_u64() > Some(0), "{cache}");
    let exp = dissect_json(&["experiments", "all", "--pipeline", pa]);
    assert!(exp["chunks_computed"].as_u64() > Some(0), "{exp}");
    dissect(&["aggregate", "--pipeline", pa]);
    let reference = tables(&a.join("out/experiments"));
    assert!(reference["knockout"].len() > 18, "the reference run produced rows");
    for t in ["enrichment", "ranks", "parameters_heads", "parameters_mlp", "parameters_matrices"] {
        assert!(reference.get(t).is_some_and(|r| !r.is_empty()), "{t}: no rows");
    }

    // The same experiments computing every activation themselves: the same values, bit for
    // bit (the text of an f32 is its shortest round-trip form).
    let no_cache = a.join("no-cache");
    dissect(&["experiments", "all", "--pipeline", pa, "--no-cache", "--out", no_cache.to_str().unwrap()]);
    assert_same(&tables(&no_cache), &reference, "computed without the cache", "read from it");

    // A changed experiment parameter: the cache is current, the experiments rerun.
    let changed = pipeline_with(&a, "changed.toml", "window = 3");
    let changed = changed.to_str().unwrap();
    let cache = dissect_json(&["cache", "--pipeline", changed]);
    assert_eq!((cache["up_to_date"].as_bool(), cache["chunks_computed"].as_u64()), (Some(true), Some(0)), "the cache must be reused: {cache}");
    let exp = dissect_json(&["experiments", "all", "--pipeline", changed]);
    assert_eq!(exp["up_to_date"].as_bool(), Some(false), "a changed knockout window must rerun the experiments: {exp}");
    assert_ne!(tables(&a.join("out/experiments"))["knockout"], reference["knockout"], "window 3 gives other knockout rows");

    // Two shards, each stage a separate process, then aggregation of the union.
    let b = scratch("sharded");
    let pb = pipeline(&b);
    let pb = pb.to_str().unwrap();
    for i in 0..2 {
        let s = format!("{i}/2");
        dissect(&["filter", "--pipeline", pb, "--limit", LIMIT, "--shard", &s]);
        dissect(&["cache", "--pipeline", pb, "--shard", &s]);
        dissect(&["experiments", "all", "--pipeline", pb, "--shard", &s]);
    }
    dissect(&["aggregate", "--pipeline", pb]);
    assert_eq!(tables(&b.join("out/experiments")), reference, "sharded union differs from the unsharded run");
    let summary = |d: &Path| std::fs::read_to_string(d.join("out/report/tables/knockout.csv")).unwrap();
    assert_eq!(summary(&b), summary(&a), "aggregated knockout table differs");

    // Kill the experiments stage once its first part is written, then run it again.
    let c = scratch("killed");
    let pc = pipeline(&c);
    let pc = pc.to_str().unwrap();
    dissect(&["filter", "--pipeline", pc, "--limit", LIMIT]);
    dissect(&["cache", "--pipeline", pc]);
    let exp = c.join("out/experiments");
    let mut child = dissect_command().args(["experiments", "all", "--pipeline", pc]).spawn().unwrap();
    let started = Instant::now();
    while part_mtimes(&exp).keys().filter(|p| p.starts_with(exp.join("skipped"))).count() == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(300), "no part was written in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = part_mtimes(&exp);
    assert!(!before.is_empty());
    dissect(&["experiments", "all", "--pipeline", pc]);
    let after = part_mtimes(&exp);
    for (f, t) in &before {
        // A part finished before the kill is neither rewritten nor removed.
        assert_eq!(after.get(f), Some(t), "{} was recomputed", f.display());
    }
    assert!(after.len() > before.len(), "the rerun finished the remaining parts");
    assert_eq!(tables(&exp), reference, "the resumed run differs from an uninterrupted one");

    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}
