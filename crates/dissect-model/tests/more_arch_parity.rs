//! Tiny random GPT-J, Llama, Qwen2 and Mistral made by Hugging Face transformers
//! (fixtures/make_tiny_more.py): logits, every hidden state and every recorded site equal HF's to
//! 1e-4 relative. The tiny Llama is also loaded from the GGUF llama.cpp's converter would write
//! (q/k rows permuted, Llama 3 rope bands as `rope_freqs`), against the same HF values; and the
//! byte-level GGUF tokenizers are checked against what transformers builds from those files.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::config::{Positions, RopeStyle};
use dissect_model::gguf::GgufFile;
use dissect_model::source::load;
use dissect_model::tokenizer::Tokenizer;
use dissect_model::RecordAll;
use serde_json::Value;

mod common;
use common::{assert_close, read_expected};

const REL: f32 = 1e-4;

fn vec3<B: Backend>(t: &Tensor<B, 3>) -> Vec<f32> {
    t.to_data().into_vec::<f32>().unwrap()
}

/// Loads `spec` and compares it with the HF reference in `fixtures/<expected_dir>`.
fn check_model<B: Backend>(device: &B::Device, spec: &str, expected_dir: &str) {
    let dir = common::fixtures().join(expected_dir);
    let path = common::fixtures().join(spec);
    let loaded = load::<B>(path.to_str().unwrap(), device).unwrap();
    let model = &loaded.model;
    let expected = read_expected(&dir.join("expected.safetensors"));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let prompts = meta["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 3);
    let l = model.n_layers();
    for p in prompts {
        let pre = p["key_prefix"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let what = |s: &str| format!("{spec} {text:?} {s}");
        let want_ids: Vec<u32> = expected[&format!("{pre}input_ids")].data.iter().map(|&x| x as u32).collect();
        let enc = loaded.tokenizer.encode(text).unwrap();
        assert_eq!(enc.ids, want_ids, "{spec}: token ids of {text:?}");

        let mut rec = RecordAll::default();
        let h = model.forward(model.ids_tensor(std::slice::from_ref(&enc.ids)).unwrap(), &mut rec);
        let logits = vec3(&model.logits(h));
        assert_close(&what("logits"), &logits, &expected[&format!("{pre}logits")].data, REL);

        let hs = &expected[&format!("{pre}hidden_states")];
        let per = hs.data.len() / (l + 1);
        assert_eq!(rec.residual.len(), l + 1);
        for (i, r) in rec.residual.iter().enumerate().take(l) {
            assert_close(&what(&format!("hidden_states[{i}]")), &vec3(r), &hs.data[i * per..(i + 1) * per], REL);
        }
        assert_close(&what("final residual"), &vec3(&rec.residual[l]), &expected[&format!("{pre}residual_final")].data, REL);
        for i in 0..l {
            assert_close(&what(&format!("attn_out {i}")), &vec3(&rec.attn_out[i]), &expected[&format!("{pre}attn_out.{i}")].data, REL);
            assert_close(&what(&format!("mlp_out {i}")), &vec3(&rec.mlp_out[i]), &expected[&format!("{pre}mlp_out.{i}")].data, REL);
            let probs = rec.attn_probs[i].to_data().into_vec::<f32>().unwrap();
            assert_close(&what(&format!("attn_probs {i}")), &probs, &expected[&format!("{pre}attn_probs.{i}")].data, REL);
        }
    }
}

fn tiny_gptj<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-gptj", "tiny-gptj");
}

fn tiny_llama<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-llama", "tiny-llama");
}

fn tiny_qwen2<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-qwen2", "tiny-qwen2");
}

fn tiny_mistral<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-mistral", "tiny-mistral");
}

/// The GGUF holds the same weights with q/k rows permuted the llama.cpp way: undoing that on load
/// must give HF's values exactly as the safetensors checkpoint does.
fn tiny_llama_gguf<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-llama.gguf", "tiny-llama");
}

/// Rows of unequal length in one batch, right-padded, give each row's own values (rotary
/// positions, sliding windows, the parallel block).
fn padded_batch_keeps_positions<B: Backend>(device: &B::Device) {
    for dir in ["tiny-gptj", "tiny-llama", "tiny-qwen2", "tiny-mistral"] {
        let path = common::fixtures().join(dir);
        let loaded = load::<B>(path.to_str().unwrap(), device).unwrap();
        let m = &loaded.model;
        let rows = vec![loaded.tokenizer.encode("The Eiffel Tower is located in the city of").unwrap().ids, loaded.tokenizer.encode("Paris is").unwrap().ids];
        let alone: Vec<Vec<f32>> =
            rows.iter().map(|r| vec3(&m.logits(m.forward(m.ids_tensor(std::slice::from_ref(r)).unwrap(), &mut dissect_model::NoHooks)))).collect();
        let both = m.logits(m.forward(m.ids_tensor(&rows).unwrap(), &mut dissect_model::NoHooks));
        let v = m.config.vocab_size;
        for (i, r) in rows.iter().enumerate() {
            let row = vec3(&both.clone().slice([i..i + 1, 0..r.len()]));
            assert_close(&format!("{dir} batched row {i}"), &row, &alone[i][..r.len() * v], REL);
        }
    }
}

