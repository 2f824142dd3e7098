//! What an architecture's converter class does with config.json beyond the shared `TextModel` path: its own
//! hyper-parameter layout, the tensors it generates, and the config values this port refuses because
//! llama.cpp's converter or graph would not honour them (llama.cpp `conversion/granite.py`, `llama.py`,
//! `phi.py`, `gemma.py` at 0c1e57098, the commit whose converter the architecture fixtures are checked against).
//!
//! Invariant: [`check_config`] runs on config.json alone, before any tensor is read, and names the key it
//! refuses; everything it accepts converts byte-identically and evaluates as llama.cpp's graph does.

use serde_json::Value;

use super::{gemma, hparams, olmo2, phi3, smollm3, Architecture, HfConfig};
use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::kv::KvList;

/// The llama.cpp converter class behind an architecture, where it matters beyond tensor rules and extra keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Converter {
    /// `TextModel.set_gguf_parameters` then the architecture's extra keys (`LlamaModel`, `Qwen2Model`, ...).
    Text,
    /// `GraniteModel`: `head_dim` is popped from the config before anything reads it (so no
    /// `attention.key_length` and `hidden_size / num_attention_heads` everywhere), then `LlamaModel`'s path.
    Granite,
    /// `SmolLM3Model`: `LlamaModel`'s path; llama.cpp's graph hard-codes every 4th layer as NoPE
    /// (`n_no_rope_layer_step = 4`), so configs whose `no_rope_layers` say otherwise are refused.
    SmolLM3,
    /// `Phi3MiniModel`: its own `set_gguf_parameters` (no `TextModel` keys), LongRoPE factor tensors and
    /// `rope.scaling.attn_factor` from `generate_extra_tensors`, fused `qkv_proj`/`gate_up_proj` kept fused.
    Phi3,
    /// `Gemma2Model.set_gguf_parameters` (its own key list, [`super::gemma`]).
    Gemma2,
    /// `Gemma3Model.set_gguf_parameters` (`TextModel`'s keys, then its own, [`super::gemma`]).
    Gemma3,
    /// `Olmo2Model`: `TextModel`'s keys (plus a sliding window, which [`check_config`] refuses), with the config
    /// values llama.cpp's OLMo 2 graph does not honour refused ([`super::olmo2`]).
    Olmo2,
}

/// Write the hyperparameter keys and `general.file_type` for `cfg`, as the architecture's converter class does.
pub fn arch_metadata(kv: &mut KvList, arch: &Architecture, cfg: &HfConfig, file_type: u32) {
    match arch.converter {
        Converter::Text | Converter::Granite | Converter::SmolLM3 | Converter::Olmo2 => {
            hparams::text_metadata(kv, arch, cfg, file_type)
        }
        Converter::Phi3 => {
            // Phi3MiniModel writes its own keys instead of TextModel's (a config `check_config` refused writes none).
            if let Ok(rope) = phi3::phi3_rope(cfg) {
                phi3::write_hparams(kv, cfg, &rope, file_type);
            }
        }
        Converter::Gemma2 => gemma::gemma2_metadata(kv, arch, cfg, file_type),
        Converter::Gemma3 => gemma::gemma3_metadata(kv, arch, cfg, file_type),
    }
}

/// config.json for the model in `gguf` (architecture `arch`): the keys [`arch_metadata`] reads, so that converting
/// the result back gives the same hyperparameters. `torch_dtype` is the dtype being written.
pub fn hf_config_from_gguf(gguf: &GgufFile, arch: &Architecture, torch_dtype: &str) -> Value {
    let mut c = hparams::text_hf_config(gguf, arch, torch_dtype);
    match arch.converter {
        Converter::Phi3 => phi3::hf_config_keys(gguf, &mut c),
        Converter::Gemma2 | Converter::Gemma3 => gemma::config_from_gguf(&mut c, gguf, arch),
        Converter::Text | Converter::Granite | Converter::SmolLM3 | Converter::Olmo2 => {}
    }
    Value::Object(c)
}

