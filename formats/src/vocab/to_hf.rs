//! The reverse of this module: HF tokenizer files rebuilt from a GGUF's `tokenizer.*` keys, such that
//! converting them back gives the same tokenizer metadata.
//!
//! - `gpt2`: `tokenizer.json` and `tokenizer_config.json` (special tokens, add-BOS/EOS, prefix space, chat
//!   template, the added tokens).
//! - `llama` (SentencePiece): `tokenizer.model` (a `ModelProto` with the pieces, scores and types, BPE model
//!   type, byte fallback when there are BYTE pieces), `tokenizer_config.json`, and a Llama-style
//!   `tokenizer.json`.
//!
//! `tokenizer.json` is [`super::tokenizer_json`]'s, for [`TokenizerJsonTarget::HfDirectory`].

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{gpt2_tokenizer_json, llama_tokenizer_json, TokenizerJsonTarget};
use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// The files to write into the HF directory.
pub struct HfTokenizerFiles {
    pub tokenizer_json: Option<Value>,
    pub tokenizer_config: Value,
    pub tokenizer_model: Option<Vec<u8>>,
}

/// HF special-token names and the GGUF `tokenizer.ggml.*` keys holding their ids.
pub(crate) const SPECIAL_KEYS: [(&str, &str); 7] = [
    ("bos", "bos_token_id"),
    ("eos", "eos_token_id"),
    ("unk", "unknown_token_id"),
    ("sep", "seperator_token_id"),
    ("pad", "padding_token_id"),
    ("cls", "cls_token_id"),
    ("mask", "mask_token_id"),
];

/// Build the tokenizer files for `gguf`.
pub fn hf_tokenizer_files(gguf: &GgufFile) -> Result<HfTokenizerFiles> {
    let path = gguf.path();
    let bad = |m: String| FormatError::Tokenizer { path: path.into(), message: m };
    let strings = |k: &str| -> Option<Vec<String>> {
        gguf.get(k)?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens").ok_or_else(|| bad("no tokenizer.ggml.tokens".into()))?;
    let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(a) => a.iter().map(|v| v.as_f64().map_or(1, |f| f as i64)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length".into()));
    }
    let model = gguf.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
    let mut tc = Map::new();
    if let Some(b) = gguf.get("tokenizer.ggml.add_space_prefix").and_then(GgufValue::as_bool) {
        tc.insert("add_prefix_space".into(), json!(b));
    }
    for f in ["bos", "eos"] {
        if let Some(b) = gguf.get(&format!("tokenizer.ggml.add_{f}_token")).and_then(GgufValue::as_bool) {
            tc.insert(format!("add_{f}_token"), json!(b));
        }
    }
    let special_id = |key: &str| gguf.get(&format!("tokenizer.ggml.{key}")).and_then(GgufValue::as_u64);
    for (typ, key) in SPECIAL_KEYS {
        if let Some(t) = special_id(key).and_then(|id| tokens.get(id as usize)) {
            tc.insert(format!("{typ}_token"), json!(t));
        }
    }
    if let Some(t) = gguf.get("tokenizer.chat_template").and_then(GgufValue::as_str) {
        tc.insert("chat_template".into(), json!(t));
    }
    tc.insert("clean_up_tokenization_spaces".into(), json!(false));
    match model {
        "gpt2" => {
            let pre = gguf.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("");
            let merges = strings("tokenizer.ggml.merges").unwrap_or_default();
            let target = TokenizerJsonTarget::HfDirectory { bos: added_bos(&tc) };
            let tj = gpt2_tokenizer_json(&tokens, &types, &merges, pre, target).map_err(bad)?;
            let mut decoder = Map::new();
            for a in tj["added_tokens"].as_array().into_iter().flatten() {
                decoder.insert(a["id"].to_string(), a.clone());
            }
            tc.insert("added_tokens_decoder".into(), Value::Object(decoder));
            tc.insert("tokenizer_class".into(), json!("GPT2Tokenizer"));
            Ok(HfTokenizerFiles {
                tokenizer_json: Some(tj),
                tokenizer_config: Value::Object(tc),
                tokenizer_model: None,
            })
        }
        "llama" => {
            // One score a token (missing ones 0), as the ModelProto holds them.
            let mut scores: Vec<f64> = match gguf.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
                Some(a) => a.iter().map(|v| f64::from(v.as_f64().unwrap_or(0.0) as f32)).collect(),
                None => Vec::new(),
            };
            scores.resize(tokens.len(), 0.0);
            tc.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
            let add_prefix = tc.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true);
            let proto = sentencepiece_model(&tokens, &scores, &types, add_prefix);
            let unk = tc.get("unk_token").and_then(Value::as_str);
            let target = TokenizerJsonTarget::HfDirectory { bos: added_bos(&tc) };
            let tj = llama_tokenizer_json(&tokens, &scores, &types, unk, add_prefix, target).map_err(bad)?;
            Ok(HfTokenizerFiles {
                tokenizer_json: Some(tj),
                tokenizer_config: Value::Object(tc),
                tokenizer_model: Some(proto),
            })
        }
        other => Err(bad(format!("tokenizer.ggml.model '{other}' cannot be written as an HF tokenizer"))),
    }
}

