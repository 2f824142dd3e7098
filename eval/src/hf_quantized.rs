//! Float weights of a quantized Hugging Face checkpoint (GPTQ v1/v2, AWQ GEMM, compressed-tensors
//! `pack-quantized`), so that every evaluation reads such a directory like a float one.
//!
//! Invariant: a linear layer stored quantized has no `<module>.weight`; in its place the forward pass gets
//! `scales[g] · (q − zeros[g])` as the format defines it ([`QuantizedCheckpoint::dequantize`]), in the
//! `[out, in]` layout of the float weight, before any transform the architecture applies to it.

use quantforge_formats::hf::HfModel;
use quantforge_quant::checkpoint::QuantizedCheckpoint;

use crate::error::{EvalError, Result};

/// HF weight `hf_name` (`<module>.weight`) dequantized, checked against the torch `shape`; `None` when the
/// directory is not a quantized checkpoint or that module is not stored quantized.
pub(crate) fn dequantized_weight(model: &HfModel, hf_name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    let Some(ckpt) = QuantizedCheckpoint::from_config(model.config(), model.dir())? else {
        return Ok(None);
    };
    let Some((found, values)) = ckpt.dequantize(model, hf_name)? else {
        return Ok(None);
    };
    if found != shape {
        return Err(EvalError::BadShape {
            path: model.dir().into(),
            name: hf_name.into(),
            found: found.iter().map(|&d| d as u64).collect(),
            expected: shape.iter().map(|&d| d as u64).collect(),
        });
    }
    Ok(Some(values))
}

/// Whether HF weight `hf_name` is stored as a quantized module.
pub(crate) fn is_quantized(model: &HfModel, hf_name: &str) -> bool {
    hf_name.strip_suffix(".weight").is_some_and(|m| {
        model.tensor(&format!("{m}.qweight")).is_some() || model.tensor(&format!("{m}.weight_packed")).is_some()
    })
}
