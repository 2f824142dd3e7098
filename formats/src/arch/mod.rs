//! The architecture registry: one small file per Hugging Face architecture, each a static
//! [`Architecture`] value of declarative tensor rules (HF name pattern -> GGUF name, expected shape,
//! transform). Adding an architecture is one new file plus one line in [`ARCHITECTURES`].
//!
//! Names and rules follow llama.cpp's converter at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62:
//! `gguf-py/gguf/tensor_mapping.py`, `gguf-py/gguf/constants.py` (`MODEL_TENSORS`), `conversion/llama.py`
//! (<https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/conversion/llama.py>)
//! and `conversion/qwen.py`; the Granite, SmolLM3 and Phi-3 entries cite 0c1e57098, the converter their fixtures
//! (`fixtures/archs/`) are checked against byte for byte. What a converter class does beyond tensor rules (its own
//! keys, generated tensors, refused config values) is its [`Converter`]. Invariant: every HF tensor of a checkpoint is either mapped by exactly one rule
//! or explicitly ignored; anything else is an error before any tensor data is read.
//!
//! The mixture-of-experts entries (`mixtral`, `qwen2moe`, `qwen3moe`) follow the converter at 0c1e57098 (the
//! copy vendored by llama-cpp-python 0.3.36 that the fixtures are checked against). Their per-expert HF tensors
//! are stacked by one shared rule transform, an `{xid}` expert index in the HF pattern ([`TensorRule`], [`plan`]).
//! `olmo2` (OLMo 2) follows the same converter: no pre-norms, whole-width Q/K norms and a required head
//! ([`ForwardFacts::pre_norms`], [`QkNormWidth`], [`Architecture::requires_output`]).

mod config;
mod converter;
mod facts;
mod gemma;
mod gemma2;
mod gemma3;
mod general;
mod granite;
mod hparams;
mod keys;
pub mod limits;
mod llama;
mod mistral;
mod mixtral;
mod olmo2;
mod phi3;
mod plan;
mod qwen2;
mod qwen2moe;
mod qwen3;
mod qwen3moe;
mod smollm3;

pub use config::{HfConfig, RopeScaling};
pub use converter::{arch_metadata, check_config, hf_config_from_gguf, longrope_factors, Converter, LongRopeFactors};
pub use facts::{ConfigRequirement, ConfigValue, SharedExpert};
pub use facts::{
    EmbeddingScale, FfnKind, ForwardFacts, LogitSoftcap, MoeRouting, NormKind, Presence, QkNormWidth, QueryScale,
    RopeStyle, SlidingWindow, SwaRope,
};
pub use gemma::{swa_layers, SwaLayers};
pub use general::{general_metadata, general_metadata_with_experts};
pub use keys::{GgufHparams, HparamKey};
pub use phi3::{phi3_rope, Phi3Rope, GENERATED_TENSORS};
pub use plan::{plan_tensors, PlannedTensor};
pub use smollm3::NO_ROPE_LAYER_STEP;

use std::path::Path;

use crate::error::{FormatError, Result};

/// A dimension of an expected tensor shape, resolved from config.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// `vocab_size`.
    Vocab,
    /// `hidden_size`.
    Hidden,
    /// `intermediate_size`.
    Ffn,
    /// `num_attention_heads * head_dim`.
    QOut,
    /// `num_key_value_heads * head_dim`.
    KvOut,
    /// `head_dim` (or `hidden_size / num_attention_heads`).
    HeadDim,
    /// `(num_attention_heads + 2 * num_key_value_heads) * head_dim`: a fused Q/K/V projection (Phi-3).
    QkvOut,
    /// `2 * intermediate_size`: a fused gate/up projection (Phi-3).
    FfnPair,
    /// The feed-forward size of one routed expert: `moe_intermediate_size`, else `intermediate_size`
    /// (Mixtral's experts are `intermediate_size` wide).
    ExpertFfn,
    /// `shared_expert_intermediate_size` (Qwen2-MoE's shared expert).
    SharedFfn,
    /// The number of routed experts (`num_local_experts`, `num_experts`): router rows.
    Experts,
    /// A dimension of size one (Qwen2-MoE's `shared_expert_gate`, one output).
    One,
}

