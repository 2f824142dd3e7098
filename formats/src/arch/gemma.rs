//! What Gemma 2 and Gemma 3 (text) share: tensor rules, the config keys their GGUF cannot record (refused by
//! name before any tensor is read), `Gemma2Model.set_gguf_parameters`/`Gemma3Model.set_gguf_parameters`
//! (`conversion/gemma.py` at llama.cpp 0c1e57098), the keys GGUF -> HF writes back, and the one reader of the
//! sliding-window layout (llama.cpp `load_swa_pattern`, `src/models/gemma2.cpp`/`gemma3.cpp`).
//!
//! Invariant: a config accepted here converts to a GGUF that llama.cpp runs as transformers runs the config
//! (same window, layer pattern, soft-caps, RoPE bases and query scale), so the evaluator can read either.

use serde_json::{json, Map, Value};

use super::keys::HparamKey as K;
use super::{Architecture, Converter, HfConfig, RopeScaling, SlidingWindow};
use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, GgufValue};
use crate::kv::KvList;

/// The Gemma tensor rules, with `$extra` (Gemma 3's head and Q/K norms) at the end. Every `*norm.weight` gets
/// [`super::Transform::NormShift`] (`modify_tensors`: `data_torch + 1`). Expects `TensorRule`, `Transform`
/// and `Dim::*` in scope.
macro_rules! gemma_rules {
    ($($extra:expr),* $(,)?) => {
        &[
            TensorRule::copy("model.embed_tokens.weight", "token_embd.weight", &[Vocab, Hidden]),
            TensorRule::copy("model.norm.weight", "output_norm.weight", &[Hidden]).with(Transform::NormShift),
            TensorRule::copy("model.layers.{bid}.input_layernorm.weight", "blk.{bid}.attn_norm.weight", &[Hidden])
                .with(Transform::NormShift),
            TensorRule::copy("model.layers.{bid}.self_attn.q_proj.weight", "blk.{bid}.attn_q.weight", &[QOut, Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.k_proj.weight", "blk.{bid}.attn_k.weight", &[KvOut, Hidden]),
            TensorRule::copy("model.layers.{bid}.self_attn.v_proj.weight", "blk.{bid}.attn_v.weight", &[KvOut, Hidden]),
            TensorRule::copy(
                "model.layers.{bid}.self_attn.o_proj.weight",
                "blk.{bid}.attn_output.weight",
                &[Hidden, QOut],
            ),
            TensorRule::copy(
                "model.layers.{bid}.post_attention_layernorm.weight",
                "blk.{bid}.post_attention_norm.weight",
                &[Hidden],
            )
            .with(Transform::NormShift),
            TensorRule::copy(
                "model.layers.{bid}.pre_feedforward_layernorm.weight",
                "blk.{bid}.ffn_norm.weight",
                &[Hidden],
            )
            .with(Transform::NormShift),
            TensorRule::copy(
                "model.layers.{bid}.post_feedforward_layernorm.weight",
                "blk.{bid}.post_ffw_norm.weight",
                &[Hidden],
            )
            .with(Transform::NormShift),
            TensorRule::copy("model.layers.{bid}.mlp.gate_proj.weight", "blk.{bid}.ffn_gate.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.up_proj.weight", "blk.{bid}.ffn_up.weight", &[Ffn, Hidden]),
            TensorRule::copy("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", &[Hidden, Ffn]),
            $($extra,)*
        ]
    };
}
pub(super) use gemma_rules;

/// transformers' defaults for keys a Gemma 2 config.json may leave out (`Gemma2Config`); llama.cpp's loader
/// has the same ones for the GGUF keys (`f_attn_logit_softcapping`, `f_final_logit_softcapping`, `n_swa`).
const GEMMA2_ATTN_SOFTCAP: f64 = 50.0;
const GEMMA2_FINAL_SOFTCAP: f64 = 30.0;
const DEFAULT_WINDOW: u64 = 4096;
/// transformers' `query_pre_attn_scalar` default.
const DEFAULT_QUERY_PRE_ATTN_SCALAR: f64 = 256.0;

/// Which layers slide, as llama.cpp's loader decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwaLayers {
    /// `hparams.n_swa`.
    pub window: u32,
    /// `is_swa(il)` for every layer.
    pub layers: Vec<bool>,
}

/// The sliding-window layers of a model of `n_layer` blocks whose facts say `sliding`, read from its
/// metadata through `get` (a GGUF file's, or the keys convert writes for a config.json): `None` when no
/// layer slides. `Err` names a key of the wrong type or length.
pub fn swa_layers<'a>(
    sliding: SlidingWindow,
    n_layer: usize,
    get: impl Fn(K) -> Option<&'a GgufValue>,
) -> std::result::Result<Option<SwaLayers>, K> {
    let (period, default_window) = match sliding {
        SlidingWindow::Pattern { period, default_window } => (period, default_window),
        SlidingWindow::None => return Ok(None),
        // A window llama.cpp would apply in a pattern the forward pass does not implement.
        SlidingWindow::Refused => match get(K::SlidingWindow).map(GgufValue::as_u64) {
            None | Some(Some(0)) => return Ok(None),
            Some(_) => return Err(K::SlidingWindow),
        },
    };
    let window = match get(K::SlidingWindow) {
        Some(v) => v.as_u64().and_then(|w| u32::try_from(w).ok()).ok_or(K::SlidingWindow)?,
        None => default_window,
    };
    if window == 0 {
        return Ok(None);
    }
    let layers = match get(K::SlidingWindowPattern) {
        Some(GgufValue::Array(a)) => {
            let flags: Option<Vec<bool>> = a.iter().map(|v| v.as_bool()).collect();
            flags.filter(|f| f.len() == n_layer).ok_or(K::SlidingWindowPattern)?
        }
        Some(v) => pattern(n_layer, v.as_u64().and_then(|p| u32::try_from(p).ok()).ok_or(K::SlidingWindowPattern)?),
        None => pattern(n_layer, period),
    };
    Ok(Some(SwaLayers { window, layers }))
}

