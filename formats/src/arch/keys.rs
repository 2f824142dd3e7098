//! The architecture hyperparameter keys of GGUF (`{arch}.attention.head_count`, ...): the one place that
//! spells them (llama.cpp `src/llama-arch.cpp` `LLM_KV_NAMES` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62),
//! used by the writer ([`super::arch_metadata`]), the GGUF -> config.json direction
//! ([`super::hf_config_from_gguf`]), the evaluator's config and the memory planner's shape reader.
//!
//! Invariant: [`HparamKey::suffix`] is the text after `{arch}.`; [`GgufHparams`] only looks keys up, it
//! never interprets defaults (each reader keeps llama.cpp's defaults for the keys it reads).

use serde_json::Value;

use crate::gguf::{GgufFile, GgufValue};

/// An architecture hyperparameter of GGUF metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HparamKey {
    BlockCount,
    ContextLength,
    EmbeddingLength,
    FeedForwardLength,
    VocabSize,
    ExpertCount,
    ExpertUsedCount,
    ExpertFeedForwardLength,
    ExpertSharedFeedForwardLength,
    HeadCount,
    HeadCountKv,
    KeyLength,
    ValueLength,
    Causal,
    LayerNormRmsEpsilon,
    LayerNormEpsilon,
    SlidingWindow,
    SlidingWindowPattern,
    RopeDimensionCount,
    RopeFreqBase,
    RopeScalingType,
    RopeScalingFactor,
    /// The old linear-scaling key llama.cpp still reads when `rope.scaling.factor` is absent.
    RopeScaleLinear,
    RopeScalingOriginalContextLength,
    RopeScalingAttnFactor,
    RopeScalingYarnExtFactor,
    RopeScalingYarnAttnFactor,
    RopeScalingYarnBetaFast,
    RopeScalingYarnBetaSlow,
    /// Granite's multipliers.
    AttentionScale,
    EmbeddingScale,
    ResidualScale,
    LogitScale,
    /// RoPE base of sliding-window layers.
    RopeFreqBaseSwa,
    AttnLogitSoftcapping,
    FinalLogitSoftcapping,
}

impl HparamKey {
    /// The key after `{arch}.`.
    pub const fn suffix(self) -> &'static str {
        match self {
            HparamKey::BlockCount => "block_count",
            HparamKey::ContextLength => "context_length",
            HparamKey::EmbeddingLength => "embedding_length",
            HparamKey::FeedForwardLength => "feed_forward_length",
            HparamKey::VocabSize => "vocab_size",
            HparamKey::ExpertCount => "expert_count",
            HparamKey::ExpertUsedCount => "expert_used_count",
            HparamKey::ExpertFeedForwardLength => "expert_feed_forward_length",
            HparamKey::ExpertSharedFeedForwardLength => "expert_shared_feed_forward_length",
            HparamKey::HeadCount => "attention.head_count",
            HparamKey::HeadCountKv => "attention.head_count_kv",
            HparamKey::KeyLength => "attention.key_length",
            HparamKey::ValueLength => "attention.value_length",
            HparamKey::Causal => "attention.causal",
            HparamKey::LayerNormRmsEpsilon => "attention.layer_norm_rms_epsilon",
            HparamKey::LayerNormEpsilon => "attention.layer_norm_epsilon",
            HparamKey::SlidingWindow => "attention.sliding_window",
            HparamKey::SlidingWindowPattern => "attention.sliding_window_pattern",
            HparamKey::RopeDimensionCount => "rope.dimension_count",
            HparamKey::RopeFreqBase => "rope.freq_base",
            HparamKey::RopeScalingType => "rope.scaling.type",
            HparamKey::RopeScalingFactor => "rope.scaling.factor",
            HparamKey::RopeScaleLinear => "rope.scale_linear",
            HparamKey::RopeScalingOriginalContextLength => "rope.scaling.original_context_length",
            HparamKey::RopeScalingAttnFactor => "rope.scaling.attn_factor",
            HparamKey::RopeScalingYarnExtFactor => "rope.scaling.yarn_ext_factor",
            HparamKey::RopeScalingYarnAttnFactor => "rope.scaling.yarn_attn_factor",
            HparamKey::RopeScalingYarnBetaFast => "rope.scaling.yarn_beta_fast",
            HparamKey::RopeScalingYarnBetaSlow => "rope.scaling.yarn_beta_slow",
            HparamKey::AttentionScale => "attention.scale",
            HparamKey::EmbeddingScale => "embedding_scale",
            HparamKey::ResidualScale => "residual_scale",
            HparamKey::LogitScale => "logit_scale",
            HparamKey::RopeFreqBaseSwa => "rope.freq_base_swa",
            HparamKey::AttnLogitSoftcapping => "attn_logit_softcapping",
            HparamKey::FinalLogitSoftcapping => "final_logit_softcapping",
        }
    }

    /// The full key for architecture `arch` (a GGUF `general.architecture` value).
    pub fn key(self, arch: &str) -> String {
        format!("{arch}.{}", self.suffix())
    }
}

/// The architecture hyperparameters of one GGUF file, looked up under its `general.architecture`.
#[derive(Clone, Copy, Debug)]
pub struct GgufHparams<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl<'a> GgufHparams<'a> {
    /// The reader for `file`'s `general.architecture` (`None` when the key is missing or not a string).
    pub fn new(file: &'a GgufFile) -> Option<GgufHparams<'a>> {
        let arch = file.get("general.architecture").and_then(GgufValue::as_str)?;
        Some(GgufHparams { file, arch })
    }

    /// The reader for `file` under architecture name `arch`.
    pub fn with_arch(file: &'a GgufFile, arch: &'a str) -> GgufHparams<'a> {
        GgufHparams { file, arch }
    }

    /// `general.architecture`.
    pub fn arch(&self) -> &'a str {
        self.arch
    }

    /// The full key name (for error messages).
    pub fn key(&self, key: HparamKey) -> String {
        key.key(self.arch)
    }

    /// The raw value.
    pub fn get(&self, key: HparamKey) -> Option<&'a GgufValue> {
        self.file.get(&self.key(key))
    }

    /// The value as an unsigned integer (`None` if absent or of another type).
    pub fn u64(&self, key: HparamKey) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    /// The value as a float (`None` if absent or not a number).
    pub fn f64(&self, key: HparamKey) -> Option<f64> {
        self.get(key).and_then(GgufValue::as_f64)
    }

    /// The value as a string.
    pub fn str(&self, key: HparamKey) -> Option<&'a str> {
        self.get(key).and_then(GgufValue::as_str)
    }
}

/// An f32 as the shortest decimal that reads back as the same f32 (so 1e-5 stays 1e-05, not 9.99999974e-06).
pub(super) fn f32_json(v: f32) -> Value {
    format!("{v}").parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}
