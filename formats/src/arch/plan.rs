//! Matching a checkpoint's tensors against an architecture's rules: every tensor mapped (or ignored),
//! every shape as config.json implies, every required tensor present. Runs on the safetensors headers
//! only, so a bad checkpoint fails before any weight is read.

use std::collections::HashSet;

use super::{fill, Architecture, Dim, HfConfig, Transform, IGNORED_SUFFIXES};
use crate::error::{FormatError, Result};
use crate::hf::HfModel;
use crate::safetensors::Dtype;

/// One HF tensor and the GGUF tensor it becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    pub hf_name: String,
    pub gguf_name: String,
    pub bid: Option<u32>,
    pub transform: Transform,
    /// Shape in torch order.
    pub shape: Vec<u64>,
}

impl PlannedTensor {
    /// Dimensions in ggml order.
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }

    /// Number of heads the RoPE permutation groups rows into, if it applies.
    pub fn permute_heads(&self, cfg: &HfConfig) -> Option<u32> {
        match self.transform {
            Transform::None | Transform::NormShift => None,
            Transform::RopePermuteQ => Some(cfg.head_count),
            Transform::RopePermuteK => Some(cfg.kv_heads()),
        }
    }
}

impl Dim {
    /// The size of this dimension for the model `cfg` describes (products in 64 bits: no wrap-around).
    pub fn resolve(self, cfg: &HfConfig) -> u64 {
        let (heads, kv_heads, head_dim) =
            (u64::from(cfg.head_count), u64::from(cfg.kv_heads()), u64::from(cfg.head_dim()));
        match self {
            Dim::Vocab => u64::from(cfg.vocab_size),
            Dim::Hidden => u64::from(cfg.hidden_size),
            Dim::Ffn => u64::from(cfg.ffn_length),
            Dim::QOut => heads * head_dim,
            Dim::KvOut => kv_heads * head_dim,
            Dim::HeadDim => head_dim,
            Dim::QkvOut => (heads + 2 * kv_heads) * head_dim,
            Dim::FfnPair => 2 * u64::from(cfg.ffn_length),
        }
    }
}

/// The GGUF tensors of `model`, in the converter's order (shards by name, tensors by name).
pub fn plan_tensors(model: &HfModel, arch: &Architecture, cfg: &HfConfig) -> Result<Vec<PlannedTensor>> {
    let config_err =
        |key: &str, message: String| FormatError::Config { path: cfg.path.clone(), key: key.into(), message };
    super::check_config(arch, cfg)?;
    if arch.requires_kv_heads() && cfg.head_count_kv.is_none() {
        return Err(config_err("num_key_value_heads", "missing (needed for the Q/K RoPE permutation)".into()));
    }
    let permutes = arch.permutes_hf_qk();
    if permutes && !cfg.head_dim().is_multiple_of(2) {
        return Err(config_err("head_dim", format!("{} is odd; the RoPE permutation needs pairs", cfg.head_dim())));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (shard, t) in model.tensors() {
        if IGNORED_SUFFIXES.iter().any(|s| t.name.ends_with(s)) {
            continue;
        }
        let path = shard.path().to_path_buf();
        let (rule, bid) = arch.rule_for(&t.name).ok_or_else(|| FormatError::UnmappedTensor {
            path: path.clone(),
            name: t.name.clone(),
            arch: format!("{} ({})", cfg.architecture, arch.gguf_name),
        })?;
        if let Some(b) = bid.filter(|&b| b >= cfg.block_count) {
            return Err(config_err(
                "num_hidden_layers",
                format!("is {}, but tensor '{}' belongs to layer {b}", cfg.block_count, t.name),
            ));
        }
        let expected: Vec<u64> = rule.shape.iter().map(|&d| d.resolve(cfg)).collect();
        if t.shape != expected {
            return Err(FormatError::ShapeMismatch { path, name: t.name.clone(), expected, found: t.shape.clone() });
        }
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            return Err(FormatError::UnsupportedDtype {
                path,
                name: t.name.clone(),
                dtype: t.dtype.to_string(),
                wanted: "a float tensor (F32, F16, BF16 or F64)",
            });
        }
        seen.insert(t.name.clone());
        out.push(PlannedTensor {
            hf_name: t.name.clone(),
            gguf_name: fill(rule.gguf, bid),
            bid,
            transform: rule.transform,
            shape: t.shape.clone(),
        });
    }
    for rule in arch.rules.iter().filter(|r| !r.optional) {
        let bids: Vec<Option<u32>> =
            if rule.hf.contains("{bid}") { (0..cfg.block_count).map(Some).collect() } else { vec![None] };
        for bid in bids {
            let name = fill(rule.hf, bid);
            if !seen.contains(&name) {
                return Err(FormatError::MissingTensor { path: model.dir().to_path_buf(), name });
            }
        }
    }
    Ok(out)
}
