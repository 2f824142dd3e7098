//! Architecture hyperparameters in GGUF, in the order `TextModel.set_gguf_parameters` writes them
//! (`conversion/base.py`), then the architecture's extra keys (`LlamaModel.set_gguf_parameters`), and the
//! reverse: a config.json rebuilt from a GGUF's keys.

use serde_json::{json, Map, Value};

use super::keys::f32_json;
use super::keys::{GgufHparams, HparamKey, HparamKey as K};
use super::{Architecture, Converter, ExtraKey, HfConfig, RopeScaling};
use crate::gguf::{GgufFile, GgufValue};
use crate::kv::KvList;

/// `TextModel.set_gguf_parameters` and the [`ExtraKey`]s.
pub(super) fn text_metadata(kv: &mut KvList, arch: &Architecture, cfg: &HfConfig, file_type: u32) {
    let a = arch.gguf_name;
    kv.u32(K::BlockCount.key(a), cfg.block_count);
    if let Some(n) = cfg.context_length {
        kv.u32(K::ContextLength.key(a), n);
    }
    kv.u32(K::EmbeddingLength.key(a), cfg.hidden_size);
    kv.u32(K::FeedForwardLength.key(a), cfg.ffn_length);
    kv.u32(K::HeadCount.key(a), cfg.head_count);
    if let Some(n) = cfg.head_count_kv {
        kv.u32(K::HeadCountKv.key(a), n);
    }
    if cfg.is_causal == Some(false) {
        kv.bool(K::Causal.key(a), false);
    }
    let scaling = |kv: &mut KvList, ty: &str| kv.string(K::RopeScalingType.key(a), ty);
    match &cfg.rope_scaling {
        RopeScaling::Linear { factor } => {
            scaling(kv, "linear");
            kv.f32(K::RopeScalingFactor.key(a), *factor);
        }
        RopeScaling::Yarn { factor, original_context, ext_factor, attn_factor, beta_fast, beta_slow } => {
            scaling(kv, "yarn");
            kv.f32(K::RopeScalingFactor.key(a), *factor);
            kv.u32(K::RopeScalingOriginalContextLength.key(a), *original_context);
            for (name, v) in [
                (K::RopeScalingYarnExtFactor, ext_factor),
                (K::RopeScalingYarnAttnFactor, attn_factor),
                (K::RopeScalingYarnBetaFast, beta_fast),
                (K::RopeScalingYarnBetaSlow, beta_slow),
            ] {
                if let Some(v) = v {
                    kv.f32(name.key(a), *v);
                }
            }
        }
        RopeScaling::LongRope => scaling(kv, "longrope"),
        RopeScaling::None | RopeScaling::Llama3 { .. } | RopeScaling::Ignored(_) => {}
    }
    if let Some(t) = cfg.rope_theta {
        kv.f32(K::RopeFreqBase.key(a), t);
    }
    if let Some(e) = cfg.rms_norm_eps {
        kv.f32(K::LayerNormRmsEpsilon.key(a), e);
    }
    if let Some(e) = cfg.layer_norm_eps {
        kv.f32(K::LayerNormEpsilon.key(a), e);
    }
    // `TextModel.set_gguf_parameters` writes these for every architecture whose config.json has them.
    if let Some(n) = cfg.expert_count {
        kv.u32(K::ExpertCount.key(a), n);
    }
    if let Some(n) = cfg.expert_used_count {
        kv.u32(K::ExpertUsedCount.key(a), n);
    }
    if let Some(d) = cfg.head_dim {
        kv.u32(K::KeyLength.key(a), d);
        kv.u32(K::ValueLength.key(a), d);
    }
    kv.u32("general.file_type", file_type);
    for key in arch.extra_keys {
        match key {
            ExtraKey::VocabSize => kv.u32(K::VocabSize.key(a), cfg.vocab_size),
            ExtraKey::RopeDimensionCount => kv.u32(K::RopeDimensionCount.key(a), cfg.head_dim()),
            ExtraKey::GraniteScales => {
                for (src, key) in [
                    ("attention_multiplier", K::AttentionScale),
                    ("embedding_multiplier", K::EmbeddingScale),
                    ("residual_multiplier", K::ResidualScale),
                    ("logits_scaling", K::LogitScale),
                ] {
                    // Python truthiness: absent, null and 0 write nothing.
                    if let Some(v) = cfg.raw.get(src).and_then(Value::as_f64).filter(|v| *v != 0.0) {
                        kv.f32(key.key(a), v);
                    }
                }
            }
            ExtraKey::ExpertFeedForwardLength => {
                if let Some(n) = cfg.expert_ffn_length {
                    kv.u32(K::ExpertFeedForwardLength.key(a), n);
                }
            }
            ExtraKey::ExpertSharedFeedForwardLength => {
                if let Some(n) = cfg.shared_expert_ffn_length {
                    kv.u32(K::ExpertSharedFeedForwardLength.key(a), n);
                }
            }
        }
    }
}

