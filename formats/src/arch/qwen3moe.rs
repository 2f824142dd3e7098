//! `Qwen3MoeForCausalLM` -> `qwen3moe` (llama.cpp `conversion/qwen.py` `Qwen3MoeModel` at 0c1e57098):
//! Qwen2-MoE's layout without the shared expert, plus Qwen3's per-head Q/K RMS norms. Graph
//! (`src/models/qwen3moe.cpp`): softmax, top-k, selected weights renormalized.
//!
//! Refused config values: those of [`super::qwen2moe`] for sparse layers, and `norm_topk_prob` other than
//! `true` (llama.cpp always renormalizes here; transformers reads an absent key as `false`).

use super::qwen2::qwen_rules;
use super::qwen2moe::{qwen_moe_ffn, QWEN2MOE, SPARSE_EVERY_LAYER};
use super::{Architecture, ConfigRequirement, ConfigValue, Dim::*, ForwardFacts, MoeRouting, SharedExpert, TensorRule};

const RULES_WITH_SHARED: &[TensorRule] = qwen_moe_ffn![
    TensorRule::copy("model.layers.{bid}.self_attn.q_norm.weight", "blk.{bid}.attn_q_norm.weight", &[HeadDim]),
    TensorRule::copy("model.layers.{bid}.self_attn.k_norm.weight", "blk.{bid}.attn_k_norm.weight", &[HeadDim]),
];

/// Qwen3-MoE has no shared expert: the rules of both MoE Qwens without the four `*_shexp` ones (last).
const RULES: &[TensorRule] = RULES_WITH_SHARED.split_at(RULES_WITH_SHARED.len() - 4).0;

const REQUIREMENTS: &[ConfigRequirement] = &[
    SPARSE_EVERY_LAYER[0],
    SPARSE_EVERY_LAYER[1],
    ConfigRequirement { key: "norm_topk_prob", value: ConfigValue::Bool(true), absent: Some(ConfigValue::Bool(false)) },
];

pub(super) static QWEN3MOE: Architecture = Architecture {
    hf_names: &["Qwen3MoeForCausalLM"],
    gguf_name: "qwen3moe",
    rules: RULES,
    forward: ForwardFacts {
        qk_norm: true,
        moe: Some(MoeRouting::SoftmaxTopKNormalized),
        shared_expert: SharedExpert::None,
        config_requirements: REQUIREMENTS,
        ..QWEN2MOE.forward
    },
    ..QWEN2MOE
};
