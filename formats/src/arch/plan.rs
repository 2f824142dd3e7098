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
    super::check_config(arch, cfg)?;
    if arch.requires_kv_heads() && cfg.head_count_kv.is_none() {
        return Err(config_err("num_key_value_heads", "missing (needed for the Q/K RoPE permutation)".into()));
    }
    let permutes = arch.permutes_hf_qk();
    if permutes && !cfg.head_dim().is_multiple_of(2) {
        return Err(config_err("head_dim", format!("{} is odd; the RoPE permutation needs pairs", cfg.head_dim())));
    }
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
/// positive expert count and `0 < experts used <= experts`. Part of [`super::check_config`].
pub(super) fn check_requirements(arch: &Architecture, cfg: &HfConfig) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::arch::lookup;
    use crate::hf::read_json;

    fn mixtral() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs/mixtral")
    }

    fn config(dir: &Path) -> HfConfig {
        HfConfig::parse(&dir.join("config.json"), &read_json(&dir.join("config.json")).unwrap()).unwrap()
    }

    fn plan(dir: &Path) -> Result<Vec<PlannedTensor>> {
        let cfg = config(dir);
        plan_tensors(&HfModel::open(dir)?, lookup(dir, &cfg.architecture).unwrap(), &cfg)
    }

    /// A copy of the Mixtral fixture's config.json and a model.safetensors of F32 zeros holding `tensors`.
    fn checkpoint(tensors: &[(String, Vec<u64>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(mixtral().join("config.json"), dir.path().join("config.json")).unwrap();
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for (name, shape) in tensors {
            let n = shape.iter().product::<u64>() * 4;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
            );
            offset += n;
        }
        let mut text = serde_json::to_vec(&header).unwrap();
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&text);
        bytes.resize(bytes.len() + offset as usize, 0);
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        dir
    }

    /// The fixture's tensors (names and shapes), from its safetensors header.
    fn fixture_tensors() -> Vec<(String, Vec<u64>)> {
        let model = HfModel::open(mixtral()).unwrap();
        model.tensors().map(|(_, t)| (t.name.clone(), t.shape.clone())).collect()
    }

    #[test]
    fn experts_are_stacked_after_a_layers_last_expert_in_rule_order() {
        let planned = plan(&mixtral()).unwrap();
        let names: Vec<&str> = planned.iter().map(|p| p.gguf_name.as_str()).collect();
        // Reading order is by name: experts.3.w3 is layer 0's last expert tensor, then block_sparse_moe.gate.
        let at = names.iter().position(|n| *n == "blk.0.ffn_gate_exps.weight").unwrap();
        assert_eq!(
            names[at..at + 4],
            [
                "blk.0.ffn_gate_exps.weight",
                "blk.0.ffn_down_exps.weight",
                "blk.0.ffn_up_exps.weight",
                "blk.0.ffn_gate_inp.weight"
            ]
        );
        let arch = lookup(&mixtral(), "MixtralForCausalLM").unwrap();
        for p in planned.iter().filter(|p| !p.experts.is_empty()) {
            assert_eq!(p.shape[0], 4, "{}", p.gguf_name);
            assert_eq!(p.experts.len(), 4);
            // The way back: the GGUF name's rule names the same expert tensors.
            let (rule, bid) = arch.rule_for_gguf(&p.gguf_name).unwrap();
            let back: Vec<String> = (0..4).map(|x| fill_expert(rule.hf, bid, x)).collect();
            assert_eq!(back, p.experts);
            assert_eq!(p.hf_name, p.experts[0]);
        }
        let down = planned.iter().find(|p| p.gguf_name == "blk.1.ffn_down_exps.weight").unwrap();
        assert_eq!((down.shape.clone(), down.ne()), (vec![4, 32, 24], vec![24, 32, 4]));
        assert_eq!(down.experts[3], "model.layers.1.block_sparse_moe.experts.3.w2.weight");
    }

    #[test]
    fn a_bad_expert_is_named_before_any_data_is_read() {
        let all = fixture_tensors();
        // A wrong shape.
        let mut t = all.clone();
        t.iter_mut().find(|(n, _)| n.ends_with("layers.1.block_sparse_moe.experts.2.w1.weight")).unwrap().1 =
            vec![24, 31];
        let e = plan(checkpoint(&t).path()).unwrap_err();
        assert!(
            matches!(&e, FormatError::ShapeMismatch { name, expected, .. }
                if name == "model.layers.1.block_sparse_moe.experts.2.w1.weight" && expected == &[24, 32]),
            "{e}"
        );
        // An expert beyond num_local_experts.
        let mut t = all.clone();
        t.push(("model.layers.0.block_sparse_moe.experts.4.w1.weight".into(), vec![24, 32]));
        let e = plan(checkpoint(&t).path()).unwrap_err().to_string();
        assert!(e.contains("num_local_experts") && e.contains("experts.4.w1") && e.contains("expert 4"), "{e}");
        // A missing expert: the first one missing is named.
        let t: Vec<_> = all
            .iter()
            .filter(|(n, _)| !n.ends_with("layers.1.block_sparse_moe.experts.3.w2.weight"))
            .cloned()
            .collect();
        let e = plan(checkpoint(&t).path()).unwrap_err();
        assert!(
            matches!(&e, FormatError::MissingTensor { name, .. } if name == "model.layers.1.block_sparse_moe.experts.3.w2.weight"),
            "{e}"
        );
        // The complete copy plans.
        assert_eq!(plan(checkpoint(&all).path()).unwrap().len(), plan(&mixtral()).unwrap().len());
    }

    #[test]
    fn unsupported_config_values_are_refused_by_key() {
        let base = read_json(&mixtral().join("../qwen2moe/config.json")).unwrap();
        let q2 = lookup(Path::new("c"), "Qwen2MoeForCausalLM").unwrap();
        let q3 = lookup(Path::new("c"), "Qwen3MoeForCausalLM").unwrap();
        let check = |arch, edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            edit(&mut v);
            crate::arch::check_config(arch, &HfConfig::parse(Path::new("m/config.json"), &v).unwrap())
                .map_err(|e| e.to_string())
        };
        assert!(check(q2, &|_| {}).is_ok());
        for (arch, key, value) in [
            (q2, "decoder_sparse_step", serde_json::json!(2)),
            (q2, "mlp_only_layers", serde_json::json!([1])),
            (q2, "norm_topk_prob", serde_json::json!(true)),
            (q3, "norm_topk_prob", serde_json::json!(false)),
            (q2, "num_experts_per_tok", serde_json::json!(5)),
            (q2, "num_experts_per_tok", serde_json::json!(0)),
        ] {
            let e = check(arch, &|v| v[key] = value.clone()).unwrap_err();
            assert!(e.contains("m/config.json") && e.contains(key), "{key}={value}: {e}");
        }
        // Absent: transformers' default, which for Qwen3-MoE's norm_topk_prob is false (refused).
        let e = check(q3, &|v| {
            v.as_object_mut().unwrap().remove("norm_topk_prob");
        })
        .unwrap_err();
        assert!(e.contains("norm_topk_prob") && e.contains("absent"), "{e}");
        assert!(check(q2, &|v| {
            v.as_object_mut().unwrap().remove("decoder_sparse_step");
            v["mlp_only_layers"] = serde_json::Value::Null;
        })
        .is_ok());
        let e = check(q2, &|v| {
            v.as_object_mut().unwrap().remove("num_experts");
        })
        .unwrap_err();
        assert!(e.contains("num_local_experts"), "{e}");
    }
}
