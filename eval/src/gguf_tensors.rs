//! Reading one named tensor of a GGUF file with its shape checked: shared by the model configuration
//! (`rope_freqs.weight`) and the weight loader.

use quantforge_formats::gguf::{GgufFile, TensorInfo};
use quantforge_quant::dequant::dequantize_row;

use crate::error::{EvalError, Result};

/// A vector of `n` values of a GGUF file, dequantized to `f32`.
pub(crate) fn gguf_vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let info = gguf_info(file, name)?;
    check_gguf_shape(file, info, &[n])?;
    let mut out = vec![0.0; n];
    dequantize_row(info.ggml_type, file.tensor_data(info), &mut out)
        .map_err(|source| EvalError::Dequantize { name: name.into(), source })?;
    file.release(info);
    Ok(out)
}

pub(crate) fn gguf_info<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor(name).ok_or_else(|| EvalError::MissingTensor { path: file.path().into(), name: name.into() })
}

pub(crate) fn check_gguf_shape(file: &GgufFile, info: &TensorInfo, ne: &[usize]) -> Result<()> {
    // Shapes are compared as ggml compares them: trailing 1s do not count (llama-quantize writes Qwen2-MoE's
    // `[n_embd, 1]` shared-expert gate as `[n_embd]`).
    let mut expected: Vec<u64> = ne.iter().map(|&v| v as u64).collect();
    let mut found = info.ne.clone();
    while found.len() > expected.len() && found.last() == Some(&1) {
        found.pop();
    }
    while expected.len() > found.len() && expected.last() == Some(&1) {
        expected.pop();
    }
    if found != expected {
        return Err(EvalError::BadShape {
            path: file.path().into(),
            name: info.name.clone(),
            found: info.ne.clone(),
            expected,
        });
    }
    Ok(())
}
