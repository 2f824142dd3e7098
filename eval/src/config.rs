//! Hyperparameters of a Llama-family model, read from GGUF metadata (llama.cpp's key names) or from a HF
//! `config.json`, and checked before any tensor is read.

use std::path::Path;

use quantforge_formats::gguf::{GgufFile, GgufValue};
use serde_json::Value;

use crate::error::{EvalError, Result};

/// Architectures the forward pass runs (GGUF `general.architecture` names).
pub const SUPPORTED_ARCHITECTURES: &str = "llama";

/// What the forward pass needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when below `n_head`).
    pub n_head_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Rotated dimensions of each head (`rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Context the model was trained with.
    pub n_ctx_train: usize,
    /// RoPE base frequency.
    pub rope_freq_base: f32,
    /// RoPE linear scaling factor applied to positions (1 = none).
    pub rope_freq_scale: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
}

impl LlamaConfig {
    /// Read the config of a GGUF file; fails on other architectures and inconsistent numbers.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let path = file.path();
        let arch = file.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
        if arch != "llama" {
            return Err(EvalError::UnsupportedArchitecture {
                path: path.into(),
                arch: arch.into(),
                supported: SUPPORTED_ARCHITECTURES,
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let missing = |k: String| EvalError::MissingKey { path: path.into(), key: k };
        let uint = |k: &str| -> Result<usize> {
            let k = key(k);
            file.get(&k).and_then(GgufValue::as_u64).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| missing(k))
        };
        let float = |k: &str| file.get(&key(k)).and_then(GgufValue::as_f64);
        let n_embd = uint("embedding_length")?;
        let n_head = uint("attention.head_count")?;
        let n_head_kv = uint("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = match uint("attention.key_length") {
            Ok(v) => v,
            Err(_) => n_embd.checked_div(n_head).unwrap_or(0),
        };
        let rope_freq_scale = match file.get(&key("rope.scaling.type")).and_then(GgufValue::as_str) {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = float("rope.scaling.factor").unwrap_or(1.0);
                if factor > 0.0 {
                    (1.0 / factor) as f32
                } else {
                    1.0
                }
            }
            Some(other) => {
                return Err(EvalError::BadConfig {
                    path: path.into(),
                    message: format!("RoPE scaling '{other}' is not supported yet"),
                })
            }
        };
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.ne.get(1).copied())
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| EvalError::MissingTensor { path: path.into(), name: "token_embd.weight".into() })?;
        let cfg = LlamaConfig {
            n_layer: uint("block_count")?,
            n_embd,
            n_ff: uint("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot: uint("rope.dimension_count").unwrap_or(head_dim),
            n_vocab,
            n_ctx_train: uint("context_length")?,
            rope_freq_base: float("rope.freq_base").unwrap_or(10000.0) as f32,
            rope_freq_scale,
            rms_eps: float("attention.layer_norm_rms_epsilon")
                .ok_or_else(|| missing(key("attention.layer_norm_rms_epsilon")))? as f32,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Read a HF `LlamaForCausalLM` `config.json`.
    pub fn from_hf(path: &Path, config: &Value) -> Result<LlamaConfig> {
        let archs = config.get("architectures").and_then(Value::as_array);
        let arch = archs.and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
        if arch != "LlamaForCausalLM" {
            return Err(EvalError::UnsupportedArchitecture {
                path: path.into(),
                arch: arch.into(),
                supported: "LlamaForCausalLM",
            });
        }
        let missing = |k: &str| EvalError::MissingKey { path: path.into(), key: k.into() };
        let uint = |k: &str| -> Result<usize> {
            config.get(k).and_then(Value::as_u64).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| missing(k))
        };
        if config.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return Err(EvalError::BadConfig {
                path: path.into(),
                message: "rope_scaling is not supported yet".into(),
            });
        }
        let n_embd = uint("hidden_size")?;
        let n_head = uint("num_attention_heads")?;
        let head_dim = uint("head_dim").unwrap_or_else(|_| n_embd.checked_div(n_head).unwrap_or(0));
        let cfg = LlamaConfig {
            n_layer: uint("num_hidden_layers")?,
            n_embd,
            n_ff: uint("intermediate_size")?,
            n_head,
            n_head_kv: uint("num_key_value_heads").unwrap_or(n_head),
            head_dim,
            n_rot: head_dim,
            n_vocab: uint("vocab_size")?,
            n_ctx_train: uint("max_position_embeddings")?,
            rope_freq_base: config.get("rope_theta").and_then(Value::as_f64).unwrap_or(10000.0) as f32,
            rope_freq_scale: 1.0,
            rms_eps: config.get("rms_norm_eps").and_then(Value::as_f64).ok_or_else(|| missing("rms_norm_eps"))? as f32,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Err(EvalError::BadConfig { path: path.into(), message });
        if self.n_layer == 0 || self.n_embd == 0 || self.n_ff == 0 || self.n_head == 0 || self.n_head_kv == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!("{} heads are not a multiple of {} KV heads", self.n_head, self.n_head_kv));
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || self.n_rot > self.head_dim
            || !self.n_rot.is_multiple_of(2)
        {
            return bad(format!("head size {} / rotated dims {} are not usable", self.head_dim, self.n_rot));
        }
        if self.n_vocab == 0 || self.n_ctx_train == 0 {
            return bad("empty vocabulary or context".into());
        }
        Ok(())
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key and value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
