//! Per-architecture values of the forward pass beyond the shared hyper-parameters, read where the registry's
//! forward-pass facts say they exist: Granite's multipliers (`{arch}.embedding_scale`, `attention.scale`,
//! `residual_scale`, `logit_scale`; `src/models/granite.cpp` at 0c1e57098) and Phi-3's LongRoPE factors
//! (`rope_factors_long.weight`/`rope_factors_short.weight`, `llama_model::get_rope_factors`).
//!
//! A HF directory gives the values convert writes for it: config.json's multipliers narrowed to f32 (a zero or
//! absent one is not written, so it is unset here too), the LongRoPE factors as `Phi3MiniModel` generates them.

use std::path::Path;

use quantforge_formats::arch::{
    longrope_factors, AttentionScale, EmbeddingScale, ForwardFacts, GgufHparams, HfConfig, HparamKey as K,
};
use quantforge_formats::gguf::GgufFile;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::gguf_tensors::gguf_vector;

/// llama.cpp pads the context to a multiple of this (`llama_context`: `GGML_PAD(n_ctx, 256)`).
pub const CONTEXT_PAD: usize = 256;

/// LongRoPE frequency factors (`n_rot / 2` each).
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
}

/// Values a block or the head uses beyond the shared hyper-parameters; the defaults change nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchExtras {
    /// Embedding rows are multiplied by it when non-zero.
    pub embedding_scale: f32,
    /// The attention score scale when non-zero (else `1 / sqrt(head_dim)`).
    pub attention_scale: f32,
    /// Attention and FFN outputs are multiplied by it before their residual add when non-zero.
    pub residual_scale: f32,
    /// Logits are multiplied by `1 / logit_scale` when set.
    pub logit_scale: Option<f32>,
    /// LongRoPE factors, chosen by context length.
    pub longrope: Option<LongRope>,
}

impl ArchExtras {
    /// From a GGUF's keys and tensors (`n_rot` rotated dimensions per head).
    pub fn from_gguf(file: &GgufFile, facts: &ForwardFacts, n_rot: usize) -> Result<ArchExtras> {
        let path = file.path();
        let Some(hp) = GgufHparams::new(file) else { return Ok(ArchExtras::default()) };
        let float = |k: K| -> Result<f32> {
            match hp.get(k) {
                None => Ok(0.0),
                Some(v) => v
                    .as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| EvalError::MissingKey { path: path.into(), key: hp.key(k) }),
            }
        };
        let mut x = ArchExtras::default();
        if facts.embedding_scale == EmbeddingScale::FromKey {
            x.embedding_scale = float(K::EmbeddingScale)?;
        }
        if facts.attention_scale == AttentionScale::FromKey {
            x.attention_scale = float(K::AttentionScale)?;
        }
        if facts.residual_scale {
            x.residual_scale = float(K::ResidualScale)?;
        }
        if facts.logit_scale {
            // Required by llama.cpp's Granite loader.
            if hp.get(K::LogitScale).is_none() {
                return Err(EvalError::MissingKey { path: path.into(), key: hp.key(K::LogitScale) });
            }
            x.logit_scale = Some(float(K::LogitScale)?);
        }
        if facts.longrope_factors && file.tensor("rope_factors_long.weight").is_some() {
            x.longrope = Some(LongRope {
                long: gguf_vector(file, "rope_factors_long.weight", n_rot / 2)?,
                short: gguf_vector(file, "rope_factors_short.weight", n_rot / 2)?,
            });
        }
        x.check(path)?;
        Ok(x)
    }

    /// From a HF config.json (already accepted by the registry's `check_config`).
    pub fn from_hf(path: &Path, hf: &HfConfig, arch: &quantforge_formats::arch::Architecture) -> Result<ArchExtras> {
        let facts = &arch.forward;
        // What convert writes: the f32 of a non-zero value, nothing (0 here) otherwise.
        let float = |k: &str| hf.raw.get(k).and_then(Value::as_f64).map_or(0.0, |v| v as f32);
        let mut x = ArchExtras::default();
        if facts.embedding_scale == EmbeddingScale::FromKey {
            x.embedding_scale = float("embedding_multiplier");
        }
        if facts.attention_scale == AttentionScale::FromKey {
            x.attention_scale = float("attention_multiplier");
        }
        if facts.residual_scale {
            x.residual_scale = float("residual_multiplier");
        }
        if facts.logit_scale {
            let s = float("logits_scaling");
            if s == 0.0 {
                // Not written by convert, and then required by llama.cpp's loader.
                return Err(EvalError::MissingKey { path: path.into(), key: "logits_scaling".into() });
            }
            x.logit_scale = Some(s);
        }
        if facts.longrope_factors {
            x.longrope = longrope_factors(arch, hf)?.map(|f| LongRope { long: f.long, short: f.short });
        }
        x.check(path)?;
        Ok(x)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let finite = [self.embedding_scale, self.attention_scale, self.residual_scale, self.logit_scale.unwrap_or(1.0)];
        if finite.iter().any(|v| !v.is_finite()) || self.logit_scale == Some(0.0) {
            return Err(EvalError::BadConfig { path: path.into(), message: format!("unusable multipliers {self:?}") });
        }
        if let Some(l) = &self.longrope {
            if l.long.iter().chain(&l.short).any(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(EvalError::BadConfig {
                    path: path.into(),
                    message: "LongRoPE factors must be positive".into(),
                });
            }
        }
        Ok(())
    }

    /// The LongRoPE factors llama.cpp uses for sequences of up to `max_len` tokens: its context is `max_len`
    /// padded to a multiple of [`CONTEXT_PAD`], and the long factors apply when that exceeds `n_ctx_orig`.
    pub fn longrope_for(&self, max_len: usize, n_ctx_orig: usize) -> Option<&[f32]> {
        let l = self.longrope.as_ref()?;
        let n_ctx = max_len.div_ceil(CONTEXT_PAD).max(1) * CONTEXT_PAD;
        Some(if n_ctx > n_ctx_orig { &l.long } else { &l.short })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_factors_follow_the_padded_context() {
        let x = ArchExtras { longrope: Some(LongRope { long: vec![2.0], short: vec![1.0] }), ..Default::default() };
        // 48 tokens run in a 256-token context: long above an original context of 32, short at 4096.
        assert_eq!(x.longrope_for(48, 32), Some(&[2.0][..]));
        assert_eq!(x.longrope_for(48, 4096), Some(&[1.0][..]));
        assert_eq!(x.longrope_for(4097, 4096), Some(&[2.0][..]));
        assert_eq!(x.longrope_for(256, 256), Some(&[1.0][..]));
        assert_eq!(x.longrope_for(257, 256), Some(&[2.0][..]));
        assert_eq!(ArchExtras::default().longrope_for(48, 32), None);
    }
}
