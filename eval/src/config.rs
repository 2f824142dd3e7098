//! Hyperparameters of the architectures the forward pass runs (everything `quantforge convert` writes: Llama,
//! Mistral, Qwen2, Qwen3), read from GGUF metadata (llama.cpp's key names and defaults, `load_hparams` in
//! `src/llama-model.cpp`) or from a HF `config.json` the way convert reads it, and checked before any tensor
//! is read.
//!
//! A HF directory and the GGUF convert makes of it give the same config: config.json goes through the
//! converter's own parser ([`HfConfig`]) and its RoPE scaling is mapped to what convert writes (Llama 3
//! factors computed by the converter's function, YaRN `attention_factor`/`beta_*` dropped as llama.cpp never
//! reads them for these architectures, scaling types convert ignores treated as unscaled).
//!
//! Sliding-window attention: Mistral converts to `llama` and neither convert nor llama.cpp's Llama graph
//! records or applies `sliding_window` (Qwen2's `use_sliding_window` likewise), so attention is fully causal
//! at any length here too.

use std::path::Path;

use quantforge_formats::arch::{self, HfConfig, RopeScaling};
use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_quant::convert::llama3_rope_factors;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::rope::{RopeMode, RopeParams, RopeScalingType, SUPPORTED_ROPE_SCALING};
use crate::weights::GgufLoader;

/// Architectures the forward pass runs (GGUF `general.architecture` names).
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, qwen3";

/// HF `architectures[0]` names the forward pass runs.
pub const SUPPORTED_HF_ARCHITECTURES: &str = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

/// A model architecture as llama.cpp names it in GGUF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Llama and Mistral. NORM RoPE, optional Q/K/V/output biases, optional `rope_freqs.weight`.
    Llama,
    /// `qwen2`: Llama's layout with required Q/K/V biases and NEOX RoPE.
    Qwen2,
    /// `qwen3`: per-head RMSNorm on Q and K before RoPE, NEOX RoPE, head size free of `n_embd / n_head`.
    Qwen3,
}

impl Arch {
    /// The architecture of a GGUF `general.architecture` value.
    pub fn from_gguf_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The GGUF `general.architecture` value.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// llama.cpp's `llama_model_rope_type`: NORM for Llama, NEOX for the Qwens.
    pub fn rope_mode(self) -> RopeMode {
        match self {
            Arch::Llama => RopeMode::Norm,
            Arch::Qwen2 | Arch::Qwen3 => RopeMode::Neox,
        }
    }

    /// Q/K/V biases must be present (Qwen2); elsewhere they are optional.
    pub fn requires_qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// Per-head RMSNorm on Q and K (`attn_q_norm`/`attn_k_norm`).
    pub fn has_qk_norm(self) -> bool {
        self == Arch::Qwen3
    }

    /// HF q/k rows are in rotate-half order and convert permutes them for NORM RoPE.
    pub fn permutes_hf_qk(self) -> bool {
        self.rope_mode() == RopeMode::Norm
    }

    /// llama.cpp passes `rope_freqs.weight` (Llama 3 factors) to RoPE for this architecture.
    pub fn uses_rope_freqs(self) -> bool {
        self == Arch::Llama
    }
}

/// What the forward pass needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Architecture (graph variant).
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when below `n_head`).
    pub n_head_kv: usize,
    /// Size of one head (keys, values and queries).
    pub head_dim: usize,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Context the model was trained with.
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE, resolved as llama.cpp's context resolves it.
    pub rope: RopeParams,
    /// Llama 3 per-pair frequency factors (`n_rot / 2`): GGUF `rope_freqs.weight`, or computed from a HF
    /// config.json's `rope_scaling` exactly as convert generates that tensor.
    pub rope_freqs: Option<Vec<f32>>,
}