test_device!(tiny_gptj, tiny_gptj_cpu, tiny_gptj_cuda, tiny_gptj_wgpu);
test_device!(tiny_llama, tiny_llama_cpu, tiny_llama_cuda, tiny_llama_wgpu);
test_device!(tiny_qwen2, tiny_qwen2_cpu, tiny_qwen2_cuda, tiny_qwen2_wgpu);
test_device!(tiny_mistral, tiny_mistral_cpu, tiny_mistral_cuda, tiny_mistral_wgpu);
test_device!(tiny_llama_gguf, tiny_llama_gguf_cpu, tiny_llama_gguf_cuda, tiny_llama_gguf_wgpu);
test_device!(padded_batch_keeps_positions, padded_batch_cpu, padded_batch_cuda, padded_batch_wgpu);

#[test]
fn configs_map_the_architectures() {
    let dev = Default::default();
    let load_cfg = |spec: &str| load::<dissect_model::backend::Cpu>(common::fixtures().join(spec).to_str().unwrap(), &dev).unwrap().model.config;
    let gptj = load_cfg("tiny-gptj");
    assert!(gptj.parallel_block);
    assert_eq!(gptj.positions, Positions::Rotary { style: RopeStyle::Interleaved, rotary_dim: 8 });
    let llama = load_cfg("tiny-llama");
    assert_eq!((llama.n_heads, llama.n_kv_heads, llama.head_dim), (4, 2, 16));
    assert!(llama.layers.iter().all(|l| l.rope_inv_freq.as_ref().is_some_and(|f| f.len() == 8)));
    let from_gguf = load_cfg("tiny-llama.gguf");
    for (a, b) in llama.layers.iter().zip(&from_gguf.layers) {
        let (a, b) = (a.rope_inv_freq.as_ref().unwrap(), b.rope_inv_freq.as_ref().unwrap());
        // HF scales the frequencies; llama.cpp divides by stored factors: equal to rounding.
        assert_close("llama3 inv_freq, HF vs GGUF rope_freqs", b, a, 1e-6);
    }
    let qwen2 = load_cfg("tiny-qwen2");
    let windows: Vec<Option<usize>> = qwen2.layers.iter().map(|l| l.sliding_window).collect();
    assert_eq!(windows, [None, Some(4), Some(4)]);
    let mistral = load_cfg("tiny-mistral");
    assert_eq!(mistral.head_dim, 24);
    assert!(mistral.layers.iter().all(|l| l.sliding_window == Some(5)));
}

/// Byte offsets (ours) to code-point offsets (Python's).
fn char_offsets(text: &str, offsets: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let to_char = |b: usize| text[..b].chars().count();
    offsets.iter().map(|&(s, e)| (to_char(s), to_char(e))).collect()
}

fn check_gguf_tokenizer(gguf: &str, reference: &str) {
    let tok = Tokenizer::from_gguf(&GgufFile::open(&common::fixtures().join(gguf)).unwrap()).unwrap();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(common::fixtures().join(reference)).unwrap()).unwrap();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let enc = tok.encode(text).unwrap();
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(enc.ids, ids, "{gguf}: ids of {text:?}");
        let offsets: Vec<(usize, usize)> =
            case["offsets"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize)).collect();
        assert_eq!(char_offsets(text, &enc.offsets), offsets, "{gguf}: offsets of {text:?}");
        for (id, want) in ids.iter().zip(case["decoded"].as_array().unwrap()) {
            assert_eq!(tok.decode_token(*id), want.as_str().unwrap(), "{gguf}: decode([{id}])");
        }
    }
}

#[test]
fn byte_level_gguf_tokenizer_matches_hf() {
    check_gguf_tokenizer("tiny-llama.gguf", "tiny-llama-gguf.json");
}

/// `tokenizer.ggml.pre = llama-bpe` selects the Llama 3 split regex, and add_bos_token prepends BOS.
#[test]
fn byte_level_gguf_tokenizer_with_split_regex_and_bos_matches_hf() {
    check_gguf_tokenizer("tiny-bpe-tokenizer.gguf", "tiny-bpe-tokenizer.json");
}

/// A sentencepiece GGUF vocabulary of a non-Gemma architecture: merges derived from the scores,
/// byte fallback, `Metaspace`, BOS by default.
#[test]
fn sentencepiece_gguf_tokenizer_matches_hf() {
    check_gguf_tokenizer("tiny-spm-tokenizer.gguf", "tiny-spm-tokenizer.json");
}
