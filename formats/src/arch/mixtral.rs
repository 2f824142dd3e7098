//! `MixtralForCausalLM` -> `llama` (llama.cpp `conversion/llama.py` `LlamaModel` at 0c1e57098, which
//! registers Mixtral): Llama's attention with the Q/K permutation, and per layer a router
//! (`block_sparse_moe.gate` -> `ffn_gate_inp`, kept F32) and `num_local_experts` SwiGLU experts whose
//! `w1`/`w2`/`w3` are stacked into `ffn_gate_exps`/`ffn_down_exps`/`ffn_up_exps`, emitted in that order.
//! llama.cpp's graph (`src/models/llama.cpp`): softmax over the router logits, top `num_experts_per_tok`,
//! selected weights renormalized (as transformers' Mixtral does).

use super::llama::{llama_rules, LLAMA};
use super::{Architecture, Dim::*, ForwardFacts, MoeRouting, TensorRule, Transform};

const RULES: &[TensorRule] = llama_rules![
    TensorRule::copy(
        "model.layers.{bid}.block_sparse_moe.gate.weight",
        "blk.{bid}.ffn_gate_inp.weight",
        &[Experts, Hidden]
    ),
    TensorRule::copy(
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w1.weight",
        "blk.{bid}.ffn_gate_exps.weight",
        &[ExpertFfn, Hidden],
    ),
    TensorRule::copy(
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w2.weight",
        "blk.{bid}.ffn_down_exps.weight",
        &[Hidden, ExpertFfn],
    ),
    TensorRule::copy(
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w3.weight",
        "blk.{bid}.ffn_up_exps.weight",
        &[ExpertFfn, Hidden],
    ),
];

pub(super) static MIXTRAL: Architecture = Architecture {
    hf_names: &["MixtralForCausalLM"],
    rules: RULES,
    forward: ForwardFacts { moe: Some(MoeRouting::SoftmaxTopKNormalized), ..LLAMA.forward },
    ..LLAMA
};
