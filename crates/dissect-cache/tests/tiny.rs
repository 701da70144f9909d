//! The cache stage on dissect-model's tiny random-weight Gemma 3 fixture (6 layers, hidden
//! 64, sliding window 4): batched activations against single-prompt forwards, the Parquet
//! round trip, schema, metadata, f16, resumability and sharding.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use arrow_schema::DataType;
use dissect_cache::schema::{cache_schema, KindResidual};
use dissect_cache::{cache_parts, cache_provenance, compute, run_resumable, write_part, CacheConfig, CacheError, CacheReader, RecordActivations, StoreDtype};
use dissect_data::known::load_known_facts;
use dissect_data::parquet_io::{read_kv_metadata, read_parquet};
use dissect_data::span::{leading_special_tokens, locate_subject};
use dissect_data::{KeptRecord, PositionKind, Provenance, ShardSpec};
use dissect_model::backend::Cpu;
use dissect_model::intervene::{Plan, PlanHooks, RecordSpec};
use dissect_model::source::{load, Loaded};

fn tiny() -> Loaded<Cpu> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dissect-model/tests/fixtures/tiny-gemma3");
    load::<Cpu>(dir.to_str().unwrap(), &Default::default()).unwrap()
}

fn kept(m: &Loaded<Cpu>, id: u64, prompt: &str, subject: &str) -> KeptRecord {
    let enc = m.tokenizer.encode(prompt).unwrap();
    KeptRecord {
        id,
        prompt: prompt.into(),
        subject: subject.into(),
        attribute: "x".into(),
        relation_id: "P0".into(),
        subject_span: locate_subject(prompt, subject, &enc.offsets).unwrap(),
        first_token: leading_special_tokens(&enc.offsets),
        n_tokens: enc.ids.len(),
        target_id: 5,
        target: " x".into(),
        target_prob: 0.5,
    }
}

/// Nine known_1000 prompts of unequal lengths, plus two edge cases: a prompt that starts with
/// its subject, and one whose subject ends right before the last token (after_subject is the
/// last token, as in the notebook).
fn records(m: &Loaded<Cpu>) -> Vec<KeptRecord> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/known_1000.json");
    let (facts, _) = load_known_facts(&path, Some(40)).unwrap();
    let mut out: Vec<KeptRecord> = facts.iter().step_by(4).take(9).map(|f| kept(m, f.known_id, &f.prompt, &f.subject)).collect();
    out.push(kept(m, 1000, "Rome is the capital of", "Rome"));
    out.push(kept(m, 1001, "The Eiffel Tower is", "The Eiffel Tower"));
    let lens: std::collections::BTreeSet<usize> = out.iter().map(|r| r.n_tokens).collect();
    assert!(lens.len() >= 3, "the test needs prompts of unequal lengths: {lens:?}");
    assert_eq!(out[10].positions().get(PositionKind::AfterSubject), out[10].positions().get(PositionKind::Last));
    assert_eq!(out[9].positions().get(PositionKind::FirstToken), out[9].positions().get(PositionKind::SubjectFirst));
    out
}

