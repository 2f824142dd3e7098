//! `Qwen2MoeForCausalLM` -> `qwen2moe` (llama.cpp `conversion/qwen.py` `Qwen2MoeModel` at 0c1e57098):
//! Qwen2's attention (Q/K/V biases, NeoX RoPE), per layer a router (`mlp.gate` -> `ffn_gate_inp`, F32),
//! `num_experts` SwiGLU experts stacked into `ffn_down_exps`/`ffn_gate_exps`/`ffn_up_exps` (emitted in that
//! order), and a shared expert (`mlp.shared_expert.*` -> `ffn_*_shexp`) gated per token by
//! `sigmoid(shared_expert_gate · x)` (`ffn_gate_inp_shexp`, F32). The vocabulary is always byte-level BPE
//! (`TextModel.set_vocab`). Graph (`src/models/qwen2moe.cpp`): softmax, top-k, weights not renormalized.
//!
//! Refused config values: `decoder_sparse_step` other than 1 and a non-empty `mlp_only_layers` (dense layers
//! between the sparse ones: llama.cpp's graph has none), `norm_topk_prob: true` (llama.cpp never
//! renormalizes for this architecture).

use super::qwen2::qwen_rules;
use super::{
    Architecture, ConfigRequirement, ConfigValue, Converter, Dim::*, ExtraKey, ForwardFacts, MoeRouting, Presence,
    RopeStyle, SharedExpert, TensorRule, VocabStyle,
};

/// The routed experts of both MoE Qwens, in the order the converter emits them.
macro_rules! qwen_moe_ffn {
    ($($more:expr),* $(,)?) => {
        qwen_rules![
            TensorRule::copy("model.layers.{bid}.self_attn.q_proj.bias", "blk.{bid}.attn_q.bias", &[QOut]).optional(),
            TensorRule::copy("model.layers.{bid}.self_attn.k_proj.bias", "blk.{bid}.attn_k.bias", &[KvOut]).optional(),
            TensorRule::copy("model.layers.{bid}.self_attn.v_proj.bias", "blk.{bid}.attn_v.bias", &[KvOut]).optional(),
            $($more,)* ;
            TensorRule::copy("model.layers.{bid}.mlp.gate.weight", "blk.{bid}.ffn_gate_inp.weight", &[Experts, Hidden]),
            TensorRule::copy(
                "model.layers.{bid}.mlp.experts.{xid}.down_proj.weight",
                "blk.{bid}.ffn_down_exps.weight",
                &[Hidden, ExpertFfn],
            ),
            TensorRule::copy(
                "model.layers.{bid}.mlp.experts.{xid}.gate_proj.weight",
                "blk.{bid}.ffn_gate_exps.weight",
                &[ExpertFfn, Hidden],
            ),
            TensorRule::copy(
                "model.layers.{bid}.mlp.experts.{xid}.up_proj.weight",
                "blk.{bid}.ffn_up_exps.weight",
                &[ExpertFfn, Hidden],
            ),
            TensorRule::copy(
                "model.layers.{bid}.mlp.shared_expert.gate_proj.weight",
                "blk.{bid}.ffn_gate_shexp.weight",
                &[SharedFfn, Hidden],
            )
            .optional(),
            TensorRule::copy(
                "model.layers.{bid}.mlp.shared_expert.up_proj.weight",
                "blk.{bid}.ffn_up_shexp.weight",
                &[SharedFfn, Hidden],
            )
            .optional(),
            TensorRule::copy(
                "model.layers.{bid}.mlp.shared_expert.down_proj.weight",
                "blk.{bid}.ffn_down_shexp.weight",
                &[Hidden, SharedFfn],
            )
            .optional(),
            TensorRule::copy(
                "model.layers.{bid}.mlp.shared_expert_gate.weight",
                "blk.{bid}.ffn_gate_inp_shexp.weight",
                &[One, Hidden],
            )
            .optional(),
        ]
    };
}
pub(super) use qwen_moe_ffn;

/// The sparse-layer layout both MoE Qwens need: every layer sparse.
pub(super) const SPARSE_EVERY_LAYER: [ConfigRequirement; 2] = [
    ConfigRequirement { key: "decoder_sparse_step", value: ConfigValue::Int(1), absent: Some(ConfigValue::Int(1)) },
    ConfigRequirement { key: "mlp_only_layers", value: ConfigValue::EmptyList, absent: Some(ConfigValue::EmptyList) },
];

const REQUIREMENTS: &[ConfigRequirement] = &[
    SPARSE_EVERY_LAYER[0],
    SPARSE_EVERY_LAYER[1],
    ConfigRequirement {
        key: "norm_topk_prob",
        value: ConfigValue::Bool(false),
        absent: Some(ConfigValue::Bool(false)),
    },
];

const RULES: &[TensorRule] = qwen_moe_ffn![];

pub(super) static QWEN2MOE: Architecture = Architecture {
    hf_names: &["Qwen2MoeForCausalLM"],
    gguf_name: "qwen2moe",
    rules: RULES,
    extra_keys: &[ExtraKey::ExpertFeedForwardLength, ExtraKey::ExpertSharedFeedForwardLength],
    vocab: VocabStyle::Gpt2,
    llama3_rope_freqs: false,
    forward: ForwardFacts {
        rope: RopeStyle::Neox,
        qkv_bias: Presence::Optional,
        moe: Some(MoeRouting::SoftmaxTopK),
        shared_expert: SharedExpert::SigmoidGated,
        config_requirements: REQUIREMENTS,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Text,
};
