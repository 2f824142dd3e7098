//! Byte-level BPE `tokenizer.json` -> `tokenizer.ggml.model = "gpt2"` (llama.cpp `conversion/base.py`
//! `get_vocab_base` and `_set_vocab_gpt2` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//!
//! llama.cpp names the pre-tokenizer (`tokenizer.ggml.pre`) by hashing the token ids the HF tokenizer
//! produces for a fixed test string. Without running the HF tokenizer we identify it by a documented rule
//! instead: the structure of tokenizer.json's `pre_tokenizer` (which is what determines pre-tokenization, and
//! what llama.cpp uses the name to reproduce), plus a vocabulary fingerprint where two known models share a
//! structure. The table is [`PRE_TOKENIZERS`]; anything else is refused with the structure it saw.

use std::path::Path;

use serde_json::{json, Value};

use super::{looks_special, TokenType, Vocab};
use crate::arch::HfConfig;
use crate::error::{FormatError, Result};

/// The Llama 3 split regex of Meta-Llama-3's tokenizer.json.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex (Llama 3's with single digits).
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A known pre-tokenizer: its llama.cpp name, the `pre_tokenizer` JSON it has in tokenizer.json, and
/// `(id, token)` pairs the vocabulary must contain.
pub struct PreTokenizer {
    pub name: &'static str,
    pub pre_tokenizer: fn() -> Value,
    pub fingerprint: &'static [(usize, &'static str)],
    /// Other `tokenizer.ggml.pre` names llama.cpp pre-tokenizes the same way: accepted when tokenizing a GGUF
    /// ([`super::TokenizerJsonTarget::LlamaCpp`]), never identified nor written.
    pub llama_cpp_aliases: &'static [&'static str],
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_then_bytes(regex: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(false)]})
}

fn digits_then_bytes() -> Value {
    json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]})
}

/// Known pre-tokenizers, matched in order.
pub static PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer {
        name: "llama-bpe",
        pre_tokenizer: || split_then_bytes(LLAMA3_REGEX),
        fingerprint: &[],
        llama_cpp_aliases: &["llama3", "falcon3", "pixtral", "smaug-bpe"],
    },
    PreTokenizer {
        name: "qwen2",
        pre_tokenizer: || split_then_bytes(QWEN2_REGEX),
        fingerprint: &[],
        llama_cpp_aliases: &["deepseek-r1-qwen"],
    },
    // SmolLM and StarCoder share the Digits+ByteLevel structure; their vocabularies tell them apart.
    PreTokenizer {
        name: "smollm",
        pre_tokenizer: digits_then_bytes,
        fingerprint: &[(0, "<|endoftext|>"), (1, "<|im_start|>"), (2, "<|im_end|>")],
        llama_cpp_aliases: &[],
    },
    PreTokenizer {
        name: "starcoder",
        pre_tokenizer: digits_then_bytes,
        fingerprint: &[(0, "<|endoftext|>"), (1, "<fim_prefix>")],
        llama_cpp_aliases: &["refact", "command-r", "codeshell", "exaone", "minerva"],
    },
    PreTokenizer {
        name: "gpt-2",
        pre_tokenizer: || byte_level(true),
        fingerprint: &[(50256, "<|endoftext|>")],
        llama_cpp_aliases: &["default", "gpt2", "phi-2", "jais", "olmo"],
    },
];

/// Compare the parts of a `pre_tokenizer` that change behaviour (ignoring `trim_offsets`, which only
/// affects offsets, and keys absent on either side).
fn same_structure(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .filter(|(k, _)| *k != "trim_offsets")
            .all(|(k, v)| y.get(k).is_none_or(|w| same_structure(v, w)) && (k != "type" || y.contains_key(k))),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_structure(v, w)),
        _ => a == b,
    }
}

/// The llama.cpp name of a tokenizer.json's pre-tokenizer, given `token(id)` lookups into its vocabulary.
pub fn identify_pre_tokenizer(pre: &Value, token: &dyn Fn(usize) -> Option<String>) -> Option<&'static str> {
    PRE_TOKENIZERS
        .iter()
        .find(|p| {
            same_structure(&(p.pre_tokenizer)(), pre)
                && p.fingerprint.iter().all(|(id, t)| token(*id).as_deref() == Some(*t))
        })
        .map(|p| p.name)
}

