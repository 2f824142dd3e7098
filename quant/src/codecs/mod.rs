//! Quantizers: f32 rows → the bytes llama.cpp's `llama-quantize` writes, bit for bit.
//!
//! A port of the scalar reference code of `ggml/src/ggml-quants.c` and the `ggml_quantize_chunk`
//! dispatch of `ggml/src/ggml.c` in llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>.
//! File quantization in llama.cpp always runs this portable scalar code (ggml-base is built without
//! `-march` flags, so no FMA), which is what makes the outputs reproducible.
//!
//! Dispatch, per type (`quantize_<type>(src, dst, nrow, n_per_row, quant_weights)` upstream):
//! - F32 is copied, F16 and BF16 are converted per value; the importance matrix is ignored.
//! - Q8_0 always uses its ref path (it ignores the importance matrix).
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q2_K…Q6_K use `quantize_row_*_ref` without an importance matrix and
//!   `quantize_row_*_impl` row by row with one (the legacy `_impl`s compute `sigma2` over the row).
//! - IQ4_NL and IQ4_XS always go through `quantize_row_iq4_nl_impl`, weighting by x² without one.
//! - TQ1_0, TQ2_0 and MXFP4 always use their ref paths (they ignore the importance matrix).
//! - The grid types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S always use their `_impl`;
//!   IQ2_XXS, IQ2_XS and IQ1_S cannot run without an importance matrix (upstream asserts, here
//!   [`QuantError::ImatrixRequired`]). Their lookup tables (`lattice`) are built once, on first use.
//!
//! Invariant: rows are independent (every function depends only on its own row and the per-column
//! importance weights), so splitting a tensor into row ranges in any way gives the same bytes.
//! The functions here are sequential and allocate nothing per row; callers parallelise over rows.

// The ports keep C's index loops (`for i in 0..n { ... x[i] ... L[i] ... }`) so that they can be
// checked line by line against upstream; iterator rewrites would obscure the operation order.
#![allow(clippy::needless_range_loop)]

mod float;
mod grid_search;
mod iq1;
mod iq2;
mod iq3;
mod iq4;
mod lattice;
mod legacy;
mod mxfp4;
mod q2_k;
mod q3_k;
mod q4_q5_k;
mod q6_k;
mod search;
mod search_lanes;
mod search_qx;
mod ternary;

pub(crate) use iq4::best_index_int8;

use crate::blocks::{as_blocks_mut, Block};
use crate::{GgmlType, QuantError};

/// Quantizes one row: `(src row, importance weights for the row's columns, dst row bytes)`.
type RowFn = fn(&[f32], Option<&[f32]>, &mut [u8]);

/// The row quantizer of `ty`, if there is one.
fn row_fn(ty: GgmlType) -> Option<RowFn> {
    Some(match ty {
        GgmlType::F32 => float::quantize_row_f32,
        GgmlType::F16 => float::quantize_row_f16,
        GgmlType::BF16 => float::quantize_row_bf16,
        GgmlType::Q8_0 => legacy::quantize_row_q8_0,
        GgmlType::Q4_0 => legacy::quantize_row_q4_0,
        GgmlType::Q4_1 => legacy::quantize_row_q4_1,
        GgmlType::Q5_0 => legacy::quantize_row_q5_0,
        GgmlType::Q5_1 => legacy::quantize_row_q5_1,
        GgmlType::Q2_K => q2_k::quantize_row_q2_k,
        GgmlType::Q3_K => q3_k::quantize_row_q3_k,
        GgmlType::Q4_K => q4_q5_k::quantize_row_q4_k,
        GgmlType::Q5_K => q4_q5_k::quantize_row_q5_k,
        GgmlType::Q6_K => q6_k::quantize_row_q6_k,
        GgmlType::IQ4_NL => iq4::quantize_row_iq4_nl,
        GgmlType::IQ4_XS => iq4::quantize_row_iq4_xs,
        GgmlType::IQ1_S => iq1::quantize_row_iq1_s,
        GgmlType::IQ1_M => iq1::quantize_row_iq1_m,
        GgmlType::IQ2_XXS => iq2::quantize_row_iq2_xxs,
        GgmlType::IQ2_XS => iq2::quantize_row_iq2_xs,
        GgmlType::IQ2_S => iq2::quantize_row_iq2_s,
        GgmlType::IQ3_XXS => iq3::quantize_row_iq3_xxs,
        GgmlType::IQ3_S => iq3::quantize_row_iq3_s,
        GgmlType::MXFP4 => mxfp4::quantize_row_mxfp4,
        GgmlType::TQ1_0 => ternary::quantize_row_tq1_0,
        GgmlType::TQ2_0 => ternary::quantize_row_tq2_0,
        _ => return None,
    })
}

/// Types whose quantizer cannot run without an importance matrix (`ggml_quantize_requires_imatrix`).
pub fn requires_imatrix(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ1_S)
}

/// Whether `quantize_rows` supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    row_fn(ty).is_some()
}

