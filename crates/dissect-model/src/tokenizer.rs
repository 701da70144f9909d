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
    /// Token ids, special tokens the tokenizer adds (e.g. BOS) included.
    pub ids: Vec<u32>,
    /// `[start, end)` byte range of each token in the text; `(0, 0)` for an added special token.
    pub offsets: Vec<(usize, usize)>,
}

/// A Hugging Face `tokenizers` tokenizer, giving the same ids and offsets as transformers.
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
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    /// Parses the text of a `tokenizer.json`.
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

    /// Number of ids, added tokens included; can differ from the model's [`vocab_size`](crate::ModelConfig::vocab_size).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token given in its vocabulary spelling (`▁Paris`, `ĠParis`), not as plain text.
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
        ("gpt2", _) => {
            let merges = match g.get("tokenizer.ggml.merges") {
                Some(_) => g.strings("tokenizer.ggml.merges")?,
                None => {
                    return Err(ModelError::tokenizer(format!("{}: a byte-level (gpt2) GGUF vocabulary without merges is not supported", g.path().display())))
                }
            };
            let add_eos = matches!(g.get("tokenizer.ggml.add_eos_token"), Some(crate::gguf::Value::Bool(true)));
            let named = NamedSpecials {
                bos,
                eos: special("tokenizer.ggml.eos_token_id"),
                unk: special("tokenizer.ggml.unknown_token_id"),
                pad: special("tokenizer.ggml.padding_token_id"),
                add_bos,
                add_eos,
            };
            let pre = g.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or_default();
            byte_level_json(&tokens, &types, &merges, pre, &named).map_err(|m| ModelError::tokenizer(format!("{}: {m}", g.path().display())))?
        }
        // Phi-3 needs its own builder in transformers; every other sentencepiece vocabulary gets
        // `LlamaTokenizer`'s.
        ("llama", a) if a != "phi3" => {
            let merges = match g.get("tokenizer.ggml.merges") {
                Some(_) => Some(g.strings("tokenizer.ggml.merges")?),
                None => None,
            };
            let scores: Option<Vec<f64>> =
                g.get("tokenizer.ggml.scores").and_then(|v| v.as_array()).map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect());
            let named = NamedSpecials {
                bos,
                eos: special("tokenizer.ggml.eos_token_id"),
                unk: special("tokenizer.ggml.unknown_token_id"),
                pad: special("tokenizer.ggml.padding_token_id"),
                add_bos,
                add_eos: matches!(g.get("tokenizer.ggml.add_eos_token"), Some(crate::gguf::Value::Bool(true))),
            };
            sentencepiece_json(&tokens, &types, merges.as_deref(), scores.as_deref(), &named)
                .map_err(|m| ModelError::tokenizer(format!("{}: {m}", g.path().display())))?
        }
        _ => return Err(ModelError::tokenizer(format!("{}: GGUF tokenizer `{model}` for architecture `{arch}` is not supported yet", g.path().display()))),
    };
    Ok(json)
}

/// Gemma: sentencepiece-style BPE with byte fallback, merges rebuilt from the vocabulary order
/// (the file has none), `▁` for space, BOS prepended.
fn gemma_json(tokens: &[String], types: &[u64], bos: Option<u32>) -> Result<Json, ModelError> {
    // Tokens made only of spaces are stored as real spaces but looked up as `▁`s.
    let respelled: Vec<String> =
        tokens.iter().map(|t| if t.contains(' ') && t.trim().is_empty() { "\u{2581}".repeat(t.chars().count()) } else { t.clone() }).collect();
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(respelled.len());
    for (i, t) in respelled.iter().enumerate() {
        // Python's dict keeps the last index of a duplicated token.
        vocab.insert(t.as_str(), i as u32);
    }
    let merges = merges_by_vocab_order(&respelled, &vocab);
    let vocab_json: serde_json::Map<String, Json> = vocab.iter().map(|(t, &i)| (t.to_string(), json!(i))).collect();
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
    merges.sort_by_key(|m| std::cmp::Reverse((m.0, m.1, m.2)));
    merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect()
}

