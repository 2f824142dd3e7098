//! config.json, parsed into typed fields before any tensor is read. Each field is looked up under the same
//! alternative names, in the same order, as llama.cpp's `find_hparam` calls in `TextModel.__init__` and
//! `TextModel.set_gguf_parameters` (`conversion/base.py` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//! Fields the converter treats as optional stay `Option`s (their keys are then not written); the fields
//! needed to check tensor shapes are required here, so a broken config fails with the key's name.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::limits::{self, Limit};
use crate::error::{FormatError, Result};

/// RoPE scaling as the converter understands it (`rope_parameters` or `rope_scaling`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_context: u32,
        ext_factor: Option<f64>,
        attn_factor: Option<f64>,
        beta_fast: Option<f64>,
        beta_slow: Option<f64>,
    },
    LongRope,
    /// Llama 3: no key, a `rope_freqs.weight` tensor instead.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: u32,
    },
    /// A type the converter ignores (`dynamic`, unknown names, linear without a factor).
    Ignored(String),
}

/// The hyperparameters of config.json.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub path: PathBuf,
    /// `architectures[0]`.
    pub architecture: String,
    pub block_count: u32,
    pub context_length: Option<u32>,
    pub hidden_size: u32,
    pub ffn_length: u32,
    pub head_count: u32,
    pub head_count_kv: Option<u32>,
    pub is_causal: Option<bool>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: RopeScaling,
    pub rms_norm_eps: Option<f64>,
    pub layer_norm_eps: Option<f64>,
    /// `head_dim` when config.json states it.
    pub head_dim: Option<u32>,
    pub vocab_size: u32,
    pub tie_word_embeddings: bool,
    /// Routed experts per MoE layer (`num_local_experts`, `num_experts`, `n_routed_experts`).
    pub expert_count: Option<u32>,
    /// Experts each token is routed to (`num_experts_per_tok`, `num_experts_per_token`, `top_k_experts`).
    pub expert_used_count: Option<u32>,
    /// `moe_intermediate_size`: the feed-forward size of one routed expert, when it differs from
    /// `intermediate_size`.
    pub expert_ffn_length: Option<u32>,
    /// `shared_expert_intermediate_size`.
    pub shared_expert_ffn_length: Option<u32>,
    /// `_name_or_path`, used for `general.name` heuristics.
    pub name_or_path: Option<String>,
    /// The whole document, for special token ids.
    pub raw: Map<String, Value>,
}

