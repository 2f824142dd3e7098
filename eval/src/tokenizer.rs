//! Tokenization with the `tokenizers` crate, from a HF `tokenizer.json` or rebuilt from a GGUF's
//! `tokenizer.ggml.*` metadata the way llama.cpp reads it (`src/llama-vocab.cpp` at commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62) by [`quantforge_formats::vocab::tokenizer_json`] for
//! [`TokenizerJsonTarget::LlamaCpp`]:
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, with the pre-tokenizer llama.cpp selects by
//!   `tokenizer.ggml.pre` (unknown names are an error rather than a silent mis-tokenization).
//! - `llama`: SentencePiece, as BPE with merges ranked by the merged piece's score.
//!
//! Special tokens are not parsed out of the text (llama.cpp's `parse_special = false` in perplexity), and the
//! BOS token is added here, not by a post-processor, when the metadata says the model adds it.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::vocab::{
    gpt2_tokenizer_json, llama_tokenizer_json, ChatTemplate, SpecialVocab, TokenizerJsonTarget,
};
use serde_json::Value;

use crate::error::{EvalError, Result};

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
        let types: Vec<i64> = get("token_type")
            .and_then(GgufValue::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let target = TokenizerJsonTarget::LlamaCpp;
        let (json, default_add_bos) = match model {
            "gpt2" => {
                let merges = strings(get("merges")).ok_or_else(|| err("no tokenizer.ggml.merges".into()))?;
                let pre = get("pre").and_then(GgufValue::as_str).unwrap_or("default");
                let json = gpt2_tokenizer_json(&tokens, &types, &merges, pre, target).map_err(err)?;
                (json, matches!(pre, "llama3" | "llama-bpe"))
            }
            "llama" => {
                let scores = get("scores")
                    .and_then(GgufValue::as_array)
                    .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect::<Vec<_>>())
                    .ok_or_else(|| err("no tokenizer.ggml.scores".into()))?;
                let add_space = get("add_space_prefix").and_then(GgufValue::as_bool).unwrap_or(true);
                let unk = get("unknown_token_id").and_then(GgufValue::as_u64).unwrap_or(0) as usize;
                let unk = tokens.get(unk).map(String::as_str);
                (llama_tokenizer_json(&tokens, &scores, &types, unk, add_space, target).map_err(err)?, true)
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
        let text = quantforge_formats::bounded::read_to_string_capped(
            &path,
            quantforge_formats::bounded::MAX_JSON_BYTES,
            "tokenizer.json",
        )?;
        // Parsed as JSON first: the tokenizers library panics (instead of failing) on some syntax errors
        // inside a component, such as the decoder, when it reads the text itself.
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| EvalError::Tokenizer { path: path.clone(), message: format!("invalid JSON: {e}") })?;
        let inner = serde_json::from_value::<tokenizers::Tokenizer>(json)
            .map_err(|e| EvalError::Tokenizer { path: path.clone(), message: e.to_string() })?;
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
        let unk = tokens.get(unk).map(String::as_str);
        let json = llama_tokenizer_json(tokens, scores, types, unk, add_space_prefix, TokenizerJsonTarget::LlamaCpp)
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