/// Residual (n_layers + 1), attn_out and mlp_out at every position of one prompt, alone.
fn single(m: &Loaded<Cpu>, prompt: &str) -> [Vec<Vec<f32>>; 3] {
    let ids = m.tokenizer.encode(prompt).unwrap().ids;
    let s = ids.len();
    let spec = RecordSpec { residual: true, attn_out: true, mlp_out: true, kv: false, positions: vec![(0..s).collect()] };
    let mut hooks = PlanHooks::new(&m.model, &[Plan::default()], 0, s, spec);
    m.model.forward(m.model.ids_tensor(&[ids]).unwrap(), &mut hooks);
    let host = |v: Vec<burn_tensor::Tensor<Cpu, 3>>| v.into_iter().map(|t| t.into_data().to_vec::<f32>().unwrap()).collect();
    [host(hooks.recorded.residual), host(hooks.recorded.attn_out), host(hooks.recorded.mlp_out)]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn config(dtype: StoreDtype) -> CacheConfig {
    CacheConfig { batch_size: 3, chunk_size: 4, dtype }
}

fn provenance(m: &Loaded<Cpu>, shard: ShardSpec, cfg: &CacheConfig) -> Provenance {
    cache_provenance(&m.info, "feed".into(), vec!["input-hash".into()], None, shard, cfg)
}

const ALL: ShardSpec = ShardSpec { index: 0, count: 1 };

fn run(m: &Loaded<Cpu>, recs: &[KeptRecord], cfg: &CacheConfig, dir: &Path, shard: ShardSpec) -> dissect_cache::RunSummary {
    let parts = cache_parts(dir, shard, recs.len(), cfg, &provenance(m, shard, cfg));
    run_resumable(&m.model, &m.tokenizer, recs, cfg, &parts, |_, _| {}).unwrap()
}

fn parts(dir: &Path) -> Vec<PathBuf> {
    dissect_data::parquet_io::parquet_files(dir).unwrap()
}

#[test]
fn batched_padded_forwards_give_each_prompts_own_activations() {
    let m = tiny();
    let recs = records(&m);
    let (d, n_layers) = (m.model.config.hidden, m.model.n_layers());
    let acts = compute(&m.model, &m.tokenizer, &recs, 3).unwrap();
    assert_eq!(acts.len(), recs.len());
    let mut worst = 0f32;
    for (r, a) in recs.iter().zip(&acts) {
        assert_eq!((a.id, a.n_layers, a.hidden), (r.id, n_layers, d));
        let [res, attn, mlp] = single(&m, &r.prompt);
        let p = r.positions();
        let kinds: Vec<PositionKind> = a.residual.keys().copied().collect();
        assert_eq!(kinds, p.iter().map(|(k, _)| k).collect::<Vec<_>>(), "record {}", r.id);
        for (kind, kr) in &a.residual {
            let t = p.get(*kind).unwrap();
            assert_eq!(kr.token_index, t);
            let expected: Vec<f32> = res.iter().flat_map(|l| l[t * d..(t + 1) * d].to_vec()).collect();
            worst = worst.max(max_abs_diff(&kr.values, &expected));
        }
        let last = p.last;
        let at_last = |v: &[Vec<f32>]| v.iter().flat_map(|l| l[last * d..(last + 1) * d].to_vec()).collect::<Vec<f32>>();
        worst = worst.max(max_abs_diff(&a.attn_out, &at_last(&attn)));
        worst = worst.max(max_abs_diff(&a.mlp_out, &at_last(&mlp)));
    }
    // Padding keys get exactly zero weight; only reduction lengths differ.
    assert!(worst < 1e-4, "batched vs single-prompt activations differ by {worst}");
    // One prompt per batch is the single-prompt forward itself.
    let alone = compute(&m.model, &m.tokenizer, &recs[..1], 1).unwrap();
    let [res, _, _] = single(&m, &recs[0].prompt);
    let t = recs[0].positions().last;
    let expected: Vec<f32> = res.iter().flat_map(|l| l[t * d..(t + 1) * d].to_vec()).collect();
    assert_eq!(alone[0].residual[&PositionKind::Last].values, expected);
}

#[test]
fn parquet_round_trip_schema_and_metadata() {
    let m = tiny();
    let recs = records(&m);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(StoreDtype::F32);
    let summary = run(&m, &recs, &cfg, dir.path(), ALL);
    assert_eq!((summary.computed, summary.reused), (3, 0));
    let expected = compute(&m.model, &m.tokenizer, &recs[..4], 3).unwrap();

    let cache = CacheReader::open(dir.path()).unwrap();
    assert_eq!(cache.ids(), {
        let mut ids: Vec<u64> = recs.iter().map(|r| r.id).collect();
        ids.sort();
        ids
    });
    assert_eq!((cache.hidden(), cache.dtype()), (64, StoreDtype::F32));
    // The chunk is computed as the stage computes it, so f32 comes back bit for bit.
    for e in &expected {
        assert_eq!(cache.get_host(e.id).unwrap().as_ref(), Some(e));
        let t = cache.get::<Cpu>(e.id, &Default::default()).unwrap().unwrap();
        assert_eq!((t.n_layers(), t.hidden()), (6, 64));
        for (kind, kr) in &e.residual {
            let r = t.residual(*kind).unwrap();
            assert_eq!(r.dims(), [7, 64]);
            assert_eq!(r.into_data().to_vec::<f32>().unwrap(), kr.values);
            assert_eq!(t.token_index(*kind), Some(kr.token_index));
        }
        assert_eq!(t.attn_out().dims(), [6, 64]);
        assert_eq!(t.attn_out().into_data().to_vec::<f32>().unwrap(), e.attn_out);
        assert_eq!(t.mlp_out().into_data().to_vec::<f32>().unwrap(), e.mlp_out);
    }
    assert!(cache.get_host(424242).unwrap().is_none());
    assert_eq!(cache.iter::<Cpu>(&Default::default()).count(), recs.len());

    // Schema: a FixedSizeList of the hidden size, one row per (record, layer, kind, site).
    let batches = read_parquet(dir.path()).unwrap();
    assert_eq!(batches[0].schema(), cache_schema(64, StoreDtype::F32));
    match batches[0].schema().field_with_name("vector").unwrap().data_type() {
        DataType::FixedSizeList(item, 64) => assert_eq!(item.data_type(), &DataType::Float32),
        other => panic!("{other}"),
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let kinds: usize = recs.iter().map(|r| r.positions().iter().count()).sum();
    assert_eq!(rows, kinds * 7 + recs.len() * 2 * 6);
    assert_eq!(summary.rows, rows);

    // Metadata on every part: provenance (model, weights, dtype, params and their hash) and
    // the cache's own description.
    for f in parts(dir.path()) {
        let kv = read_kv_metadata(&f).unwrap();
        let prov = Provenance::from_kv(&kv).unwrap();
        assert_eq!(prov, provenance(&m, ALL, &cfg));
        assert_eq!(prov.weights_sha256.as_deref(), Some("feed"));
        assert_eq!(prov.params["config"]["dtype"], "f32");
        assert_eq!(kv[dissect_data::provenance::PARAMS_HASH_KEY], prov.params_hash());
        assert_eq!(kv["dissect.cache.hidden"], "64");
        assert_eq!(kv["dissect.cache.n_layers"], "6");
        assert_eq!(kv["dissect.cache.vector_dtype"], "f32");
    }
    assert_eq!(cache.provenances().len(), 1);
    assert_eq!(cache.params_hashes(&[recs[0].id]).unwrap(), vec![provenance(&m, ALL, &cfg).params_hash()]);
    // The stage's --out directory opens as well as its cache/ subdirectory.
    let outer = tempfile::tempdir().unwrap();
    run(&m, &recs[..2], &cfg, &outer.path().join("cache"), ALL);
    assert_eq!(CacheReader::open(outer.path()).unwrap().len(), 2);
}

#[test]
fn f16_halves_the_file_and_round_trips_within_f16_precision() {
    let m = tiny();
    let recs = records(&m);
    let size = |dir: &Path| parts(dir).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>();
    let (d32, d16) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = CacheConfig { chunk_size: 100, ..config(StoreDtype::F32) };
    run(&m, &recs, &cfg, d32.path(), ALL);
    run(&m, &recs, &CacheConfig { dtype: StoreDtype::F16, ..cfg.clone() }, d16.path(), ALL);
    let (s32, s16) = (size(d32.path()), size(d16.path()));
    assert!(s16 as f64 <= 0.55 * s32 as f64, "f16 {s16} bytes vs f32 {s32}");
    let (c32, c16) = (CacheReader::open(d32.path()).unwrap(), CacheReader::open(d16.path()).unwrap());
    assert_eq!(c16.dtype(), StoreDtype::F16);
    match read_parquet(d16.path()).unwrap()[0].schema().field_with_name("vector").unwrap().data_type() {
        DataType::FixedSizeList(item, 64) => assert_eq!(item.data_type(), &DataType::Float16),
        other => panic!("{other}"),
    }
    let mut worst = 0f32;
    for id in c32.ids() {
        let (a, b) = (c32.get_host(id).unwrap().unwrap(), c16.get_host(id).unwrap().unwrap());
        let pairs = a.residual.values().zip(b.residual.values()).flat_map(|(x, y)| x.values.iter().zip(&y.values));
        for (x, y) in pairs.chain(a.attn_out.iter().zip(&b.attn_out)).chain(a.mlp_out.iter().zip(&b.mlp_out)) {
            // Round to nearest: half an f16 ulp (2^-11 relative), or half the smallest subnormal.
            let bound = x.abs() * 2f32.powi(-11) + 2f32.powi(-25);
            assert!((x - y).abs() <= bound, "record {id}: {x} stored as {y}");
            worst = worst.max((x - y).abs() / x.abs().max(1e-3));
        }
        assert_ne!(a, b, "f16 storage must round something");
    }
    assert!(worst > 0.0);

    // A value f16 cannot hold is an error, not an infinity in the cache.
    let mut big = compute(&m.model, &m.tokenizer, &recs[..1], 1).unwrap().remove(0);
    big.mlp_out[3] = 1.0e6;
    let path = d16.path().join("big.parquet");
    match write_part(&path, &[big.clone()], StoreDtype::F16, &[]) {
        Err(CacheError::F16Overflow { id, site, layer, .. }) => assert_eq!((id, site, layer), (big.id, "mlp_out", 0)),
        other => panic!("{other:?}"),
    }
    assert!(!path.exists());
    write_part(&path, &[big], StoreDtype::F32, &[]).unwrap();
}

fn mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    parts(dir)
        .into_iter()
        .map(|f| {
            let t = std::fs::metadata(&f).unwrap().modified().unwrap();
            (f, t)
        })
        .collect()
}

#[test]
fn a_second_run_writes_nothing_and_other_parameters_replace_every_part() {
    let m = tiny();
    let recs = records(&m);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(StoreDtype::F32);
    run(&m, &recs, &cfg, dir.path(), ALL);
    let before = mtimes(dir.path());
    let bytes: Vec<Vec<u8>> = before.keys().map(|f| std::fs::read(f).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = run(&m, &recs, &cfg, dir.path(), ALL);
    assert_eq!((again.computed, again.reused, again.rows), (0, 3, 0));
    assert_eq!(mtimes(dir.path()), before, "a second run must not rewrite any part");
    assert_eq!(before.keys().map(|f| std::fs::read(f).unwrap()).collect::<Vec<_>>(), bytes);

    // Other parameters: every old part goes, including a leftover from a longer run.
    std::fs::copy(ALL.part_path(dir.path(), 0), ALL.part_path(dir.path(), 7)).unwrap();
    let f16 = run(&m, &recs, &config(StoreDtype::F16), dir.path(), ALL);
    assert_eq!((f16.computed, f16.reused), (3, 0));
    assert_eq!(parts(dir.path()).len(), 3);
    assert_eq!(CacheReader::open(dir.path()).unwrap().dtype(), StoreDtype::F16);
}

#[test]
fn a_run_killed_mid_way_and_restarted_ends_with_the_rows_of_an_uninterrupted_run() {
    let m = tiny();
    let recs = records(&m);
    let cfg = config(StoreDtype::F32);
    let (whole, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&m, &recs, &cfg, whole.path(), ALL);
    let prov = provenance(&m, ALL, &cfg);
    // "Killed" right after the first part is written.
    let died = catch_unwind(AssertUnwindSafe(|| {
        run_resumable(&m.model, &m.tokenizer, &recs, &cfg, &cache_parts(killed.path(), ALL, recs.len(), &cfg, &prov), |done, _| assert!(done < 4, "killed"))
    }));
    assert!(died.is_err());
    assert_eq!(parts(killed.path()).len(), 1);
    let resumed = run(&m, &recs, &cfg, killed.path(), ALL);
    assert_eq!((resumed.computed, resumed.reused), (2, 1));
    assert_eq!(read_parquet(killed.path()).unwrap(), read_parquet(whole.path()).unwrap());
}

#[test]
fn the_union_of_shards_is_the_unsharded_cache() {
    let m = tiny();
    let recs = records(&m);
    let cfg = config(StoreDtype::F32);
    let (whole, sharded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&m, &recs, &cfg, whole.path(), ALL);
    for i in 0..3 {
        let s = ShardSpec::new(i, 3).unwrap();
        let mine: Vec<KeptRecord> = recs.iter().filter(|r| s.contains(r.id)).cloned().collect();
        run(&m, &mine, &cfg, sharded.path(), s);
    }
    let (a, b) = (CacheReader::open(whole.path()).unwrap(), CacheReader::open(sharded.path()).unwrap());
    assert_eq!(a.ids(), b.ids());
    assert_eq!(b.provenances().len(), 3);
    for id in a.ids() {
        let (x, y) = (a.get_host(id).unwrap().unwrap(), b.get_host(id).unwrap().unwrap());
        assert_eq!(x.residual.keys().collect::<Vec<_>>(), y.residual.keys().collect::<Vec<_>>());
        // Other batch-mates pad to other lengths: equal up to reduction order.
        let flat = |r: &RecordActivations| {
            r.residual.values().flat_map(|k: &KindResidual| k.values.clone()).chain(r.attn_out.clone()).chain(r.mlp_out.clone()).collect::<Vec<f32>>()
        };
        assert!(max_abs_diff(&flat(&x), &flat(&y)) < 1e-4, "record {id}");
    }
}

#[test]
fn a_prompt_that_no_longer_tokenizes_as_filtered_is_an_error() {
    let m = tiny();
    let mut recs = records(&m);
    recs[2].n_tokens += 1;
    match compute(&m.model, &m.tokenizer, &recs, 4) {
        Err(CacheError::Record { id, message }) => {
            assert_eq!(id, recs[2].id);
            assert!(message.contains("tokenizes"), "{message}");
        }
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    assert!(matches!(compute(&m.model, &m.tokenizer, &recs, 0), Err(CacheError::BatchSize { .. })));
}

#[test]
fn the_reader_refuses_mixed_or_foreign_directories() {
    let m = tiny();
    let recs = records(&m);
    let dir = tempfile::tempdir().unwrap();
    let acts = compute(&m.model, &m.tokenizer, &recs[..2], 2).unwrap();
    write_part(&dir.path().join("shard=00000/part-00000.parquet"), &acts, StoreDtype::F32, &[]).unwrap();
    write_part(&dir.path().join("shard=00001/part-00000.parquet"), &acts[1..], StoreDtype::F32, &[]).unwrap();
    match CacheReader::open(dir.path()) {
        Err(CacheError::Format { message, .. }) => assert!(message.contains("also in"), "{message}"),
        other => panic!("{other:?}"),
    }
    let foreign = tempfile::tempdir().unwrap();
    let batch = dissect_data::filtered::kept_to_batch(&recs);
    dissect_data::parquet_io::write_parquet_atomic(&foreign.path().join("shard=00000/part-0.parquet"), &[batch], &[]).unwrap();
    match CacheReader::open(foreign.path()) {
        Err(CacheError::Format { message, .. }) => assert!(message.contains("vector"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A part missing rows of a record is refused on read, naming the record.
    let mut short = acts[0].clone();
    short.residual.get_mut(&PositionKind::SubjectLast).unwrap().values.truncate(64 * 3);
    let broken = tempfile::tempdir().unwrap();
    write_part(&broken.path().join("shard=00000/part-00000.parquet"), &[short], StoreDtype::F32, &[]).unwrap();
    let cache = CacheReader::open(broken.path()).unwrap();
    match cache.get_host(acts[0].id) {
        Err(CacheError::Format { message, .. }) => assert!(message.contains("subject_last"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// An experiments run opens the cache through `open_for`, which refuses a cache that lacks
/// records or was computed with other weights, and a directory that is no cache at all.
#[test]
fn open_for_refuses_a_cache_that_cannot_serve_the_run() {
    let m = tiny();
    let recs = records(&m);
    let dir = tempfile::tempdir().unwrap();
    run(&m, &recs[..3], &config(StoreDtype::F32), dir.path(), ALL);
    let ids: Vec<u64> = recs[..3].iter().map(|r| r.id).collect();
    assert_eq!(CacheReader::open_for(dir.path(), &ids, "feed").unwrap().len(), 3);
    match CacheReader::open_for(dir.path(), &[ids[0], 1000, 1001], "feed") {
        Err(CacheError::Incomplete { missing: 2, total: 3, examples, .. }) => assert_eq!(examples, [1000, 1001]),
        other => panic!("{other:?}"),
    }
    match CacheReader::open_for(dir.path(), &ids, "other-weights") {
        Err(e @ CacheError::OtherModel { .. }) => assert!(e.to_string().contains("weights feed"), "{e}"),
        other => panic!("{other:?}"),
    }
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(CacheReader::open_for(empty.path(), &ids, "feed"), Err(CacheError::Unreadable { .. })));
}