/// `llama_hparams::set_swa_pattern(n_pattern)` (not dense-first).
fn pattern(n_layer: usize, n_pattern: u32) -> Vec<bool> {
    let n = n_pattern as usize;
    (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
}

fn unsupported(arch: &Architecture, cfg: &HfConfig, key: &str, value: &Value, reason: &str) -> FormatError {
    FormatError::UnsupportedConfig {
        path: cfg.path.clone(),
        key: key.into(),
        value: value.to_string(),
        reason: format!("{} ({}): {reason}", cfg.architecture, arch.gguf_name),
    }
}

fn missing(cfg: &HfConfig, key: &str, why: &str) -> FormatError {
    FormatError::Config { path: cfg.path.clone(), key: key.into(), message: format!("missing ({why})") }
}

/// The RoPE parameters of the sliding layers: `rope_parameters.sliding_attention`, else a top-level local base
/// (`TextModel.__init__`'s `local_rope_theta` keys).
fn sliding_rope(raw: &Map<String, Value>) -> Option<Map<String, Value>> {
    let params = raw.get("rope_parameters").or_else(|| raw.get("rope_scaling")).and_then(Value::as_object);
    if let Some(p) = params.filter(|p| p.contains_key("full_attention") || p.contains_key("sliding_attention")) {
        return p.get("sliding_attention").and_then(Value::as_object).cloned();
    }
    ["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta", "rope_local_base_freq"]
        .iter()
        .find_map(|k| raw.get(*k).filter(|v| !v.is_null()))
        .map(|t| Map::from_iter([("rope_theta".to_string(), t.clone())]))
}

/// The RoPE base of the sliding layers convert writes (`{arch}.rope.freq_base_swa`), if any.
fn local_rope_theta(cfg: &HfConfig) -> Option<f64> {
    sliding_rope(&cfg.raw).and_then(|p| p.get("rope_theta").and_then(Value::as_f64))
}

/// Whether Gemma 3's converter writes `sliding_window` (`sliding_window_pattern != 1`).
fn gemma3_slides(cfg: &HfConfig) -> bool {
    cfg.raw.get("sliding_window_pattern").and_then(Value::as_u64) != Some(1)
}

/// The sliding window convert writes: the config's, or transformers' default when the key is absent.
fn window(cfg: &HfConfig) -> Option<u64> {
    match cfg.raw.get("sliding_window") {
        None => Some(DEFAULT_WINDOW),
        Some(v) => v.as_u64(),
    }
}

/// A soft-cap of config.json: `Ok(None)` when null, the default when absent.
fn softcap(cfg: &HfConfig, key: &str, default: Option<f64>) -> Option<f64> {
    match cfg.raw.get(key) {
        None => default,
        Some(v) => v.as_f64(),
    }
}

/// Refuse what the GGUF of `arch` cannot carry or the evaluator does not run (see the module docs).
pub(super) fn check_config(arch: &Architecture, cfg: &HfConfig) -> Result<()> {
    let raw = &cfg.raw;
    let gemma2 = arch.converter == Converter::Gemma2;
    for key in ["head_dim", "num_key_value_heads", "rms_norm_eps", "max_position_embeddings"] {
        if raw.get(key).is_none_or(Value::is_null) {
            return Err(missing(cfg, key, "Gemma's converter and transformers disagree on its default"));
        }
    }
    if let Some(v) = raw.get("hidden_activation").filter(|v| v.as_str() != Some("gelu_pytorch_tanh")) {
        return Err(unsupported(arch, cfg, "hidden_activation", v, "only gelu_pytorch_tanh (GeGLU) is implemented"));
    }
    for key in ["attention_bias", "use_bidirectional_attention"] {
        if let Some(v) = raw.get(key).filter(|v| v.as_bool() == Some(true)) {
            return Err(unsupported(arch, cfg, key, v, "llama.cpp's Gemma graph has no such variant"));
        }
    }
    // llama.cpp derives the query scale from the layer count; the config's own value must agree.
    let scalar = match raw.get("query_pre_attn_scalar") {
        None => DEFAULT_QUERY_PRE_ATTN_SCALAR,
        Some(v) => v.as_f64().ok_or_else(|| unsupported(arch, cfg, "query_pre_attn_scalar", v, "not a number"))?,
    };
    let implied =
        f64::from(query_pre_attn_scalar(arch, cfg.block_count, cfg.hidden_size, cfg.head_count, cfg.head_dim()));
    if scalar != implied {
        let reason =
            format!("GGUF does not record it and llama.cpp scales queries by 1/sqrt({implied}) for this shape");
        return Err(unsupported(arch, cfg, "query_pre_attn_scalar", &json!(scalar), &reason));
    }
    if gemma2 {
        // Gemma2Model writes no RoPE keys: llama.cpp runs base 10000, unscaled.
        if let Some(t) = cfg.rope_theta.filter(|&t| t != 10000.0) {
            return Err(unsupported(arch, cfg, "rope_theta", &json!(t), "Gemma 2's GGUF records no RoPE base (10000)"));
        }
        if !matches!(cfg.rope_scaling, RopeScaling::None | RopeScaling::Ignored(_)) {
            let v = raw.get("rope_scaling").or_else(|| raw.get("rope_parameters")).cloned().unwrap_or_default();
            return Err(unsupported(arch, cfg, "rope_scaling", &v, "Gemma 2's GGUF records no RoPE scaling"));
        }
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = raw.get(key).filter(|v| !v.as_f64().is_some_and(|f| f > 0.0)) {
                return Err(unsupported(arch, cfg, key, v, "llama.cpp always applies it: a positive number is needed"));
            }
        }
        if window(cfg).is_none_or(|w| w == 0 || w > u64::from(u32::MAX)) {
            let v = raw.get("sliding_window").cloned().unwrap_or_default();
            return Err(unsupported(arch, cfg, "sliding_window", &v, "llama.cpp always applies it: a positive count"));
        }
    } else {
        if let Some(v) = raw.get("attn_logit_softcapping").filter(|v| !v.is_null()) {
            return Err(unsupported(arch, cfg, "attn_logit_softcapping", v, "Gemma 3's converter refuses it"));
        }
        if matches!(cfg.rope_scaling, RopeScaling::Yarn { .. } | RopeScaling::LongRope | RopeScaling::Llama3 { .. }) {
            let v = raw.get("rope_parameters").or_else(|| raw.get("rope_scaling")).cloned().unwrap_or_default();
            return Err(unsupported(arch, cfg, "rope_parameters", &v, "only linear scaling of the global layers"));
        }
        if let Some(t) = sliding_rope(raw).and_then(|p| p.get("rope_type").cloned()) {
            if t.as_str() != Some("default") {
                let reason = "llama.cpp does not scale the RoPE of sliding layers";
                return Err(unsupported(arch, cfg, "rope_parameters.sliding_attention.rope_type", &t, reason));
            }
        }
        if let Some(v) = raw.get("final_logit_softcapping").filter(|v| !v.is_null() && !v.is_number()) {
            return Err(unsupported(arch, cfg, "final_logit_softcapping", v, "not a number"));
        }
        if gemma3_slides(cfg) && window(cfg).is_none_or(|w| w == 0 || w > u64::from(u32::MAX)) {
            let v = raw.get("sliding_window").cloned().unwrap_or_default();
            return Err(unsupported(arch, cfg, "sliding_window", &v, "a positive window is needed"));
        }
    }
    // The layer pattern llama.cpp will use, against the config's own.
    let n = cfg.block_count as usize;
    let expected = match (gemma2, gemma3_slides(cfg)) {
        (true, _) => pattern(n, 2),
        (false, true) => pattern(n, 6),
        (false, false) => vec![false; n],
    };
    let name = |swa: bool| if swa { "sliding_attention" } else { "full_attention" };
    if let Some(v) = raw.get("layer_types").filter(|v| !v.is_null()) {
        let types: Option<Vec<&str>> = v.as_array().and_then(|a| a.iter().map(Value::as_str).collect());
        if types != Some(expected.iter().map(|&s| name(s)).collect()) {
            let reason =
                format!("llama.cpp's fixed pattern for {} slides layers {:?}", arch.gguf_name, swa_list(&expected));
            return Err(unsupported(arch, cfg, "layer_types", v, &reason));
        }
    } else if let Some(v) = raw.get("sliding_window_pattern").filter(|v| !gemma2 && v.as_u64() != Some(6)) {
        if v.as_u64() != Some(1) {
            return Err(unsupported(arch, cfg, "sliding_window_pattern", v, "llama.cpp's Gemma 3 pattern is 6"));
        }
    }
    Ok(())
}

