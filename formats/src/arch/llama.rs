//! `LlamaForCausalLM` -> `llama` (llama.cpp `conversion/llama.py` `LlamaModel`, `undo_permute = True`):
//! Q and K rows (and biases) are permuted from HF's rotate-half RoPE layout to llama.cpp's.

use super::{
    Architecture, Converter, Dim::*, ExtraKey, ForwardFacts, Presence, RopeStyle, TensorRule, Transform, VocabStyle,
};

/// The Llama tensor rules with `$ffn` (the rules after `ffn_norm`) as the feed-forward network: the dense
/// SwiGLU of [`RULES`] when omitted, Mixtral's router and experts in [`super::mixtral`]. Expects
/// `TensorRule`, `Transform` and `Dim::*` in scope.
macro_rules! llama_rules {
    () => {
        llama_rules![
            TensorRule::copy("model.layers.{bid}.mlp.gate_proj.weight", "blk.{bid}.ffn_gate.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.up_proj.weight", "blk.{bid}.ffn_up.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", &[Hidden, Ffn]),
        ]
    };
    ($($ffn:expr),* $(,)?) => {
        &[
            TensorRule::copy("model.embed_tokens.weight", "token_embd.weight", &[Vocab, Hidden]),
            TensorRule::copy("lm_head.weight", "output.weight", &[Vocab, Hidden]).optional(),
            TensorRule::copy("model.norm.weight", "output_norm.weight", &[Hidden]),
            TensorRule::copy("model.layers.{bid}.input_layernorm.weight", "blk.{bid}.attn_norm.weight", &[Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.q_proj.weight", "blk.{bid}.attn_q.weight", &[QOut, Hidden])
                .with(Transform::RopePermuteQ),
            TensorRule::copy("model.layers.{bid}.self_attn.k_proj.weight", "blk.{bid}.attn_k.weight", &[KvOut, Hidden])
                .with(Transform::RopePermuteK),
            TensorRule::copy("model.layers.{bid}.self_attn.v_proj.weight", "blk.{bid}.attn_v.weight", &[KvOut, Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.o_proj.weight", "blk.{bid}.attn_output.weight", &[Hidden, QOut]),
            TensorRule::copy("model.layers.{bid}.self_attn.q_proj.bias", "blk.{bid}.attn_q.bias", &[QOut])
                .with(Transform::RopePermuteQ)
                .optional(),
            TensorRule::copy("model.layers.{bid}.self_attn.k_proj.bias", "blk.{bid}.attn_k.bias", &[KvOut])
                .with(Transform::RopePermuteK)
                .optional(),
            TensorRule::copy("model.layers.{bid}.self_attn.v_proj.bias", "blk.{bid}.attn_v.bias", &[KvOut]).optional(),
            TensorRule::copy("model.layers.{bid}.self_attn.o_proj.bias", "blk.{bid}.attn_output.bias", &[Hidden]).optional(),
            TensorRule::copy("model.layers.{bid}.post_attention_layernorm.weight", "blk.{bid}.ffn_norm.weight", &[Hidden]),
            $($ffn,)*
        ]
    };
}
pub(super) use llama_rules;

/// The Llama tensor rules (shared by Mistral).
pub(super) const RULES: &[TensorRule] = llama_rules![];

pub(super) static LLAMA: Architecture = Architecture {
    hf_names: &["LlamaForCausalLM"],
    gguf_name: "llama",
    rules: RULES,
    extra_keys: &[ExtraKey::VocabSize, ExtraKey::RopeDimensionCount],
    vocab: VocabStyle::Llama,
    llama3_rope_freqs: true,
    // llama.cpp `src/models/llama.cpp`: NORM RoPE, `bq`/`bk`/`bv`/`bo` created with TENSOR_NOT_REQUIRED.
    forward: ForwardFacts {
        rope: RopeStyle::Norm,
        qkv_bias: Presence::Optional,
        attn_out_bias: Presence::Optional,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Text,
};
