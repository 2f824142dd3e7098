//! `SmolLM3ForCausalLM` -> `smollm3` (llama.cpp `conversion/llama.py` `SmolLM3Model`, a `LlamaModel`, at
//! 0c1e57098): Llama's tensors, keys and Q/K permutation. llama.cpp's `src/models/smollm3.cpp` skips RoPE on
//! every 4th layer (`(il + 1) % 4 == 0`, `n_no_rope_layer_step = 4`, no GGUF key), which is transformers'
//! default `no_rope_layers` for `no_rope_layer_interval = 4`; any other NoPE layout is refused, as are sliding
//! windows (`use_sliding_window`, non-full `layer_types`), biases and Llama 3 RoPE factors, none of which the
//! llama.cpp graph reads.

use serde_json::Value;

use super::converter::{err, refuse_true};
use super::{
    llama, Architecture, Converter, ExtraKey, ForwardFacts, HfConfig, Presence, RopeScaling, RopeStyle, VocabStyle,
};
use crate::error::Result;

/// llama.cpp's `n_no_rope_layer_step` for SmolLM3.
pub const NO_ROPE_LAYER_STEP: u32 = 4;

pub(super) static SMOLLM3: Architecture = Architecture {
    hf_names: &["SmolLM3ForCausalLM"],
    gguf_name: "smollm3",
    rules: llama::RULES,
    extra_keys: &[ExtraKey::VocabSize, ExtraKey::RopeDimensionCount],
    vocab: VocabStyle::Llama,
    llama3_rope_freqs: false,
    forward: ForwardFacts {
        rope: RopeStyle::Norm,
        // Q/K/V biases are optional in `create_tensor_qkv`; `attention_bias` itself is refused by `check_config`.
        qkv_bias: Presence::Optional,
        attn_out_bias: Presence::Optional,
        no_rope_layer_step: Some(NO_ROPE_LAYER_STEP),
        ..ForwardFacts::DENSE
    },
    converter: Converter::SmolLM3,
};

/// The config values llama.cpp's SmolLM3 graph does not honour.
pub(super) fn check_config(cfg: &HfConfig) -> Result<()> {
    refuse_true(cfg, &["attention_bias", "mlp_bias"])?;
    let step = NO_ROPE_LAYER_STEP as usize;
    let expected: Vec<u64> = (0..cfg.block_count as usize).map(|il| u64::from((il + 1) % step != 0)).collect();
    match cfg.raw.get("no_rope_layers").filter(|v| !v.is_null()) {
        Some(v) => {
            let found: Option<Vec<u64>> = v.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect());
            if found.as_ref() != Some(&expected) {
                return Err(err(
                    cfg,
                    "no_rope_layers",
                    format!("is {v}; llama.cpp runs RoPE as {expected:?} (every 4th layer without)"),
                ));
            }
        }
        None => {
            if let Some(n) = cfg.raw.get("no_rope_layer_interval").filter(|v| !v.is_null()) {
                if n.as_u64() != Some(NO_ROPE_LAYER_STEP.into()) {
                    return Err(err(
                        cfg,
                        "no_rope_layer_interval",
                        format!("is {n}; llama.cpp's SmolLM3 graph uses 4"),
                    ));
                }
            }
        }
    }
    let sliding = cfg.raw.get("sliding_window").is_some_and(|v| !v.is_null());
    if sliding && cfg.raw.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(err(cfg, "use_sliding_window", "is true; llama.cpp's SmolLM3 graph has no sliding window"));
    }
    if let Some(types) = cfg.raw.get("layer_types").and_then(Value::as_array) {
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return Err(err(cfg, "layer_types", format!("has {t}; llama.cpp's SmolLM3 graph has full attention only")));
        }
    }
    if let RopeScaling::Llama3 { .. } = cfg.rope_scaling {
        return Err(err(cfg, "rope_scaling", "is llama3; llama.cpp's SmolLM3 graph does not read rope_freqs.weight"));
    }
    Ok(())
}
