//! A Hugging Face `tokenizer.json` rebuilt from a GGUF vocabulary (`tokenizer.ggml.*`): the one
//! implementation behind `convert --to hf` ([`TokenizerJsonTarget::HfDirectory`], the file written into the
//! model directory) and the evaluator ([`TokenizerJsonTarget::LlamaCpp`], loaded into the `tokenizers` crate
//! to tokenize as llama.cpp's `src/llama-vocab.cpp` does at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges` (pairs), with the pre-tokenizer of
//!   [`PRE_TOKENIZERS`] that `tokenizer.ggml.pre` names.
//! - `llama` (SentencePiece): llama.cpp merges the adjacent pair whose merged piece has the highest score;
//!   that is BPE with merges ranked by the merged piece's score, so the merges are derived from the scores as
//!   transformers' `SentencePieceExtractor` does when given them (every split of a piece into two pieces, best
//!   score first, then by piece id, then by the halves' ids; BYTE pieces are never a merge result), with `▁`
//!   for spaces, a `▁` prefix when the vocabulary adds one, and byte fallback.
//!
//! The two targets share the vocabulary, merges, normalizer, pre-tokenizer and decoder, and differ in what
//! surrounds them (see [`TokenizerJsonTarget`]).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{TokenType, PRE_TOKENIZERS};

/// Who a rebuilt `tokenizer.json` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerJsonTarget<'a> {
    /// A Hugging Face model directory (`convert --to hf`), such that converting it back gives the same
    /// tokenizer metadata: CONTROL and USER_DEFINED tokens (and UNKNOWN ones of SentencePiece) as
    /// `added_tokens`; HF's post-processor, a template adding `bos` when given; `[PAD{i}]` UNUSED tokens left
    /// out of the vocabulary (they come back as the same holes) and a repeated ordinary BPE token refused;
    /// `tokenizer.ggml.pre` only under its own name in [`PRE_TOKENIZERS`].
    HfDirectory { bos: Option<&'a str> },
    /// Tokenizing as llama.cpp's perplexity does (`parse_special = false`, BOS added by the caller): no added
    /// tokens (special tokens are plain text), no post-processor, every token in the vocabulary (a repeated
    /// text keeps its last id), and llama.cpp's other names for a pre-tokenizer accepted.
    LlamaCpp,
}

/// `tokenizer.json` for a byte-level BPE (`gpt2`) vocabulary: `tokens` and their llama.cpp `types`, `merges`
/// as `"left right"` strings, and the pre-tokenizer named `pre` (`tokenizer.ggml.pre`).
pub fn gpt2_tokenizer_json(
    tokens: &[String],
    types: &[i64],
    merges: &[String],
    pre: &str,
    target: TokenizerJsonTarget,
) -> Result<Value, String> {
    let pre_tokenizer = PRE_TOKENIZERS
        .iter()
        .find(|p| p.name == pre || (target == TokenizerJsonTarget::LlamaCpp && p.llama_cpp_aliases.contains(&pre)))
        .map(|p| (p.pre_tokenizer)())
        .ok_or_else(|| match target {
            TokenizerJsonTarget::HfDirectory { .. } => {
                format!("tokenizer.ggml.pre '{pre}' has no known HF pre-tokenizer to write")
            }
            TokenizerJsonTarget::LlamaCpp => format!("pre-tokenizer '{pre}' is not supported yet"),
        })?;
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])).ok_or_else(|| format!("malformed merge '{m}'")))
        .collect::<Result<_, _>>()?;
    let hf = target != TokenizerJsonTarget::LlamaCpp;
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ty = types.get(i).copied().unwrap_or(TokenType::Normal as i64);
        let special = ty == TokenType::Control as i64 || ty == TokenType::UserDefined as i64;
        if hf && ty == TokenType::Unused as i64 && *t == format!("[PAD{i}]") {
            continue;
        }
        if hf && special {
            added.push(added_token(i, t, ty));
        }
        if vocab.insert(t.clone(), json!(i)).is_some() && hf && !special {
            return Err(format!("token '{t}' appears twice in the vocabulary"));
        }
    }
    let post_processor = match target {
        TokenizerJsonTarget::HfDirectory { bos: Some(b) } => bos_template(tokens, b),
        TokenizerJsonTarget::HfDirectory { bos: None } => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
        TokenizerJsonTarget::LlamaCpp => Value::Null,
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// `tokenizer.json` for a SentencePiece (`llama`) vocabulary: `tokens` with their `scores` and llama.cpp
/// `types`, the unknown token's text, and whether a space is prepended (`tokenizer.ggml.add_space_prefix`).
pub fn llama_tokenizer_json(
    tokens: &[String],
    scores: &[f64],
    types: &[i64],
    unk: Option<&str>,
    add_space_prefix: bool,
    target: TokenizerJsonTarget,
) -> Result<Value, String> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(format!("{} tokens but {} scores and {} types", tokens.len(), scores.len(), types.len()));
    }
    let hf = target != TokenizerJsonTarget::LlamaCpp;
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        if hf && matches!(ty, 2..=4) {
            added.push(added_token(i, t, ty));
        }
        vocab.insert(t.clone(), json!(i));
    }
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let post_processor = match target {
        TokenizerJsonTarget::HfDirectory { bos: Some(b) } => bos_template(tokens, b),
        _ => Value::Null,
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": usize::from(add_space_prefix), "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": spm_merges(tokens, scores, types)}
    }))
}

