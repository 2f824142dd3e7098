//! Tokenization with the `tokenizers` crate, from a HF `tokenizer.json` or rebuilt from a GGUF's
//! `tokenizer.ggml.*` metadata the way llama.cpp reads it (`src/llama-vocab.cpp` at commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, with the pre-tokenizer regexes llama.cpp selects by
//!   `tokenizer.ggml.pre` (unknown names are an error rather than a silent mis-tokenization).
//! - `llama`: SentencePiece. llama.cpp merges the adjacent pair whose merged piece has the highest score;
//!   that is BPE with merges ranked by the merged piece's score, so the merges are derived from the scores
//!   (as HF's `SentencePieceExtractor` does), with `▁` for spaces, a `▁` prefix, and byte fallback.
//!
//! Special tokens are not parsed out of the text (llama.cpp's `parse_special = false` in perplexity), and the
//! BOS token is added here, not by a post-processor, when the metadata says the model adds it.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::vocab::{ChatTemplate, SpecialVocab};
use serde_json::{json, Map, Value};

use crate::error::{EvalError, Result};

/// llama.cpp's token type for byte-fallback tokens (`LLAMA_TOKEN_TYPE_BYTE`).
const TOKEN_TYPE_BYTE: i64 = 6;

/// Llama 3's.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's.
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A model's tokenizer plus its BOS rule.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
    n_vocab: usize,
    /// The model's chat template (GGUF `tokenizer.chat_template`, or the HF directory's), if any.
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("bos", &self.bos).field("add_bos", &self.add_bos).finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// The tokenizer of a GGUF file or a HF model directory (its `tokenizer.json`).
    pub fn load(path: &Path) -> Result<Tokenizer> {
        if path.is_dir() {
            Tokenizer::from_hf_dir(path)
        } else {
            Tokenizer::from_gguf(&GgufFile::open(path)?)
        }
    }

    /// Rebuild the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let path = file.path().to_path_buf();
        let err = |message: String| EvalError::Tokenizer { path: path.clone(), message };
        let get = |k: &str| file.get(&format!("tokenizer.ggml.{k}"));
        let model = get("model").and_then(GgufValue::as_str).ok_or_else(|| err("no tokenizer.ggml.model".into()))?;
        let tokens = strings(get("tokens")).ok_or_else(|| err("no tokenizer.ggml.tokens".into()))?;
        let bos = get("bos_token_id").and_then(GgufValue::as_u64).and_then(|v| u32::try_from(v).ok());
        let (json, default_add_bos) = match model {
            "gpt2" => {
                let merges = strings(get("merges")).ok_or_else(|| err("no tokenizer.ggml.merges".into()))?;
                let pre = get("pre").and_then(GgufValue::as_str).unwrap_or("default");
                (bpe_json(&tokens, &merges, pre).map_err(err)?, matches!(pre, "llama3" | "llama-bpe"))
            }
            "llama" => {
                let scores = get("scores")
                    .and_then(GgufValue::as_array)
                    .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect::<Vec<_>>())
                    .ok_or_else(|| err("no tokenizer.ggml.scores".into()))?;
                let types: Vec<i64> = get("token_type")
                    .and_then(GgufValue::as_array)
                    .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
                    .unwrap_or_else(|| vec![1; tokens.len()]);
                let add_space = get("add_space_prefix").and_then(GgufValue::as_bool).unwrap_or(true);
                let unk = get("unknown_token_id").and_then(GgufValue::as_u64).unwrap_or(0) as usize;
                (spm_json(&tokens, &scores, &types, unk, add_space).map_err(err)?, true)
            }
            other => return Err(err(format!("tokenizer model '{other}' is not supported (gpt2, llama)"))),
        };
        let add_bos = get("add_bos_token").and_then(GgufValue::as_bool).unwrap_or(default_add_bos);
        if get("add_eos_token").and_then(GgufValue::as_bool) == Some(true) {
            return Err(err("the vocabulary adds EOS, which perplexity does not support (as llama.cpp)".into()));
        }
        if add_bos && bos.is_none_or(|b| b as usize >= tokens.len()) {
            return Err(err("add_bos_token is set but bos_token_id is missing or out of range".into()));
        }
        let inner = build(&path, &json)?;
        let chat_template = file.get("tokenizer.chat_template").and_then(GgufValue::as_str).map(str::to_owned);
        Ok(Tokenizer { inner, bos, add_bos, n_vocab: tokens.len(), chat_template })
    }

    /// A HF directory's `tokenizer.json`. Its post-processor's leading special token (found by encoding a
    /// probe with and without special tokens) becomes the BOS this type adds itself.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let err = |e: tokenizers::Error| EvalError::Tokenizer { path: path.clone(), message: e.to_string() };
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(err)?;
        let with = inner.encode_fast("a", true).map_err(err)?;
        let without = inner.encode_fast("a", false).map_err(err)?;
        let bos =
            (with.len() == without.len() + 1 && with.get_ids()[1..] == *without.get_ids()).then(|| with.get_ids()[0]);
        let n_vocab = inner.get_vocab_size(true);
        // A template that cannot be read only means none is offered; the tokenizer itself is fine.
        let chat_template = match SpecialVocab::load(dir, None, false).ok().and_then(|s| s.chat_template) {
            Some(ChatTemplate::One(t)) => Some(t),
            Some(ChatTemplate::Named(named)) => named.into_iter().find(|(n, _)| n == "default").map(|(_, t)| t),
            None => None,
        };
        Ok(Tokenizer { inner, bos, add_bos: bos.is_some(), n_vocab, chat_template })
    }

    /// A SentencePiece vocabulary as llama.cpp's `llama` tokenizer model holds it: pieces, scores, token
    /// types (llama.cpp's `LLAMA_TOKEN_TYPE_*`), the unknown token, and whether a space is prepended.
    pub fn from_sentencepiece(
        tokens: &[String],
        scores: &[f64],
        types: &[i64],
        unk: usize,
        add_space_prefix: bool,
        bos: Option<u32>,
    ) -> Result<Tokenizer> {
        let path = PathBuf::new();
        let json = spm_json(tokens, scores, types, unk, add_space_prefix)
            .map_err(|message| EvalError::Tokenizer { path: path.clone(), message })?;
        let inner = build(&path, &json)?;
        Ok(Tokenizer { inner, bos, add_bos: bos.is_some(), n_vocab: tokens.len(), chat_template: None })
    }

    /// Tokenize `text`; with `add_special`, prepend BOS when the model adds it (llama.cpp's `common_tokenize`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| EvalError::Tokenizer { path: PathBuf::new(), message: e.to_string() })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| EvalError::Tokenizer { path: PathBuf::new(), message: e.to_string() })
    }

    /// The BOS id, when the model adds one (perplexity replaces the first token of each chunk with it).
    pub fn bos_if_added(&self) -> Option<u32> {
        if self.add_bos {
            self.bos
        } else {
            None
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The id of the token whose text is exactly `piece` (e.g. a chat template's `<|im_start|>`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// The model's chat template (Jinja source), when the model ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

fn strings(v: Option<&GgufValue>) -> Option<Vec<String>> {
    v?.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
}

fn build(path: &Path, json: &Value) -> Result<tokenizers::Tokenizer> {
    let text = json.to_string();
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| EvalError::Tokenizer { path: path.into(), message: format!("building the tokenizer: {e}") })
}

fn vocab_map(tokens: &[String]) -> Map<String, Value> {
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
    }
    vocab
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = `pre`.
fn pre_tokenizer(pre: &str) -> Result<Value, String> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" | "phi-2" | "jais" | "olmo" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "llama3" | "llama-bpe" | "falcon3" | "pixtral" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        "qwen2" | "deepseek-r1-qwen" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
        }
        other => return Err(format!("pre-tokenizer '{other}' is not supported yet")),
    })
}

/// tokenizer.json for a byte-level BPE vocabulary.
fn bpe_json(tokens: &[String], merges: &[String], pre: &str) -> Result<Value, String> {
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])).ok_or_else(|| format!("malformed merge '{m}'")))
        .collect::<Result<_, _>>()?;
    Ok(json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map(tokens), "merges": merges
        }
    }))
}

/// tokenizer.json for a SentencePiece vocabulary: merges derived from the merged pieces' scores.
fn spm_json(tokens: &[String], scores: &[f64], types: &[i64], unk: usize, add_space: bool) -> Result<Value, String> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(format!("{} tokens but {} scores and {} types", tokens.len(), scores.len(), types.len()));
    }
    let index: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    // (score, merged id, left id, right id): best score first, then as HF orders within one piece.
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] == TOKEN_TYPE_BYTE {
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
    let merges: Vec<Value> = merges.iter().map(|&(_, _, l, r)| json!([tokens[l], tokens[r]])).collect();
    let mut normalizers = Vec::new();
    if add_space {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": tokens.get(unk), "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_map(tokens), "merges": merges
        }
    }))
}
