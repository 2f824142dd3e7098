//! The forward-pass values beyond a Llama block's, resolved from metadata keys as llama.cpp's loader resolves
//! them (`src/models/{gemma2,gemma3,granite}.cpp`, `src/llama-model.cpp` at 0c1e57098): which layers slide and
//! their window, the RoPE of sliding layers, attention and final logit soft-caps, the attention (query) scale,
//! the embedding scale, Granite's residual and logit scales; and Phi-3's LongRoPE factors, which are tensors
//! (`rope_factors_long.weight`/`rope_factors_short.weight`, `llama_model::get_rope_factors`). A HF directory is
//! read through the keys and tensors convert would write for its config.json
//! (`quantforge_formats::arch::arch_metadata`, `longrope_factors`), so a directory and its GGUF resolve to the
//! same values.

use quantforge_formats::arch::{
    swa_layers, Architecture, EmbeddingScale, HparamKey as K, LogitSoftcap, QueryScale, SlidingWindow, SwaLayers,
    SwaRope,
};
use quantforge_formats::gguf::GgufValue;

use crate::rope::RopeParams;

/// llama.cpp pads the context to a multiple of this (`llama_context`: `GGML_PAD(n_ctx, 256)`).
pub const CONTEXT_PAD: usize = 256;

/// LongRoPE frequency factors (`n_rot / 2` each).
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
}

/// llama.cpp's defaults when the keys are absent (`llama_hparams`).
const DEFAULT_ATTN_SOFTCAP: f64 = 50.0;
const DEFAULT_FINAL_SOFTCAP: f64 = 30.0;
const DEFAULT_SWA_FREQ_BASE: f64 = 10000.0;

/// Values every Llama-style architecture leaves at "none".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardExtras {
    /// Sliding-window layers and their window (`None`: every layer attends to the whole causal context).
    pub swa: Option<SwaLayers>,
    /// The RoPE of sliding layers when it differs from the global layers'.
    pub rope_swa: Option<RopeParams>,
    /// `cap` of `cap * tanh(score / cap)` on the scaled attention scores.
    pub attn_softcap: Option<f32>,
    /// `cap` of `cap * tanh(logit / cap)` on the output logits.
    pub final_softcap: Option<f32>,
    /// The attention score scale when it is not `1 / sqrt(head_dim)`.
    pub query_scale: Option<f32>,
    /// The factor of the token embeddings (Gemma: `sqrt(n_embd)`; Granite: `{arch}.embedding_scale`).
    pub embd_scale: Option<f32>,
    /// The factor of the attention and FFN outputs before each residual add (Granite's `residual_scale`).
    pub residual_scale: Option<f32>,
    /// Logits are multiplied by `1 / logit_scale` (Granite; the key is required).
    pub logit_scale: Option<f32>,
    /// LongRoPE factors, chosen by context length (Phi-3).
    pub longrope: Option<LongRope>,
}

/// The shape values the extras depend on.
pub(crate) struct Shape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

