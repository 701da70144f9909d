//! The filter on the tiny random-weight fixtures of dissect-model, one without BOS and one
//! with. Their predictions are arbitrary, so the test finds a prompt whose prediction is a
//! word token and builds its dataset around what the model actually predicts.

use std::path::{Path, PathBuf};

use dissect_data::filtered::{read_kept, read_rejected};
use dissect_data::known::load_known_facts;
use dissect_data::parquet_io::read_kv_metadata;
use dissect_data::{KnownFact, Provenance, ShardSpec};
use dissect_filter::prepare::attribute_first_token;
use dissect_filter::{filter_parts, filter_provenance, run_filter, run_resumable, FilterConfig, FilterTables};
use dissect_model::backend::Cpu;
use dissect_model::predict::{last_position_probs, top_k};
use dissect_model::source::{load, Loaded};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dissect-model/tests/fixtures").join(name)
}

fn known_1000() -> Vec<KnownFact> {
    let (facts, rejected) = load_known_facts(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/known_1000.json"), None).unwrap();
    assert!(rejected.is_empty());
    facts
}

fn fact(id: u64, subject: &str, attribute: &str, prompt: &str) -> KnownFact {
    KnownFact {
        known_id: id,
        subject: subject.into(),
        attribute: attribute.into(),
        template: String::new(),
        prediction: String::new(),
        prompt: prompt.into(),
        relation_id: "P0".into(),
    }
}

fn greedy(m: &Loaded<Cpu>, prompt: &str) -> (u32, f32) {
    let ids = m.tokenizer.encode(prompt).unwrap().ids;
    let probs = last_position_probs(&m.model, &[ids]).unwrap().remove(0);
    let top = top_k(&probs, 1)[0];
    (top as u32, probs[top])
}

/// The first `n` known_1000 facts, every `every`-th one's attribute set to the word the model
/// predicts for it, so that both kept and rejected lists are non-empty.
fn some_known(m: &Loaded<Cpu>, n: usize, every: u64) -> Vec<KnownFact> {
    let know = |f: KnownFact| {
        let word = m.tokenizer.decode_token(greedy(m, &f.prompt).0).trim_start().to_string();
        if f.known_id.is_multiple_of(every) && !word.is_empty() {
            KnownFact { attribute: word, ..f }
        } else {
            f
        }
    };
    known_1000().into_iter().take(n).map(know).collect()
}

/// A known_1000 fact rewritten so that the tiny model "knows" it: its attribute is the word
/// the model predicts.
fn a_fact_the_model_knows(m: &Loaded<Cpu>) -> (KnownFact, u32, f32) {
    for f in known_1000().into_iter().take(300) {
        let (id, p) = greedy(m, &f.prompt);
        let text = m.tokenizer.decode_token(id);
        let Some(word) = text.strip_prefix(' ').filter(|w| !w.trim().is_empty()) else { continue };
        if attribute_first_token(&m.tokenizer, word).unwrap() == Some(id) {
            return (KnownFact { attribute: word.to_string(), ..f }, id, p);
        }
    }
    panic!("no known_1000 prompt among the first 300 makes the tiny model predict a word token");
}

fn check_fixture(name: &str, expected_first_token: usize) {
    let m = load::<Cpu>(fixture(name).to_str().unwrap(), &Default::default()).unwrap();
    let (known, predicted, p) = a_fact_the_model_knows(&m);
    let other = known_1000().into_iter().find(|f| f.known_id != known.known_id && f.prompt.len() < 40).unwrap();
    let (other_pred, _) = greedy(&m, &other.prompt);
    let wrong_attr = ["Paris", "London", "Tokyo", "Berlin"].into_iter().find(|a| attribute_first_token(&m.tokenizer, a).unwrap() != Some(other_pred)).unwrap();
    let long_prompt = format!("Rome{}", " and Rome".repeat(m.model.config.context_length));
    let facts = vec![
        KnownFact { known_id: 10, ..known.clone() },
        KnownFact { known_id: 11, attribute: wrong_attr.into(), ..other.clone() },
        fact(12, "Milan", "Italy", "Rome is located in"),
        fact(13, "Rome", "Italy", &long_prompt),
        KnownFact { known_id: 10, ..other.clone() },
        fact(14, "Rome", "Italy", ""),
    ];
    let out = run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig { batch_size: 2, ..Default::default() }).unwrap();

    assert_eq!(out.kept.len(), 1, "{name}: {out:?}");
    let k = &out.kept[0];
    assert_eq!((k.id, k.target_id), (10, predicted));
    assert_eq!(k.target, format!(" {}", known.attribute));
    assert!((k.target_prob - p).abs() < 1e-5, "batched {} vs alone {p}", k.target_prob);
    assert_eq!(k.first_token, expected_first_token, "{name}");
    let enc = m.tokenizer.encode(&known.prompt).unwrap();
    assert_eq!(k.n_tokens, enc.ids.len());
    let covered = &known.prompt[enc.offsets[k.subject_span.first].0..enc.offsets[k.subject_span.last].1];
    assert!(covered.contains(&known.subject), "{name}: span covers {covered:?}, subject {:?}", known.subject);

    let kinds: Vec<(Option<u64>, &str)> = out.rejected.iter().map(|r| (r.id, r.reason.kind())).collect();
    assert_eq!(
        kinds,
        vec![
            (Some(11), "wrong_prediction"),
            (Some(12), "subject_not_in_prompt"),
            (Some(13), "prompt_too_long"),
            (Some(10), "duplicate_id"),
            (Some(14), "empty_prompt")
        ],
        "{name}"
    );
    match &out.rejected[0].reason {
        dissect_data::RejectReason::WrongPrediction { predicted_id, predicted, expected_id, .. } => {
            assert_eq!(*predicted_id, other_pred);
            assert_eq!(*predicted, m.tokenizer.decode_token(other_pred));
            assert_eq!(Some(*expected_id), attribute_first_token(&m.tokenizer, wrong_attr).unwrap());
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn keeps_what_the_model_predicts_without_bos() {
    check_fixture("tiny-gpt2", 0);
}

#[test]
fn keeps_what_the_model_predicts_with_bos() {
    check_fixture("tiny-gemma3", 1);
}

#[test]
fn batch_size_does_not_change_decisions() {
    let m = load::<Cpu>(fixture("tiny-gpt2").to_str().unwrap(), &Default::default()).unwrap();
    let facts: Vec<KnownFact> = some_known(&m, 40, 2);
    let one = run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig { batch_size: 1, ..Default::default() }).unwrap();
    let many = run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig { batch_size: 16, ..Default::default() }).unwrap();
    assert!(!one.kept.is_empty() && !one.rejected.is_empty());
    assert_eq!(one.kept.iter().map(|k| k.id).collect::<Vec<_>>(), many.kept.iter().map(|k| k.id).collect::<Vec<_>>());
    for (a, b) in one.kept.iter().zip(&many.kept) {
        assert!((a.target_prob - b.target_prob).abs() < 1e-5);
    }
    assert_eq!(one.rejected.len(), many.rejected.len());
    assert!(run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig { batch_size: 0, ..Default::default() }).is_err());
}

