//! Per-tensor transforms of f32 values, written once and shared by every source: decoding stored bytes to
//! f32 (the first half of a dtype conversion; the solver does the second), the RoPE permutation of Q/K rows
//! and its inverse, LoRA merges, and a scalar factor.
//!
//! Invariant: a transform maps the values of one whole tensor, in ggml (row-major) order, to the values of
//! the same tensor after the change; row count and row length are given, never guessed from file names.

use quantforge_formats::GgmlType;

use crate::lora::{plan::Action, Adapter, LoraError};
use crate::permute::{rope_permute, rope_unpermute};
use crate::{dequant, QuantError};

/// One change to a tensor's values.
pub enum Transform<'a> {
    /// Rows permuted as llama.cpp's converter permutes Q/K for `heads` heads (HF -> GGUF).
    RopePermute { heads: usize },
    /// The inverse of [`Transform::RopePermute`] (GGUF -> HF).
    RopeUnpermute { heads: usize },
    /// A LoRA adapter's action on this base tensor, at a user scale.
    Lora { adapter: &'a Adapter, action: &'a Action, scale: f32 },
    /// Every value multiplied by this factor (computed in f64, as PEFT's scales are).
    Scale(f64),
    /// `delta` added to every value (Gemma's norm weights: + 1 to GGUF, - 1 back). With `round_f16` the sum is
    /// rounded to f16, as torch adds in an f16 tensor's own dtype.
    Offset { delta: f32, round_f16: bool },
}

impl Transform<'_> {
    /// Apply to `values`, a tensor of `n_rows` rows called `tensor` (for messages).
    pub fn apply(&self, values: Vec<f32>, n_rows: usize, tensor: &str) -> Result<Vec<f32>, LoraError> {
        let row = |v: &[f32]| v.len() / n_rows.max(1);
        Ok(match self {
            Transform::RopePermute { heads } => rope_permute(&values, n_rows, *heads, row(&values)),
            Transform::RopeUnpermute { heads } => rope_unpermute(&values, n_rows, *heads, row(&values)),
            Transform::Lora { adapter, action, scale } => crate::lora::apply(adapter, action, values, *scale, tensor)?,
            Transform::Scale(f) => {
                let mut values = values;
                if *f != 1.0 {
                    values.iter_mut().for_each(|x| *x = (f64::from(*x) * f) as f32);
                }
                values
            }
            Transform::Offset { delta, round_f16 } => {
                let mut values = values;
                for x in &mut values {
                    *x += delta;
                    if *round_f16 {
                        *x = half::f16::from_f32(*x).to_f32();
                    }
                }
                values
            }
        })
    }
}

/// Apply `transforms` in order.
pub fn apply_all(
    mut values: Vec<f32>,
    n_rows: usize,
    tensor: &str,
    transforms: &[Transform<'_>],
) -> Result<Vec<f32>, LoraError> {
    for t in transforms {
        values = t.apply(values, n_rows, tensor)?;
    }
    Ok(values)
}

/// Decode stored bytes of type `ty` into `dst` (exactly the tensor's element count), in parallel.
pub fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use rayon::prelude::*;
    if ty == GgmlType::F32 {
        if src.len() != 4 * dst.len() {
            return Err(QuantError::BufferSize { what: "f32 tensor", expected: 4 * dst.len(), got: src.len() });
        }
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(4 << 16)).for_each(|(d, s)| {
            for (x, b) in d.iter_mut().zip(s.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        });
        return Ok(());
    }
    dequant::dequantize_row_par(ty, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_then_unpermute_is_the_identity() {
        let values: Vec<f32> = (0..8 * 4).map(|i| i as f32).collect();
        let t = [Transform::RopePermute { heads: 2 }, Transform::RopeUnpermute { heads: 2 }];
        assert_eq!(apply_all(values.clone(), 8, "q", &t).unwrap(), values);
        assert_ne!(Transform::RopePermute { heads: 2 }.apply(values.clone(), 8, "q").unwrap(), values);
        assert_eq!(Transform::Scale(2.0).apply(vec![1.5, -1.0], 1, "s").unwrap(), [3.0, -2.0]);
    }

    #[test]
    fn norm_offsets_round_trip_where_f32_allows() {
        let add = Transform::Offset { delta: 1.0, round_f16: false };
        let sub = Transform::Offset { delta: -1.0, round_f16: false };
        // Gemma's + 1 and its inverse: exact while 1 + w >= 0.5 (Sterbenz), as for every fixture norm.
        let w: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.37).sin() * 0.499_9).collect();
        let shifted = add.apply(w.clone(), 1, "n").unwrap();
        let back = sub.apply(shifted.clone(), 1, "n").unwrap();
        assert_eq!(add.apply(back, 1, "n").unwrap(), shifted);
        // An f16 tensor adds in f16: 1 + 2^-12 rounds to 1.
        let f16 = Transform::Offset { delta: 1.0, round_f16: true };
        assert_eq!(f16.apply(vec![2f32.powi(-12), 0.5], 1, "n").unwrap(), [1.0, 1.5]);
        assert_eq!(add.apply(vec![2f32.powi(-12)], 1, "n").unwrap(), [1.0 + 2f32.powi(-12)]);
    }

    #[test]
    fn decode_checks_the_f32_length() {
        let mut out = [0f32; 2];
        decode(GgmlType::F32, &[0u8; 8], &mut out).unwrap();
        assert!(decode(GgmlType::F32, &[0u8; 4], &mut out).is_err());
    }
}