fn swa_list(flags: &[bool]) -> Vec<usize> {
    flags.iter().enumerate().filter(|(_, &s)| s).map(|(i, _)| i).collect()
}

/// The `query_pre_attn_scalar` llama.cpp's Gemma graph implies (`f_attention_scale`): `n_embd / n_head` for the
/// 27B layer counts, else the head size.
pub fn query_pre_attn_scalar(arch: &Architecture, n_layer: u32, n_embd: u32, n_head: u32, head_dim: u32) -> u32 {
    match arch.forward.query_scale {
        super::QueryScale::GemmaByLayers { layers } if layers == n_layer => n_embd / n_head.max(1),
        _ => head_dim,
    }
}

/// `Gemma2Model.set_gguf_parameters`.
pub(super) fn gemma2_metadata(kv: &mut KvList, arch: &Architecture, cfg: &HfConfig, file_type: u32) {
    let a = arch.gguf_name;
    kv.u32(K::ContextLength.key(a), cfg.context_length.unwrap_or(0));
    kv.u32(K::EmbeddingLength.key(a), cfg.hidden_size);
    kv.u32(K::BlockCount.key(a), cfg.block_count);
    kv.u32(K::FeedForwardLength.key(a), cfg.ffn_length);
    kv.u32(K::HeadCount.key(a), cfg.head_count);
    kv.u32(K::HeadCountKv.key(a), cfg.kv_heads());
    kv.f32(K::LayerNormRmsEpsilon.key(a), cfg.rms_norm_eps.unwrap_or(0.0));
    kv.u32(K::KeyLength.key(a), cfg.head_dim());
    kv.u32(K::ValueLength.key(a), cfg.head_dim());
    kv.u32("general.file_type", file_type);
    kv.f32(
        K::AttnLogitSoftcapping.key(a),
        softcap(cfg, "attn_logit_softcapping", Some(GEMMA2_ATTN_SOFTCAP)).unwrap_or(0.0),
    );
    kv.f32(
        K::FinalLogitSoftcapping.key(a),
        softcap(cfg, "final_logit_softcapping", Some(GEMMA2_FINAL_SOFTCAP)).unwrap_or(0.0),
    );
    kv.u32(K::SlidingWindow.key(a), window(cfg).unwrap_or(0) as u32);
}

