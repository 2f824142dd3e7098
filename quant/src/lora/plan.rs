//! Matching an adapter against a base model, on headers only: every adapted module and replaced tensor
//! exists in the base with the shape the adapter implies, every module `target_modules` selects has its
//! tensors, the base is not GPTQ/AWQ-quantized. A bad pairing fails here, before any weight is read.

use std::collections::BTreeMap;

use quantforge_formats::hf::HfModel;
use serde_json::Value;

use super::adapter::{LoraKind, KEY_PREFIX};
use super::{Adapter, LoraError, ModuleLora};

/// What happens to one base tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Copied unchanged (converted if the output dtype differs).
    Copy,
    /// W + ΔW (and DoRA) for this module.
    Merge(String),
    /// `bias + lora_B.bias · scaling` for this module.
    AddBias(String),
    /// Replaced by this adapter tensor (`modules_to_save`, trained biases).
    Replace(String),
}

/// Tensor names that only quantized checkpoints have.
const QUANTIZED_SUFFIXES: &[&str] = &[".qweight", ".qzeros", ".g_idx", ".weight_packed"];

/// Refuse GPTQ/AWQ (and other pre-quantized) bases.
pub fn check_not_quantized(base: &HfModel) -> Result<(), LoraError> {
    let config_path = base.dir().join("config.json");
    if let Some(q) = base.config().get("quantization_config") {
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("unknown method");
        let detail = format!("config.json has quantization_config, quant_method {method}");
        return Err(LoraError::QuantizedBase { path: config_path, detail });
    }
    if let Some((shard, t)) = base.tensors().find(|(_, t)| QUANTIZED_SUFFIXES.iter().any(|s| t.name.ends_with(s))) {
        let detail = format!("it has packed tensor '{}'", t.name);
        return Err(LoraError::QuantizedBase { path: shard.path().into(), detail });
    }
    Ok(())
}

/// The action for every base tensor that is not copied, keyed by base tensor name.
pub fn plan(base: &HfModel, adapter: &Adapter) -> Result<BTreeMap<String, Action>, LoraError> {
    check_not_quantized(base)?;
    let path = adapter.tensor_path();
    let base_shape = |name: &str| base.tensor(name).map(|(_, t)| t.shape.clone());
    let mut actions = BTreeMap::new();
    for m in adapter.modules.values() {
        let weight = m.weight_name();
        let Some(ws) = base_shape(&weight) else {
            return Err(LoraError::MissingBaseTensor { path: path.into(), tensor: m.a.clone(), base: weight });
        };
        if adapter.config.targets(&m.module) == Some(false) {
            return Err(LoraError::UnexpectedTensor {
                path: path.into(),
                name: m.a.clone(),
                message: format!("module '{}' is not selected by target_modules in adapter_config.json", m.module),
            });
        }
        check_shapes(adapter, m, &weight, &ws)?;
        if let Some(bias) = &m.bias {
            let bias_name = format!("{}.bias", m.module);
            let Some(bs) = base_shape(&bias_name) else {
                return Err(LoraError::NoBaseBias {
                    path: path.into(),
                    tensor: bias.clone(),
                    module: m.module.clone(),
                });
            };
            let found = adapter.header(bias).shape.clone();
            if found != bs {
                return Err(shape_err(path, bias, &bias_name, bs, found));
            }
            actions.insert(bias_name, Action::AddBias(m.module.clone()));
        }
        actions.insert(weight, Action::Merge(m.module.clone()));
    }
    for (base_name, tensor) in &adapter.replacements {
        let Some(bs) = base_shape(base_name) else {
            return Err(LoraError::MissingBaseTensor {
                path: path.into(),
                tensor: tensor.clone(),
                base: base_name.clone(),
            });
        };
        let found = adapter.header(tensor).shape.clone();
        if found != bs {
            return Err(shape_err(path, tensor, base_name, bs, found));
        }
        if actions.insert(base_name.clone(), Action::Replace(tensor.clone())).is_some() {
            return Err(LoraError::UnexpectedTensor {
                path: path.into(),
                name: tensor.clone(),
                message: "replaces a tensor that LoRA tensors also adapt".into(),
            });
        }
    }
    check_targets_present(base, adapter)?;
    Ok(actions)
}

fn shape_err(path: &std::path::Path, tensor: &str, base: &str, expected: Vec<u64>, found: Vec<u64>) -> LoraError {
    LoraError::ShapeMismatch { path: path.into(), tensor: tensor.into(), base: base.into(), expected, found }
}

/// A and B against the base weight's shape; the magnitude vector against the output features.
fn check_shapes(adapter: &Adapter, m: &ModuleLora, weight: &str, ws: &[u64]) -> Result<(), LoraError> {
    let path = adapter.tensor_path();
    let sa = &adapter.header(&m.a).shape;
    let sb = &adapter.header(&m.b).shape;
    if ws.len() != 2 {
        return Err(shape_err(path, &m.a, weight, vec![sb[0], sa[1]], ws.to_vec()));
    }
    // (in, out) of the base weight as PEFT sees it.
    let transposed = m.kind == LoraKind::Embedding || adapter.config.fan_in_fan_out;
    let (n_in, n_out) = if transposed { (ws[0], ws[1]) } else { (ws[1], ws[0]) };
    if sa[1] != n_in {
        return Err(shape_err(path, &m.a, weight, vec![m.rank, n_in], sa.clone()));
    }
    if sb[0] != n_out {
        return Err(shape_err(path, &m.b, weight, vec![n_out, m.rank], sb.clone()));
    }
    if let Some(mag) = &m.magnitude {
        let found = adapter.header(mag).shape.clone();
        if found != [n_out] {
            return Err(shape_err(path, mag, weight, vec![n_out], found));
        }
    }
    Ok(())
}

/// Every 2-D base weight that `target_modules` (a list or regex) selects must have LoRA tensors. With
/// `"all-linear"` the selection depends on layer types the checkpoint does not record, so it is not checked.
fn check_targets_present(base: &HfModel, adapter: &Adapter) -> Result<(), LoraError> {
    if matches!(adapter.config.target_modules, super::ModuleSelector::AllLinear) {
        return Ok(());
    }
    for (_, t) in base.tensors() {
        let Some(module) = t.name.strip_suffix(".weight") else { continue };
        if t.shape.len() != 2 || adapter.modules.contains_key(module) || adapter.config.saves(module) {
            continue;
        }
        if adapter.config.targets(module) == Some(true) {
            return Err(LoraError::MissingTensor {
                path: adapter.tensor_path().into(),
                name: format!("{KEY_PREFIX}{module}.lora_A.weight"),
                why: format!("target_modules in adapter_config.json selects base module '{module}'"),
            });
        }
    }
    Ok(())
}
