//! What the forward pass needs to know about an architecture beyond its tensor names: the graph llama.cpp
//! builds for it (`src/models/<arch>.cpp` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62). Each fact is a small
//! typed value; the evaluator composes a decoder block from them and refuses, with a typed error before any
//! tensor is read, every value it does not implement.
//!
//! Invariant: a fact that the tensor rules already state is derived from them, not stated again
//! ([`super::Architecture::permutes_hf_qk`], [`super::Architecture::requires_kv_heads`],
//! [`super::Architecture::tied_output_allowed`]); the facts stated here are checked against the rules by the
//! registry's consistency test (a required bias has a non-optional rule, a Q/K norm has its rules, ...).
//!
//! The architectures added at llama.cpp 0c1e57098 state what they bring here: Gemma 2/3 (`src/models/gemma2.cpp`,
//! `gemma3.cpp`) GeGLU, sliding-window layers, soft-capping, post norms, embedding and query scaling; Granite,
//! SmolLM3 and Phi-3 their multipliers, NoPE layers, fused projections and LongRoPE; the mixture-of-experts
//! architectures ([`MoeRouting`], [`SharedExpert`], `src/models/{llama,qwen2moe,qwen3moe}.cpp`) their routing;
//! OLMo 2 (`src/models/olmo2.cpp`) blocks without pre-norms and Q/K norms over the whole projection.

/// How the rotated dimensions of a head pair up (llama.cpp's `llama_rope_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i + 1)`: `LLAMA_ROPE_TYPE_NORM` (Llama, Mistral). HF checkpoints of these store
    /// rotate-half rows, which convert (and the evaluator reading a HF directory) permutes into this order.
    Norm,
    /// Pairs `(i, i + n_rot / 2)`: `LLAMA_ROPE_TYPE_NEOX` (Qwen2, Qwen3), i.e. HF's rotate-half on HF's own
    /// row layout.
    Neox,
}

/// Whether a tensor the block may use is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Never read (llama.cpp does not create it for this architecture).
    Absent,
    /// Used when the checkpoint has it.
    Optional,
    /// The model is refused without it.
    Required,
}

impl Presence {
    /// Whether the tensor may be used at all.
    pub fn allowed(self) -> bool {
        self != Presence::Absent
    }
}

/// The normalization of the block inputs and the final hidden state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm with a learned scale and `{arch}.attention.layer_norm_rms_epsilon`.
    Rms,
}

/// The feed-forward network of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// `down(gelu(gate(x)) * up(x))` with GELU's tanh approximation (llama.cpp `LLM_FFN_GELU` with a parallel
    /// gate: `ggml_geglu_split`; Gemma's `gelu_pytorch_tanh`).
    GeGlu,
}

/// Mixture-of-experts routing (llama.cpp `build_moe_ffn` in `src/llama-graph.cpp` at 0c1e57098 with
/// `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`): the router `blk.N.ffn_gate_inp` gives `{arch}.expert_count`
/// logits per token, a softmax turns them into probabilities, the `{arch}.expert_used_count` largest are
/// selected (ties to the lower expert index), and each token's output is the weighted sum of its experts'
/// SwiGLU outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeRouting {
    /// The selected probabilities are the weights as they are (`norm_w = false`: Qwen2-MoE).
    SoftmaxTopK,
    /// The selected probabilities are divided by their sum (`norm_w = true`: Mixtral, Qwen3-MoE).
    SoftmaxTopKNormalized,
}

impl MoeRouting {
    /// Whether the selected weights are renormalized to sum to one.
    pub fn normalizes(self) -> bool {
        self == MoeRouting::SoftmaxTopKNormalized
    }
}

/// An expert every token goes through beside the routed ones (Qwen2-MoE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedExpert {
    /// No shared expert.
    None,
    /// `ffn_{gate,up,down}_shexp` SwiGLU, scaled per token by `sigmoid(ffn_gate_inp_shexp · x)` and added
    /// to the routed experts' output (`src/models/qwen2moe.cpp`).
    SigmoidGated,
}

/// A config.json value the forward pass assumes (what llama.cpp's graph computes), refused otherwise by key
/// before any tensor is read. An absent key stands for `absent` (transformers' default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigRequirement {
    pub key: &'static str,
    /// The only value accepted.
    pub value: ConfigValue,
    /// The value transformers uses when the key is absent (`None`: absent is accepted).
    pub absent: Option<ConfigValue>,
}

/// A JSON value of a [`ConfigRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigValue {
    Int(u64),
    Bool(bool),
    /// An empty list (or `null`).
    EmptyList,
}

impl ConfigValue {
    /// Whether the JSON value `v` is this value.
    pub fn matches(self, v: &serde_json::Value) -> bool {
        match self {
            ConfigValue::Int(n) => v.as_u64() == Some(n),
            ConfigValue::Bool(b) => v.as_bool() == Some(b),
            ConfigValue::EmptyList => v.is_null() || v.as_array().is_some_and(Vec::is_empty),
        }
    }