/// `Gemma3Model.set_gguf_parameters`: `TextModel`'s keys (with the sliding layers' RoPE base after the global
/// one), then its own; keys set again keep their first position.
pub(super) fn gemma3_metadata(kv: &mut KvList, arch: &Architecture, cfg: &HfConfig, file_type: u32) {
    let a = arch.gguf_name;
    let mut text = KvList::new();
    super::hparams::text_metadata(&mut text, arch, cfg, file_type);
    let after_rope = [K::LayerNormRmsEpsilon.key(a), K::LayerNormEpsilon.key(a), K::KeyLength.key(a)];
    let mut local = local_rope_theta(cfg);
    for (k, v) in text.into_vec() {
        if after_rope.contains(&k) || k == "general.file_type" {
            if let Some(t) = local.take() {
                kv.f32(K::RopeFreqBaseSwa.key(a), t);
            }
        }
        kv.set(k, v);
    }
    kv.u32(K::ContextLength.key(a), cfg.context_length.unwrap_or(131072));
    kv.u32(K::HeadCount.key(a), cfg.head_count);
    kv.f32(K::LayerNormRmsEpsilon.key(a), cfg.rms_norm_eps.unwrap_or(1e-6));
    kv.u32(K::KeyLength.key(a), cfg.head_dim());
    kv.u32(K::ValueLength.key(a), cfg.head_dim());
    kv.f32(K::RopeFreqBase.key(a), cfg.rope_theta.unwrap_or(1_000_000.0));
    if let Some(c) = softcap(cfg, "final_logit_softcapping", None).filter(|&c| c != 0.0) {
        kv.f32(K::FinalLogitSoftcapping.key(a), c);
    }
    if gemma3_slides(cfg) {
        kv.u32(K::SlidingWindow.key(a), window(cfg).unwrap_or(0) as u32);
    }
    kv.u32(K::HeadCountKv.key(a), cfg.kv_heads());
}

