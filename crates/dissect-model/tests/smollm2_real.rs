//! The real SmolLM2-135M-Instruct GGUF (Q4_1, Llama architecture, byte-level BPE) against Hugging
//! Face transformers loading the same file (fixtures/make_smollm2_reference.py): token ids and
//! offsets of every known_1000 prompt and of awkward strings, top-5 next tokens with
//! probabilities to 1e-3, and the file's Q4_1 / Q8_0 tensors against gguf-py's dequantization.

use std::path::PathBuf;

use burn_tensor::backend::Backend;
use dissect_model::gguf::GgufFile;
use dissect_model::predict::{last_position_probs, top_k};
use dissect_model::quant::GgmlType;
use dissect_model::source::load;
use dissect_model::tokenizer::Tokenizer;
use serde_json::Value;

mod common;

/// Missing is a failure, never a skip: `cargo xtask test` fetches it first.
fn smollm2_gguf() -> PathBuf {
    let p = dissect_model::source::named_model_path("smollm2-135m").unwrap();
    assert!(p.exists(), "the real model is missing at {}\nhint: run `cargo xtask fetch-model smollm2-135m` (or set DISSECT_SMOLLM2_GGUF)", p.display());
    p
}

fn reference() -> Value {
    let text = std::fs::read_to_string(common::fixtures().join("smollm2_135m_reference.json")).unwrap();
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

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn tokenizer_matches_hf_on_every_known_fact_and_awkward_strings() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(&smollm2_gguf()).unwrap()).unwrap();
    let r = reference();
    let mut cases: Vec<&Value> = r["tokenization"]["known_1000"].as_array().unwrap().iter().collect();
    assert_eq!(cases.len(), 1209);
    let extra = r["tokenization"]["extra"].as_array().unwrap();
    cases.extend(extra);
    for case in cases {
        let text = case.get("prompt").or(case.get("text")).and_then(Value::as_str).unwrap();
        let enc = tok.encode(text).unwrap();
        assert_eq!(enc.ids, ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(char_offsets(text, &enc.offsets), pairs(&case["offsets"]), "offsets of {text:?}");
    }
    for case in extra {
        for (id, want) in ids(&case["ids"]).iter().zip(case["decoded"].as_array().unwrap()) {
            assert_eq!(tok.decode_token(*id), want.as_str().unwrap(), "decode([{id}])");
        }
    }
}

fn top5_matches_hf<B: Backend>(device: &B::Device) {
    let loaded = load::<B>("smollm2-135m", device).unwrap();
    assert_eq!(loaded.info.architecture, "llama");
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

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Q4_1 (and the Q8_0 embedding) of the real file, block by block and as whole tensors.
#[test]
fn q4_1_tensors_equal_gguf_py() {
    let g = GgufFile::open(&smollm2_gguf()).unwrap();
    let r = reference();
    let checks = r["quant"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["type"] == "Q4_1"));
    for c in checks {
        let name = c["name"].as_str().unwrap();
        let ty = GgmlType::from_id(c["ggml_type"].as_u64().unwrap() as u32).unwrap();
        let raw = hex(c["first_blocks_hex"].as_str().unwrap());
        let info = &g.tensors[name];
        assert_eq!(&g.raw(info).unwrap()[..raw.len()], &raw[..], "{name}: raw bytes");
        let blocks = ty.dequantize(&raw);
        let want = floats(&c["first_blocks_values"]);
        assert_eq!(blocks.len(), want.len(), "{name}");
        for (i, (a, e)) in blocks.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), e.to_bits(), "{name} value {i}: ours {a}, gguf-py {e}");
        }
        let (data, shape) = g.dequantize(name).unwrap();
        let want_shape: Vec<usize> = c["numpy_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, want_shape, "{name}");
        assert_eq!(&data[shape[1]..shape[1] + 8], &floats(&c["row1_first8"])[..], "{name} row 1");
        assert_eq!(&data[data.len() - 8..], &floats(&c["last8"])[..], "{name} last values");
        let sum: f64 = data.iter().map(|&x| f64::from(x)).sum();
        let abs: f64 = data.iter().map(|&x| f64::from(x).abs()).sum();
        let (want_sum, want_abs) = (c["sum_f64"].as_f64().unwrap(), c["abs_sum_f64"].as_f64().unwrap());
        assert!((sum - want_sum).abs() <= 1e-9 * want_abs, "{name}: sum {sum} vs {want_sum}");
        assert!((abs - want_abs).abs() <= 1e-9 * want_abs, "{name}: |sum| {abs} vs {want_abs}");
    }
}
