//! The reverse of this module: HF tokenizer files rebuilt from a GGUF's `tokenizer.*` keys, such that
//! converting them back gives the same tokenizer metadata.
//!
//! - `gpt2`: `tokenizer.json` (byte-level BPE with the vocabulary, merges as pairs, CONTROL/USER_DEFINED tokens
//!   as added tokens, the pre-tokenizer of [`super::PRE_TOKENIZERS`] for `tokenizer.ggml.pre`) and
//!   `tokenizer_config.json` (special tokens, add-BOS/EOS, prefix space, chat template). `[PAD{i}]` UNUSED
//!   tokens are left out of the vocabulary, so they come back as the same holes.
//! - `llama` (SentencePiece): `tokenizer.model` (a `ModelProto` with the pieces, scores and types, BPE model
//!   type, byte fallback when there are BYTE pieces), `tokenizer_config.json`, and a Llama-style
//!   `tokenizer.json` whose merges are derived from the pieces as transformers' `SentencePieceExtractor` does
//!   (every split of a piece into two pieces, in piece-id order; this reproduces stories260K's file exactly).

use std::path::Path;

use serde_json::{json, Map, Value};

use super::PRE_TOKENIZERS;
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
            let pre_tok = PRE_TOKENIZERS
                .iter()
                .find(|p| p.name == pre)
                .ok_or_else(|| bad(format!("tokenizer.ggml.pre '{pre}' has no known HF pre-tokenizer to write")))?;
            let merges = strings("tokenizer.ggml.merges").unwrap_or_default();
            let bos = special_id("bos_token_id").and_then(|id| tokens.get(id as usize));
            let add_bos = tc.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
            let tj = gpt2_tokenizer_json(&tokens, &types, &merges, (pre_tok.pre_tokenizer)(), bos.filter(|_| add_bos))
                .map_err(bad)?;
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
            let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
                Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                None => vec![0.0; tokens.len()],
            };
            tc.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
            let add_prefix = tc.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true);
            let proto = sentencepiece_model(&tokens, &scores, &types, add_prefix);
            let bos = special_id("bos_token_id").and_then(|id| tokens.get(id as usize));
            let unk = special_id("unknown_token_id").and_then(|id| tokens.get(id as usize));
            let add_bos = tc.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
            let tj = spm_tokenizer_json(&tokens, &types, add_prefix, bos.filter(|_| add_bos), unk);
            Ok(HfTokenizerFiles {
                tokenizer_json: Some(tj),
                tokenizer_config: Value::Object(tc),
                tokenizer_model: Some(proto),
            })
        }
        other => Err(bad(format!("tokenizer.ggml.model '{other}' cannot be written as an HF tokenizer"))),
    }
}

fn is_pad_hole(i: usize, t: &str, ty: i64) -> bool {
    ty == 5 && t == format!("[PAD{i}]")
}

fn gpt2_tokenizer_json(
    tokens: &[String],
    types: &[i64],
    merges: &[String],
    pre_tokenizer: Value,
    bos: Option<&String>,
) -> std::result::Result<Value, String> {
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        if is_pad_hole(i, t, ty) {
            continue;
        }
        if ty == 3 || ty == 4 {
            added.push(added_token(i, t, ty));
        }
        if vocab.insert(t.clone(), json!(i)).is_some() && ty != 3 && ty != 4 {
            return Err(format!("token '{t}' appears twice in the vocabulary"));
        }
    }
    let merges: Vec<Value> =
        merges.iter().map(|m| m.split_once(' ').map_or_else(|| json!([m, ""]), |(a, b)| json!([a, b]))).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let post = match bos {
        Some(b) => bos_template(b, tokens.iter().position(|t| t == b)),
        None => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// The template post-processor HF's Llama tokenizers use when they add BOS.
fn bos_template(bos: &str, bos_id: Option<usize>) -> Value {
    json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}})
}

/// An `added_tokens` entry; USER_DEFINED (4) tokens are not special.
fn added_token(i: usize, t: &str, ty: i64) -> Value {
    json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": ty != 4})
}

fn spm_tokenizer_json(
    tokens: &[String],
    types: &[i64],
    add_prefix: bool,
    bos: Option<&String>,
    unk: Option<&String>,
) -> Value {
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        if matches!(ty, 2..=4) {
            added.push(added_token(i, t, ty));
        }
        vocab.entry(t.clone()).or_insert(json!(i));
    }
    let id = |t: &str| vocab.get(t).and_then(Value::as_u64);
    let mut merges = Vec::new();
    for t in tokens {
        let mut local: Vec<(u64, u64, &str, &str)> = t
            .char_indices()
            .skip(1)
            .filter_map(|(c, _)| {
                let (l, r) = t.split_at(c);
                Some((id(l)?, id(r)?, l, r))
            })
            .collect();
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(_, _, l, r)| json!([l, r])));
    }
    let mut normalizers = Vec::new();
    if add_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": bos.map(|b| bos_template(b, tokens.iter().position(|t| t == b))),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": usize::from(add_prefix), "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
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
fn sentencepiece_model(tokens: &[String], scores: &[f32], types: &[i64], add_prefix: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let mut p = Vec::new();
        put_bytes(&mut p, 1, t.as_bytes());
        put_varint(&mut p, 2 << 3 | 5);
        p.extend_from_slice(&scores.get(i).copied().unwrap_or(0.0).to_le_bytes());
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
