//! End-to-end runs of the `dissect` binary on the real model: shards run as separate processes
//! give the unsharded result, and a run killed mid-stage resumes without recomputing what it
//! had finished and ends with the same tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_cast::display::array_value_to_string;

const LIMIT: &str = "16";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissect-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small pipeline: the real model, a few quick experiments, two records per output part.
fn pipeline(dir: &Path) -> PathBuf {
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
[aggregate]
resamples = 200
"#,
        gguf = gguf.display(),
        out = dir.join("out").display(),
        data = data.display()
    );
    let p = dir.join("test.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

fn dissect(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_dissect")).args(args).output().unwrap();
    assert!(out.status.success(), "dissect {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
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
fn shards_as_separate_processes_equal_the_unsharded_run_and_a_killed_run_resumes() {
    // Unsharded reference.
    let a = scratch("whole");
    let pa = pipeline(&a);
    let pa = pa.to_str().unwrap();
    dissect(&["filter", "--pipeline", pa, "--limit", LIMIT]);
    dissect(&["experiments", "all", "--pipeline", pa]);
    dissect(&["aggregate", "--pipeline", pa]);
    let reference = tables(&a.join("out/experiments"));
    assert!(reference["knockout"].len() > 18, "the reference run produced rows");
    for t in ["parameters_heads", "parameters_mlp", "parameters_matrices"] {
        assert!(reference.get(t).is_some_and(|r| !r.is_empty()), "{t}: no rows");
    }

    // Two shards, each stage a separate process, then aggregation of the union.
    let b = scratch("sharded");
    let pb = pipeline(&b);
    let pb = pb.to_str().unwrap();
    for i in 0..2 {
        let s = format!("{i}/2");
        dissect(&["filter", "--pipeline", pb, "--limit", LIMIT, "--shard", &s]);
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
    let exp = c.join("out/experiments");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissect")).args(["experiments", "all", "--pipeline", pc]).spawn().unwrap();
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
