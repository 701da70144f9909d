//! Every ggml block format against gguf-py's dequantization (fixtures/make_quant_blocks.py).

use dissect_model::quant::GgmlType;
use serde_json::Value;

mod common;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn every_block_format_equals_gguf_py_bit_for_bit() {
    let text = std::fs::read_to_string(common::fixtures().join("quant_blocks.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for b in json["blocks"].as_array().unwrap() {
        let name = b["type"].as_str().unwrap();
        let ty = GgmlType::from_id(b["ggml_type"].as_u64().unwrap() as u32).unwrap_or_else(|| panic!("{name} unsupported"));
        let values = ty.dequantize(&hex(b["raw_hex"].as_str().unwrap()));
        let expected: Vec<f32> = b["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(values.len(), expected.len(), "{name}");
        for (i, (a, e)) in values.iter().zip(&expected).enumerate() {
            assert_eq!(a.to_bits(), e.to_bits(), "{name} ({}) value {i}: ours {a}, gguf-py {e}", b["source"]);
        }
        seen.insert(name.to_string());
    }
    for required in ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"] {
        assert!(seen.contains(required), "no fixture for {required}");
    }
}

#[test]
fn real_gguf_tensor_layout_matches_gguf_py() {
    let text = std::fs::read_to_string(common::fixtures().join("quant_blocks.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let g = dissect_model::gguf::GgufFile::open(&common::gemma_gguf()).unwrap();
    for check in json["layout_checks"].as_array().unwrap() {
        let name = check["name"].as_str().unwrap();
        let (data, shape) = g.dequantize(name).unwrap();
        let want_shape: Vec<usize> = check["dequantized_numpy_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, want_shape, "{name}");
        let first: Vec<f32> = check["first16"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&data[..first.len()], &first[..], "{name} first values");
        let row1: Vec<f32> = check["row1_first8"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let w = shape[1];
        assert_eq!(&data[w..w + row1.len()], &row1[..], "{name} row 1");
        let last: Vec<f32> = check["last8"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&data[data.len() - last.len()..], &last[..], "{name} last values");
    }
}