impl HfConfig {
    /// Parse `config.json` (already read) at `path`.
    pub fn parse(path: &Path, value: &Value) -> Result<HfConfig> {
        let obj = value.as_object().ok_or_else(|| err(path, "<root>", "is not a JSON object"))?;
        let mut raw = obj.clone();
        if let Some(Value::Object(text)) = obj.get("text_config") {
            // TextModel.__init__: the text_config is moved to the root level.
            for (k, v) in text {
                raw.insert(k.clone(), v.clone());
            }
        }
        let c = Lookup { path, obj: &raw };
        let architecture = obj
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| err(path, "architectures", "missing (expected a list naming the model class)"))?
            .to_string();
        let head_count = c.req_capped(&["num_attention_heads", "n_head", "n_heads"], limits::HEADS)?;
        if head_count == 0 {
            return Err(err(path, "num_attention_heads", "must be positive"));
        }
        let head_count_kv = c.opt_capped(&["num_key_value_heads", "n_kv_heads"], limits::HEADS)?;
        if head_count_kv == Some(0) || head_count_kv.is_some_and(|kv| !head_count.is_multiple_of(kv)) {
            return Err(err(path, "num_key_value_heads", "must be positive and divide num_attention_heads"));
        }
        let hidden_size = c.req_capped(&["hidden_size", "n_embd", "dim"], limits::HIDDEN)?;
        let mut head_dim = c.opt_capped(&["head_dim"], limits::HEAD_DIM)?;
        if super::ARCHITECTURES.iter().any(|a| a.ignores_head_dim() && a.hf_names.contains(&architecture.as_str())) {
            // GraniteModel.set_gguf_parameters pops head_dim: the head size is hidden_size / num_attention_heads.
            if head_dim.is_some_and(|d| Some(d) != hidden_size.checked_div(head_count)) {
                return Err(err(
                    path,
                    "head_dim",
                    "differs from hidden_size / num_attention_heads, which llama.cpp's Granite conversion uses instead",
                ));
            }
            head_dim = None;
        }
        if head_dim.is_none() && !hidden_size.is_multiple_of(head_count) {
            return Err(err(path, "hidden_size", "is not a multiple of num_attention_heads and head_dim is not given"));
        }
        if head_dim == Some(0) {
            return Err(err(path, "head_dim", "must be positive"));
        }
        // Products of two capped u32 values cannot overflow u64; their size is checked against its own limit.
        let width = u64::from(head_count) * u64::from(head_dim.unwrap_or(hidden_size / head_count));
        limits::ATTENTION_WIDTH.check(path, "num_attention_heads × head_dim", width)?;
        let rope = rope_params(&raw);
        let rope_theta = match rope.get("rope_theta") {
            Some(v) => Some(v.as_f64().ok_or_else(|| err(path, "rope_theta", "is not a number"))?),
            None => None,
        };
        Ok(HfConfig {
            path: path.to_path_buf(),
            block_count: c.req_capped(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"], limits::LAYERS)?,
            context_length: c.opt_capped(
                &[
                    "max_position_embeddings",
                    "n_ctx",
                    "n_positions",
                    "max_length",
                    "max_sequence_length",
                    "model_max_length",
                ],
                limits::CONTEXT,
            )?,
            hidden_size,
            ffn_length: c.req_capped(&["intermediate_size", "n_inner", "hidden_dim"], limits::FFN)?,
            head_count,
            head_count_kv,
            is_causal: raw.get("is_causal").and_then(Value::as_bool),
            rope_theta,
            rope_scaling: rope_scaling(path, &raw, &rope)?,
            rms_norm_eps: c.opt_f64(&["rms_norm_eps", "norm_eps"])?,
            layer_norm_eps: c.opt_f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])?,
            head_dim,
            vocab_size: c.req_capped(&["vocab_size"], limits::VOCAB)?,
            tie_word_embeddings: raw.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            expert_count: c.opt_capped(&["num_local_experts", "num_experts", "n_routed_experts"], limits::EXPERTS)?,
            expert_used_count: c
                .opt_capped(&["num_experts_per_tok", "num_experts_per_token", "top_k_experts"], limits::EXPERTS)?,
            expert_ffn_length: c.opt_capped(&["moe_intermediate_size"], limits::FFN)?,
            shared_expert_ffn_length: c.opt_capped(&["shared_expert_intermediate_size"], limits::FFN)?,
            name_or_path: raw.get("_name_or_path").and_then(Value::as_str).map(str::to_string),
            architecture,
            raw,
        })
    }

    /// Head size: `head_dim`, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> u32 {
        self.head_dim.unwrap_or(self.hidden_size / self.head_count)
    }

    /// KV heads, defaulting to the attention heads.
    pub fn kv_heads(&self) -> u32 {
        self.head_count_kv.unwrap_or(self.head_count)
    }

    /// An integer entry of the raw config (special token ids).
    pub fn raw_u64(&self, key: &str) -> Option<u64> {
        self.raw.get(key).and_then(Value::as_u64)
    }
}