/// Refuse config.json values the architecture's converter class or llama.cpp's graph would not honour.
pub fn check_config(arch: &Architecture, cfg: &HfConfig) -> Result<()> {
    super::plan::check_requirements(arch, cfg)?;
    match arch.converter {
        Converter::Text => Ok(()),
        Converter::Granite => {
            refuse_true(cfg, &["mlp_bias"])?;
            // Written as `logit_scale` only when non-zero, and llama.cpp's Granite loader requires that key.
            match cfg.raw.get("logits_scaling").and_then(Value::as_f64) {
                Some(v) if v != 0.0 && v.is_finite() => Ok(()),
                _ => Err(err(
                    cfg,
                    "logits_scaling",
                    "is missing or zero; llama.cpp's Granite graph divides the logits by it",
                )),
            }
        }
        Converter::SmolLM3 => smollm3::check_config(cfg),
        Converter::Phi3 => phi3::check_config(cfg).map(|_| ()),
        Converter::Gemma2 | Converter::Gemma3 => gemma::check_config(arch, cfg),
        Converter::Olmo2 => olmo2::check_config(cfg),
    }
}

/// The LongRoPE factors the converter generates for `cfg` (Phi-3 with `long_factor`), `None` for others.
pub fn longrope_factors(arch: &Architecture, cfg: &HfConfig) -> Result<Option<LongRopeFactors>> {
    match arch.converter {
        Converter::Phi3 => Ok(phi3::phi3_rope(cfg)?.longrope),
        _ => Ok(None),
    }
}

/// LongRoPE as `Phi3MiniModel.generate_extra_tensors` writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRopeFactors {
    /// `rope_factors_long.weight` (`n_rot / 2` values).
    pub long: Vec<f32>,
    /// `rope_factors_short.weight`.
    pub short: Vec<f32>,
    /// `rope.scaling.attn_factor`: `sqrt(1 + ln(scale) / ln(original))` with `scale = max_position_embeddings /
    /// original_max_position_embeddings` (1 when `scale <= 1`).
    pub attn_factor: f64,
}

pub(super) fn err(cfg: &HfConfig, key: &str, message: impl Into<String>) -> FormatError {
    FormatError::Config { path: cfg.path.clone(), key: key.into(), message: message.into() }
}