/// What happens to a tensor's values on the way to GGUF (the inverse is applied on the way back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Copied (with dtype conversion).
    None,
    /// Rows permuted from HF's rotate-half RoPE layout to llama.cpp's adjacent pairs, with
    /// `num_attention_heads` heads (Q).
    RopePermuteQ,
    /// The same with `num_key_value_heads` heads (K).
    RopePermuteK,
    /// 1 added to every value (Gemma's RMSNorm weights, which HF stores centred on 0 and applies as
    /// `1 + w`); subtracted on the way back.
    NormShift,
}

impl Transform {
    /// Whether this is one of the Q/K RoPE row permutations.
    pub fn is_rope_permute(self) -> bool {
        matches!(self, Transform::RopePermuteQ | Transform::RopePermuteK)
    }
}

/// One HF tensor name pattern and what it becomes. `{bid}` stands for a layer index.
///
/// Expert stacking: an HF pattern with `{xid}` (an expert index) names one tensor per expert, each of
/// [`TensorRule::shape`]; together they become the one GGUF tensor of the rule, stacked along a new outer
/// dimension (torch shape `[n_expert, ..shape]`, expert `x` at index `x`), as llama.cpp's converter does
/// with `torch.stack`. See [`plan`] for when the stacked tensors are emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorRule {
    pub hf: &'static str,
    pub gguf: &'static str,
    /// Expected shape in torch order.
    pub shape: &'static [Dim],
    pub transform: Transform,
    /// The tensor may be absent (e.g. `lm_head.weight` with tied embeddings, optional biases).
    pub optional: bool,
}

impl TensorRule {
    /// A required tensor copied as is.
    pub const fn copy(hf: &'static str, gguf: &'static str, shape: &'static [Dim]) -> TensorRule {
        TensorRule { hf, gguf, shape, transform: Transform::None, optional: false }
    }

    /// The same rule, marked optional.
    pub const fn optional(self) -> TensorRule {
        TensorRule { optional: true, ..self }
    }

    /// The same rule with a transform.
    pub const fn with(self, transform: Transform) -> TensorRule {
        TensorRule { transform, ..self }
    }

    /// Whether the rule stacks one HF tensor per expert (its HF pattern has `{xid}`).
    pub fn stacks_experts(&self) -> bool {
        self.hf.contains("{xid}")
    }

    /// The layer index if `name` matches this rule (`Some(None)` for a rule without `{bid}`).
    fn matches(&self, name: &str) -> Option<Option<u32>> {
        match_indices(self.hf, name).map(|(bid, _)| bid)
    }
}

/// The `{bid}` and `{xid}` values if `name` matches `pattern` (each `None` where the pattern lacks it).
/// Indices are decimal without leading zeros, as the checkpoints spell them.
fn match_indices(pattern: &str, name: &str) -> Option<(Option<u32>, Option<u32>)> {
    let (mut bid, mut xid) = (None, None);
    let (mut pat, mut rest) = (pattern, name);
    loop {
        let next = ["{bid}", "{xid}"].iter().filter_map(|p| pat.find(p).map(|i| (i, *p))).min();
        let Some((i, which)) = next else { return (rest == pat).then_some((bid, xid)) };
        rest = rest.strip_prefix(&pat[..i])?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mid = &rest[..digits];
        if mid.is_empty() || (mid.len() > 1 && mid.starts_with('0')) {
            return None;
        }
        let v: u32 = mid.parse().ok()?;
        if which == "{bid}" {
            bid = Some(v);
        } else {
            xid = Some(v);
        }
        rest = &rest[digits..];
        pat = &pat[i + which.len()..];
    }
}