impl LlamaConfig {
    /// Read the config of a GGUF file; fails on other architectures and inconsistent numbers.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let path = file.path();
        let name = file.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
        let arch = Arch::from_gguf_name(name).ok_or_else(|| EvalError::UnsupportedArchitecture {
            path: path.into(),
            arch: name.into(),
            supported: SUPPORTED_ARCHITECTURES,
        })?;
        let key = |k: &str| format!("{name}.{k}");
        let missing = |k: String| EvalError::MissingKey { path: path.into(), key: k };
        let uint = |k: &str| -> Result<usize> {
            let k = key(k);
            file.get(&k).and_then(GgufValue::as_u64).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| missing(k))
        };
        let float = |k: &str| file.get(&key(k)).and_then(GgufValue::as_f64);
        let n_embd = uint("embedding_length")?;
        let n_head = uint("attention.head_count")?;
        let n_ctx_train = uint("context_length")?;
        let head_dim = uint("attention.key_length").unwrap_or_else(|_| n_embd.checked_div(n_head).unwrap_or(0));
        if let Ok(v) = uint("attention.value_length") {
            if v != head_dim {
                return Err(EvalError::BadConfig {
                    path: path.into(),
                    message: format!("value head size {v} differs from key head size {head_dim}"),
                });
            }
        }
        // llama.cpp: the type defaults to "linear"; the factor falls back to the old `rope.scale_linear` key.
        let scaling = match file.get(&key("rope.scaling.type")).and_then(GgufValue::as_str).unwrap_or("linear") {
            "none" => RopeScalingType::None,
            "linear" => RopeScalingType::Linear,
            "yarn" => RopeScalingType::Yarn,
            other => {
                return Err(EvalError::UnsupportedRopeScaling {
                    path: path.into(),
                    kind: other.into(),
                    supported: SUPPORTED_ROPE_SCALING,
                })
            }
        };
        let factor = float("rope.scaling.factor").or_else(|| float("rope.scale_linear")).map(|f| f as f32);
        let n_ctx_orig = uint("rope.scaling.original_context_length").unwrap_or(n_ctx_train);
        let n_rot = uint("rope.dimension_count").unwrap_or(head_dim);
        let rope = RopeParams::new(
            arch.rope_mode(),
            n_rot,
            float("rope.freq_base").unwrap_or(10000.0) as f32,
            scaling,
            checked_factor(path, factor)?,
            n_ctx_orig,
            float("rope.scaling.attn_factor").unwrap_or(1.0) as f32,
        );
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.ne.get(1).copied())
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| EvalError::MissingTensor { path: path.into(), name: "token_embd.weight".into() })?;
        let cfg = LlamaConfig {
            arch,
            n_layer: uint("block_count")?,
            n_embd,
            n_ff: uint("feed_forward_length")?,
            n_head,
            n_head_kv: uint("attention.head_count_kv").unwrap_or(n_head),
            head_dim,
            n_vocab,
            n_ctx_train,
            rms_eps: float("attention.layer_norm_rms_epsilon")
                .ok_or_else(|| missing(key("attention.layer_norm_rms_epsilon")))? as f32,
            rope,
            rope_freqs: None,
        };
        cfg.validate(path)?;
        let rope_freqs = match (arch.uses_rope_freqs(), file.tensor("rope_freqs.weight")) {
            (true, Some(_)) => Some(GgufLoader { file }.vector("rope_freqs.weight", n_rot / 2)?),
            _ => None,
        };
        Ok(LlamaConfig { rope_freqs, ..cfg })
    }

    /// Read a HF `config.json` (`config`, found in the model directory `path`) of a supported architecture.
    pub fn from_hf(path: &Path, config: &Value) -> Result<LlamaConfig> {
        let archs = config.get("architectures").and_then(Value::as_array);
        let hf_arch = archs.and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
        let unsupported = || EvalError::UnsupportedArchitecture {
            path: path.into(),
            arch: hf_arch.into(),
            supported: SUPPORTED_HF_ARCHITECTURES,
        };
        let conv = arch::lookup(path, hf_arch).map_err(|_| unsupported())?;
        let arch = Arch::from_gguf_name(conv.gguf_name).ok_or_else(unsupported)?;
        let hf = HfConfig::parse(&path.join("config.json"), config)?;
        let missing = |k: &str| EvalError::MissingKey { path: path.into(), key: k.into() };
        let usize_of = |v: u32| v as usize;
        let head_dim = usize_of(hf.head_dim());
        let n_ctx_train = hf.context_length.map(usize_of).ok_or_else(|| missing("max_position_embeddings"))?;
        let theta = hf.rope_theta.unwrap_or(10000.0);
        // The keys convert writes for each scaling (`arch_metadata`), then llama.cpp's reading of them.
        let (scaling, factor, n_ctx_orig, rope_freqs) = match &hf.rope_scaling {
            RopeScaling::None | RopeScaling::Ignored(_) => (RopeScalingType::Linear, None, n_ctx_train, None),
            RopeScaling::Linear { factor } => (RopeScalingType::Linear, Some(*factor as f32), n_ctx_train, None),
            RopeScaling::Yarn { factor, original_context, .. } => {
                (RopeScalingType::Yarn, Some(*factor as f32), *original_context as usize, None)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                let freqs = (conv.llama3_rope_freqs && arch.uses_rope_freqs()).then(|| {
                    llama3_rope_factors(
                        theta,
                        hf.head_dim(),
                        *factor,
                        *low_freq_factor,
                        *high_freq_factor,
                        *original_context,
                    )
                });
                (RopeScalingType::Linear, None, n_ctx_train, freqs)
            }
            RopeScaling::LongRope => {
                return Err(EvalError::UnsupportedRopeScaling {
                    path: path.into(),
                    kind: "longrope".into(),
                    supported: SUPPORTED_ROPE_SCALING,
                })
            }
        };
        let cfg = LlamaConfig {
            arch,
            n_layer: usize_of(hf.block_count),
            n_embd: usize_of(hf.hidden_size),
            n_ff: usize_of(hf.ffn_length),
            n_head: usize_of(hf.head_count),
            n_head_kv: usize_of(hf.kv_heads()),
            head_dim,
            n_vocab: usize_of(hf.vocab_size),
            n_ctx_train,
            rms_eps: hf.rms_norm_eps.ok_or_else(|| missing("rms_norm_eps"))? as f32,
            rope: RopeParams::new(
                arch.rope_mode(),
                head_dim,
                theta as f32,
                scaling,
                checked_factor(path, factor)?,
                n_ctx_orig,
                1.0,
            ),
            rope_freqs,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Err(EvalError::BadConfig { path: path.into(), message });
        if self.n_layer == 0 || self.n_embd == 0 || self.n_ff == 0 || self.n_head == 0 || self.n_head_kv == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!("{} heads are not a multiple of {} KV heads", self.n_head, self.n_head_kv));
        }
        // llama.cpp requires n_rot == head size for all three architectures.
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.rope.n_rot != self.head_dim {
            return bad(format!("head size {} / rotated dims {} are not usable", self.head_dim, self.rope.n_rot));
        }
        if self.n_vocab == 0 || self.n_ctx_train == 0 || self.rope.n_ctx_orig == 0 {
            return bad("empty vocabulary or context".into());
        }
        if !(self.rope.freq_base > 0.0 && self.rope.freq_base.is_finite()) {
            return bad(format!("RoPE base frequency {} is not positive", self.rope.freq_base));
        }
        Ok(())
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key and value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// A RoPE scaling factor that is absent, 0 (llama.cpp: unscaled) or positive and finite.
fn checked_factor(path: &Path, factor: Option<f32>) -> Result<Option<f32>> {
    match factor {
        Some(f) if !(f >= 0.0 && f.is_finite()) => {
            Err(EvalError::BadConfig { path: path.into(), message: format!("RoPE scaling factor {f} is not positive") })
        }
        f => Ok(f),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hf(extra: Value) -> Value {
        let mut c = json!({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": 64});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn hf_configs_resolve_like_their_converted_gguf() {
        let c = LlamaConfig::from_hf(Path::new("m"), &hf(json!({}))).unwrap();
        assert_eq!((c.arch, c.head_dim, c.q_dim(), c.rope.mode), (Arch::Qwen3, 16, 64, RopeMode::Neox));
        assert_eq!((c.rope.freq_scale, c.rope.ext_factor), (1.0, 0.0));
        let y = hf(json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
            "beta_fast": 8.0, "attention_factor": 2.0}}));
        let c = LlamaConfig::from_hf(Path::new("m"), &y).unwrap();
        // attention_factor and beta_fast are not read by llama.cpp for these architectures.
        assert_eq!((c.rope.scaling, c.rope.freq_scale, c.rope.n_ctx_orig), (RopeScalingType::Yarn, 0.25, 64));
        assert_eq!((c.rope.beta_fast, c.rope.beta_slow), (32.0, 1.0));
        let l3 = json!({"architectures": ["LlamaForCausalLM"], "head_dim": 8, "original_max_position_embeddings": 256,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}});
        let c = LlamaConfig::from_hf(Path::new("m"), &hf(l3)).unwrap();
        let f = c.rope_freqs.unwrap();
        assert_eq!((f.len(), f[0], f[3]), (4, 1.0, 8.0));
        assert_eq!((c.rope.mode, c.rope.freq_scale), (RopeMode::Norm, 1.0));
        // Qwen2 has no rope_freqs tensor in convert, so llama3 scaling is not applied.
        let q2 = json!({"architectures": ["Qwen2ForCausalLM"], "head_dim": 8, "rope_scaling": {"rope_type": "llama3"}});
        assert!(LlamaConfig::from_hf(Path::new("m"), &hf(q2)).unwrap().rope_freqs.is_none());
    }

    #[test]
    fn unsupported_architectures_and_scalings_are_named() {
        let e = LlamaConfig::from_hf(Path::new("m"), &hf(json!({"architectures": ["GPT2LMHeadModel"]})));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("GPT2LMHeadModel") && e.contains("Qwen3ForCausalLM"), "{e}");
        let e = LlamaConfig::from_hf(Path::new("m"), &hf(json!({"rope_scaling": {"rope_type": "longrope"}})));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("'longrope'") && e.contains("yarn"), "{e}");
        let e = LlamaConfig::from_hf(Path::new("m"), &hf(json!({"head_dim": 7}))).unwrap_err().to_string();
        assert!(e.contains("head size 7"), "{e}");
        let bad = hf(json!({"rope_scaling": {"rope_type": "linear", "factor": -2.0}}));
        let e = LlamaConfig::from_hf(Path::new("m"), &bad).unwrap_err().to_string();
        assert!(e.contains("factor -2"), "{e}");
    }
}