/// The Gemma keys of a config.json rebuilt from `gguf` (added to `c`), so that converting it back gives the
/// same hyperparameters and transformers runs what llama.cpp runs.
pub(super) fn config_from_gguf(c: &mut Map<String, Value>, gguf: &GgufFile, arch: &Architecture) {
    let a = arch.gguf_name;
    let get = |k: K| gguf.get(&k.key(a));
    let float = |k: K| match get(k) {
        Some(GgufValue::F32(v)) => super::keys::f32_json(*v),
        Some(v) => v.as_f64().map_or(Value::Null, |f| json!(f)),
        None => Value::Null,
    };
    let uint = |k: K| get(k).and_then(GgufValue::as_u64).unwrap_or(0) as u32;
    c.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
    let n_head = uint(K::HeadCount);
    let head_dim = get(K::KeyLength)
        .and_then(GgufValue::as_u64)
        .map_or_else(|| uint(K::EmbeddingLength) / n_head.max(1), |v| v as u32);
    let scalar = query_pre_attn_scalar(arch, uint(K::BlockCount), uint(K::EmbeddingLength), n_head, head_dim);
    c.insert("query_pre_attn_scalar".into(), json!(scalar));
    match arch.converter {
        Converter::Gemma2 => {
            for k in [K::AttnLogitSoftcapping, K::FinalLogitSoftcapping] {
                if get(k).is_some() {
                    c.insert(k.suffix().into(), float(k));
                }
            }
            if get(K::SlidingWindow).is_some() {
                c.insert("sliding_window".into(), json!(uint(K::SlidingWindow)));
            }
        }
        _ => {
            c.insert("model_type".into(), json!("gemma3_text"));
            match get(K::SlidingWindow) {
                Some(_) => c.insert("sliding_window".into(), json!(uint(K::SlidingWindow))),
                None => c.insert("sliding_window_pattern".into(), json!(1)),
            };
            if get(K::FinalLogitSoftcapping).is_some() {
                c.insert("final_logit_softcapping".into(), float(K::FinalLogitSoftcapping));
            }
            if get(K::RopeFreqBaseSwa).is_some() {
                c.insert("rope_local_base_freq".into(), float(K::RopeFreqBaseSwa));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::arch::lookup;

    fn config(arch: &str, extra: Value) -> HfConfig {
        let mut c = json!({"architectures": [arch], "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "vocab_size": 64, "query_pre_attn_scalar": 16,
            "sliding_window": 8, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0});
        if arch == "Gemma3ForCausalLM" {
            c["attn_logit_softcapping"] = Value::Null;
        }
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        HfConfig::parse(Path::new("m/config.json"), &c).unwrap()
    }

    fn check(arch: &str, extra: Value) -> Result<()> {
        let cfg = config(arch, extra);
        crate::arch::check_config(lookup(Path::new("m"), arch).unwrap(), &cfg)
    }

    #[test]
    fn configs_llama_cpp_cannot_run_are_refused_by_key() {
        assert!(check("Gemma2ForCausalLM", json!({})).is_ok());
        assert!(check("Gemma3ForCausalLM", json!({})).is_ok());
        for (arch, key, value) in [
            ("Gemma2ForCausalLM", "query_pre_attn_scalar", json!(8)),
            ("Gemma2ForCausalLM", "rope_theta", json!(20000.0)),
            ("Gemma2ForCausalLM", "rope_scaling", json!({"rope_type": "linear", "factor": 2.0})),
            ("Gemma2ForCausalLM", "attn_logit_softcapping", Value::Null),
            ("Gemma2ForCausalLM", "final_logit_softcapping", json!(0.0)),
            ("Gemma2ForCausalLM", "sliding_window", json!(8.5)),
            ("Gemma2ForCausalLM", "layer_types", json!(vec!["full_attention"; 6])),
            ("Gemma2ForCausalLM", "hidden_activation", json!("gelu")),
            ("Gemma2ForCausalLM", "attention_bias", json!(true)),
            ("Gemma2ForCausalLM", "head_dim", Value::Null),
            ("Gemma3ForCausalLM", "attn_logit_softcapping", json!(50.0)),
            ("Gemma3ForCausalLM", "use_bidirectional_attention", json!(true)),
            ("Gemma3ForCausalLM", "sliding_window_pattern", json!(4)),
            ("Gemma3ForCausalLM", "sliding_window", Value::Null),
            ("Gemma3ForCausalLM", "query_pre_attn_scalar", json!(256)),
        ] {
            let e = check(arch, json!({ key: value.clone() })).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(&format!("'{key}'")) && text.contains("m/config.json"), "{arch} {key}: {text}");
            assert!(matches!(e, FormatError::UnsupportedConfig { .. } | FormatError::Config { .. }), "{text}");
        }
        let yarn = json!({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0,
            "original_max_position_embeddings": 64, "rope_theta": 1e6}}});
        assert!(check("Gemma3ForCausalLM", yarn).unwrap_err().to_string().contains("'rope_parameters'"));
        let local = json!({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}});
        let e = check("Gemma3ForCausalLM", local).unwrap_err().to_string();
        assert!(e.contains("sliding_attention.rope_type"), "{e}");
        // The 27B sizes: llama.cpp scales by hidden / heads, and so must the config.
        let big = json!({"num_hidden_layers": 46, "query_pre_attn_scalar": 8});
        assert!(check("Gemma2ForCausalLM", big).is_ok());
        // Pattern 1: no sliding layer, no window key; the default pattern of transformers matches llama.cpp's.
        assert!(check("Gemma3ForCausalLM", json!({"sliding_window_pattern": 1})).is_ok());
        assert!(check("Gemma3ForCausalLM", json!({"sliding_window_pattern": 6})).is_ok());
    }

    #[test]
    fn hyperparameters_in_the_converters_order() {
        let keys = |arch: &str, extra: Value| {
            let cfg = config(arch, extra);
            let mut kv = KvList::new();
            super::super::arch_metadata(&mut kv, lookup(Path::new("m"), arch).unwrap(), &cfg, 0);
            kv.entries()
                .iter()
                .map(|(k, _)| k.split_once('.').map_or(k.clone(), |s| s.1.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys("Gemma2ForCausalLM", json!({})),
            [
                "context_length",
                "embedding_length",
                "block_count",
                "feed_forward_length",
                "attention.head_count",
                "attention.head_count_kv",
                "attention.layer_norm_rms_epsilon",
                "attention.key_length",
                "attention.value_length",
                "file_type",
                "attn_logit_softcapping",
                "final_logit_softcapping",
                "attention.sliding_window"
            ]
        );
        let local = json!({"rope_theta": 1e6, "rope_local_base_freq": 1e4, "final_logit_softcapping": Value::Null});
        assert_eq!(
            keys("Gemma3ForCausalLM", local),
            [
                "block_count",
                "context_length",
                "embedding_length",
                "feed_forward_length",
                "attention.head_count",
                "attention.head_count_kv",
                "rope.freq_base",
                "rope.freq_base_swa",
                "attention.layer_norm_rms_epsilon",
                "attention.key_length",
                "attention.value_length",
                "file_type",
                "attention.sliding_window"
            ]
        );
        // Without a RoPE base Gemma3Model appends its default; with pattern 1 there is no window key.
        let k = keys("Gemma3ForCausalLM", json!({"sliding_window_pattern": 1, "final_logit_softcapping": 5.0}));
        assert_eq!(&k[k.len() - 2..], ["rope.freq_base", "final_logit_softcapping"]);
    }

    #[test]
    fn sliding_layers_as_llama_cpp_loads_them() {
        let none = |_: K| None;
        let g2 = SlidingWindow::Pattern { period: 2, default_window: 4096 };
        let g3 = SlidingWindow::Pattern { period: 6, default_window: 0 };
        let l = swa_layers(g2, 4, none).unwrap().unwrap();
        assert_eq!((l.window, l.layers), (4096, vec![true, false, true, false]));
        assert_eq!(swa_layers(g3, 7, none).unwrap(), None);
        let w = GgufValue::U32(512);
        let l = swa_layers(g3, 7, |k| (k == K::SlidingWindow).then_some(&w)).unwrap().unwrap();
        assert_eq!(l.layers, [true, true, true, true, true, false, true]);
        let p = GgufValue::U32(3);
        let get = |k: K| match k {
            K::SlidingWindow => Some(&w),
            K::SlidingWindowPattern => Some(&p),
            _ => None,
        };
        assert_eq!(swa_layers(g3, 4, get).unwrap().unwrap().layers, [true, true, false, true]);
        let bad = GgufValue::String("x".into());
        assert_eq!(swa_layers(g2, 2, |_| Some(&bad)).unwrap_err(), K::SlidingWindow);
        assert_eq!(swa_layers(SlidingWindow::None, 2, |_| Some(&w)).unwrap(), None);
        // OLMo 2: no window, or a zero one, slides nothing; a window (an OLMo 3 file) is refused by key.
        let zero = GgufValue::U32(0);
        assert_eq!(swa_layers(SlidingWindow::Refused, 2, |_| None).unwrap(), None);
        assert_eq!(swa_layers(SlidingWindow::Refused, 2, |_| Some(&zero)).unwrap(), None);
        assert_eq!(swa_layers(SlidingWindow::Refused, 2, |_| Some(&w)).unwrap_err(), K::SlidingWindow);
    }
}
