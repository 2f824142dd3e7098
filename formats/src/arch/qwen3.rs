//! `Qwen3ForCausalLM` -> `qwen3` (llama.cpp `conversion/qwen.py` `Qwen3Model`): Qwen2 without the Q/K/V
//! biases, plus per-head RMS norms on Q and K (`attn_q_norm`/`attn_k_norm`, kept F32).

use super::qwen2::{qwen_rules, QWEN2};
use super::{Architecture, Dim::*, ForwardFacts, Presence, RopeStyle, TensorRule};

const RULES: &[TensorRule] = qwen_rules![
    TensorRule::copy("model.layers.{bid}.self_attn.q_norm.weight", "blk.{bid}.attn_q_norm.weight", &[HeadDim]),
    TensorRule::copy("model.layers.{bid}.self_attn.k_norm.weight", "blk.{bid}.attn_k_norm.weight", &[HeadDim]),
];

pub(super) static QWEN3: Architecture = Architecture {
    hf_names: &["Qwen3ForCausalLM"],
    gguf_name: "qwen3",
    rules: RULES,
    // llama.cpp `src/models/qwen3.cpp`: NEOX RoPE, no biases, `attn_q_norm`/`attn_k_norm` before RoPE.
    forward: ForwardFacts { rope: RopeStyle::Neox, qkv_bias: Presence::Absent, qk_norm: true, ..ForwardFacts::DENSE },
    ..QWEN2
};
