//! `Gemma3ForCausalLM` (text only) -> `gemma3` (llama.cpp `conversion/gemma.py` `Gemma3Model` at 0c1e57098):
//! Gemma 2's layout plus per-head Q/K norms (also + 1) and an optional `lm_head`; five sliding layers in six
//! with their own RoPE base, linear RoPE scaling on the global layers only, no attention soft-capping.

use super::gemma::gemma_rules;
use super::gemma2::GEMMA2;
use super::{
    Architecture, Converter, Dim::*, ForwardFacts, LogitSoftcap, QueryScale, SlidingWindow, SwaRope, TensorRule,
    Transform,
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
    // llama.cpp `src/models/gemma3.cpp`, beside Gemma 2's: `set_swa_pattern(6)` only when the GGUF has a window,
    // sliding layers at `rope.freq_base_swa` unscaled, Q/K norms before RoPE, no attention soft-cap, final
    // soft-cap only when recorded, 27B (62 layers) query scale.
    forward: ForwardFacts {
        qk_norm: true,
        sliding_window: SlidingWindow::Pattern { period: 6, default_window: 0 },
        logit_softcap: LogitSoftcap::TanhIfPresent,
        attn_softcap: LogitSoftcap::None,
        query_scale: QueryScale::GemmaByLayers { layers: 62 },
        swa_rope: SwaRope::OwnBase,
        ..GEMMA2.forward
    },
    converter: Converter::Gemma3,
    ..GEMMA2
};
