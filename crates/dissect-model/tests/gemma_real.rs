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

/// The screened reads equal the f32 path's on Gemma's real hidden states — every layer's
/// residual at every position of two prompts, both projections, a rank with the top 1 and the
/// top 500 — whichever unit this CPU screens with (none without AMX: then both are the f32 path).
#[test]
fn screened_reads_equal_the_f32_path_on_real_hidden_states() {
    use burn_tensor::Tensor;
    use dissect_model::backend::Cpu;
    use dissect_model::project::{read_rows, Ask, Projection, Screening};
    let mut l = load::<Cpu>(common::gemma_gguf().to_str().unwrap(), &Default::default()).unwrap();
    let d = l.model.config.hidden;
    let mut rows = Vec::new();
    for prompt in ["The Eiffel Tower is located in the city of", "Toyota Camry is produced by"] {
        let ids = l.tokenizer.encode(prompt).unwrap().ids;
        let mut rec = dissect_model::RecordAll::default();
        l.model.forward(l.model.ids_tensor(std::slice::from_ref(&ids)).unwrap(), &mut rec);
        rows.extend(rec.residual.iter().map(|h| h.clone().reshape([ids.len(), d])));
    }
    let h = Tensor::cat(rows, 0);
    // " Paris": a deep rank at the early layers, the top at the last.
    let target = l.tokenizer.encode(" Paris").unwrap().ids.last().copied().unwrap() as usize;
    for how in [Projection::LogitLens, Projection::Notebook] {
        for ask in [Ask { rank_of: Some(target), top: 1 }, Ask { rank_of: None, top: 500 }] {
            l.model.screen = Screening::Off;
            let want = read_rows(&l.model, h.clone(), how, ask);
            l.model.screen = Screening::All;
            let got = read_rows(&l.model, h.clone(), how, ask);
            assert_eq!(got.len(), want.len());
            if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                panic!("{how:?} {ask:?}: row {i} of {}: screened {:?}, f32 path {:?}", got.len(), got[i], want[i]);
            }
        }
    }
}