    /// As JSON.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            ConfigValue::Int(n) => n.into(),
            ConfigValue::Bool(b) => b.into(),
            ConfigValue::EmptyList => serde_json::Value::Array(Vec::new()),
        }
    }
}

impl ConfigRequirement {
    /// The value to write into a config.json rebuilt from GGUF: the required value where absence would mean
    /// something else.
    pub fn hf_value(&self) -> Option<serde_json::Value> {
        (self.absent != Some(self.value)).then(|| self.value.to_json())
    }

    /// A description of what is wrong with `raw`'s value of this key, if anything.
    pub fn violation(&self, raw: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        match (raw.get(self.key), self.absent) {
            (None, None) => None,
            (None, Some(d)) if d == self.value => None,
            (None, Some(d)) => Some(format!(
                "is absent, which means {}; only {} is supported (what llama.cpp computes)",
                d.to_json(),
                self.value.to_json()
            )),
            (Some(v), _) if self.value.matches(v) => None,
            (Some(v), _) => {
                Some(format!("is {v}; only {} is supported (what llama.cpp computes)", self.value.to_json()))
            }
        }
    }
}

/// Which layers attend through a sliding window (Gemma 2/3, Cohere 2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlidingWindow {
    /// Every layer attends to the whole causal context. Mistral's `sliding_window` is neither written to
    /// GGUF by convert nor applied by llama.cpp's Llama graph, so it is `None` too.
    None,
    /// Layer `il` uses a window of `{arch}.attention.sliding_window` tokens unless `il % period ==
    /// period - 1` (llama.cpp `set_swa_pattern(period)`; a `{arch}.attention.sliding_window_pattern` key
    /// overrides the period or lists the layers). Without the window key the window is `default_window`, and
    /// 0 means no layer slides (Gemma 2 defaults to 4096, Gemma 3 to none).
    Pattern { period: u32, default_window: u32 },
    /// No layer slides unless `{arch}.attention.sliding_window` is non-zero, when llama.cpp slides layers in a
    /// pattern the forward pass does not implement (OLMo 3, converted as `olmo2`): such a file is refused.
    Refused,
}

/// What the Q/K RMSNorms of [`ForwardFacts::qk_norm`] run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNormWidth {
    /// Each head of `head_dim` values, one weight vector of `head_dim` shared by the heads (Qwen3, Gemma 3).
    Head,
    /// The whole projection of a token (`n_head * head_dim` for Q, `n_head_kv * head_dim` for K), one weight per
    /// value (OLMo 2: `build_norm` on the 2-D projection before it is split into heads).
    Projection,
}

/// The RoPE of sliding-window layers (llama.cpp `rope_freq_base_train_swa`/`rope_freq_scale_train_swa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwaRope {
    /// The base and scaling of the global layers (Gemma 2, and every architecture without SWA layers).
    Global,
    /// Their own base, `{arch}.rope.freq_base_swa` (10000 when absent), and no scaling (Gemma 3).
    OwnBase,
}

/// The scale of the queries before attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryScale {
    /// `1 / sqrt(head_dim)`.
    HeadDim,
    /// Gemma (llama.cpp `f_attention_scale`): `1 / sqrt(n_embd / n_head)` for a model of `layers` blocks (the
    /// 27B sizes, whose `query_pre_attn_scalar` is `hidden_size / num_attention_heads`), else
    /// `1 / sqrt(head_dim)`. GGUF does not record `query_pre_attn_scalar`; convert refuses a config whose
    /// value differs from the one this rule gives.
    GemmaByLayers { layers: u32 },
    /// `{arch}.attention.scale` when present and non-zero, else `1 / sqrt(head_dim)` (Granite's
    /// `attention_multiplier`).
    FromKey,
}

/// Soft-capping of the final logits (Gemma 2: `final_logit_softcapping`), or of the attention scores
/// ([`ForwardFacts::attn_softcap`], Gemma 2: `attn_logit_softcapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitSoftcap {
    /// Logits are used as the head computes them.
    None,
    /// `cap * tanh(logits / cap)` with `cap` from `{arch}.final_logit_softcapping` (or
    /// `{arch}.attn_logit_softcapping`), llama.cpp's default (30, or 50 for attention) when the key is absent.
    Tanh,
    /// The same, applied only when the GGUF has the key with a non-zero value (Gemma 3).
    TanhIfPresent,
}

/// Scaling of the token embeddings before the first block (Gemma: `sqrt(n_embd)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingScale {
    /// Embedding rows are the hidden states as they are.
    None,
    /// Multiplied by `sqrt(n_embd)`.
    SqrtHidden,
    /// Multiplied by `{arch}.embedding_scale` when that key is present and non-zero (Granite,
    /// `llm_graph_context::build_inp_embd`).
    FromKey,
}

