//! `Phi3ForCausalLM` -> `phi3` (llama.cpp `conversion/phi.py` `Phi3MiniModel` at 0c1e57098): the fused
//! `qkv_proj` and `gate_up_proj` are kept fused (`attn_qkv`, and `ffn_up` of `2 * n_ff` rows, gate first), no
//! Q/K permutation (llama.cpp runs Phi-3 with NeoX RoPE), its own hyper-parameter keys (no `TextModel` keys;
//! `rope.dimension_count = int(partial_rotary_factor * n_embd) // n_head`, `attention.sliding_window`, 0 when
//! absent) and, for LongRoPE, the `rope_factors_long`/`rope_factors_short` tensors and
//! `rope.scaling.attn_factor` generated from config.json.
//!
//! llama.cpp's `src/models/phi3.cpp` disables Phi-3's sliding window (`swa_type = NONE` whatever
//! `sliding_window` says), so attention is fully causal; transformers applies the window, so the two differ on
//! sequences longer than it. The long factors are used when the context (llama.cpp's `n_ctx_seq`, padded to a
//! multiple of 256) exceeds `original_max_position_embeddings`, the short ones otherwise.

use serde_json::Value;

use super::converter::{err, LongRopeFactors};
use super::keys::HparamKey as K;
use super::{Architecture, Converter, Dim::*, ForwardFacts, HfConfig, RopeStyle, TensorRule, VocabStyle};
use crate::error::Result;
use crate::kv::KvList;

const RULES: &[TensorRule] = &[
    TensorRule::copy("model.embed_tokens.weight", "token_embd.weight", &[Vocab, Hidden]),
    TensorRule::copy("lm_head.weight", "output.weight", &[Vocab, Hidden]).optional(),
    TensorRule::copy("model.norm.weight", "output_norm.weight", &[Hidden]),
    TensorRule::copy("model.layers.{bid}.input_layernorm.weight", "blk.{bid}.attn_norm.weight", &[Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.qkv_proj.weight", "blk.{bid}.attn_qkv.weight", &[QkvOut, Hidden]),
    TensorRule::copy("model.layers.{bid}.self_attn.o_proj.weight", "blk.{bid}.attn_output.weight", &[Hidden, QOut]),
    TensorRule::copy("model.layers.{bid}.post_attention_layernorm.weight", "blk.{bid}.ffn_norm.weight", &[Hidden]),
    TensorRule::copy("model.layers.{bid}.mlp.gate_up_proj.weight", "blk.{bid}.ffn_up.weight", &[FfnPair, Hidden]),
    TensorRule::copy("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", &[Hidden, Ffn]),
];

pub(super) static PHI3: Architecture = Architecture {
    hf_names: &["Phi3ForCausalLM"],
    gguf_name: "phi3",
    rules: RULES,
    extra_keys: &[],
    vocab: VocabStyle::Phi3,
    llama3_rope_freqs: false,
    forward: ForwardFacts {
        rope: RopeStyle::Neox,
        fused_qkv_gate_up: true,
        partial_rotary: true,
        longrope_factors: true,
        ..ForwardFacts::DENSE
    },
    converter: Converter::Phi3,
};

/// Phi-3's RoPE as `Phi3MiniModel` reads it from config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct Phi3Rope {
    /// `rope.dimension_count`: `int(partial_rotary_factor * hidden_size) // num_attention_heads`.
    pub n_rot: u32,
    /// `rope.scaling.original_context_length` (`original_max_position_embeddings`).
    pub original_context: u32,
    pub rope_theta: f64,
    /// LongRoPE factors when config.json has a `long_factor` list.
    pub longrope: Option<LongRopeFactors>,
}

/// Read and check Phi-3's RoPE (and every other value `Phi3MiniModel` requires) from config.json.
pub fn phi3_rope(cfg: &HfConfig) -> Result<Phi3Rope> {
    let p = super::config::rope_params(&cfg.raw);
    let missing = |k: &str| err(cfg, k, "missing (Phi3MiniModel requires it)");
    for (present, key) in [
        (cfg.context_length.is_some(), "max_position_embeddings"),
        (cfg.head_count_kv.is_some(), "num_key_value_heads"),
        (cfg.rms_norm_eps.is_some(), "rms_norm_eps"),
        (cfg.rope_theta.is_some(), "rope_theta"),
    ] {
        if !present {
            return Err(missing(key));
        }
    }
    if cfg.head_dim.is_some_and(|d| d != cfg.hidden_size / cfg.head_count)
        || !cfg.hidden_size.is_multiple_of(cfg.head_count)
    {
        return Err(err(
            cfg,
            "head_dim",
            "must be hidden_size / num_attention_heads: llama.cpp's Phi-3 graph assumes it",
        ));
    }
    let original =
        p.get("original_max_position_embeddings").ok_or_else(|| missing("original_max_position_embeddings"))?;
    let original_context =
        original.as_u64().and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0).ok_or_else(|| {
            err(cfg, "original_max_position_embeddings", format!("is {original}, not a positive count"))
        })?;
    let rot_pct = match p.get("partial_rotary_factor") {
        None => 1.0,
        Some(v) => v.as_f64().ok_or_else(|| err(cfg, "partial_rotary_factor", format!("is {v}, not a number")))?,
    };
    // Python: int(rot_pct * n_embd) // n_head.
    let rotated = (rot_pct * f64::from(cfg.hidden_size)).trunc();
    let n_rot =
        if rotated > 0.0 && rotated <= f64::from(cfg.hidden_size) { rotated as u32 / cfg.head_count } else { 0 };
    if n_rot == 0 || !n_rot.is_multiple_of(2) {
        return Err(err(
            cfg,
            "partial_rotary_factor",
            format!("gives {n_rot} rotated dimensions per head (need a positive even count)"),
        ));
    }
    let factors = |k: &str| -> Result<Option<Vec<f32>>> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) if a.is_empty() => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .map(Some)
                .ok_or_else(|| err(cfg, k, "is not a list of numbers")),
            Some(v) => Err(err(cfg, k, format!("is {v}, not a list"))),
        }
    };
    let kind = p.get("rope_type").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    let longrope = match factors("long_factor")? {
        None if kind == "longrope" || kind == "su" => {
            return Err(err(cfg, "rope_scaling", "is longrope without long_factor/short_factor"))
        }
        None => None,
        Some(long) => {
            if kind != "longrope" && kind != "su" {
                return Err(err(
                    cfg,
                    "rope_scaling",
                    format!("type '{kind}' with factors; only longrope is implemented"),
                ));
            }
            if p.contains_key("attention_factor") {
                return Err(err(
                    cfg,
                    "attention_factor",
                    "is not written by llama.cpp's Phi-3 converter (it computes its own)",
                ));
            }
            let short = factors("short_factor")?.ok_or_else(|| missing("short_factor"))?;
            if long.len() != short.len() || long.len() != (n_rot / 2) as usize {
                return Err(err(cfg, "long_factor", format!("and short_factor must have {} values each", n_rot / 2)));
            }
            let ctx = f64::from(cfg.context_length.unwrap_or(0));
            let scale = ctx / f64::from(original_context);
            let attn_factor =
                if scale > 1.0 { (1.0 + scale.ln() / f64::from(original_context).ln()).sqrt() } else { 1.0 };
            Some(LongRopeFactors { long, short, attn_factor })
        }
    };
    Ok(Phi3Rope { n_rot, original_context, rope_theta: cfg.rope_theta.unwrap_or(10000.0), longrope })
}