/// The merges of a SentencePiece vocabulary: every split of a non-BYTE piece into two pieces, ranked by the
/// piece's score (best first), then by piece id, then by the halves' ids.
fn spm_merges(tokens: &[String], scores: &[f64], types: &[i64]) -> Vec<Value> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    // (score, merged id, left id, right id)
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] == TokenType::Byte as i64 {
            continue;
        }
        for (pos, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(pos);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((scores[id], id, li, ri));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    merges.iter().map(|&(_, _, l, r)| json!([tokens[l], tokens[r]])).collect()
}

/// The template post-processor HF's Llama tokenizers use when they add BOS (`bos`'s first id in `tokens`).
fn bos_template(tokens: &[String], bos: &str) -> Value {
    let bos_id = tokens.iter().position(|t| t == bos);
    json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}})
}

/// An `added_tokens` entry; USER_DEFINED tokens are not special.
fn added_token(i: usize, t: &str, ty: i64) -> Value {
    json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": ty != TokenType::UserDefined as i64})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_differ_only_around_the_model() {
        let tokens = strings(&["<|endoftext|>", "a", "b", "ab", "[PAD4]", "<tool>"]);
        let types = [3, 1, 1, 1, 5, 4];
        let merges = strings(&["a b"]);
        let hf = gpt2_tokenizer_json(
            &tokens,
            &types,
            &merges,
            "llama-bpe",
            TokenizerJsonTarget::HfDirectory { bos: Some("<|endoftext|>") },
        )
        .unwrap();
        let ll = gpt2_tokenizer_json(&tokens, &types, &merges, "llama3", TokenizerJsonTarget::LlamaCpp).unwrap();
        assert_eq!(hf["pre_tokenizer"], ll["pre_tokenizer"]);
        assert_eq!(hf["decoder"], ll["decoder"]);
        assert_eq!(hf["model"]["merges"], ll["model"]["merges"]);
        assert_eq!(hf["added_tokens"].as_array().unwrap().len(), 2);
        assert_eq!(hf["added_tokens"][1]["special"], false);
        assert_eq!(hf["post_processor"]["type"], "TemplateProcessing");
        assert!(hf["model"]["vocab"].get("[PAD4]").is_none());
        assert_eq!(ll["added_tokens"], json!([]));
        assert_eq!(ll["post_processor"], Value::Null);
        assert_eq!(ll["model"]["vocab"]["[PAD4]"], 4);
        // Only the evaluator accepts llama.cpp's other names; a malformed merge is refused by both.
        let hf_target = TokenizerJsonTarget::HfDirectory { bos: None };
        let err = gpt2_tokenizer_json(&tokens, &types, &merges, "llama3", hf_target).unwrap_err();
        assert!(err.contains("no known HF pre-tokenizer"), "{err}");
        assert!(gpt2_tokenizer_json(&tokens, &types, &strings(&["ab"]), "gpt-2", hf_target).is_err());
        // A repeated ordinary token is refused for a HF directory and keeps its last id for llama.cpp.
        let twice = strings(&["a", "a"]);
        assert!(gpt2_tokenizer_json(&twice, &[1, 1], &[], "gpt-2", hf_target).is_err());
        let ll = gpt2_tokenizer_json(&twice, &[1, 1], &[], "default", TokenizerJsonTarget::LlamaCpp).unwrap();
        assert_eq!(ll["model"]["vocab"], json!({"a": 1}));
    }

    #[test]
    fn sentencepiece_merges_follow_the_scores() {
        let tokens = strings(&["<unk>", "<0x41>", "\u{2581}", "a", "b", "ab", "\u{2581}ab", "ba"]);
        let types = [2, 6, 1, 1, 1, 1, 1, 1];
        // "ba" scores above "ab", so its merge ranks first although its id is higher.
        let scores = [0.0, 0.0, -1.0, -2.0, -3.0, -5.0, -6.0, -4.0];
        let j =
            llama_tokenizer_json(&tokens, &scores, &types, Some("<unk>"), true, TokenizerJsonTarget::LlamaCpp).unwrap();
        assert_eq!(j["model"]["merges"], json!([["b", "a"], ["a", "b"], ["\u{2581}", "ab"]]));
        assert_eq!(j["model"]["unk_token"], "<unk>");
        assert_eq!(j["added_tokens"], json!([]));
        let bos = TokenizerJsonTarget::HfDirectory { bos: Some("<unk>") };
        let h = llama_tokenizer_json(&tokens, &scores, &types, None, false, bos).unwrap();
        assert_eq!(h["model"]["merges"], j["model"]["merges"]);
        assert_eq!(h["added_tokens"][0]["content"], "<unk>");
        assert_eq!(h["post_processor"]["special_tokens"]["<unk>"]["ids"], json!([0]));
        assert_eq!(h["normalizer"]["normalizers"].as_array().unwrap().len(), 1);
        assert!(llama_tokenizer_json(&tokens, &scores[1..], &types, None, true, bos).is_err());
    }
}