/// The forward-pass facts of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardFacts {
    /// RoPE pairing.
    pub rope: RopeStyle,
    /// Biases of the Q, K and V projections (all three alike).
    pub qkv_bias: Presence,
    /// Bias of the attention output projection.
    pub attn_out_bias: Presence,
    /// RMSNorm on Q and K before RoPE (`attn_q_norm`/`attn_k_norm`), over [`ForwardFacts::qk_norm_width`].
    pub qk_norm: bool,
    /// What each Q/K norm runs over (per head, or the whole projection).
    pub qk_norm_width: QkNormWidth,
    /// RMSNorm of each block input before attention and FFN (`attn_norm`, `ffn_norm`); OLMo 2 has none and
    /// normalizes the outputs instead ([`ForwardFacts::post_norms`]).
    pub pre_norms: bool,
    /// Normalization of block inputs and of the final hidden state.
    pub norm: NormKind,
    /// Feed-forward network.
    pub ffn: FfnKind,
    /// Expert routing; `None` for a dense FFN.
    pub moe: Option<MoeRouting>,
    /// Sliding-window attention layers.
    pub sliding_window: SlidingWindow,
    /// Final logit soft-capping.
    pub logit_softcap: LogitSoftcap,
    /// RMSNorm after the attention and FFN outputs as well (Gemma 2's `post_attention_norm`/`post_ffw_norm`).
    pub post_norms: bool,
    /// Token embedding scale.
    pub embedding_scale: EmbeddingScale,
    /// The attention and FFN outputs are multiplied by `{arch}.residual_scale` (when non-zero) before each
    /// residual add (Granite).
    pub residual_scale: bool,
    /// The logits are multiplied by `1 / {arch}.logit_scale`, a required key (Granite).
    pub logit_scale: bool,
    /// Layers `il` with `(il + 1) % step == 0` run without RoPE (SmolLM3's NoPE layers, llama.cpp
    /// `n_no_rope_layer_step`).
    pub no_rope_layer_step: Option<u32>,
    /// Q/K/V are one `attn_qkv` projection (rows Q, then K, then V) and gate/up one `ffn_up` projection of
    /// `2 * n_ff` rows (gate first, llama.cpp `LLM_FFN_SWIGLU`), as Phi-3 stores them.
    pub fused_qkv_gate_up: bool,
    /// RoPE rotates only the first `{arch}.rope.dimension_count` values of each head (Phi-3's
    /// `partial_rotary_factor`); otherwise that count must equal the head size.
    pub partial_rotary: bool,
    /// `rope_factors_long.weight`/`rope_factors_short.weight` divide the RoPE frequencies, the long ones when
    /// the context is longer than `{arch}.rope.scaling.original_context_length` (Phi-3 LongRoPE,
    /// `llama_model::get_rope_factors`).
    pub longrope_factors: bool,
    /// Soft-capping of the attention scores (after the query scale, before the mask and softmax).
    pub attn_softcap: LogitSoftcap,
    /// Query scaling before attention.
    pub query_scale: QueryScale,
    /// RoPE of the sliding-window layers.
    pub swa_rope: SwaRope,
    /// The shared expert beside the routed ones (with `moe`).
    pub shared_expert: SharedExpert,
    /// config.json values the graph assumes, refused otherwise (by convert and the evaluator alike).
    pub config_requirements: &'static [ConfigRequirement],
}

impl ForwardFacts {
    /// A dense Llama-style decoder: RMSNorm, SwiGLU, full causal attention, no biases, no Q/K norm.
    pub const DENSE: ForwardFacts = ForwardFacts {
        rope: RopeStyle::Norm,
        qkv_bias: Presence::Absent,
        attn_out_bias: Presence::Absent,
        qk_norm: false,
        qk_norm_width: QkNormWidth::Head,
        pre_norms: true,
        norm: NormKind::Rms,
        ffn: FfnKind::SwiGlu,
        moe: None,
        sliding_window: SlidingWindow::None,
        logit_softcap: LogitSoftcap::None,
        post_norms: false,
        embedding_scale: EmbeddingScale::None,
        residual_scale: false,
        logit_scale: false,
        no_rope_layer_step: None,
        fused_qkv_gate_up: false,
        partial_rotary: false,
        longrope_factors: false,
        attn_softcap: LogitSoftcap::None,
        query_scale: QueryScale::HeadDim,
        swa_rope: SwaRope::Global,
        shared_expert: SharedExpert::None,
        config_requirements: &[],
    };

    /// The first fact the forward pass does not implement, named for an error message (`None`: all are).
    pub fn unimplemented(&self) -> Option<&'static str> {
        // Exhaustive matches: a new variant must be decided on here.
        match self.norm {
            NormKind::Rms => {}
        }
        match self.ffn {
            FfnKind::SwiGlu | FfnKind::GeGlu => {}
        }
        match self.moe {
            None | Some(MoeRouting::SoftmaxTopK | MoeRouting::SoftmaxTopKNormalized) => {}
        }
        match self.qk_norm_width {
            QkNormWidth::Head | QkNormWidth::Projection => {}
        }
        match self.shared_expert {
            SharedExpert::None | SharedExpert::SigmoidGated => {}
        }
        // Implemented (Gemma 2/3): sliding-window layers with their own RoPE, soft-capping of scores and
        // logits, post norms, embedding and query scaling.
        None
    }
}
