//! What an architecture's converter class does with config.json beyond the shared `TextModel` path: its own
//! hyper-parameter layout, the tensors it generates, and the config values this port refuses because
//! llama.cpp's converter or graph would not honour them (llama.cpp `conversion/granite.py`, `llama.py`,
//! `phi.py` at 0c1e57098, the commit whose converter the architecture fixtures are checked against).
//!
//! Invariant: [`check_config`] runs on config.json alone, before any tensor is read, and names the key it
//! refuses; everything it accepts converts byte-identically and evaluates as llama.cpp's graph does.

use serde_json::Value;

use super::{phi3, smollm3, Architecture, HfConfig};
use crate::error::{FormatError, Result};

/// The llama.cpp converter class behind an architecture, where it matters beyond tensor rules and extra keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Converter {
    /// `TextModel.set_gguf_parameters` then the architecture's extra keys (`LlamaModel`, `Qwen2Model`, ...).
    Text,
    /// `GraniteModel`: `head_dim` is popped from the config before anything reads it (so no
    /// `attention.key_length` and `hidden_size / num_attention_heads` everywhere), then `LlamaModel`'s path.
    Granite,
    /// `SmolLM3Model`: `LlamaModel`'s path; llama.cpp's graph hard-codes every 4th layer as NoPE
    /// (`n_no_rope_layer_step = 4`), so configs whose `no_rope_layers` say otherwise are refused.
    SmolLM3,
    /// `Phi3MiniModel`: its own `set_gguf_parameters` (no `TextModel` keys), LongRoPE factor tensors and
    /// `rope.scaling.attn_factor` from `generate_extra_tensors`, fused `qkv_proj`/`gate_up_proj` kept fused.
    Phi3,
}

/// Whether the converter class of HF architecture `hf_arch` ignores `head_dim` (Granite).
pub(super) fn drops_head_dim(hf_arch: &str) -> bool {
    super::ARCHITECTURES.iter().any(|a| a.converter == Converter::Granite && a.hf_names.contains(&hf_arch))
}

/// Refuse config.json values the architecture's converter class or llama.cpp's graph would not honour.
pub fn check_config(arch: &Architecture, cfg: &HfConfig) -> Result<()> {
    match arch.converter {
        Converter::Text => Ok(()),
        Converter::Granite => refuse_true(cfg, &["mlp_bias"]),
        Converter::SmolLM3 => smollm3::check_config(cfg),
        Converter::Phi3 => phi3::check_config(cfg).map(|_| ()),
    }
}

/// The LongRoPE factors the converter generates for `cfg` (Phi-3 with `long_factor`), `None` for others.
pub fn longrope_factors(arch: &Architecture, cfg: &HfConfig) -> Result<Option<LongRopeFactors>> {
    match arch.converter {
        Converter::Phi3 => Ok(phi3::phi3_rope(cfg)?.longrope),
        _ => Ok(None),
    }
}

/// LongRoPE as `Phi3MiniModel.generate_extra_tensors` writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRopeFactors {
    /// `rope_factors_long.weight` (`n_rot / 2` values).
    pub long: Vec<f32>,
    /// `rope_factors_short.weight`.
    pub short: Vec<f32>,
    /// `rope.scaling.attn_factor`: `sqrt(1 + ln(scale) / ln(original))` with `scale = max_position_embeddings /
    /// original_max_position_embeddings` (1 when `scale <= 1`).
    pub attn_factor: f64,
}

pub(super) fn err(cfg: &HfConfig, key: &str, message: impl Into<String>) -> FormatError {
    FormatError::Config { path: cfg.path.clone(), key: key.into(), message: message.into() }
}

/// Refuse each key of `keys` that is `true`.
pub(super) fn refuse_true(cfg: &HfConfig, keys: &[&str]) -> Result<()> {
    for k in keys {
        if cfg.raw.get(*k).and_then(Value::as_bool) == Some(true) {
            return Err(err(cfg, k, "is true; llama.cpp's graph for this architecture has no such tensors"));
        }
    }
    Ok(())
}
