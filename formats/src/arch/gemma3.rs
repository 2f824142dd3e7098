//! `Gemma3ForCausalLM` (text only) -> `gemma3` (llama.cpp `conversion/gemma.py` `Gemma3Model` at 0c1e57098):
//! Gemma 2's layout plus per-head Q/K norms (also + 1) and an optional `lm_head`; five sliding layers in six
//! with their own RoPE base, linear RoPE scaling on the global layers only, no attention soft-capping.

use super::gemma::gemma_rules;
use super::{
    Architecture, Converter, Dim::*, EmbeddingScale, FfnKind, ForwardFacts, LogitSoftcap, QueryScale, RopeStyle,
    SlidingWindow, SwaRope, TensorRule, Transform, VocabStyle,
};

const RULES: &[TensorRule] = gemma_rules![
    TensorRule::copy("lm_head.weight", "output.weight", &[Vocab, Hidden]).optional(),
    TensorRule::copy("model.layers.{bid}.self_attn.q_norm.weight", "blk.{bid}.attn_q_norm.weight", &[HeadDim])
        .with(Transform::NormShift),
    TensorRule::copy("model.layers.{bid}.self_attn.k_norm.weight", "blk.{bid}.attn_k_norm.weight", &[HeadDim])
        .with(Transform::NormShift),
];

pub(super) static GEMMA3: Architecture = Architecture {
    hf_names: &["Gemma3ForCausalLM"],
    gguf_name: "gemma3",
    rules: RULES,
    extra_keys: &[],
    vocab: VocabStyle::Gemma,
    llama3_rope_freqs: false,
    // llama.cpp `src/models/gemma3.cpp`: `set_swa_pattern(6)` only when the GGUF has a window, sliding layers
    // at `rope.freq_base_swa` unscaled, Q/K norms before RoPE, final soft-cap only when recorded, 27B (62
    // layers) query scale.
    forward: ForwardFacts {
        rope: RopeStyle::Neox,
        qk_norm: true,
        ffn: FfnKind::GeGlu,
        sliding_window: SlidingWindow::Pattern { period: 6, default_window: 0 },
        logit_softcap: LogitSoftcap::TanhIfPresent,
        post_norms: true,
        embedding_scale: EmbeddingScale::SqrtHidden,
        query_scale: QueryScale::GemmaByLayers { layers: 62 },
        swa_rope: SwaRope::OwnBase,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Gemma3,
};
