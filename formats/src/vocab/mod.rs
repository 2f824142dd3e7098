//! Tokenizer metadata for GGUF, as llama.cpp's converter writes it (`conversion/base.py` `_set_vocab_*`,
//! `conversion/llama.py` `LlamaModel.set_vocab`, `gguf-py/gguf/vocab.py` `SpecialVocab`, at
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62), and the reverse (tokenizer.json + tokenizer_config.json
//! rebuilt from a GGUF; [`tokenizer_json`] builds tokenizer.json, also for the evaluator). Two vocabularies
//! are supported: SentencePiece (`tokenizer.model`, `llama`) and byte-level BPE (`tokenizer.json`, `gpt2`).

mod bpe;
mod special;
mod spm;
mod to_hf;
pub mod tokenizer_json;

pub use bpe::{identify_pre_tokenizer, PRE_TOKENIZERS};
pub use special::{ChatTemplate, SpecialVocab};
pub use spm::{parse_pieces, Piece};
pub(crate) use to_hf::SPECIAL_KEYS;
pub use to_hf::{hf_tokenizer_files, write_tokenizer_files, HfTokenizerFiles};
pub use tokenizer_json::{gpt2_tokenizer_json, llama_tokenizer_json, TokenizerJsonTarget};

use std::path::Path;

use crate::arch::{HfConfig, VocabStyle};
use crate::error::{FormatError, Result};
use crate::gguf::GgufArray;
use crate::kv::KvList;

/// `gguf.TokenType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// A vocabulary: token texts, optional scores (SentencePiece only) and types, indexed by id.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub types: Vec<TokenType>,
}

/// `TextModel.does_token_look_special`.
pub fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// Write the tokenizer keys for the model in `dir`, after the hyperparameters.
pub fn tokenizer_metadata(kv: &mut KvList, dir: &Path, cfg: &HfConfig, style: VocabStyle) -> Result<()> {
    let tc_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tc_path.is_file() { Some(crate::hf::read_json(&tc_path)?) } else { None };
    if style == VocabStyle::Llama {
        if let Some(b) = tokenizer_config.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(|v| v.as_bool()) {
            kv.bool("tokenizer.ggml.add_space_prefix", b);
        }
    }
    if style == VocabStyle::Gemma && !dir.join("tokenizer.model").is_file() {
        return Err(FormatError::Tokenizer {
            path: dir.into(),
            message: "Gemma needs tokenizer.model (the BPE fallback of Gemma 3's converter, which also trims the \
                      embedding rows, is not supported)"
                .into(),
        });
    }
    let gpt2_class = tokenizer_config.as_ref().and_then(|c| c.get("tokenizer_class")).and_then(|c| c.as_str())
        == Some("GPT2Tokenizer");
    if style == VocabStyle::Phi3 && !gpt2_class {
        if !dir.join("tokenizer.model").is_file() {
            return Err(FormatError::Tokenizer {
                path: dir.into(),
                message: "no tokenizer.model (Phi-3's converter needs it unless tokenizer_class is GPT2Tokenizer)"
                    .into(),
            });
        }
        let v = spm::phi3_vocab(dir, cfg.vocab_size)?;
        kv.string("tokenizer.ggml.model", "llama");
        kv.string("tokenizer.ggml.pre", "default");
        write_vocab(kv, &v);
        SpecialVocab::load(dir, Some(v.tokens.len()), false)?.add_to(kv);
    } else if !matches!(style, VocabStyle::Phi3 | VocabStyle::Gpt2) && dir.join("tokenizer.model").is_file() {
        // `TextModel.set_vocab` (VocabStyle::Gpt2) reads tokenizer.json even where a tokenizer.model exists.
        let v = spm::sentencepiece_vocab(dir, cfg.vocab_size)?;
        kv.string("tokenizer.ggml.model", "llama");
        kv.string("tokenizer.ggml.pre", "default");
        write_vocab(kv, &v);
        SpecialVocab::load(dir, Some(v.tokens.len()), false)?.add_to(kv);
    } else if dir.join("tokenizer.json").is_file() {
        let (v, pre) = bpe::gpt2_vocab(dir, cfg)?;
        kv.string("tokenizer.ggml.model", "gpt2");
        kv.string("tokenizer.ggml.pre", pre);
        write_vocab(kv, &v);
        SpecialVocab::load(dir, None, true)?.add_to(kv);
    } else {
        return Err(FormatError::Tokenizer {
            path: dir.into(),
            message: "no tokenizer.model or tokenizer.json: cannot write the vocabulary".into(),
        });
    }
    if style == VocabStyle::Llama && cfg.vocab_size == 49152 {
        // LlamaModel.set_vocab: "Apply to granite small models only" (also hits SmolLM).
        kv.bool("tokenizer.ggml.add_bos_token", false);
    }
    if style == VocabStyle::Gemma {
        kv.bool("tokenizer.ggml.add_space_prefix", false);
    }
    Ok(())
}

fn write_vocab(kv: &mut KvList, v: &Vocab) {
    kv.strings("tokenizer.ggml.tokens", v.tokens.clone());
    if let Some(scores) = &v.scores {
        kv.array("tokenizer.ggml.scores", GgufArray::F32(scores.clone()));
    }
    kv.array("tokenizer.ggml.token_type", GgufArray::I32(v.types.iter().map(|&t| t as i32).collect()));
}