/// The special tokens a GGUF names by id, and whether BOS / EOS are added to every text.
struct NamedSpecials {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// GPT-2's reversible byte-to-character map (`bytes_to_unicode`): printable bytes stand for
/// themselves, the others for U+0100 onwards.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        map[b as usize] = if printable {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100.. are chars")
        };
    }
    map
}

/// Split regexes transformers' `set_split_regex` installs for a `tokenizer.ggml.pre`; any other
/// value keeps GPT-2's own byte-level regex.
fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

/// transformers' `TokenizersBackend.update_post_processor`: BOS and/or EOS around each sequence.
fn template_post_processor(tokens: &[String], named: &NamedSpecials) -> Json {
    let bos = named.bos.filter(|_| named.add_bos).map(|id| (tokens[id as usize].clone(), id));
    let eos = named.eos.filter(|_| named.add_eos).map(|id| (tokens[id as usize].clone(), id));
    let special = |(t, _): &(String, u32), type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        out.extend(bos.iter().map(|b| special(b, type_id)));
        out.push(seq(part, type_id));
        out.extend(eos.iter().map(|e| special(e, type_id)));
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    let mut specials = serde_json::Map::new();
    for (t, id) in bos.iter().chain(eos.iter()) {
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`), mirroring transformers' `byte_level_tokenizer`,
/// `add_gguf_special_tokens` and `set_split_regex`, plus the special tokens that `GPT2Tokenizer`'s
/// defaults and the GGUF's named token ids add when transformers builds the tokenizer.
fn byte_level_json(tokens: &[String], types: &[u64], merges: &[String], pre: &str, named: &NamedSpecials) -> Result<Json, String> {
    let spelling = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    // A token written with characters outside the byte alphabet is respelled from its UTF-8 bytes.
    let spelled: Vec<String> = tokens.iter().map(|t| if in_alphabet(t) { t.clone() } else { t.bytes().map(|b| spelling[b as usize]).collect() }).collect();
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(spelled.len());
    for (i, t) in spelled.iter().enumerate() {
        vocab.insert(t.as_str(), i as u32);
    }
    let merges_json = merges
        .iter()
        .map(|m| {
            let parts: Vec<&str> = m.split(' ').collect();
            match parts.as_slice() {
                [l, r] => Ok(json!([l, r])),
                _ => Err(format!("merge {m:?} is not two tokens separated by one space")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let added_json = added_tokens_json(
        &vocab,
        tokens,
        types,
        &["<|endoftext|>"],
        // A CONTROL token outside the byte alphabet is a llama.cpp mislabel transformers skips.
        |t| in_alphabet(t),
        named,
    )?;

    let byte_level = |use_regex: bool, add_prefix_space: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match pre_tokenizer_split(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false, false)]}),
        None => byte_level(true, false),
    };
    let vocab_json: serde_json::Map<String, Json> = vocab.iter().map(|(t, &i)| (t.to_string(), json!(i))).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_json,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": template_post_processor(tokens, named),
        "decoder": byte_level(true, true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_json, "merges": merges_json}
    }))
}

/// `added_tokens` in the order transformers adds them when it builds a GGUF tokenizer: the
/// tokenizer class's default specials, CONTROL tokens (type 3) as special, USER_DEFINED tokens
/// (type 4) that are in the vocabulary as plain added tokens, then the file's named bos / eos /
/// unk / pad. A token already in the vocabulary keeps its id; any other gets the next id after
/// it, as `tokenizers` assigns them.
fn added_tokens_json(
    vocab: &HashMap<&str, u32>,
    tokens: &[String],
    types: &[u64],
    class_defaults: &[&str],
    control_ok: impl Fn(&str) -> bool,
    named: &NamedSpecials,
) -> Result<Vec<Json>, String> {
    let mut added: Vec<(String, u32, bool)> = Vec::new();
    let mut next_id = vocab.len() as u32;
    let mut add = |content: &str, special: bool, added: &mut Vec<(String, u32, bool)>| {
        if added.iter().any(|(c, _, _)| c == content) {
            return;
        }
        let id = vocab.get(content).copied().unwrap_or_else(|| {
            next_id += 1;
            next_id - 1
        });
        added.push((content.to_string(), id, special));
    };
    for t in class_defaults {
        add(t, true, &mut added);
    }
    for (t, &ty) in tokens.iter().zip(types) {
        if ty == 3 && control_ok(t) {
            add(t, true, &mut added);
        }
    }
    for (t, &ty) in tokens.iter().zip(types) {
        if ty == 4 && (vocab.contains_key(t.as_str()) || added.iter().any(|(c, _, _)| c == t)) {
            add(t, false, &mut added);
        }
    }
    for id in [named.bos, named.eos, named.unk, named.pad].into_iter().flatten() {
        let t = tokens.get(id as usize).ok_or_else(|| format!("special token id {id} is outside the vocabulary"))?;
        add(t, true, &mut added);
    }
    added.sort_by_key(|(_, id, _)| *id);
    Ok(added
        .iter()
        .map(|(content, id, special)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": special})
        })
        .collect())
}

/// transformers' `generate_merges(vocab, vocab_scores)`: every split of every token into two
/// vocabulary tokens, the splits of one token ordered by the ids of their pieces, all of them
/// ordered by the token's score (highest first), then longer left piece, then longer right piece
/// (lengths in characters); Python's sort is stable, so ties keep that order.
fn generate_merges(tokens: &[String], vocab: &HashMap<&str, u32>, scores: &[f64]) -> Vec<(String, String)> {
    // `dict(zip(tokens, scores))`: one entry per distinct token, at its first position, holding
    // the score of its last occurrence.
    let mut score_of: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    for (t, &s) in tokens.iter().zip(scores) {
        score_of.insert(t.as_str(), s);
    }
    let mut seen = std::collections::HashSet::new();
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let score = score_of[t.as_str()];
        let mut local: Vec<(&str, &str)> =
            t.char_indices().skip(1).map(|(cut, _)| t.split_at(cut)).filter(|(l, r)| vocab.contains_key(l) && vocab.contains_key(r)).collect();
        local.sort_by_key(|(l, r)| (vocab[l], vocab[r]));
        merges.extend(local.into_iter().map(|(l, r)| (score, l.chars().count(), r.chars().count(), l, r)));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    merges.into_iter().map(|(_, _, _, l, r)| (l.to_string(), r.to_string())).collect()
}

/// A sentencepiece vocabulary (`tokenizer.ggml.model = llama`) of an architecture transformers
/// has no dedicated builder for: `LlamaTokenizer` over the file's tokens, with the merges the file
/// gives or the ones its scores imply, `Metaspace` (prepend on the first word only), byte
/// fallback, and BOS added unless the file says otherwise.
fn sentencepiece_json(tokens: &[String], types: &[u64], merges: Option<&[String]>, scores: Option<&[f64]>, named: &NamedSpecials) -> Result<Json, String> {
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.as_str(), i as u32);
    }
    let merges: Vec<(String, String)> = match (merges, scores) {
        (Some(m), _) => m
            .iter()
            .map(|m| {
                let parts: Vec<&str> = m.split(' ').collect();
                match parts.as_slice() {
                    [l, r] => Ok((l.to_string(), r.to_string())),
                    _ => Err(format!("merge {m:?} is not two tokens separated by one space")),
                }
            })
            .collect::<Result<_, _>>()?,
        (None, Some(s)) => generate_merges(tokens, &vocab, s),
        (None, None) => return Err("a sentencepiece vocabulary with neither merges nor scores".into()),
    };
    // `LlamaTokenizer`'s default bos / eos / unk, in the order transformers adds them.
    let added = added_tokens_json(&vocab, tokens, types, &["<s>", "</s>", "<unk>"], |_| true, named)?;
    let vocab_json: serde_json::Map<String, Json> = vocab.iter().map(|(t, &i)| (t.to_string(), json!(i))).collect();
    let merges_json: Vec<Json> = merges.into_iter().map(|(l, r)| json!([l, r])).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
        "post_processor": template_post_processor(tokens, named),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_json, "merges": merges_json}
    }))
}