pub(super) fn check_config(cfg: &HfConfig) -> Result<Phi3Rope> {
    phi3_rope(cfg)
}

/// `Phi3MiniModel.set_gguf_parameters` (for a config [`phi3_rope`] accepted).
pub(super) fn write_hparams(kv: &mut KvList, cfg: &HfConfig, rope: &Phi3Rope, file_type: u32) {
    let a = PHI3.gguf_name;
    kv.u32(K::ContextLength.key(a), cfg.context_length.unwrap_or(0));
    kv.u32(K::RopeScalingOriginalContextLength.key(a), rope.original_context);
    kv.u32(K::EmbeddingLength.key(a), cfg.hidden_size);
    kv.u32(K::FeedForwardLength.key(a), cfg.ffn_length);
    kv.u32(K::BlockCount.key(a), cfg.block_count);
    kv.u32(K::HeadCount.key(a), cfg.head_count);
    kv.u32(K::HeadCountKv.key(a), cfg.kv_heads());
    kv.f32(K::LayerNormRmsEpsilon.key(a), cfg.rms_norm_eps.unwrap_or(0.0));
    kv.u32(K::RopeDimensionCount.key(a), rope.n_rot);
    kv.f32(K::RopeFreqBase.key(a), rope.rope_theta);
    kv.u32("general.file_type", file_type);
    let window = cfg.raw.get("sliding_window").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
    kv.u32(K::SlidingWindow.key(a), window.unwrap_or(0));
}

/// The GGUF tensors `Phi3MiniModel.generate_extra_tensors` makes from config.json (not HF tensors).
pub const GENERATED_TENSORS: &[&str] = &["rope_factors_long.weight", "rope_factors_short.weight"];

/// The config.json keys of a `phi3` GGUF that [`write_hparams`] and the LongRoPE tensors came from.
pub(super) fn hf_config_keys(gguf: &crate::gguf::GgufFile, c: &mut serde_json::Map<String, Value>) {
    use serde_json::json;
    let hp = super::GgufHparams::with_arch(gguf, PHI3.gguf_name);
    if let Some(n) = hp.u64(K::RopeScalingOriginalContextLength) {
        c.insert("original_max_position_embeddings".into(), json!(n));
    }
    if let Some(w) = hp.u64(K::SlidingWindow) {
        c.insert("sliding_window".into(), json!(w));
    }
    let (n_rot, n_embd, n_head) =
        (hp.u64(K::RopeDimensionCount), hp.u64(K::EmbeddingLength), hp.u64(K::HeadCount).filter(|&h| h > 0));
    if let (Some(n_rot), Some(n_embd), Some(n_head)) = (n_rot, n_embd, n_head) {
        if n_rot * n_head != n_embd && n_embd > 0 {
            // The smallest factor f with int(f * n_embd) // n_head == n_rot.
            let mut f = (n_rot * n_head) as f64 / n_embd as f64;
            while ((f * n_embd as f64).trunc() as u64) < n_rot * n_head {
                f = f64::from_bits(f.to_bits() + 1);
            }
            c.insert("partial_rotary_factor".into(), json!(f));
        }
    }
    let factors = |name: &str| -> Option<Vec<f32>> {
        let t = gguf.tensor(name).filter(|t| t.ggml_type == crate::GgmlType::F32)?;
        let v = gguf.tensor_data(t).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        gguf.release(t);
        Some(v)
    };
    if let (Some(long), Some(short)) = (factors(GENERATED_TENSORS[0]), factors(GENERATED_TENSORS[1])) {
        let list = |v: Vec<f32>| Value::Array(v.into_iter().map(super::keys::f32_json).collect());
        c.insert(
            "rope_scaling".into(),
            json!({"rope_type": "longrope", "long_factor": list(long), "short_factor": list(short)}),
        );
    }
}