impl ForwardExtras {
    /// Resolve for `arch` from its metadata (`get` looks a key up); `Err` names a key with a bad value.
    pub(crate) fn resolve<'a>(
        arch: &Architecture,
        shape: &Shape,
        rope: &RopeParams,
        get: impl Fn(K) -> Option<&'a GgufValue>,
    ) -> Result<ForwardExtras, (K, String)> {
        let f = &arch.forward;
        let float = |k: K| match get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or((k, "is not a number".to_string())),
        };
        let cap = |style: LogitSoftcap, k: K, default: f64| -> Result<Option<f32>, (K, String)> {
            let v = match style {
                LogitSoftcap::None => return Ok(None),
                LogitSoftcap::Tanh => Some(float(k)?.unwrap_or(default)),
                LogitSoftcap::TanhIfPresent => float(k)?.filter(|&c| c != 0.0),
            };
            match v {
                Some(c) if !(c > 0.0 && (c as f32).is_finite()) => Err((k, format!("{c} is not a positive cap"))),
                v => Ok(v.map(|c| c as f32)),
            }
        };
        let swa = swa_layers(f.sliding_window, shape.n_layer, &get).map_err(|k| {
            let why = match f.sliding_window {
                SlidingWindow::Refused => {
                    "is set: llama.cpp would slide layers (OLMo 3), which the forward pass does not implement"
                }
                _ => "is not a window size or layer pattern of this model",
            };
            (k, why.to_string())
        })?;
        let rope_swa = match (&swa, f.swa_rope) {
            (None, _) => None,
            (Some(_), SwaRope::Global) => float(K::RopeFreqBaseSwa)?
                .map(|b| RopeParams { freq_base: b as f32, ..rope.clone() })
                .filter(|r| r != rope),
            (Some(_), SwaRope::OwnBase) => {
                let base = float(K::RopeFreqBaseSwa)?.unwrap_or(DEFAULT_SWA_FREQ_BASE) as f32;
                Some(RopeParams { freq_base: base, freq_scale: 1.0, ..rope.clone() })
            }
        };
        if let Some(r) = &rope_swa {
            if !(r.freq_base > 0.0 && r.freq_base.is_finite()) {
                return Err((K::RopeFreqBaseSwa, format!("{} is not positive", r.freq_base)));
            }
        }
        // A multiplier written only when non-zero (convert follows Python truthiness), finite when present.
        let multiplier = |k: K| -> Result<Option<f32>, (K, String)> {
            match float(k)? {
                Some(v) if !(v as f32).is_finite() => Err((k, format!("{v} is not finite"))),
                v => Ok(v.map(|v| v as f32).filter(|&v| v != 0.0)),
            }
        };
        let query_scale = match f.query_scale {
            QueryScale::HeadDim => None,
            QueryScale::FromKey => multiplier(K::AttentionScale)?,
            // llama.cpp: `1.0f / std::sqrt(float(n_embd / n_head))` for the 27B sizes (integer division).
            QueryScale::GemmaByLayers { layers } if layers as usize == shape.n_layer => {
                Some(1.0 / ((shape.n_embd / shape.n_head.max(1)) as f32).sqrt())
            }
            QueryScale::GemmaByLayers { .. } => Some(1.0 / (shape.head_dim as f32).sqrt()),
        };
        Ok(ForwardExtras {
            swa,
            rope_swa,
            attn_softcap: cap(f.attn_softcap, K::AttnLogitSoftcapping, DEFAULT_ATTN_SOFTCAP)?,
            final_softcap: cap(f.logit_softcap, K::FinalLogitSoftcapping, DEFAULT_FINAL_SOFTCAP)?,
            query_scale,
            embd_scale: match f.embedding_scale {
                EmbeddingScale::None => None,
                EmbeddingScale::FromKey => multiplier(K::EmbeddingScale)?,
                EmbeddingScale::SqrtHidden => Some((shape.n_embd as f32).sqrt()),
            },
            residual_scale: if f.residual_scale { multiplier(K::ResidualScale)? } else { None },
            logit_scale: match f.logit_scale {
                false => None,
                // Required by llama.cpp's Granite loader.
                true => Some(multiplier(K::LogitScale)?.ok_or((K::LogitScale, "is missing or zero".to_string()))?),
            },
            longrope: None,
        })
    }

    /// The LongRoPE factors llama.cpp uses for sequences of up to `max_len` tokens: its context is `max_len`
    /// padded to a multiple of [`CONTEXT_PAD`], and the long factors apply when that exceeds `n_ctx_orig`.
    pub fn longrope_for(&self, max_len: usize, n_ctx_orig: usize) -> Option<&[f32]> {
        let l = self.longrope.as_ref()?;
        let n_ctx = max_len.div_ceil(CONTEXT_PAD).max(1) * CONTEXT_PAD;
        Some(if n_ctx > n_ctx_orig { &l.long } else { &l.short })
    }

    /// The window of layer `il`, if it slides.
    pub fn window(&self, il: usize) -> Option<usize> {
        let swa = self.swa.as_ref()?;
        swa.layers.get(il).copied().unwrap_or(false).then_some(swa.window as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_factors_follow_the_padded_context() {
        let x = ForwardExtras { longrope: Some(LongRope { long: vec![2.0], short: vec![1.0] }), ..Default::default() };
        // 48 tokens run in a 256-token context: long above an original context of 32, short at 4096.
        assert_eq!(x.longrope_for(48, 32), Some(&[2.0][..]));
        assert_eq!(x.longrope_for(48, 4096), Some(&[1.0][..]));
        assert_eq!(x.longrope_for(4097, 4096), Some(&[2.0][..]));
        assert_eq!(x.longrope_for(256, 256), Some(&[1.0][..]));
        assert_eq!(x.longrope_for(257, 256), Some(&[2.0][..]));
        assert_eq!(ForwardExtras::default().longrope_for(48, 32), None);
    }
}
