//! Hyperparameters of the architectures the forward pass runs: every entry of the architecture registry
//! (`quantforge_formats::arch::ARCHITECTURES`, the architectures `quantforge convert` writes) whose
//! forward-pass facts the blocks implement. Read from GGUF metadata (the registry's shared key reader,
//! llama.cpp's defaults of `load_hparams` in `src/llama-model.cpp`) or from a HF `config.json` the way
//! convert reads it, and checked before any tensor is read.
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

use quantforge_formats::arch::{self, Architecture, GgufHparams, HfConfig, HparamKey as K, RopeScaling};
use quantforge_formats::gguf::GgufFile;
use quantforge_quant::convert::llama3_rope_factors;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::extras::{ForwardExtras, LongRope, Shape};
use crate::gguf_tensors::gguf_vector;
use crate::rope::{RopeParams, RopeScalingType, SUPPORTED_ROPE_SCALING};

/// What the forward pass needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Architecture: its registry entry, whose forward-pass facts the blocks are composed from.
    pub arch: &'static Architecture,
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
    /// Sliding windows, soft-caps, scales and multipliers beyond a Llama block's (Gemma 2/3, Granite), and
    /// LongRoPE factors (Phi-3).
    pub extras: ForwardExtras,
    /// The mixture-of-experts sizes, for an architecture with expert routing.
    pub moe: Option<MoeConfig>,
}

/// The sizes of a mixture-of-experts FFN (llama.cpp `hparams.n_expert`, `n_expert_used`, `n_ff_exp`,
/// `n_ff_shexp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeConfig {
    /// Routed experts per layer (`{arch}.expert_count`).
    pub n_expert: usize,
    /// Experts each token goes to (`{arch}.expert_used_count`).
    pub n_expert_used: usize,
    /// One expert's feed-forward size: `{arch}.expert_feed_forward_length`, else `feed_forward_length`.
    pub n_ff_exp: usize,
    /// The shared expert's: `{arch}.expert_shared_feed_forward_length`, else `feed_forward_length`.
    pub n_ff_shexp: usize,
}

impl MoeConfig {
    /// Refuse counts llama.cpp would refuse (`n_expert` 0, `n_expert_used` 0 or above it) or that are above
    /// the registry's limit, naming the key.
    fn check(self, path: &Path, arch: &str) -> Result<MoeConfig> {
        let bad = |message: String| Err(EvalError::BadConfig { path: path.into(), message });
        let limit = quantforge_formats::arch::limits::EXPERTS.max as usize;
        if self.n_expert == 0 || self.n_expert > limit {
            return bad(format!("{arch}.expert_count is {}; must be in 1..={limit}", self.n_expert));
        }
        if self.n_expert_used == 0 || self.n_expert_used > self.n_expert {
            return bad(format!(
                "{arch}.expert_used_count is {}; must be in 1..={}",
                self.n_expert_used, self.n_expert
            ));
        }
        if self.n_ff_exp == 0 || self.n_ff_shexp == 0 {
            return bad("zero expert feed-forward size".into());
        }
        Ok(self)
    }
}