/// Hyperparameter keys written after `general.file_type` by the architecture's own
/// `set_gguf_parameters` (e.g. `LlamaModel`'s vocab size and RoPE dimension count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraKey {
    VocabSize,
    RopeDimensionCount,
    /// `GraniteModel`: `attention.scale`, `embedding_scale`, `residual_scale`, `logit_scale` from config.json's
    /// `attention_multiplier`, `embedding_multiplier`, `residual_multiplier`, `logits_scaling` (each only when
    /// present and non-zero).
    GraniteScales,
    /// `{arch}.expert_feed_forward_length` from `moe_intermediate_size`, when config.json has it
    /// (`Qwen2MoeModel.set_gguf_parameters`).
    ExpertFeedForwardLength,
    /// `{arch}.expert_shared_feed_forward_length` from `shared_expert_intermediate_size`, when present.
    ExpertSharedFeedForwardLength,
}

/// How the tokenizer is chosen (`set_vocab` of the converter class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabStyle {
    /// `LlamaModel.set_vocab`: `add_prefix_space` -> `tokenizer.ggml.add_space_prefix` first, SentencePiece
    /// if `tokenizer.model` exists else BPE, and `add_bos_token = false` for 49152-token vocabularies.
    Llama,
    /// `Qwen2Model.set_vocab`: SentencePiece if `tokenizer.model` exists, else BPE.
    Plain,
    /// `Phi3MiniModel.set_vocab`: BPE for a `GPT2Tokenizer` (tokenizer_config.json `tokenizer_class`), else
    /// SentencePiece (required) with every added token as is, score -1000, CONTROL if special.
    Phi3,
    /// `Gemma2Model.set_vocab`/`Gemma3Model.set_vocab`: SentencePiece (`tokenizer.model` required here: Gemma 3's
    /// BPE fallback also trims the embedding rows), then `tokenizer.ggml.add_space_prefix = false`.
    Gemma,
    /// `TextModel.set_vocab` (`_set_vocab_gpt2`): byte-level BPE from tokenizer.json, whatever else is there
    /// (Qwen2-MoE, Qwen3-MoE).
    Gpt2,
}

/// A supported architecture.
#[derive(Debug, PartialEq, Eq)]
pub struct Architecture {
    /// `architectures[0]` values in config.json that select it.
    pub hf_names: &'static [&'static str],
    /// `general.architecture` and the prefix of its hyperparameter keys.
    pub gguf_name: &'static str,
    pub rules: &'static [TensorRule],
    pub extra_keys: &'static [ExtraKey],
    pub vocab: VocabStyle,
    /// A `rope_scaling.rope_type == "llama3"` config generates a `rope_freqs.weight` tensor, and the forward
    /// pass hands that tensor (Llama 3 frequency factors) to RoPE.
    pub llama3_rope_freqs: bool,
    /// What the forward pass builds for it.
    pub forward: ForwardFacts,
    /// The converter class's own handling of config.json ([`Converter`]).
    pub converter: Converter,
}

/// Every supported architecture.
pub static ARCHITECTURES: &[&Architecture] = &[
    &llama::LLAMA,
    &mistral::MISTRAL,
    &qwen2::QWEN2,
    &qwen3::QWEN3,
    &granite::GRANITE,
    &smollm3::SMOLLM3,
    &phi3::PHI3,
    &gemma2::GEMMA2,
    &gemma3::GEMMA3,
    &mixtral::MIXTRAL,
    &qwen2moe::QWEN2MOE,
    &qwen3moe::QWEN3MOE,
    &olmo2::OLMO2,
];

/// HF tensors every converter drops (`ModelBase.prepare_tensors`).
pub const IGNORED_SUFFIXES: &[&str] = &[".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq"];

/// The HF architecture names we support, sorted and comma-separated (for error messages).
pub fn supported_names() -> String {
    let mut names: Vec<&str> = ARCHITECTURES.iter().flat_map(|a| a.hf_names.iter().copied()).collect();
    names.sort_unstable();
    names.join(", ")
}

/// The GGUF `general.architecture` names we support, sorted, deduplicated and comma-separated.
pub fn supported_gguf_names() -> String {
    let mut names: Vec<&str> = ARCHITECTURES.iter().map(|a| a.gguf_name).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// The architecture registered for the HF name `hf_arch`.
pub fn lookup(path: &Path, hf_arch: &str) -> Result<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.hf_names.contains(&hf_arch)).ok_or_else(|| {
        FormatError::UnknownArchitecture { path: path.into(), name: hf_arch.into(), supported: supported_names() }
    })
}

