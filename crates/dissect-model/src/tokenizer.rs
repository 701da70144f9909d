//! Tokenizers: a Hugging Face `tokenizer.json`, or one rebuilt from GGUF metadata exactly the way
//! transformers' GGUF loader rebuilds it (so ids and offsets equal Hugging Face's).

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value as Json};

use crate::error::ModelError;
use crate::gguf::GgufFile;

/// One encoded text. Offsets are byte ranges into the text (Rust `str` indices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl Encoding {
    /// The tokens whose text overlaps the byte range `bytes` of the encoded text, as a range of
    /// token indices; tokens with empty offsets (BOS and other added specials) never count.
    pub fn token_span(&self, bytes: std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
        let hit = |&(s, e): &(usize, usize)| s < e && s < bytes.end && bytes.start < e;
        let first = self.offsets.iter().position(hit)?;
        let last = self.offsets.iter().rposition(hit)?;
        Some(first..last + 1)
    }
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(ModelError::tokenizer)?;
        Ok(Tokenizer { inner })
    }

    /// Rebuilds the tokenizer a GGUF file describes.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        Self::from_json(&gguf_tokenizer_json(g)?.to_string())
    }

    /// Encodes with the tokenizer's own special tokens (e.g. Gemma's BOS), as HF does by default.
    pub fn encode(&self, text: &str) -> Result<Encoding, ModelError> {
        let enc = self.inner.encode(text, true).map_err(ModelError::tokenizer)?;
        Ok(Encoding { ids: enc.get_ids().to_vec(), offsets: enc.get_offsets().to_vec() })
    }

    /// The text of one token, as HF's `tokenizer.decode([id])` gives it.
    pub fn decode_token(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// `tokenizer.json` for a GGUF's vocabulary, mirroring transformers' `convert_gguf_tokenizer`.
pub fn gguf_tokenizer_json(g: &GgufFile) -> Result<Json, ModelError> {
    let model = g.require("tokenizer.ggml.model")?.as_str().unwrap_or_default().to_string();
    let arch = g.require("general.architecture")?.as_str().unwrap_or_default().to_string();
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let types: Vec<u64> = match g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let special = |key: &str| g.get(key).and_then(|v| v.as_u64()).map(|i| i as u32);
    let bos = special("tokenizer.ggml.bos_token_id");
    let add_bos = match g.get("tokenizer.ggml.add_bos_token") {
        Some(crate::gguf::Value::Bool(b)) => *b,
        // llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
        _ => model == "llama",
    };
    let json = match (model.as_str(), arch.as_str()) {
        ("llama", "gemma" | "gemma2" | "gemma3") => gemma_json(&tokens, &types, bos.filter(|_| add_bos))?,
        _ => {
            return Err(ModelError::tokenizer(format!(
                "{}: GGUF tokenizer `{model}` for architecture `{arch}` is not supported yet",
                g.path().display()
            )))
        }
    };
    Ok(json)
}

/// Gemma: sentencepiece-style BPE with byte fallback, merges rebuilt from the vocabulary order
/// (the file has none), `▁` for space, BOS prepended.
fn gemma_json(tokens: &[String], types: &[u64], bos: Option<u32>) -> Result<Json, ModelError> {
    // Tokens made only of spaces are stored as real spaces but looked up as `▁`s.
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| if t.contains(' ') && t.trim().is_empty() { "\u{2581}".repeat(t.chars().count()) } else { t.clone() })
        .collect();
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(respelled.len());
    for (i, t) in respelled.iter().enumerate() {
        // Python's dict keeps the last index of a duplicated token.
        vocab.insert(t.as_str(), i as u32);
    }
    let merges = merges_by_vocab_order(&respelled, &vocab);
    let vocab_json: serde_json::Map<String, Json> =
        vocab.iter().map(|(t, &i)| (t.to_string(), json!(i))).collect();
    let merges_json: Vec<Json> = merges.into_iter().map(|(l, r)| json!([l, r])).collect();

    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        // 3 = control (special), 4 = user-defined (added, not special), as transformers adds them.
        let is_special = match ty {
            3 => true,
            4 if vocab.get(t.as_str()) == Some(&(i as u32)) => false,
            _ => continue,
        };
        added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": is_special}));
    }
    let unk = "<unk>";
    let post = bos.map(|id| {
        let tok = &respelled[id as usize];
        json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tok: {"id": tok, "ids": [id], "tokens": [tok]}}})
    });
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_json, "merges": merges_json}
    }))
}

/// transformers' `generate_merges(vocab, {token: -index})`: every split of every token into two
/// vocabulary tokens, ordered by the token's position in the file (earlier first), then by longer
/// left piece, then longer right piece (lengths in characters).
fn merges_by_vocab_order(tokens: &[String], vocab: &HashMap<&str, u32>) -> Vec<(String, String)> {
    // Python iterates the {token: score} dict: one entry per distinct token, at its first
    // position, scored by its last index (the dict comprehension overwrote it).
    let mut seen = std::collections::HashSet::new();
    let mut merges: Vec<(i64, usize, usize, String, String)> = Vec::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let score = -(vocab[t.as_str()] as i64);
        let cuts: Vec<usize> = t.char_indices().map(|(b, _)| b).skip(1).collect();
        for cut in cuts {
            let (l, r) = t.split_at(cut);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                merges.push((score, l.chars().count(), r.chars().count(), l.to_string(), r.to_string()));
            }
        }
    }
    // reverse=True on (score, len_l, len_r); keys are unique, so stability does not matter.
    merges.sort_by(|a, b| (b.0, b.1, b.2).cmp(&(a.0, a.1, a.2)));
    merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect()
}