#[test]
fn the_shards_union_is_the_unsharded_run() {
    let m = load::<Cpu>(fixture("tiny-gpt2").to_str().unwrap(), &Default::default()).unwrap();
    let facts: Vec<KnownFact> = some_known(&m, 30, 3);
    let config = FilterConfig::default();
    let all = run_filter(&m.model, &m.tokenizer, &facts, &config).unwrap();
    let (mut kept, mut rejected) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let shard = ShardSpec::new(i, 4).unwrap();
        let mine: Vec<KnownFact> = facts.iter().filter(|f| shard.owns(Some(f.known_id))).cloned().collect();
        let out = run_filter(&m.model, &m.tokenizer, &mine, &config).unwrap();
        kept.extend(out.kept);
        rejected.extend(out.rejected);
    }
    kept.sort_by_key(|k| k.id);
    rejected.sort_by_key(|r| r.id);
    assert!(!all.kept.is_empty());
    assert_eq!(kept.iter().map(|k| (k.id, k.target_id)).collect::<Vec<_>>(), all.kept.iter().map(|k| (k.id, k.target_id)).collect::<Vec<_>>());
    assert_eq!(rejected.iter().map(|r| (r.id, r.reason.kind())).collect::<Vec<_>>(), all.rejected.iter().map(|r| (r.id, r.reason.kind())).collect::<Vec<_>>());
}

