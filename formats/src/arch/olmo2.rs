//! `Olmo2ForCausalLM` -> `olmo2` (llama.cpp `conversion/olmo.py` `Olmo2Model`, a `TextModel`, at 0c1e57098):
//! tensors copied as they are (no Q/K permutation: llama.cpp runs OLMo 2 with NeoX RoPE, `llama_model_rope_type`),
//! the vocabulary read as byte-level BPE (`_set_vocab_gpt2`). `src/models/olmo2.cpp` builds a block without
//! pre-norms: Q and K are RMS-normed over the whole projection (`attn_q_norm` of `n_embd` values, `attn_k_norm` of
//! `n_head_kv * head_dim`) before RoPE, and the attention and FFN outputs are RMS-normed (`post_attention_norm`,
//! `post_ffw_norm`) before their residual adds. `output.weight` is created as required (no tied head).
//!
//! Refused by key before any tensor is read, because llama.cpp's graph would not compute what transformers does:
//! `attention_bias` (it would add Q/K/V biases but never the output bias), a `hidden_act` other than SiLU, a
//! `head_dim` other than `hidden_size / num_attention_heads` (llama.cpp sizes `attn_output` and the Q/K norms
//! from `n_embd`), tied embeddings (llama.cpp requires `output.weight`), `sliding_window` (the converter writes it
//! and llama.cpp then slides layers in OLMo 3's pattern; transformers' OLMo 2 never slides), and RoPE scaling other
//! than linear or YaRN (Llama 3 factors have no tensor here, LongRoPE and dynamic NTK are not computed).

use super::converter::err;
use super::{
    Architecture, Converter, Dim::*, ForwardFacts, HfConfig, QkNormWidth, RopeScaling, RopeStyle, SlidingWindow,
    TensorRule, VocabStyle,
};
use crate::error::Result;

const RULES: &[TensorRule] = &[
    TensorRule::copy("model.embed_tokens.weight", "token_embd.weight", &[Vocab, Hidden]),
    TensorRule::copy("lm_head.weight", "output.weight", &[Vocab, Hidden]),
    TensorRule::copy("model.norm.weight", "output_norm.weight", &[Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.q_proj.weight", "blk.{bid}.attn_q.weight", &[QOut, Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.k_proj.weight", "blk.{bid}.attn_k.weight", &[KvOut, Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.v_proj.weight", "blk.{bid}.attn_v.weight", &[KvOut, Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.o_proj.weight", "blk.{bid}.attn_output.weight", &[Hidden, QOut]),
    TensorRule::copy("model.layers.{bid}.self_attn.q_norm.weight", "blk.{bid}.attn_q_norm.weight", &[QOut]),
    TensorRule::copy("model.layers.{bid}.self_attn.k_norm.weight", "blk.{bid}.attn_k_norm.weight", &[KvOut]),
    TensorRule::copy(
        "model.layers.{bid}.post_attention_layernorm.weight",
        "blk.{bid}.post_attention_norm.weight",
        &[Hidden],
    ),
    TensorRule::copy(
        "model.layers.{bid}.post_feedforward_layernorm.weight",
        "blk.{bid}.post_ffw_norm.weight",
        &[Hidden],
    ),
    TensorRule::copy("model.layers.{bid}.mlp.gate_proj.weight", "blk.{bid}.ffn_gate.weight", &[Ffn, Hidden]),
    TensorRule::copy("model.layers.{bid}.mlp.up_proj.weight", "blk.{bid}.ffn_up.weight", &[Ffn, Hidden]),
    TensorRule::copy("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", &[Hidden, Ffn]),
];

pub(super) static OLMO2: Architecture = Architecture {
    hf_names: &["Olmo2ForCausalLM"],
    gguf_name: "olmo2",
    rules: RULES,
    extra_keys: &[],
    vocab: VocabStyle::Gpt2,
    llama3_rope_freqs: false,
    forward: ForwardFacts {
        rope: RopeStyle::Neox,
        qk_norm: true,
        qk_norm_width: QkNormWidth::Projection,
        pre_norms: false,
        post_norms: true,
        sliding_window: SlidingWindow::Refused,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Olmo2,
};

/// The config values llama.cpp's OLMo 2 conversion or graph does not honour (see the module docs).
pub(super) fn check_config(cfg: &HfConfig) -> Result<()> {
    let raw = &cfg.raw;
    if let Some(v) = raw.get("attention_bias").filter(|v| v.as_bool() == Some(true)) {
        return Err(err(cfg, "attention_bias", format!("is {v}; llama.cpp's OLMo 2 graph has no output bias")));
    }
    if let Some(v) = raw.get("hidden_act").filter(|v| v.as_str() != Some("silu")) {
        return Err(err(cfg, "hidden_act", format!("is {v}; llama.cpp's OLMo 2 graph runs SiLU (SwiGLU)")));
    }
    let implied = cfg.hidden_size / cfg.head_count;
    if cfg.head_dim.is_some_and(|d| d != implied || implied * cfg.head_count != cfg.hidden_size) {
        return Err(err(
            cfg,
            "head_dim",
            format!("differs from hidden_size / num_attention_heads ({implied}), from which llama.cpp sizes OLMo 2"),
        ));
    }
    if cfg.head_dim.is_none() && !cfg.hidden_size.is_multiple_of(cfg.head_count) {
        return Err(err(cfg, "hidden_size", "is not a multiple of num_attention_heads"));
    }
    if cfg.tie_word_embeddings {
        return Err(err(
            cfg,
            "tie_word_embeddings",
            "is true; llama.cpp's OLMo 2 graph requires its own output.weight",
        ));
    }
    if let Some(v) = raw.get("sliding_window") {
        return Err(err(
            cfg,
            "sliding_window",
            format!(
                "is {v}; Olmo2Model writes it and llama.cpp then slides layers, which transformers' OLMo 2 never does"
            ),
        ));
    }
    match &cfg.rope_scaling {
        RopeScaling::None | RopeScaling::Linear { .. } | RopeScaling::Yarn { .. } => Ok(()),
        RopeScaling::Ignored(t) if t == "default" => Ok(()),
        other => Err(err(
            cfg,
            if raw.contains_key("rope_parameters") { "rope_parameters" } else { "rope_scaling" },
            format!("is {other:?}; llama.cpp's OLMo 2 graph computes only linear and YaRN scaling"),
        )),
    }
}