/// The architecture whose `general.architecture` is `gguf_name` (the first registered, for GGUF -> HF).
pub fn lookup_gguf(path: &Path, gguf_name: &str) -> Result<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.gguf_name == gguf_name).ok_or_else(|| FormatError::UnknownArchitecture {
        path: path.into(),
        name: gguf_name.into(),
        supported: supported_gguf_names(),
    })
}

/// The architecture of a GGUF file: its `general.architecture`, and among the entries of that name (`llama` is
/// Llama and Mixtral) the one with experts exactly when `{arch}.expert_count` is above zero, as llama.cpp
/// decides whether a `llama` model has a mixture-of-experts FFN.
pub fn lookup_gguf_file(file: &crate::gguf::GgufFile) -> Result<&'static Architecture> {
    let hp = GgufHparams::new(file);
    let name = hp.map_or("", |h| h.arch());
    let first = lookup_gguf(file.path(), name)?;
    let experts = hp.and_then(|h| h.u64(HparamKey::ExpertCount)).is_some_and(|n| n > 0);
    Ok(ARCHITECTURES.iter().copied().find(|a| a.gguf_name == name && a.has_experts() == experts).unwrap_or(first))
}

impl Architecture {
    /// HF q/k rows (and biases) are permuted on convert (the rules carry [`Transform::RopePermuteQ`]/`K`),
    /// from HF's rotate-half layout to the adjacent pairs of [`RopeStyle::Norm`].
    pub fn permutes_hf_qk(&self) -> bool {
        self.rules.iter().any(|r| r.transform.is_rope_permute())
    }

    /// Its converter class ignores config.json's `head_dim` (Granite: `hidden_size / num_attention_heads`).
    pub fn ignores_head_dim(&self) -> bool {
        self.converter == Converter::Granite
    }

    /// `num_key_value_heads` must be stated in config.json: the K permutation needs it.
    pub fn requires_kv_heads(&self) -> bool {
        self.rules.iter().any(|r| r.transform == Transform::RopePermuteK)
    }

    /// `output.weight` may be absent, the head then being tied to `token_embd.weight`.
    pub fn tied_output_allowed(&self) -> bool {
        self.rules.iter().any(|r| r.gguf == "output.weight" && r.optional)
    }

    /// `output.weight` is required: llama.cpp creates it without `TENSOR_NOT_REQUIRED` (OLMo 2), so the head
    /// is never tied to `token_embd.weight`.
    pub fn requires_output(&self) -> bool {
        self.rules.iter().any(|r| r.gguf == "output.weight" && !r.optional)
    }

    /// The rule mapping HF tensor `name`, with the layer index it matched.
    pub fn rule_for(&self, name: &str) -> Option<(&TensorRule, Option<u32>)> {
        self.rules.iter().find_map(|r| r.matches(name).map(|bid| (r, bid)))
    }

    /// The rule mapping HF tensor `name`, with the layer and expert indices it matched.
    pub fn rule_for_indexed(&self, name: &str) -> Option<(&TensorRule, Option<u32>, Option<u32>)> {
        self.rules.iter().find_map(|r| match_indices(r.hf, name).map(|(bid, xid)| (r, bid, xid)))
    }

    /// Whether any rule stacks experts (a mixture-of-experts architecture).
    pub fn has_experts(&self) -> bool {
        self.rules.iter().any(TensorRule::stacks_experts)
    }

    /// The rule producing GGUF tensor `name`, with the layer index.
    pub fn rule_for_gguf(&self, name: &str) -> Option<(&TensorRule, Option<u32>)> {
        self.rules.iter().find_map(|r| {
            let inverse = TensorRule { hf: r.gguf, ..*r };
            inverse.matches(name).map(|bid| (r, bid))
        })
    }
}

