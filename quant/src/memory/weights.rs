//! Weight bytes of a model for a quantization type, from the per-tensor plan `quantize --dry-run` uses, split
//! the way llama.cpp places tensors: the input layer (`token_embd`, always on the CPU), the repeating layers
//! (`blk.N.*`, offloaded from the last one down), and the output layer (`output.weight`, `output_norm` and any
//! other tensor outside the blocks, offloaded first).

use std::collections::HashMap;

use quantforge_formats::GgmlType;

use super::{MemoryError, ModelShape};
use crate::policy::{parse_blk_layer, plan_all, FileType, PolicyOptions, TensorDesc};

/// Planned weight bytes of one model and type.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightPlan {
    /// The type, or `None` for the model's tensors as they are.
    pub ftype: Option<FileType>,
    /// Tensor bytes, exactly what `quantize` writes (no header, no padding).
    pub bytes: u64,
    /// Bits per weight over all tensors (llama-quantize's `quant size ... BPW`).
    pub bits_per_weight: f64,
    /// `token_embd.weight` bytes (input layer).
    pub token_embd: u64,
    /// Bytes of one row of `token_embd` (what a token's embedding lookup reads).
    pub token_embd_row: u64,
    /// Output-layer bytes (output.weight, output_norm, other non-block tensors).
    pub output: u64,
    /// Bytes of each `blk.N`.
    pub layers: Vec<u64>,
    /// No `output.weight`: llama.cpp loads a second copy of `token_embd` on the output layer's device.
    pub tied: bool,
    /// The type of `token_embd` and of the output matrix.
    pub token_embd_type: Option<GgmlType>,
    pub output_type: Option<GgmlType>,
}

impl WeightPlan {
    /// The label users know the type by (`Q4_K_M`, or `as-is`).
    pub fn label(&self) -> String {
        self.ftype.map_or_else(|| "as-is".to_string(), |f| f.name().to_string())
    }

    /// Bytes the output layer occupies on its device, counting the duplicated `token_embd` of a tied model.
    pub fn output_layer_bytes(&self) -> u64 {
        self.output + if self.tied { self.token_embd } else { 0 }
    }
}

/// Plan the weights of `model` for `ftype` (`None`: keep every tensor's current type).
pub fn weight_plan(model: &ModelShape, ftype: Option<FileType>) -> Result<WeightPlan, MemoryError> {
    let descs: Vec<TensorDesc<'_>> =
        model.tensors.iter().map(|t| TensorDesc { name: &t.name, ne: &t.ne, src_type: t.src_type }).collect();
    let types: Vec<(usize, GgmlType)> = match ftype {
        None => model.tensors.iter().enumerate().map(|(i, t)| (i, t.src_type)).collect(),
        Some(ft) => {
            let mut options = PolicyOptions::new(ft);
            // Plan only: a type that would need an importance matrix is sized, not refused.
            options.dry_run = true;
            let planned = plan_all(model.info.clone(), options, &descs)
                .map_err(|source| MemoryError::Plan { ftype: ft, source })?;
            // Names are unique (the readers refuse duplicates): one lookup table, not a scan per tensor.
            let index: HashMap<&str, usize> =
                model.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
            planned.iter().map(|p| (index.get(p.tensor.name).copied().unwrap_or(0), p.decision.ty)).collect()
        }
    };
    let mut plan = WeightPlan {
        ftype,
        bytes: 0,
        bits_per_weight: 0.0,
        token_embd: 0,
        token_embd_row: 0,
        output: 0,
        layers: vec![0; model.n_layer()],
        tied: model.tied_embeddings(),
        token_embd_type: None,
        output_type: None,
    };
    for (i, ty) in types {
        let t = &model.tensors[i];
        let size = ty.tensor_size(&t.ne).ok_or_else(|| MemoryError::BadKey {
            path: model.path.clone(),
            key: t.name.clone(),
            message: format!("shape {:?} is not a whole number of {} blocks", t.ne, ty.name()),
        })?;
        plan.bytes = plan.bytes.checked_add(size).ok_or(MemoryError::Overflow { what: "weight bytes" })?;
        match (t.name.as_str(), parse_blk_layer(&t.name)) {
            ("token_embd.weight", _) => {
                plan.token_embd += size;
                plan.token_embd_row = ty.row_size(t.ne.first().copied().unwrap_or(0)).unwrap_or(0);
                plan.token_embd_type = Some(ty);
            }
            (_, Some(il)) if usize::try_from(il).is_ok_and(|il| il < plan.layers.len()) => {
                plan.layers[il as usize] = plan.layers[il as usize].saturating_add(size)
            }
            (name, _) => {
                plan.output = plan.output.saturating_add(size);
                if name == "output.weight" {
                    plan.output_type = Some(ty);
                }
            }
        }
    }
    if plan.tied {
        plan.output_type = plan.token_embd_type;
    }
    let params = model.n_params();
    plan.bits_per_weight = quantforge_formats::ggml_type::bits_per_weight(plan.bytes, params);
    Ok(plan)
}
