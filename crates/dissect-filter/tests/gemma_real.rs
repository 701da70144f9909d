//! The filter on the real default model (fetched by `cargo xtask fetch-model gemma3-270m`).
//! These tests fail, never skip, when the model file is missing.

use std::path::{Path, PathBuf};

use dissect_data::known::load_known_facts;
use dissect_data::span::subject_byte_range;
use dissect_data::KnownFact;
use dissect_filter::prepare::attribute_first_token;
use dissect_filter::{run_filter, FilterConfig};
use dissect_model::backend::Cpu;
use dissect_model::gguf::GgufFile;
use dissect_model::source::{load, named_model_path};
use dissect_model::tokenizer::Tokenizer;

const MODEL: &str = "gemma3-270m";

fn model_path() -> PathBuf {
    let path = named_model_path(MODEL).expect("the default model is registered");
    assert!(path.exists(), "{} is missing\nhint: run `cargo xtask fetch-model {MODEL}`", path.display());
    path
}

fn known_1000(limit: Option<usize>) -> Vec<KnownFact> {
    load_known_facts(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/known_1000.json"), limit).unwrap().0
}

#[test]
fn filters_the_first_64_known_facts() {
    model_path();
    let m = load::<Cpu>(MODEL, &Default::default()).unwrap();
    let mut facts = known_1000(Some(64));
    facts.push(KnownFact {
        known_id: 100_000,
        subject: "Eiffel Tower".into(),
        attribute: "Paris".into(),
        template: String::new(),
        prediction: String::new(),
        prompt: "The Eiffel Tower is located in the city of".into(),
        relation_id: "P131".into(),
    });
    let out = run_filter(&m.model, &m.tokenizer, &facts, &FilterConfig::default()).unwrap();
    assert_eq!(out.kept.len() + out.rejected.len(), 65);
    assert!(out.kept.len() >= 10, "only {} of 65 kept: {:?}", out.kept.len(), out.rejected);
    assert!(out.rejected.iter().all(|r| r.reason.kind() == "wrong_prediction"), "{:?}", out.rejected);
    for k in &out.kept {
        let expected = attribute_first_token(&m.tokenizer, &k.attribute).unwrap().unwrap();
        assert_eq!(k.target_id, expected, "{k:?}");
        assert!(format!(" {}", k.attribute).starts_with(&k.target), "{k:?}");
        assert_eq!(k.first_token, 1, "BOS is not the first token");
    }
    // Hugging Face transformers on the same GGUF: " Paris" with p 0.759.
    let eiffel = out.kept.iter().find(|k| k.id == 100_000).expect("the Eiffel Tower prompt is kept");
    assert_eq!(eiffel.target, " Paris");
    assert!((eiffel.target_prob - 0.759).abs() < 0.01, "{}", eiffel.target_prob);
    assert_eq!((eiffel.subject_span.first, eiffel.subject_span.last, eiffel.n_tokens), (2, 3, 10));
}

/// The span rule on the real tokenizer and all 1209 prompts (9 non-ASCII): the span's
/// tokens cover the subject, and no shorter span does.
#[test]
fn subject_spans_of_every_known_fact_are_minimal_covers() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(&model_path()).unwrap()).unwrap();
    let facts = known_1000(None);
    let mut non_ascii = 0;
    for f in &facts {
        let enc = tok.encode(&f.prompt).unwrap();
        let span = dissect_data::span::locate_subject(&f.prompt, &f.subject, &enc.offsets).unwrap();
        let text = |a: usize, b: usize| &f.prompt[enc.offsets[a].0..enc.offsets[b].1];
        let subject = subject_byte_range(&f.prompt, &f.subject).unwrap();
        assert!(text(span.first, span.last).contains(&f.subject), "{}: {:?}", f.known_id, text(span.first, span.last));
        assert!(enc.offsets[span.first].0 <= subject.start && enc.offsets[span.last].1 >= subject.end);
        if span.first < span.last {
            assert!(enc.offsets[span.first + 1].0 > subject.start, "{}: span starts too early", f.known_id);
            assert!(enc.offsets[span.last - 1].1 < subject.end, "{}: span ends too late", f.known_id);
        }
        assert!(span.first >= 1, "{}: BOS in the span", f.known_id);
        non_ascii += usize::from(!f.prompt.is_ascii());
    }
    assert_eq!(non_ascii, 9);
}