/// Refuse each key of `keys` that is `true`.
pub(super) fn refuse_true(cfg: &HfConfig, keys: &[&str]) -> Result<()> {
    for k in keys {
        if cfg.raw.get(*k).and_then(Value::as_bool) == Some(true) {
            return Err(err(cfg, k, "is true; llama.cpp's graph for this architecture has no such tensors"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::arch::lookup;

    fn parse(arch: &str, extra: Value) -> Result<HfConfig> {
        let mut v = json!({"architectures": [arch], "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "logits_scaling": 2.0});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        HfConfig::parse(Path::new("m/config.json"), &v)
    }

    fn check(arch: &str, extra: Value) -> std::result::Result<(), String> {
        let cfg = parse(arch, extra).map_err(|e| e.to_string())?;
        check_config(lookup(Path::new("c"), arch).unwrap(), &cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn granite_ignores_a_consistent_head_dim_and_refuses_another() {
        let cfg = parse("GraniteForCausalLM", json!({"head_dim": 8})).unwrap();
        assert_eq!((cfg.head_dim, cfg.head_dim()), (None, 8));
        let e = parse("GraniteForCausalLM", json!({"head_dim": 16})).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("head_dim"), "{e}");
        // Other architectures keep it.
        assert_eq!(parse("LlamaForCausalLM", json!({"head_dim": 16})).unwrap().head_dim(), 16);
        assert!(check("GraniteForCausalLM", json!({"mlp_bias": true})).unwrap_err().contains("mlp_bias"));
        assert!(check("GraniteForCausalLM", json!({"attention_bias": true})).is_ok());
        for zero in [json!({"logits_scaling": 0.0}), json!({"logits_scaling": null})] {
            assert!(check("GraniteForCausalLM", zero).unwrap_err().contains("logits_scaling"));
        }
    }

    #[test]
    fn smollm3_accepts_only_llama_cpp_s_nope_layers() {
        assert!(check("SmolLM3ForCausalLM", json!({})).is_ok());
        assert!(check("SmolLM3ForCausalLM", json!({"no_rope_layers": [1, 1, 1, 0, 1, 1, 1, 0]})).is_ok());
        assert!(check("SmolLM3ForCausalLM", json!({"no_rope_layer_interval": 4, "use_sliding_window": false})).is_ok());
        for (extra, key) in [
            (json!({"no_rope_layers": [1, 1, 1, 1, 1, 1, 1, 1]}), "no_rope_layers"),
            (json!({"no_rope_layers": [1, 1, 1, 0]}), "no_rope_layers"),
            (json!({"no_rope_layer_interval": 2}), "no_rope_layer_interval"),
            (json!({"use_sliding_window": true, "sliding_window": 64}), "use_sliding_window"),
            (json!({"layer_types": ["sliding_attention"]}), "layer_types"),
            (json!({"attention_bias": true}), "attention_bias"),
            (json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}), "rope_scaling"),
        ] {
            let e = check("SmolLM3ForCausalLM", extra.clone()).unwrap_err();
            assert!(e.contains(key) && e.contains("m/config.json"), "{extra}: {e}");
        }
    }

    #[test]
    fn olmo2_refuses_what_llama_cpp_s_graph_does_not_compute() {
        assert!(check("Olmo2ForCausalLM", json!({})).is_ok());
        let ok = [
            json!({"attention_bias": false, "hidden_act": "silu", "head_dim": 8, "tie_word_embeddings": false}),
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
            json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}),
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}),
        ];
        for extra in ok {
            assert!(check("Olmo2ForCausalLM", extra.clone()).is_ok(), "{extra}");
        }
        for (extra, key) in [
            (json!({"attention_bias": true}), "attention_bias"),
            (json!({"hidden_act": "gelu"}), "hidden_act"),
            (json!({"head_dim": 16}), "head_dim"),
            (json!({"tie_word_embeddings": true}), "tie_word_embeddings"),
            (json!({"sliding_window": 4096}), "sliding_window"),
            (json!({"sliding_window": null}), "sliding_window"),
            (json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}), "rope_scaling"),
            (json!({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}), "rope_parameters"),
            (
                json!({"rope_parameters": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}),
                "rope_parameters",
            ),
        ] {
            let e = check("Olmo2ForCausalLM", extra.clone()).unwrap_err();
            assert!(e.contains(key) && e.contains("m/config.json"), "{extra}: {e}");
        }
        let a = lookup(Path::new("c"), "Olmo2ForCausalLM").unwrap();
        assert!(a.requires_output() && !a.tied_output_allowed() && !a.permutes_hf_qk());
        assert!(!a.forward.pre_norms && a.forward.post_norms && a.forward.qk_norm);
    }

    #[test]
    fn phi3_longrope_is_read_as_the_converter_reads_it() {
        let rope = json!({"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 2.0, 3.0],
            "long_factor": [4.0, 5.0, 6.0]});
        let extra = json!({"rope_parameters": rope, "original_max_position_embeddings": 64,
            "partial_rotary_factor": 0.75});
        let cfg = parse("Phi3ForCausalLM", extra.clone()).unwrap();
        let r = crate::arch::phi3_rope(&cfg).unwrap();
        assert_eq!((r.n_rot, r.original_context), (6, 64));
        let f = r.longrope.unwrap();
        assert_eq!((f.long, f.short), (vec![4.0, 5.0, 6.0], vec![1.0, 2.0, 3.0]));
        // scale 256 / 64 = 4: sqrt(1 + ln 4 / ln 64).
        assert!((f.attn_factor - (1.0 + 4f64.ln() / 64f64.ln()).sqrt()).abs() < 1e-12);
        // No factors: no LongRoPE; a missing original context is refused as the converter's KeyError.
        let plain = parse("Phi3ForCausalLM", json!({"original_max_position_embeddings": 256})).unwrap();
        assert_eq!(crate::arch::phi3_rope(&plain).unwrap().longrope, None);
        assert!(check("Phi3ForCausalLM", json!({})).unwrap_err().contains("original_max_position_embeddings"));
        for (edit, key) in [
            (json!({"long_factor": [1.0, 2.0]}), "long_factor"),
            (json!({"attention_factor": 1.2}), "attention_factor"),
            (json!({"rope_type": "yarn"}), "rope_scaling"),
        ] {
            let mut e2 = extra.clone();
            for (k, v) in edit.as_object().unwrap() {
                e2["rope_parameters"][k] = v.clone();
            }
            let e = check("Phi3ForCausalLM", e2).unwrap_err();
            assert!(e.contains(key), "{edit}: {e}");
        }
        let mut odd = extra.clone();
        odd["partial_rotary_factor"] = json!(0.375);
        odd["rope_parameters"]["partial_rotary_factor"] = json!(0.375);
        assert!(check("Phi3ForCausalLM", odd).unwrap_err().contains("partial_rotary_factor"));
    }
}
