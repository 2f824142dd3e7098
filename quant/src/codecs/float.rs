//! Float targets (F32 copy, F16, BF16), as dispatched by `ggml_quantize_chunk` in `ggml/src/ggml.c` of
//! llama.cpp b9928 (F16: `ggml_fp32_to_fp16_row`, BF16: `ggml_fp32_to_bf16_row_ref`, F32: `memcpy`).
//!
//! Invariant: each value is converted on its own by the scalar encodings of [`crate::blocks::scalar`]
//! and stored little-endian.

use crate::blocks::scalar::{fp32_to_bf16, fp32_to_fp16};

/// F32 → F32: a plain little-endian copy.
pub(crate) fn quantize_row_f32(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

/// F32 → F16 (`ggml_fp32_to_fp16_row`); the importance matrix is ignored.
pub(crate) fn quantize_row_f16(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for (&v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&fp32_to_fp16(v).to_le_bytes());
    }
}

/// F32 → BF16 (`ggml_fp32_to_bf16_row_ref`); the importance matrix is ignored.
pub(crate) fn quantize_row_bf16(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for (&v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&fp32_to_bf16(v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_copy_is_bitwise() {
        let src = [1.5f32, -0.0, f32::NAN, 1e-40];
        let mut dst = [0u8; 16];
        quantize_row_f32(&src, None, &mut dst);
        for (v, b) in src.iter().zip(dst.chunks_exact(4)) {
            assert_eq!(v.to_bits().to_le_bytes(), b);
        }
    }
}