/// transformers' `model_type` for `arch`: the GGUF name, except where transformers spells it otherwise (it
/// picks the checkpoint layout by it: with the wrong one, per-expert tensors are not fused on load).
fn hf_model_type(arch: &Architecture) -> &'static str {
    match arch.hf_names[0] {
        "MixtralForCausalLM" => "mixtral",
        "Qwen2MoeForCausalLM" => "qwen2_moe",
        "Qwen3MoeForCausalLM" => "qwen3_moe",
        _ => arch.gguf_name,
    }
}

/// The `TextModel` part of the config.json for the model in `gguf` (architecture `arch`): the keys
/// `text_metadata` reads, so that converting the result back gives the same hyperparameters. `torch_dtype` is the
/// dtype being written. The converter class adds its own keys ([`super::hf_config_from_gguf`]).
pub(super) fn text_hf_config(gguf: &GgufFile, arch: &Architecture, torch_dtype: &str) -> Map<String, Value> {
    let a = arch.gguf_name;
    let hp = GgufHparams::with_arch(gguf, a);
    let get = |k: HparamKey| hp.get(k);
    let uint = |k: HparamKey| hp.u64(k);
    let float = |k: HparamKey| match get(k) {
        Some(GgufValue::F32(v)) => Some(f32_json(*v)),
        Some(v) => v.as_f64().map(|f| json!(f)),
        None => None,
    };
    let mut c = Map::new();
    c.insert("architectures".into(), json!([arch.hf_names[0]]));
    c.insert("model_type".into(), json!(hf_model_type(arch)));
    let n_vocab = uint(K::VocabSize)
        .or_else(|| gguf.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(|t| t.len() as u64));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            c.insert(k.into(), v);
        }
    };
    put("hidden_size", uint(K::EmbeddingLength).map(|v| json!(v)));
    put("intermediate_size", uint(K::FeedForwardLength).map(|v| json!(v)));
    // The expert count under both names in use: Mixtral's config reads `num_local_experts`, Qwen2-MoE's
    // `num_experts` (each ignores the other; convert reads the first present, and both are the same).
    put("num_local_experts", uint(K::ExpertCount).map(|v| json!(v)));
    put("num_experts", uint(K::ExpertCount).map(|v| json!(v)));
    put("num_experts_per_tok", uint(K::ExpertUsedCount).map(|v| json!(v)));
    put("moe_intermediate_size", uint(K::ExpertFeedForwardLength).map(|v| json!(v)));
    put("shared_expert_intermediate_size", uint(K::ExpertSharedFeedForwardLength).map(|v| json!(v)));
    for (k, v) in arch.forward.config_requirements.iter().filter_map(|r| r.hf_value().map(|v| (r.key, v))) {
        put(k, Some(v));
    }
    put("num_hidden_layers", uint(K::BlockCount).map(|v| json!(v)));
    put("num_attention_heads", uint(K::HeadCount).map(|v| json!(v)));
    put("num_key_value_heads", uint(K::HeadCountKv).map(|v| json!(v)));
    put("head_dim", uint(K::KeyLength).map(|v| json!(v)));
    if matches!(arch.converter, Converter::Granite | Converter::Phi3) {
        // Their converters never write key_length (the head size is n_embd / n_head) and ignore head_dim.
        let n_head = uint(K::HeadCount).filter(|&h| h > 0);
        put("head_dim", uint(K::EmbeddingLength).zip(n_head).map(|(e, h)| json!(e / h)));
    }
    put("max_position_embeddings", uint(K::ContextLength).map(|v| json!(v)));
    put("rms_norm_eps", float(K::LayerNormRmsEpsilon));
    put("rope_theta", float(K::RopeFreqBase));
    put("vocab_size", n_vocab.map(|v| json!(v)));
    let scaling = match get(K::RopeScalingType).and_then(GgufValue::as_str) {
        Some(t @ ("linear" | "yarn")) => {
            let mut s = Map::new();
            s.insert("rope_type".into(), json!(t));
            if let Some(f) = float(K::RopeScalingFactor) {
                s.insert("factor".into(), f);
            }
            if let Some(n) = uint(K::RopeScalingOriginalContextLength) {
                s.insert("original_max_position_embeddings".into(), json!(n));
            }
            Value::Object(s)
        }
        _ => Value::Null,
    };
    put("rope_scaling", Some(scaling));
    if arch.extra_keys.contains(&ExtraKey::GraniteScales) {
        put("attention_multiplier", float(K::AttentionScale));
        put("embedding_multiplier", float(K::EmbeddingScale));
        put("residual_multiplier", float(K::ResidualScale));
        put("logits_scaling", float(K::LogitScale));
    }

    put("tie_word_embeddings", Some(json!(gguf.tensor("output.weight").is_none())));
    for (typ, key) in crate::vocab::SPECIAL_KEYS {
        let v = gguf.get(&format!("tokenizer.ggml.{key}")).and_then(GgufValue::as_u64);
        put(&format!("{typ}_token_id"), v.map(|v| json!(v)));
    }
    put("torch_dtype", Some(json!(torch_dtype)));
    c
}