/// Tokens and types as `get_vocab_base` builds them, and the pre-tokenizer name.
pub fn gpt2_vocab(dir: &Path, cfg: &HfConfig) -> Result<(Vocab, &'static str)> {
    let path = dir.join("tokenizer.json");
    let t = crate::hf::read_json(&path)?;
    let bad = |m: String| FormatError::Tokenizer { path: path.clone(), message: m };
    let model = t.get("model").ok_or_else(|| bad("no \"model\" section".into()))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(bad(
            "the tokenizer model is not BPE; only byte-level BPE is supported without tokenizer.model".into()
        ));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "SentencePiece-style BPE (byte_fallback) needs tokenizer.model; it is missing from the directory".into(),
        ));
    }
    let n = cfg.vocab_size as usize;
    let mut by_id: Vec<Option<String>> = vec![None; n];
    let mut added: Vec<(usize, bool)> = Vec::new();
    let vocab = model.get("vocab").and_then(Value::as_object).ok_or_else(|| bad("no model.vocab object".into()))?;
    let mut place = |id: Option<u64>, text: &str| -> Result<usize> {
        let id = id.map(|i| i as usize).ok_or_else(|| bad(format!("token '{text}' has no integer id")))?;
        let slot = by_id
            .get_mut(id)
            .ok_or_else(|| bad(format!("token '{text}' has id {id}, outside vocab_size {n} of config.json")))?;
        *slot = Some(text.to_string());
        Ok(id)
    };
    for (text, id) in vocab {
        place(id.as_u64(), text)?;
    }
    for a in t.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let text = a.get("content").and_then(Value::as_str).unwrap_or_default();
        let id = place(a.get("id").and_then(Value::as_u64), text)?;
        added.push((id, a.get("special").and_then(Value::as_bool).unwrap_or(false)));
    }
    let pre_tokenizer = t.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
    let pre = identify_pre_tokenizer(&pre_tokenizer, &|id| by_id.get(id).cloned().flatten()).ok_or_else(|| {
        let known: Vec<&str> = PRE_TOKENIZERS.iter().map(|p| p.name).collect();
        bad(format!(
            "BPE pre-tokenizer not recognized (known: {}); its pre_tokenizer is {}",
            known.join(", "),
            serde_json::to_string(&pre_tokenizer).unwrap_or_default()
        ))
    })?;
    let mut v = Vocab { tokens: Vec::with_capacity(n), scores: None, types: Vec::with_capacity(n) };
    for (i, tok) in by_id.into_iter().enumerate() {
        match tok {
            None => {
                v.tokens.push(format!("[PAD{i}]"));
                v.types.push(TokenType::Unused);
            }
            Some(text) => match added.iter().find(|(id, _)| *id == i) {
                Some(&(_, special)) if special || looks_special(&text) => {
                    v.tokens.push(text);
                    v.types.push(TokenType::Control);
                }
                Some(_) => {
                    v.tokens.push(text.replace('\u{2581}', " "));
                    v.types.push(TokenType::UserDefined);
                }
                None => {
                    v.tokens.push(text);
                    v.types.push(TokenType::Normal);
                }
            },
        }
    }
    Ok((v, pre))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_known_structures_and_refuses_others() {
        let smol = |id: usize| ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].get(id).map(|s| s.to_string());
        let star = |id: usize| ["<|endoftext|>", "<fim_prefix>"].get(id).map(|s| s.to_string());
        assert_eq!(identify_pre_tokenizer(&digits_then_bytes(), &smol), Some("smollm"));
        assert_eq!(identify_pre_tokenizer(&digits_then_bytes(), &star), Some("starcoder"));
        assert_eq!(identify_pre_tokenizer(&split_then_bytes(LLAMA3_REGEX), &star), Some("llama-bpe"));
        assert_eq!(identify_pre_tokenizer(&split_then_bytes(QWEN2_REGEX), &star), Some("qwen2"));
        assert_eq!(identify_pre_tokenizer(&split_then_bytes(r"\s+"), &star), None);
        assert_eq!(identify_pre_tokenizer(&Value::Null, &star), None);
        let mut no_digits = digits_then_bytes();
        no_digits["pretokenizers"][0]["individual_digits"] = json!(false);
        assert_eq!(identify_pre_tokenizer(&no_digits, &smol), None);
    }
}