impl LlamaConfig {
    /// Read the config of a GGUF file; fails on other architectures and inconsistent numbers.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let path = file.path();
        let name = GgufHparams::new(file).map_or("", |h| h.arch());
        let arch = arch::lookup_gguf_file(file).map_err(|_| EvalError::UnsupportedArchitecture {
            path: path.into(),
            arch: name.into(),
            supported: arch::supported_gguf_names(),
        })?;
        check_implemented(path, arch)?;
        let hp = GgufHparams::with_arch(file, name);
        let missing = |k: K| EvalError::MissingKey { path: path.into(), key: hp.key(k) };
        // A key that is present with a type other than the one llama.cpp reads is refused, never defaulted.
        let wrong = |k: K, want: &str| EvalError::BadConfig {
            path: path.into(),
            message: match hp.get(k) {
                Some(v) => format!("metadata key '{}' is of type {:?}, expected {want}", hp.key(k), v.value_type()),
                None => format!("metadata key '{}' is missing", hp.key(k)),
            },
        };
        let uint_opt = |k: K| -> Result<Option<usize>> {
            match hp.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .map(Some)
                    .ok_or_else(|| wrong(k, "an unsigned integer")),
            }
        };
        let uint = |k: K| -> Result<usize> { uint_opt(k)?.ok_or_else(|| missing(k)) };
        let float = |k: K| -> Result<Option<f64>> {
            match hp.get(k) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| wrong(k, "a number")),
            }
        };
        let string = |k: K| -> Result<Option<&str>> {
            match hp.get(k) {
                None => Ok(None),
                Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(k, "a string")),
            }
        };
        let n_embd = uint(K::EmbeddingLength)?;
        let n_head = uint(K::HeadCount)?;
        let n_ctx_train = uint(K::ContextLength)?;
        let head_dim = uint_opt(K::KeyLength)?.unwrap_or_else(|| n_embd.checked_div(n_head).unwrap_or(0));
        if let Some(v) = uint_opt(K::ValueLength)? {
            if v != head_dim {
                return Err(EvalError::BadConfig {
                    path: path.into(),
                    message: format!("value head size {v} differs from key head size {head_dim}"),
                });
            }
        }
        // llama.cpp: the type defaults to "linear"; the factor falls back to the old `rope.scale_linear` key.
        let scaling = match string(K::RopeScalingType)?.unwrap_or("linear") {
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
        let factor = float(K::RopeScalingFactor)?.or(float(K::RopeScaleLinear)?).map(|f| f as f32);
        let n_ctx_orig = uint_opt(K::RopeScalingOriginalContextLength)?.unwrap_or(n_ctx_train);
        let n_rot = uint_opt(K::RopeDimensionCount)?.unwrap_or(head_dim);
        let rope = RopeParams::new(
            arch.forward.rope,
            n_rot,
            float(K::RopeFreqBase)?.unwrap_or(10000.0) as f32,
            scaling,
            checked_factor(path, factor)?,
            n_ctx_orig,
            float(K::RopeScalingAttnFactor)?.unwrap_or(1.0) as f32,
        );
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.ne.get(1).copied())
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| EvalError::MissingTensor { path: path.into(), name: "token_embd.weight".into() })?;
        let n_ff = uint(K::FeedForwardLength)?;
        let moe = match arch.forward.moe {
            None => None,
            Some(_) => Some(
                MoeConfig {
                    n_expert: uint(K::ExpertCount)?,
                    n_expert_used: uint(K::ExpertUsedCount)?,
                    n_ff_exp: uint_opt(K::ExpertFeedForwardLength)?.unwrap_or(n_ff),
                    n_ff_shexp: uint_opt(K::ExpertSharedFeedForwardLength)?.unwrap_or(n_ff),
                }
                .check(path, name)?,
            ),
        };
        let cfg = LlamaConfig {
            arch,
            n_layer: uint(K::BlockCount)?,
            n_embd,
            n_ff,
            n_head,
            n_head_kv: uint_opt(K::HeadCountKv)?.unwrap_or(n_head),
            head_dim,
            n_vocab,
            n_ctx_train,
            rms_eps: float(K::LayerNormRmsEpsilon)?.ok_or_else(|| missing(K::LayerNormRmsEpsilon))? as f32,
            rope,
            rope_freqs: None,
            extras: ForwardExtras::default(),
            moe,
        };
        cfg.validate(path)?;
        let mut extras = cfg.resolve_extras(path, |k| hp.get(k))?;
        if arch.forward.longrope_factors && file.tensor("rope_factors_long.weight").is_some() {
            extras.longrope = Some(LongRope {
                long: gguf_vector(file, "rope_factors_long.weight", n_rot / 2)?,
                short: gguf_vector(file, "rope_factors_short.weight", n_rot / 2)?,
            });
        }
        check_longrope(path, &extras)?;
        let rope_freqs = match (arch.llama3_rope_freqs, file.tensor("rope_freqs.weight")) {
            (true, Some(_)) => Some(gguf_vector(file, "rope_freqs.weight", n_rot / 2)?),
            _ => None,
        };
        Ok(LlamaConfig { rope_freqs, extras, ..cfg })
    }

    /// Read a HF `config.json` (`config`, found in the model directory `path`) of a supported architecture.
    pub fn from_hf(path: &Path, config: &Value) -> Result<LlamaConfig> {
        let archs = config.get("architectures").and_then(Value::as_array);
        let hf_arch = archs.and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
        let arch = arch::lookup(path, hf_arch).map_err(|_| EvalError::UnsupportedArchitecture {
            path: path.into(),
            arch: hf_arch.into(),
            supported: arch::supported_names(),
        })?;
        check_implemented(path, arch)?;
        let hf = HfConfig::parse(&path.join("config.json"), config)?;
        arch::check_config(arch, &hf)?;
        let missing = |k: &str| EvalError::MissingKey { path: path.into(), key: k.into() };
        let usize_of = |v: u32| v as usize;
        let head_dim = usize_of(hf.head_dim());
        let n_ctx_train = hf.context_length.map(usize_of).ok_or_else(|| missing("max_position_embeddings"))?;
        let mut theta = hf.rope_theta.unwrap_or(10000.0);
        let (mut n_rot, mut rope_attn_factor) = (head_dim, 1.0f32);
        let phi3 = match arch.converter {
            arch::Converter::Phi3 => Some(arch::phi3_rope(&hf)?),
            _ => None,
        };
        if let Some(r) = &phi3 {
            // Phi3MiniModel's keys: no scaling type (llama.cpp: linear, no factor), the original context, the
            // rotated dimensions and, with LongRoPE, the attention factor (all narrowed to what GGUF stores).
            n_rot = r.n_rot as usize;
            theta = f64::from(r.rope_theta as f32);
            rope_attn_factor = r.longrope.as_ref().map_or(1.0, |f| f.attn_factor as f32);
        }
        // The keys convert writes for each scaling (`arch_metadata`), then llama.cpp's reading of them.
        let (scaling, factor, n_ctx_orig, rope_freqs) = match &hf.rope_scaling {
            _ if phi3.is_some() => (
                RopeScalingType::Linear,
                None,
                phi3.as_ref().map_or(n_ctx_train, |r| r.original_context as usize),
                None,
            ),
            RopeScaling::None | RopeScaling::Ignored(_) => (RopeScalingType::Linear, None, n_ctx_train, None),
            RopeScaling::Linear { factor } => (RopeScalingType::Linear, Some(*factor as f32), n_ctx_train, None),
            RopeScaling::Yarn { factor, original_context, .. } => {
                (RopeScalingType::Yarn, Some(*factor as f32), *original_context as usize, None)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                let freqs = arch.llama3_rope_freqs.then(|| {
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
                arch.forward.rope,
                n_rot,
                theta as f32,
                scaling,
                checked_factor(path, factor)?,
                n_ctx_orig,
                rope_attn_factor,
            ),
            rope_freqs,
            extras: ForwardExtras::default(),
            moe: match (arch.forward.moe, hf.expert_count, hf.expert_used_count) {
                (Some(_), Some(n), Some(k)) => Some(
                    MoeConfig {
                        n_expert: usize_of(n),
                        n_expert_used: usize_of(k),
                        n_ff_exp: usize_of(hf.expert_ffn_length.unwrap_or(hf.ffn_length)),
                        n_ff_shexp: usize_of(hf.shared_expert_ffn_length.unwrap_or(hf.ffn_length)),
                    }
                    .check(path, arch.gguf_name)?,
                ),
                _ => None,
            },
        };
        cfg.validate(path)?;
        // The keys convert writes for this config, read as a GGUF's.
        let mut kv = quantforge_formats::kv::KvList::new();
        arch::arch_metadata(&mut kv, arch, &hf, 0);
        let mut extras = cfg.resolve_extras(path, |k| kv.get(&k.key(arch.gguf_name)))?;
        if arch.forward.longrope_factors {
            // The factor tensors convert generates.
            extras.longrope = arch::longrope_factors(arch, &hf)?.map(|f| LongRope { long: f.long, short: f.short });
        }
        check_longrope(path, &extras)?;
        Ok(LlamaConfig { extras, ..cfg })
    }

    /// [`ForwardExtras`] from the metadata `get` looks up.
    fn resolve_extras<'a>(
        &self,
        path: &Path,
        get: impl Fn(K) -> Option<&'a quantforge_formats::gguf::GgufValue>,
    ) -> Result<ForwardExtras> {
        let shape = Shape { n_layer: self.n_layer, n_embd: self.n_embd, n_head: self.n_head, head_dim: self.head_dim };
        ForwardExtras::resolve(self.arch, &shape, &self.rope, get).map_err(|(k, message)| EvalError::BadConfig {
            path: path.into(),
            message: format!("metadata key '{}' {message}", k.key(self.arch.gguf_name)),
        })
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Err(EvalError::BadConfig { path: path.into(), message });
        if self.n_layer == 0 || self.n_embd == 0 || self.n_ff == 0 || self.n_head == 0 || self.n_head_kv == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!("{} heads are not a multiple of {} KV heads", self.n_head, self.n_head_kv));
        }
        // llama.cpp requires n_rot == head size, except where RoPE may rotate only part of each head (Phi-3).
        let n_rot_ok = if self.arch.forward.partial_rotary {
            self.rope.n_rot > 0 && self.rope.n_rot.is_multiple_of(2) && self.rope.n_rot <= self.head_dim
        } else {
            self.rope.n_rot == self.head_dim
        };
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || !n_rot_ok {
            return bad(format!("head size {} / rotated dims {} are not usable", self.head_dim, self.rope.n_rot));
        }
        if self.n_vocab == 0 || self.n_ctx_train == 0 || self.rope.n_ctx_orig == 0 {
            return bad("empty vocabulary or context".into());
        }
        if !(self.rope.freq_base > 0.0 && self.rope.freq_base.is_finite()) {
            return bad(format!("RoPE base frequency {} is not positive", self.rope.freq_base));
        }
        // A NaN, infinite or negative epsilon would make every RMSNorm (and so the perplexity) NaN.
        if !(self.rms_eps >= 0.0 && self.rms_eps.is_finite()) {
            return bad(format!("RMSNorm epsilon {} is not a finite number >= 0", self.rms_eps));
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

/// Refuse an architecture whose forward-pass facts include one the forward pass does not implement.
fn check_implemented(path: &Path, arch: &'static Architecture) -> Result<()> {
    match arch.forward.unimplemented() {
        None => Ok(()),
        Some(feature) => Err(EvalError::UnsupportedFeature { path: path.into(), arch: arch.gguf_name, feature }),
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

/// LongRoPE factors divide frequencies: each must be positive and finite.
fn check_longrope(path: &Path, extras: &ForwardExtras) -> Result<()> {
    match &extras.longrope {
        Some(l) if l.long.iter().chain(&l.short).any(|f| !(f.is_finite() && *f > 0.0)) => {
            Err(EvalError::BadConfig { path: path.into(), message: "LongRoPE factors must be positive".into() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rope::RopeMode;

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
        assert_eq!((c.arch.gguf_name, c.head_dim, c.q_dim(), c.rope.mode), ("qwen3", 16, 64, RopeMode::Neox));
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
        // Epsilons that would make every RMSNorm NaN (negative, or infinite once narrowed to f32).
        for eps in [-1.0, 1e300] {
            let e = LlamaConfig::from_hf(Path::new("m"), &hf(json!({ "rms_norm_eps": eps }))).unwrap_err().to_string();
            assert!(e.contains("epsilon"), "{eps}: {e}");
        }
        let bad = hf(json!({"rope_scaling": {"rope_type": "linear", "factor": -2.0}}));
        let e = LlamaConfig::from_hf(Path::new("m"), &bad).unwrap_err().to_string();
        assert!(e.contains("factor -2"), "{e}");
    }

    #[test]
    fn gemma_configs_resolve_their_extras_and_refuse_what_gguf_cannot_hold() {
        let g = |extra: Value| {
            let mut c = hf(json!({"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 7,
                "query_pre_attn_scalar": 16, "sliding_window": 4, "rope_local_base_freq": 100.0,
                "rope_scaling": {"rope_type": "linear", "factor": 2.0}}));
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            LlamaConfig::from_hf(Path::new("m"), &c)
        };
        let c = g(json!({})).unwrap();
        let swa = c.extras.swa.as_ref().unwrap();
        assert_eq!((swa.window, c.extras.window(5), c.extras.window(6)), (4, None, Some(4)));
        let local = c.extras.rope_swa.as_ref().unwrap();
        assert_eq!((c.rope.freq_scale, local.freq_scale, local.freq_base), (0.5, 1.0, 100.0));
        assert_eq!((c.extras.query_scale, c.extras.embd_scale), (Some(0.25), Some(32f32.sqrt())));
        assert_eq!((c.extras.attn_softcap, c.extras.final_softcap), (None, None));
        let e = g(json!({"attn_logit_softcapping": 50.0})).unwrap_err().to_string();
        assert!(e.contains("'attn_logit_softcapping'") && e.contains("Gemma3ForCausalLM"), "{e}");
        let e = g(json!({"query_pre_attn_scalar": 32})).unwrap_err().to_string();
        assert!(e.contains("'query_pre_attn_scalar'"), "{e}");
    }
}
