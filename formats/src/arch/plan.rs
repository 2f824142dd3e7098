//! Matching a checkpoint's tensors against an architecture's rules: every tensor mapped (or ignored),
//! every shape as config.json implies, every required tensor present. Runs on the safetensors headers
//! only, so a bad checkpoint fails before any weight is read.
//!
//! Expert stacking (rules with `{xid}`, see [`super::TensorRule`]): llama.cpp's converter (`LlamaModel` and
//! `Qwen2MoeModel.modify_tensors`, `conversion/{llama,qwen}.py` at 0c1e57098) buffers a layer's expert
//! tensors and, when the last of them arrives in reading order, emits that layer's stacked tensors one after
//! the other in the order of its rules. The plan does the same with names only; the values are read later,
//! one expert at a time.

use std::collections::{BTreeMap, HashSet};

use super::{fill, fill_expert, Architecture, Dim, HfConfig, Transform, IGNORED_SUFFIXES};
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
    /// Shape in torch order (`[n_expert, ..]` for stacked experts).
    pub shape: Vec<u64>,
    /// For stacked experts: the HF tensors, expert 0 first (`hf_name` is expert 0's); empty otherwise.
    pub experts: Vec<String>,
}

impl PlannedTensor {
    /// Dimensions in ggml order.
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }

    /// Number of heads the RoPE permutation groups rows into, if it applies.
    pub fn permute_heads(&self, cfg: &HfConfig) -> Option<u32> {
        match self.transform {
            Transform::None => None,
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
            Dim::ExpertFfn => u64::from(cfg.expert_ffn_length.unwrap_or(cfg.ffn_length)),
            Dim::SharedFfn => u64::from(cfg.shared_expert_ffn_length.unwrap_or(cfg.ffn_length)),
            Dim::Experts => u64::from(cfg.expert_count.unwrap_or(0)),
            Dim::One => 1,
        }
    }
}

/// The GGUF tensors of `model`, in the converter's order (shards by name, tensors by name).
pub fn plan_tensors(model: &HfModel, arch: &Architecture, cfg: &HfConfig) -> Result<Vec<PlannedTensor>> {
    let config_err =
        |key: &str, message: String| FormatError::Config { path: cfg.path.clone(), key: key.into(), message };
    if arch.requires_kv_heads() && cfg.head_count_kv.is_none() {
        return Err(config_err("num_key_value_heads", "missing (needed for the Q/K RoPE permutation)".into()));
    }
    let permutes = arch.rules.iter().any(|r| r.transform != Transform::None);
    if permutes && !cfg.head_dim().is_multiple_of(2) {
        return Err(config_err("head_dim", format!("{} is odd; the RoPE permutation needs pairs", cfg.head_dim())));
    }
    check_config(arch, cfg)?;
    let n_expert = cfg.expert_count.unwrap_or(0);
    let stack_rules: Vec<usize> = (0..arch.rules.len()).filter(|&i| arch.rules[i].stacks_experts()).collect();
    // Per layer: the expert tensors seen so far.
    let mut pending: BTreeMap<u32, usize> = BTreeMap::new();
    let mut stacked_layers = HashSet::new();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (shard, t) in model.tensors() {
        if IGNORED_SUFFIXES.iter().any(|s| t.name.ends_with(s)) {
            continue;
        }
        let path = shard.path().to_path_buf();
        let (rule, bid, xid) = arch.rule_for_indexed(&t.name).ok_or_else(|| FormatError::UnmappedTensor {
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
        if let (Some(b), Some(x)) = (bid, xid) {
            if x >= n_expert {
                return Err(config_err(
                    "num_local_experts",
                    format!("is {n_expert} (experts), but tensor '{}' belongs to expert {x}", t.name),
                ));
            }
            let count = pending.entry(b).or_insert(0);
            *count += 1;
            if *count == stack_rules.len() * n_expert as usize {
                pending.remove(&b);
                stacked_layers.insert(b);
                for &i in &stack_rules {
                    out.push(stacked(arch, i, b, n_expert, cfg));
                }
            }
            continue;
        }
        out.push(PlannedTensor {
            hf_name: t.name.clone(),
            gguf_name: fill(rule.gguf, bid),
            bid,
            transform: rule.transform,
            shape: t.shape.clone(),
            experts: Vec::new(),
        });
    }
    // A layer with some or none of its experts: name the first one missing.
    if !stack_rules.is_empty() {
        if let Some(b) = (0..cfg.block_count).find(|b| !stacked_layers.contains(b)) {
            let name = stack_rules
                .iter()
                .flat_map(|&i| (0..n_expert).map(move |x| fill_expert(arch.rules[i].hf, Some(b), x)))
                .find(|n| !seen.contains(n))
                .unwrap_or_default();
            return Err(FormatError::MissingTensor { path: model.dir().to_path_buf(), name });
        }
    }
    for rule in arch.rules.iter().filter(|r| !r.optional && !r.stacks_experts()) {
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

/// The stacked tensor of expert rule `arch.rules[i]` for layer `bid`.
fn stacked(arch: &Architecture, i: usize, bid: u32, n_expert: u32, cfg: &HfConfig) -> PlannedTensor {
    let rule = &arch.rules[i];
    let experts: Vec<String> = (0..n_expert).map(|x| fill_expert(rule.hf, Some(bid), x)).collect();
    let shape = std::iter::once(u64::from(n_expert)).chain(rule.shape.iter().map(|&d| d.resolve(cfg))).collect();
    PlannedTensor {
        hf_name: experts[0].clone(),
        gguf_name: fill(rule.gguf, Some(bid)),
        bid: Some(bid),
        transform: rule.transform,
        shape,
        experts,
    }
}

/// Refuse a config.json the architecture's tensors or forward pass cannot honour, by key, before any tensor is
/// read: the values its facts require ([`super::ForwardFacts::config_requirements`]) and, for experts, a
/// positive expert count and `0 < experts used <= experts`.
pub fn check_config(arch: &Architecture, cfg: &HfConfig) -> Result<()> {
    let config_err =
        |key: &str, message: String| FormatError::Config { path: cfg.path.clone(), key: key.into(), message };
    for req in arch.forward.config_requirements {
        if let Some(message) = req.violation(&cfg.raw) {
            return Err(config_err(req.key, message));
        }
    }
    if arch.has_experts() {
        let n = cfg.expert_count.filter(|&n| n > 0).ok_or_else(|| {
            config_err("num_local_experts", "missing or zero (looked for num_local_experts, num_experts)".into())
        })?;
        match cfg.expert_used_count {
            Some(k) if k > 0 && k <= n => {}
            Some(k) => return Err(config_err("num_experts_per_tok", format!("is {k}; must be in 1..={n}"))),
            None => return Err(config_err("num_experts_per_tok", "missing".into())),
        }
    }
    Ok(())
}
