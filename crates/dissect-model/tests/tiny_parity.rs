//! Tiny random GPT-2 and Gemma 3 made by Hugging Face transformers (fixtures/make_tiny.py):
//! logits, every hidden state and every recorded site equal HF's to 1e-4 relative.

use burn_tensor::backend::Backend;
use burn_tensor::Tensor;
use dissect_model::source::load;
use dissect_model::RecordAll;

mod common;
use common::{assert_close, read_expected};

const REL: f32 = 1e-4;

fn vec3<B: Backend>(t: &Tensor<B, 3>) -> Vec<f32> {
    t.to_data().into_vec::<f32>().unwrap()
}

fn check_model<B: Backend>(device: &B::Device, dir: &str, normed_suffix: &str) {
    let path = common::fixtures().join(dir);
    let loaded = load::<B>(path.to_str().unwrap(), device).unwrap();
    let model = &loaded.model;
    let expected = read_expected(&path.join("expected.safetensors"));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path.join("expected.json")).unwrap()).unwrap();
    let prompts = meta["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 3);
    let l = model.n_layers();
    for p in prompts {
        let pre = p["key_prefix"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let want_ids: Vec<u32> = expected[&format!("{pre}input_ids")].data.iter().map(|&x| x as u32).collect();
        let enc = loaded.tokenizer.encode(text).unwrap();
        assert_eq!(enc.ids, want_ids, "{dir}: token ids of {text:?}");

        let mut rec = RecordAll::default();
        let h = model.forward(model.ids_tensor(std::slice::from_ref(&enc.ids)).unwrap(), &mut rec);
        let logits = vec3(&model.logits(h));
        assert_close(&format!("{dir} {text:?} logits"), &logits, &expected[&format!("{pre}logits")].data, REL);

        let hs = &expected[&format!("{pre}hidden_states")];
        let per = hs.data.len() / (l + 1);
        assert_eq!(rec.residual.len(), l + 1);
        for (i, r) in rec.residual.iter().enumerate().take(l) {
            assert_close(&format!("{dir} {text:?} hidden_states[{i}]"), &vec3(r), &hs.data[i * per..(i + 1) * per], REL);
        }
        // HF normalizes its last hidden state; ours is the raw residual, compared to a hook.
        assert_close(&format!("{dir} {text:?} final residual"), &vec3(&rec.residual[l]), &expected[&format!("{pre}residual_final")].data, REL);
        for i in 0..l {
            let site = |s: &str| format!("{pre}{s}{normed_suffix}.{i}");
            assert_close(&format!("{dir} {text:?} attn_out {i}"), &vec3(&rec.attn_out[i]), &expected[&site("attn_out")].data, REL);
            assert_close(&format!("{dir} {text:?} mlp_out {i}"), &vec3(&rec.mlp_out[i]), &expected[&site("mlp_out")].data, REL);
            let probs = rec.attn_probs[i].to_data().into_vec::<f32>().unwrap();
            assert_close(&format!("{dir} {text:?} attn_probs {i}"), &probs, &expected[&format!("{pre}attn_probs.{i}")].data, REL);
        }
    }
}

fn tiny_gpt2<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-gpt2", "");
}

fn tiny_gemma3<B: Backend>(device: &B::Device) {
    check_model::<B>(device, "tiny-gemma3", "_normed");
}

/// Rows of unequal length in one batch, right-padded, give each row's own values.
fn padded_batch_keeps_positions<B: Backend>(device: &B::Device) {
    for dir in ["tiny-gpt2", "tiny-gemma3"] {
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

test_device!(tiny_gpt2, tiny_gpt2_cpu, tiny_gpt2_cuda, tiny_gpt2_wgpu);
test_device!(tiny_gemma3, tiny_gemma3_cpu, tiny_gemma3_cuda, tiny_gemma3_wgpu);
test_device!(padded_batch_keeps_positions, padded_batch_cpu, padded_batch_cuda, padded_batch_wgpu);
