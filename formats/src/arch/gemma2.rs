//! `Gemma2ForCausalLM` -> `gemma2` (llama.cpp `conversion/gemma.py` `Gemma2Model` at 0c1e57098): 1 added to
//! the norm weights, no `lm_head` (llama.cpp ties the head to `token_embd`; a checkpoint with one is refused),
//! sandwich norms, GeGLU, every other layer sliding, attention and final logit soft-capping.

use super::gemma::gemma_rules;
use super::{
    Architecture, Converter, Dim::*, EmbeddingScale, FfnKind, ForwardFacts, LogitSoftcap, QueryScale, RopeStyle,
    SlidingWindow, SwaRope, TensorRule, Transform, VocabStyle,
};

const RULES: &[TensorRule] = gemma_rules![];

pub(super) static GEMMA2: Architecture = Architecture {
    hf_names: &["Gemma2ForCausalLM"],
    gguf_name: "gemma2",
    rules: RULES,
    extra_keys: &[],
    vocab: VocabStyle::Gemma,
    llama3_rope_freqs: false,
    // llama.cpp `src/models/gemma2.cpp`: NEOX RoPE, embeddings times sqrt(n_embd), `set_swa_pattern(2)` with a
    // 4096-token default window and the global layers' RoPE, `attn_soft_cap`, 27B (46 layers) query scale.
    forward: ForwardFacts {
        rope: RopeStyle::Neox,
        ffn: FfnKind::GeGlu,
        sliding_window: SlidingWindow::Pattern { period: 2, default_window: 4096 },
        logit_softcap: LogitSoftcap::Tanh,
        post_norms: true,
        embedding_scale: EmbeddingScale::SqrtHidden,
        attn_softcap: LogitSoftcap::Tanh,
        query_scale: QueryScale::GemmaByLayers { layers: 46 },
        swa_rope: SwaRope::Global,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Gemma2,
};