#[test]
fn a_resumable_run_writes_one_part_per_chunk_and_redoes_only_what_is_missing() {
    let m = load::<Cpu>(fixture("tiny-gpt2").to_str().unwrap(), &Default::default()).unwrap();
    let mut facts: Vec<KnownFact> = some_known(&m, 30, 3);
    // A duplicate of the first chunk's first id, three chunks later.
    facts.insert(25, KnownFact { known_id: facts[0].known_id, ..facts[5].clone() });
    let config = FilterConfig { batch_size: 4, chunk_size: 8 };
    let whole = run_filter(&m.model, &m.tokenizer, &facts, &config).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tables = FilterTables::new(dir.path());
    let shard = ShardSpec::new(0, 1).unwrap();
    let prov = filter_provenance(&m.info, "w".into(), "d".into(), None, shard, &config);
    let parts = filter_parts(&tables, shard, facts.len(), &config, &prov);
    assert_eq!(parts.n_chunks(), 4);
    assert!(!parts.all_current());
    let mut seen = Vec::new();
    let done = run_resumable(&m.model, &m.tokenizer, &facts, &[], &config, &parts, &mut |d, t| seen.push((d, t))).unwrap();
    assert_eq!((done.computed, done.reused), (4, 0));
    assert_eq!(seen.last(), Some(&(31, 31)));
    assert!(parts.all_current());

    // The chunks' union is the one-pass decision (batches differ, so probabilities to 1e-5).
    let mut kept = read_kept(&tables.filtered).unwrap();
    kept.sort_by_key(|k| k.id);
    let mut expected = whole.kept.clone();
    expected.sort_by_key(|k| k.id);
    assert!(!kept.is_empty());
    assert_eq!(kept.iter().map(|k| (k.id, k.target_id)).collect::<Vec<_>>(), expected.iter().map(|k| (k.id, k.target_id)).collect::<Vec<_>>());
    for (a, b) in kept.iter().zip(&expected) {
        assert!((a.target_prob - b.target_prob).abs() < 1e-5);
    }
    let kinds = |r: &[dissect_data::Rejected]| {
        let mut v: Vec<(Option<u64>, &str)> = r.iter().map(|r| (r.id, r.reason.kind())).collect();
        v.sort();
        v
    };
    let rejected = read_rejected(&tables.rejected).unwrap();
    assert_eq!(kinds(&rejected), kinds(&whole.rejected));
    assert!(rejected.iter().any(|r| r.reason.kind() == "duplicate_id"), "the duplicate in a later chunk is caught");
    assert_eq!(Provenance::from_kv(&read_kv_metadata(&parts.path(0, 3)).unwrap()).unwrap(), prov);

    // A run killed after chunk 2's `filtered` part but before its `rejected` one redoes chunk 2 only.
    std::fs::remove_file(parts.path(1, 2)).unwrap();
    assert!(!parts.all_current());
    seen.clear();
    let again = run_resumable(&m.model, &m.tokenizer, &facts, &[], &config, &parts, &mut |d, t| seen.push((d, t))).unwrap();
    assert_eq!((again.computed, again.reused), (1, 3));
    assert!(seen.iter().all(|&(d, _)| d > 16 && d <= 24), "{seen:?}");
    assert_eq!(kinds(&read_rejected(&tables.rejected).unwrap()), kinds(&whole.rejected));

    assert!(run_resumable(&m.model, &m.tokenizer, &facts, &[], &FilterConfig { chunk_size: 0, ..config }, &parts, &mut |_, _| {}).is_err());
}