/// Quantize `src.len() / n_per_row` rows of `n_per_row` values into `dst`, which must be exactly
/// `ty.row_size(n_per_row) * nrows` bytes. `imatrix`, when given, has `n_per_row` weights (one per column).
///
/// Errors: [`QuantError::Unsupported`] for a type without a quantizer, [`QuantError::RowLength`] when
/// `n_per_row` is zero or not a multiple of the block size, [`QuantError::BufferSize`] when `src` is
/// not a whole number of rows or `dst` has the wrong length, [`QuantError::ImatrixLength`] when the
/// importance matrix does not have one weight per column, [`QuantError::ImatrixRequired`] for IQ2_XXS,
/// IQ2_XS and IQ1_S without one.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let quantize_row = row_fn(ty).ok_or(QuantError::Unsupported { ty, op: "quantize" })?;
    let block = ty.block_size();
    let row_length_error = QuantError::RowLength { ty, n: n_per_row, block };
    if n_per_row == 0 {
        return Err(row_length_error);
    }
    let row_bytes = ty.row_size(n_per_row as u64).and_then(|b| usize::try_from(b).ok()).ok_or(row_length_error)?;
    let nrows = src.len() / n_per_row;
    if nrows * n_per_row != src.len() {
        return Err(QuantError::BufferSize {
            what: "source values (not a whole number of rows)",
            expected: (nrows + 1) * n_per_row,
            got: src.len(),
        });
    }
    let expected = nrows.checked_mul(row_bytes).ok_or(QuantError::BufferSize {
        what: "destination bytes (overflow)",
        expected: usize::MAX,
        got: dst.len(),
    })?;
    if dst.len() != expected {
        return Err(QuantError::BufferSize { what: "destination bytes", expected, got: dst.len() });
    }
    match imatrix {
        Some(w) if w.len() != n_per_row => {
            return Err(QuantError::ImatrixLength { expected: n_per_row, got: w.len() });
        }
        None if requires_imatrix(ty) && nrows > 0 => return Err(QuantError::ImatrixRequired { ty }),
        _ => {}
    }
    for (row, out) in src.chunks_exact(n_per_row).zip(dst.chunks_exact_mut(row_bytes)) {
        quantize_row(row, imatrix, out);
    }
    Ok(())
}

/// Quantize `src` (a whole number of blocks) block by block into `dst` (as many blocks, checked by the
/// caller), passing each block its slice of the importance matrix when there is one.
fn for_each_block<B: Block>(
    src: &[f32],
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    f: impl Fn(&[f32], Option<&[f32]>) -> B,
) {
    ref_or_impl(src, imatrix, dst, |x| f(x, None), |x, qw| f(x, Some(qw)));
}

/// Quantize `src` block by block into `dst` as upstream's `quantize_<type>` dispatch does: with
/// `quantize_ref` (`quantize_row_*_ref`) without an importance matrix, with `quantize_impl`
/// (`quantize_row_*_impl`, given the block's weights) with one.
fn ref_or_impl<B: Block>(
    src: &[f32],
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    quantize_ref: impl Fn(&[f32]) -> B,
    quantize_impl: impl Fn(&[f32], &[f32]) -> B,
) {
    let Some(blocks) = as_blocks_mut::<B>(dst) else { unreachable!("destination is a whole number of blocks") };
    debug_assert_eq!(src.len() / B::QK, blocks.len());
    let xs = src.chunks_exact(B::QK);
    match imatrix {
        None => {
            for (x, out) in xs.zip(blocks) {
                *out = quantize_ref(x);
            }
        }
        Some(w) => {
            for ((x, qw), out) in xs.zip(w.chunks_exact(B::QK)).zip(blocks) {
                *out = quantize_impl(x, qw);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUPPORTED: &[GgmlType] = &[
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    #[test]
    fn supported_types() {
        for &ty in GgmlType::ALL {
            assert_eq!(can_quantize(ty), SUPPORTED.contains(&ty), "{ty:?}");
        }
    }

    #[test]
    fn argument_errors() {
        let src = vec![0.5f32; 512];
        let mut dst = vec![0u8; 2 * 144];
        assert!(quantize_rows(GgmlType::Q4_K, &src, 256, None, &mut dst).is_ok());
        assert!(matches!(
            quantize_rows(GgmlType::NVFP4, &src, 256, None, &mut dst),
            Err(QuantError::Unsupported { .. })
        ));
        let mut iq2 = vec![0u8; 2 * 66];
        assert!(matches!(
            quantize_rows(GgmlType::IQ2_XXS, &src, 256, None, &mut iq2),
            Err(QuantError::ImatrixRequired { ty: GgmlType::IQ2_XXS })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &src, 128, None, &mut dst),
            Err(QuantError::RowLength { n: 128, block: 256, .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &src, 0, None, &mut dst),
            Err(QuantError::RowLength { n: 0, .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &src[..300], 256, None, &mut dst),
            Err(QuantError::BufferSize { expected: 512, got: 300, .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &src, 256, None, &mut dst[..144]),
            Err(QuantError::BufferSize { expected: 288, got: 144, .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &src, 256, Some(&src[..255]), &mut dst),
            Err(QuantError::ImatrixLength { expected: 256, got: 255 })
        ));
        // Zero rows is fine.
        assert!(quantize_rows(GgmlType::Q4_K, &[], 256, None, &mut []).is_ok());
    }
}