/// `TextModel.__init__`: `rope_parameters` or `rope_scaling`, with `rope_theta` and `rope_type` mirrored in.
pub(super) fn rope_params(raw: &Map<String, Value>) -> Map<String, Value> {
    let mut p = raw
        .get("rope_parameters")
        .or_else(|| raw.get("rope_scaling"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Object(full)) = p.get("full_attention") {
        return full.clone();
    }
    let theta = ["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"]
        .iter()
        .find_map(|k| raw.get(*k))
        .cloned();
    if let (false, Some(t)) = (p.contains_key("rope_theta"), theta) {
        p.insert("rope_theta".into(), t);
    }
    if !p.contains_key("rope_type") {
        if let Some(t) = p.get("type").cloned() {
            p.insert("rope_type".into(), t);
        }
    }
    // Mirrored too at 0c1e57098 (read by Phi3MiniModel).
    for (keys, to) in [
        (&["partial_rotary_factor", "rope_pct", "rope_percent"][..], "partial_rotary_factor"),
        (&["original_max_position_embeddings"][..], "original_max_position_embeddings"),
    ] {
        if let (false, Some(v)) = (p.contains_key(to), keys.iter().find_map(|k| raw.get(*k).filter(|v| !v.is_null()))) {
            p.insert(to.into(), v.clone());
        }
    }
    p
}

fn rope_scaling(path: &Path, raw: &Map<String, Value>, p: &Map<String, Value>) -> Result<RopeScaling> {
    let Some(kind) = p.get("rope_type").and_then(Value::as_str) else { return Ok(RopeScaling::None) };
    let c = Lookup { path, obj: p };
    let factor = c.opt_f64(&["factor"])?;
    Ok(match (kind, factor) {
        ("linear", Some(factor)) => RopeScaling::Linear { factor },
        ("yarn", Some(factor)) => RopeScaling::Yarn {
            factor,
            original_context: c.req_capped(&["original_max_position_embeddings"], limits::CONTEXT)?,
            ext_factor: c.opt_f64(&["extrapolation_factor"])?,
            attn_factor: c.opt_f64(&["attention_factor", "attn_factor"])?,
            beta_fast: c.opt_f64(&["beta_fast"])?,
            beta_slow: c.opt_f64(&["beta_slow"])?,
        },
        ("su" | "longrope", _) => RopeScaling::LongRope,
        (k, _) if k.eq_ignore_ascii_case("llama3") => RopeScaling::Llama3 {
            factor: factor.unwrap_or(8.0),
            low_freq_factor: c.opt_f64(&["low_freq_factor"])?.unwrap_or(1.0),
            high_freq_factor: c.opt_f64(&["high_freq_factor"])?.unwrap_or(4.0),
            // Read from the top level of config.json, as `LlamaModel.generate_extra_tensors` does.
            original_context: Lookup { path, obj: raw }
                .opt_capped(&["original_max_position_embeddings"], limits::CONTEXT)?
                .unwrap_or(8192),
        },
        (k, _) => RopeScaling::Ignored(k.to_string()),
    })
}

fn err(path: &Path, key: &str, message: &str) -> FormatError {
    FormatError::Config { path: path.into(), key: key.into(), message: message.into() }
}

/// `find_hparam`: the first of several alternative keys that is present.
struct Lookup<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Lookup<'_> {
    fn find<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter().find_map(|k| self.obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
    }

    fn opt_u32(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.find(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| err(self.path, k, &format!("expected an unsigned 32-bit integer, found {v}"))),
        }
    }

    /// Like `opt_u32`, refused above `limit`.
    fn opt_capped(&self, keys: &[&str], limit: Limit) -> Result<Option<u32>> {
        let Some(v) = self.opt_u32(keys)? else { return Ok(None) };
        let key = self.find(keys).map_or(keys[0], |(k, _)| k);
        limit.check(self.path, key, u64::from(v))?;
        Ok(Some(v))
    }

    /// A required count or dimension, refused above `limit`.
    fn req_capped(&self, keys: &[&str], limit: Limit) -> Result<u32> {
        self.opt_capped(keys, limit)?
            .ok_or_else(|| err(self.path, keys[0], &format!("missing (looked for {})", keys.join(", "))))
    }

    fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.find(keys) {
            None => Ok(None),
            Some((k, v)) => {
                v.as_f64().map(Some).ok_or_else(|| err(self.path, k, &format!("expected a number, found {v}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 172,
               "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32,
               "rope_theta": 10000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    }

    #[test]
    fn parses_and_names_missing_keys() {
        let c = HfConfig::parse(Path::new("config.json"), &base()).unwrap();
        assert_eq!((c.block_count, c.head_dim(), c.kv_heads()), (2, 8, 4));
        assert_eq!(c.rope_theta, Some(10000.0));
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { original_context: 8192, .. }));
        let mut v = base();
        v.as_object_mut().unwrap().remove("intermediate_size");
        let e = HfConfig::parse(Path::new("config.json"), &v).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("intermediate_size") && e.contains("missing"), "{e}");
        let mut v = base();
        v["num_hidden_layers"] = json!("two");
        let e = HfConfig::parse(Path::new("config.json"), &v).unwrap_err().to_string();
        assert!(e.contains("num_hidden_layers"), "{e}");
    }

    #[test]
    fn values_above_their_limits_are_refused_by_key() {
        for (key, value) in [
            ("num_hidden_layers", json!(4294967295u64)),
            ("num_hidden_layers", json!(65537)),
            ("num_attention_heads", json!(16385)),
            ("num_key_value_heads", json!(1u64 << 20)),
            ("hidden_size", json!((1u64 << 20) + 8)),
            ("intermediate_size", json!(1u64 << 30)),
            ("vocab_size", json!((1u64 << 21) + 1)),
            ("max_position_embeddings", json!(1u64 << 31)),
            ("head_dim", json!(1u64 << 17)),
        ] {
            let mut v = base();
            v[key] = value.clone();
            let e = HfConfig::parse(Path::new("m/config.json"), &v).unwrap_err().to_string();
            assert!(e.contains("m/config.json") && e.contains(key) && e.contains("limit"), "{key}={value}: {e}");
        }
        // A head size within its own limit whose product with the heads is not.
        let mut v = base();
        v["num_attention_heads"] = json!(128);
        v["head_dim"] = json!(1u64 << 16);
        let e = HfConfig::parse(Path::new("config.json"), &v).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads × head_dim") && e.contains("8388608"), "{e}");
        let mut v = base();
        v["head_dim"] = json!(0);
        assert!(HfConfig::parse(Path::new("config.json"), &v).unwrap_err().to_string().contains("head_dim"));
        // At the limit is accepted.
        let mut v = base();
        v["num_hidden_layers"] = json!(65536);
        assert_eq!(HfConfig::parse(Path::new("config.json"), &v).unwrap().block_count, 65536);
    }
}
