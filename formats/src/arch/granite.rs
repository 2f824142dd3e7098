//! `GraniteForCausalLM` -> `granite` (llama.cpp `conversion/granite.py` `GraniteModel`, a `LlamaModel`, at
//! 0c1e57098): Llama's tensors and Q/K permutation, `head_dim` ignored, and four multipliers written as
//! `attention.scale`, `embedding_scale`, `residual_scale` and `logit_scale`, which `src/models/granite.cpp`
//! applies: embeddings times `embedding_scale`, attention scores times `attention.scale` (instead of
//! `1/sqrt(head_dim)`), each block's attention and FFN outputs times `residual_scale` before their residual
//! add, logits divided by `logit_scale`.

use super::facts::{EmbeddingScale, QueryScale};
use super::{llama, Architecture, Converter, ExtraKey, ForwardFacts, VocabStyle};

pub(super) static GRANITE: Architecture = Architecture {
    hf_names: &["GraniteForCausalLM"],
    gguf_name: "granite",
    rules: llama::RULES,
    extra_keys: &[ExtraKey::VocabSize, ExtraKey::RopeDimensionCount, ExtraKey::GraniteScales],
    vocab: VocabStyle::Llama,
    llama3_rope_freqs: true,
    // Llama's graph (optional Q/K/V and output biases) with the multipliers; MLP biases are refused (`mlp_bias`)
    // by `check_config`.
    forward: ForwardFacts {
        embedding_scale: EmbeddingScale::FromKey,
        query_scale: QueryScale::FromKey,
        residual_scale: true,
        logit_scale: true,
        ..llama::LLAMA.forward
    },
    converter: Converter::Granite,
};