/// Replace `{bid}` in a pattern.
pub fn fill(pattern: &str, bid: Option<u32>) -> String {
    match bid {
        Some(b) => pattern.replace("{bid}", &b.to_string()),
        None => pattern.to_string(),
    }
}

/// Whether GGUF weight `name` is a mixture of experts' router (`ffn_gate_inp`, or the shared expert's gate
/// `ffn_gate_inp_shexp`): kept in float by every quantizer (llama.cpp's converter writes them F32; vLLM and
/// transformers load them unquantized).
pub fn is_router(name: &str) -> bool {
    ROUTERS.iter().any(|r| name.strip_suffix(".weight").is_some_and(|n| n.ends_with(&format!(".{r}"))))
}

/// The GGUF short names of a mixture of experts' routers ([`is_router`]).
pub const ROUTERS: [&str; 2] = ["ffn_gate_inp", "ffn_gate_inp_shexp"];

/// Replace `{bid}` and `{xid}` in a pattern (the HF name of one expert's tensor).
pub fn fill_expert(pattern: &str, bid: Option<u32>, xid: u32) -> String {
    fill(pattern, bid).replace("{xid}", &xid.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_and_rules_are_unique() {
        let mut hf = HashSet::new();
        for a in ARCHITECTURES {
            for n in a.hf_names {
                assert!(hf.insert(*n), "HF architecture {n} registered twice");
            }
            let mut src = HashSet::new();
            let mut dst = HashSet::new();
            for r in a.rules {
                assert!(src.insert(r.hf), "{}: HF pattern {} twice", a.gguf_name, r.hf);
                assert!(dst.insert(r.gguf), "{}: GGUF name {} twice", a.gguf_name, r.gguf);
                assert_eq!(r.hf.contains("{bid}"), r.gguf.contains("{bid}"), "{}", r.hf);
                // An expert index only on the HF side, and only within a layer.
                assert!(!r.gguf.contains("{xid}") && (!r.stacks_experts() || r.hf.contains("{bid}")), "{}", r.hf);
                assert!(fill(r.gguf, Some(999)).len() < crate::gguf::MAX_NAME_LENGTH);
            }
        }
    }

    /// The presence the rules give GGUF tensor `gguf` (a pattern with `{bid}`).
    fn rule_presence(a: &Architecture, gguf: &str) -> Presence {
        match a.rules.iter().find(|r| r.gguf == gguf) {
            None => Presence::Absent,
            Some(r) if r.optional => Presence::Optional,
            Some(_) => Presence::Required,
        }
    }

    #[test]
    fn forward_facts_agree_with_the_rules() {
        for a in ARCHITECTURES {
            let f = &a.forward;
            let name = a.hf_names[0];
            for role in ["attn_q", "attn_k", "attn_v"] {
                let bias = rule_presence(a, &format!("blk.{{bid}}.{role}.bias"));
                assert_eq!(bias, f.qkv_bias, "{name}: {role} bias");
            }
            assert_eq!(rule_presence(a, "blk.{bid}.attn_output.bias"), f.attn_out_bias, "{name}: output bias");
            for (norm, width) in [("attn_q_norm", Dim::QOut), ("attn_k_norm", Dim::KvOut)] {
                let p = rule_presence(a, &format!("blk.{{bid}}.{norm}.weight"));
                assert_eq!(p == Presence::Required, f.qk_norm, "{name}: {norm}");
                assert_ne!(p, Presence::Optional, "{name}: {norm}");
                // Per-head norms hold head_dim values, whole-projection norms one per projection row.
                if let Some(r) = a.rules.iter().find(|r| r.gguf == format!("blk.{{bid}}.{norm}.weight")) {
                    let want = match f.qk_norm_width {
                        QkNormWidth::Head => Dim::HeadDim,
                        QkNormWidth::Projection => width,
                    };
                    assert_eq!(r.shape, [want], "{name}: {norm} shape");
                }
            }
            // Convert permutes HF q/k rows exactly for the adjacent-pair RoPE, and then needs the KV heads.
            assert_eq!(a.permutes_hf_qk(), f.rope == RopeStyle::Norm, "{name}: RoPE permutation");
            assert_eq!(a.requires_kv_heads(), a.permutes_hf_qk(), "{name}");
            // rope_freqs.weight only makes sense for RoPE the factors were made for (Llama 3: NORM).
            assert!(!a.llama3_rope_freqs || f.rope == RopeStyle::Norm, "{name}: rope_freqs");
            // Every block tensor the forward pass reads has a rule: fused Q/K/V and gate/up where the facts say,
            // the router and stacked experts with routing, the dense FFN otherwise.
            let (attn, absent): (&[&str], &[&str]) = if f.fused_qkv_gate_up {
                (&["attn_qkv", "attn_output"], &["attn_q", "ffn_gate"])
            } else {
                (&["attn_q", "attn_k", "attn_v", "attn_output"], &["attn_qkv"])
            };
            // Pre-norms exactly when the facts say; a block without them normalizes its outputs instead.
            for t in ["attn_norm", "ffn_norm"] {
                let p = rule_presence(a, &format!("blk.{{bid}}.{t}.weight"));
                let want = if f.pre_norms { Presence::Required } else { Presence::Absent };
                assert_eq!(p, want, "{name}: {t}");
            }
            assert!(f.pre_norms || f.post_norms, "{name}: a block without any norm");
            let ffn: &[&str] = match (f.moe, f.fused_qkv_gate_up) {
                (None, false) => &["ffn_gate", "ffn_up", "ffn_down"],
                (None, true) => &["ffn_up", "ffn_down"],
                (Some(_), _) => &["ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"],
            };
            for t in attn.iter().chain(ffn) {
                assert_eq!(rule_presence(a, &format!("blk.{{bid}}.{t}.weight")), Presence::Required, "{name}: {t}");
            }
            for t in absent {
                assert_eq!(rule_presence(a, &format!("blk.{{bid}}.{t}.weight")), Presence::Absent, "{name}: {t}");
            }
            // Fused projections and LongRoPE factors are Phi-3's; NoPE layers need RoPE to skip.
            assert_eq!(f.fused_qkv_gate_up, a.converter == Converter::Phi3, "{name}: fused");
            assert_eq!(f.longrope_factors, a.converter == Converter::Phi3, "{name}: LongRoPE");
            assert!(f.no_rope_layer_step.is_none_or(|s| s > 1), "{name}: NoPE step");
            // Experts are stacked exactly for the `*_exps` tensors, which exist exactly with routing.
            for r in a.rules {
                assert_eq!(r.stacks_experts(), r.gguf.ends_with("_exps.weight"), "{name}: {}", r.hf);
            }
            assert_eq!(a.has_experts(), f.moe.is_some(), "{name}: experts");
            // The shared expert's tensors exist exactly when the facts gate one in.
            for t in ["ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp", "ffn_gate_inp_shexp"] {
                let p = rule_presence(a, &format!("blk.{{bid}}.{t}.weight"));
                assert_eq!(p.allowed(), f.shared_expert == SharedExpert::SigmoidGated, "{name}: {t}");
            }
            for t in ["token_embd.weight", "output_norm.weight"] {
                assert_eq!(rule_presence(a, t), Presence::Required, "{name}: {t}");
            }
            // The head is optional (tied when absent), never converted (Gemma 2: always tied), or required
            // (OLMo 2: llama.cpp creates it without TENSOR_NOT_REQUIRED).
            let head = rule_presence(a, "output.weight");
            assert_eq!(head == Presence::Required, a.converter == Converter::Olmo2, "{name}: output.weight");
            assert_eq!(head == Presence::Required, a.requires_output(), "{name}: output.weight");
            assert!(a.tied_output_allowed() || a.requires_output() || a.converter == Converter::Gemma2, "{name}");
            // Post norms exactly when the facts say so; Gemma's zero-centred norms are shifted, and only norms.
            for t in ["post_attention_norm", "post_ffw_norm"] {
                let p = rule_presence(a, &format!("blk.{{bid}}.{t}.weight"));
                assert_eq!(p == Presence::Required, f.post_norms, "{name}: {t}");
                assert_ne!(p, Presence::Optional, "{name}: {t}");
            }
            for r in a.rules.iter().filter(|r| r.transform == Transform::NormShift) {
                assert!(r.gguf.ends_with("norm.weight") && r.shape.len() == 1, "{name}: {} shifted", r.gguf);
            }
            // A sliding pattern has a period; soft-caps, query scale and SWA RoPE only with the Gemma converters.
            if let SlidingWindow::Pattern { period, .. } = f.sliding_window {
                assert!(period > 0, "{name}: SWA period");
            }
            let gemma = matches!(a.converter, Converter::Gemma2 | Converter::Gemma3);
            assert_eq!(gemma, matches!(f.query_scale, QueryScale::GemmaByLayers { .. }), "{name}: query scale");
            assert_eq!(gemma, a.vocab == VocabStyle::Gemma, "{name}: vocab");
            assert!(gemma || (f.swa_rope == SwaRope::Global && f.attn_softcap == LogitSoftcap::None), "{name}");
            // What the forward pass implements today: everything registered.
            assert_eq!(f.unimplemented(), None, "{name}");
        }
        let gemma = ForwardFacts { embedding_scale: EmbeddingScale::SqrtHidden, ..ForwardFacts::DENSE };
        assert_eq!(gemma.unimplemented(), None);
    }

    #[test]
    fn supported_name_lists() {
        assert_eq!(
            supported_gguf_names(),
            "gemma2, gemma3, granite, llama, olmo2, phi3, qwen2, qwen2moe, qwen3, qwen3moe, smollm3"
        );
        assert!(supported_names().starts_with("Gemma2ForCausalLM, Gemma3ForCausalLM, GraniteForCausalLM"));
    }

    #[test]
    fn patterns_match_layer_indices() {
        let a = lookup(Path::new("x"), "LlamaForCausalLM").unwrap();
        let (r, bid) = a.rule_for("model.layers.12.self_attn.q_proj.weight").unwrap();
        assert_eq!((r.gguf, bid, r.transform), ("blk.{bid}.attn_q.weight", Some(12), Transform::RopePermuteQ));
        assert!(a.rule_for("model.layers.x.self_attn.q_proj.weight").is_none());
        assert!(a.rule_for("model.layers.01.self_attn.q_proj.weight").is_none());
        let (r, bid) = a.rule_for_gguf("blk.3.ffn_down.weight").unwrap();
        assert_eq!((r.hf, bid), ("model.layers.{bid}.mlp.down_proj.weight", Some(3)));
        let a = lookup(Path::new("x"), "MixtralForCausalLM").unwrap();
        let (r, bid, xid) = a.rule_for_indexed("model.layers.1.block_sparse_moe.experts.12.w2.weight").unwrap();
        assert_eq!((r.gguf, bid, xid), ("blk.{bid}.ffn_down_exps.weight", Some(1), Some(12)));
        assert!(a.rule_for_indexed("model.layers.1.block_sparse_moe.experts.012.w2.weight").is_none());
        assert!(a.rule_for_indexed("model.layers.1.block_sparse_moe.experts..w2.weight").is_none());
        assert!(a.rule_for_indexed("model.layers.1.block_sparse_moe.experts.99999999999.w2.weight").is_none());
        assert_eq!(fill_expert("l.{bid}.e.{xid}.w", Some(3), 7), "l.3.e.7.w");
        let e = lookup(Path::new("c.json"), "GPT2LMHeadModel").unwrap_err().to_string();
        assert!(e.contains("GPT2LMHeadModel") && e.contains("LlamaForCausalLM, MistralForCausalLM"), "{e}");
        let g = lookup(Path::new("x"), "Gemma2ForCausalLM").unwrap();
        let (r, _) = g.rule_for("model.layers.1.pre_feedforward_layernorm.weight").unwrap();
        assert_eq!((r.gguf, r.transform), ("blk.{bid}.ffn_norm.weight", Transform::NormShift));
        assert!(g.rule_for("lm_head.weight").is_none(), "Gemma 2's head is tied");
        assert!(!g.permutes_hf_qk() && !g.requires_kv_heads());
    }
}
