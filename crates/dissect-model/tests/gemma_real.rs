//! The real Gemma 3 270M GGUF against Hugging Face transformers loading the same file
//! (fixtures/make_gemma_reference.py): token ids and offsets of every known_1000 prompt and of
//! awkward strings, and top-5 next tokens with probabilities to 1e-3.

use burn_tensor::backend::Backend;
use dissect_model::gguf::GgufFile;
use dissect_model::predict::{last_position_probs, top_k};
use dissect_model::source::load;
use dissect_model::tokenizer::Tokenizer;
use serde_json::Value;

mod common;

fn reference() -> Value {
    let text = std::fs::read_to_string(common::fixtures().join("gemma3_270m_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Byte offsets (ours) to code-point offsets (Python's).
fn char_offsets(text: &str, offsets: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let to_char = |b: usize| text[..b].chars().count();
    offsets.iter().map(|&(s, e)| (to_char(s), to_char(e))).collect()
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize)).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tokenizer_matches_hf_on_every_known_fact_and_awkward_strings() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(&common::gemma_gguf()).unwrap()).unwrap();
    let r = reference();
    let mut cases: Vec<&Value> = r["tokenization"]["known_1000"].as_array().unwrap().iter().collect();
    assert_eq!(cases.len(), 1209);
    cases.extend(r["tokenization"]["extra"].as_array().unwrap());
    let mut non_ascii = 0;
    for case in cases {
        let text = case.get("prompt").or(case.get("text")).and_then(Value::as_str).unwrap();
        non_ascii += usize::from(!text.is_ascii());
        let enc = tok.encode(text).unwrap();
        assert_eq!(enc.ids, ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(char_offsets(text, &enc.offsets), pairs(&case["offsets"]), "offsets of {text:?}");
    }
    assert!(non_ascii >= 9, "the fixture should exercise non-ASCII prompts");
}

fn top5_matches_hf<B: Backend>(device: &B::Device) {
    let loaded = load::<B>(common::gemma_gguf().to_str().unwrap(), device).unwrap();
    let r = reference();
    let preds = r["predictions"].as_array().unwrap();
    let rows: Vec<Vec<u32>> = preds.iter().map(|p| ids(&p["input_ids"])).collect();
    for (p, row) in preds.iter().zip(&rows) {
        let text = p["text"].as_str().unwrap();
        assert_eq!(&loaded.tokenizer.encode(text).unwrap().ids, row, "ids of {text:?}");
    }
    // One right-padded batch of prompts of different lengths.
    let probs = last_position_probs(&loaded.model, &rows).unwrap();
    for (p, probs) in preds.iter().zip(&probs) {
        let text = p["text"].as_str().unwrap();
        let want = p["top5"].as_array().unwrap();
        let ours = top_k(probs, 5);
        for (rank, (w, &id)) in want.iter().zip(&ours).enumerate() {
            assert_eq!(id as u64, w["id"].as_u64().unwrap(), "{text:?}: token at rank {rank}");
            let hf = w["prob"].as_f64().unwrap() as f32;
            assert!((probs[id] - hf).abs() <= 1e-3, "{text:?} rank {rank}: p {} vs HF {hf}", probs[id]);
            assert_eq!(loaded.tokenizer.decode_token(id as u32), w["token"].as_str().unwrap());
        }
    }
    assert_eq!(preds[0]["top5"][0]["token"], " Paris");
}

test_device!(top5_matches_hf, top5_matches_hf_cpu, top5_matches_hf_cuda, top5_matches_hf_wgpu);
