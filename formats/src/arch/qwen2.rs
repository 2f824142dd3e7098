//! `Qwen2ForCausalLM` -> `qwen2` (llama.cpp `conversion/qwen.py` `Qwen2Model`): Llama's layout with Q/K/V
//! biases and no Q/K permutation (llama.cpp runs Qwen2 with NeoX RoPE, HF's own layout).

use super::{Architecture, Converter, Dim::*, ForwardFacts, Presence, RopeStyle, TensorRule, VocabStyle};

/// The Qwen tensor rules, with `$attn` (the rules beside the Q/K/V projections) after the V projection:
/// Qwen2's biases here, Qwen3's Q/K norms in [`super::qwen3`]; and after a `;`, `$ffn` (the rules after
/// `ffn_norm`) instead of the dense SwiGLU (the MoE Qwens' router and experts). Expects `TensorRule` and
/// `Dim::*` in scope.
macro_rules! qwen_rules {
    ($($attn:expr),* $(,)? ; $($ffn:expr),* $(,)?) => {
        &[
            TensorRule::copy("model.embed_tokens.weight", "token_embd.weight", &[Vocab, Hidden]),
            TensorRule::copy("lm_head.weight", "output.weight", &[Vocab, Hidden]).optional(),
            TensorRule::copy("model.norm.weight", "output_norm.weight", &[Hidden]),
            TensorRule::copy("model.layers.{bid}.input_layernorm.weight", "blk.{bid}.attn_norm.weight", &[Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.q_proj.weight", "blk.{bid}.attn_q.weight", &[QOut, Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.k_proj.weight", "blk.{bid}.attn_k.weight", &[KvOut, Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.v_proj.weight", "blk.{bid}.attn_v.weight", &[KvOut, Hidden]),
            $($attn,)*
            TensorRule::copy(
                "model.layers.{bid}.self_attn.o_proj.weight",
                "blk.{bid}.attn_output.weight",
                &[Hidden, QOut],
            ),
            TensorRule::copy(
                "model.layers.{bid}.post_attention_layernorm.weight",
                "blk.{bid}.ffn_norm.weight",
                &[Hidden],
            ),
            $($ffn,)*
        ]
    };
    ($($attn:expr),* $(,)?) => {
        qwen_rules![
            $($attn),* ;
            TensorRule::copy("model.layers.{bid}.mlp.gate_proj.weight", "blk.{bid}.ffn_gate.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.up_proj.weight", "blk.{bid}.ffn_up.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", &[Hidden, Ffn]),
        ]
    };
}
pub(super) use qwen_rules;

const RULES: &[TensorRule] = qwen_rules![
    TensorRule::copy("model.layers.{bid}.self_attn.q_proj.bias", "blk.{bid}.attn_q.bias", &[QOut]),
    TensorRule::copy("model.layers.{bid}.self_attn.k_proj.bias", "blk.{bid}.attn_k.bias", &[KvOut]),
    TensorRule::copy("model.layers.{bid}.self_attn.v_proj.bias", "blk.{bid}.attn_v.bias", &[KvOut]),
];

pub(super) static QWEN2: Architecture = Architecture {
    hf_names: &["Qwen2ForCausalLM"],
    gguf_name: "qwen2",
    rules: RULES,
    extra_keys: &[],
    vocab: VocabStyle::Plain,
    llama3_rope_freqs: false,
    // llama.cpp `src/models/qwen2.cpp`: NEOX RoPE, required `bq`/`bk`/`bv`, no output bias.
    forward: ForwardFacts { rope: RopeStyle::Neox, qkv_bias: Presence::Required, ..ForwardFacts::DENSE },
    converter: Converter::Text,
};