/// The BOS text for the tokenizer.json post-processor: `bos_token` when `add_bos_token` is set.
fn added_bos(tc: &Map<String, Value>) -> Option<&str> {
    let add_bos = tc.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
    tc.get("bos_token").and_then(Value::as_str).filter(|_| add_bos)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

/// A SentencePiece `ModelProto` with these pieces (BPE model, byte fallback if there are BYTE pieces,
/// identity normalization with `add_dummy_prefix = add_prefix`).
fn sentencepiece_model(tokens: &[String], scores: &[f64], types: &[i64], add_prefix: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let mut p = Vec::new();
        put_bytes(&mut p, 1, t.as_bytes());
        put_varint(&mut p, 2 << 3 | 5);
        p.extend_from_slice(&(scores.get(i).copied().unwrap_or(0.0) as f32).to_le_bytes());
        let ty = types.get(i).copied().unwrap_or(1);
        if ty != 1 {
            put_uint(&mut p, 3, ty.clamp(1, 6) as u64);
        }
        put_bytes(&mut out, 1, &p);
    }
    let mut trainer = Vec::new();
    put_uint(&mut trainer, 3, 2); // model_type: BPE
    put_uint(&mut trainer, 4, tokens.len() as u64); // vocab_size
    if types.contains(&6) {
        put_uint(&mut trainer, 35, 1); // byte_fallback
    }
    put_bytes(&mut out, 2, &trainer);
    let mut norm = Vec::new();
    put_bytes(&mut norm, 1, b"identity");
    put_uint(&mut norm, 3, u64::from(add_prefix)); // add_dummy_prefix
    put_uint(&mut norm, 4, 0); // remove_extra_whitespaces
    put_bytes(&mut out, 3, &norm);
    out
}

/// Write `files` into `dir` (atomically per file).
pub fn write_tokenizer_files(dir: &Path, files: &HfTokenizerFiles) -> Result<()> {
    let json_file = |name: &str, v: &Value| -> Result<()> {
        let p = dir.join(name);
        let text =
            serde_json::to_vec_pretty(v).map_err(|e| FormatError::Json { path: p.clone(), message: e.to_string() })?;
        let mut f = crate::AtomicFile::create(&p)?;
        f.write_all(&text)?;
        f.commit()
    };
    if let Some(tj) = &files.tokenizer_json {
        json_file("tokenizer.json", tj)?;
    }
    json_file("tokenizer_config.json", &files.tokenizer_config)?;
    if let Some(m) = &files.tokenizer_model {
        let mut f = crate::AtomicFile::create(dir.join("tokenizer.model"))?;
        f.write_all(m)?;
        f.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_model_round_trips_through_the_parser() {
        let toks = vec!["<unk>".to_string(), "<0x0A>".into(), "\u{2581}a".into()];
        let bytes = sentencepiece_model(&toks, &[0.0, 0.0, -2.5], &[2, 6, 1], true);
        let p = super::super::parse_pieces(Path::new("m"), &bytes).unwrap();
        assert_eq!(
            p.iter().map(|p| (p.piece.as_str(), p.score, p.kind)).collect::<Vec<_>>(),
            [("<unk>", 0.0, 2), ("<0x0A>", 0.0, 6), ("\u{2581}a", -2.5, 1)]
        );
    }
}
