//! Dequantization of every ggml type to `f32`, bit-identical to ggml's `dequantize_row_*`.
//!
//! Invariant: for every supported type, [`dequantize_row`] produces exactly the `f32` values of llama.cpp's
//! reference dequantizer (`ggml/src/ggml-quants.c`, the `to_float` of `ggml_get_type_traits`), because each
//! kernel performs the same IEEE `f32` operations in the same order (Rust never contracts `a*b + c` into an
//! FMA, and ggml-base is built without FMA on x86-64). Ported from llama.cpp build b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62); the source read for the port is the stored
//! `ggml-quants.c` / `ggml-common.h` / `ggml-impl.h` at commit 01243c587feceaa5d6a6c2305535ef2f549c48b8,
//! e.g. <https://github.com/ggml-org/llama.cpp/blob/01243c587feceaa5d6a6c2305535ef2f549c48b8/ggml/src/ggml-quants.c>.
//!
//! Types ggml has no `to_float` for are defined here as follows: `Q8_1` as `d * qs[j]` (the same formula as
//! `Q8_0`; the stored sum `s` is redundant), the integer types `I8`..`I64` and `F64` as their values
//! converted to the nearest `f32` (what `ggml_get_f32_1d` does).
//!
//! One file per family; the i-quant grids live in `tables/`. Kernels are plain loops over fixed-size
//! blocks (a block struct of [`crate::blocks`] → `&mut [f32; N]`) so the compiler can drop bounds checks and vectorize; nothing
//! allocates. The public functions check every length and return a typed error instead of panicking.

mod float;
mod fp4;
mod iq1;
mod iq2;
mod iq3;
mod iq4;
mod kquants;
mod legacy;
mod lowbit;
pub(crate) mod tables;
mod ternary;

use crate::blocks::{as_blocks, Block};
use crate::{GgmlType, QuantError};

/// One block kernel: `src` and `dst` hold the same whole number of blocks (checked by the caller).
type RowFn = fn(&[u8], &mut [f32]);

/// The kernel of `ty`. Exhaustive on purpose: a new ggml type fails to compile here until it is handled.
fn kernel(ty: GgmlType) -> Option<RowFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => float::f32_row,
        T::F16 => float::f16_row,
        T::BF16 => float::bf16_row,
        T::F64 => float::f64_row,
        T::I8 => float::i8_row,
        T::I16 => float::i16_row,
        T::I32 => float::i32_row,
        T::I64 => float::i64_row,
        T::Q4_0 => legacy::q4_0,
        T::Q4_1 => legacy::q4_1,
        T::Q5_0 => legacy::q5_0,
        T::Q5_1 => legacy::q5_1,
        T::Q8_0 => legacy::q8_0,
        T::Q8_1 => legacy::q8_1,
        T::Q1_0 => lowbit::q1_0,
        T::Q2_0 => lowbit::q2_0,
        T::Q2_K => kquants::q2_k,
        T::Q3_K => kquants::q3_k,
        T::Q4_K => kquants::q4_k,
        T::Q5_K => kquants::q5_k,
        T::Q6_K => kquants::q6_k,
        T::Q8_K => kquants::q8_k,
        T::IQ2_XXS => iq2::iq2_xxs,
        T::IQ2_XS => iq2::iq2_xs,
        T::IQ2_S => iq2::iq2_s,
        T::IQ3_XXS => iq3::iq3_xxs,
        T::IQ3_S => iq3::iq3_s,
        T::IQ1_S => iq1::iq1_s,
        T::IQ1_M => iq1::iq1_m,
        T::IQ4_NL => iq4::iq4_nl,
        T::IQ4_XS => iq4::iq4_xs,
        T::TQ1_0 => ternary::tq1_0,
        T::TQ2_0 => ternary::tq2_0,
        T::MXFP4 => fp4::mxfp4,
        T::NVFP4 => fp4::nvfp4,
    })
}

/// Whether `dequantize_row` supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    kernel(ty).is_some()
}

/// Dequantize `src` (a whole number of blocks of `ty`) into `dst` (exactly blocks*block_size values).
///
/// Errors: [`QuantError::Unsupported`] for a type without a kernel, [`QuantError::RowLength`] when
/// `dst.len()` is not a multiple of the block size, [`QuantError::BufferSize`] when `src` is not exactly
/// the bytes of `dst.len()` values.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let kernel = checked(ty, src, dst)?;
    kernel(src, dst);
    Ok(())
}

/// Like [`dequantize_row`], split across the rayon pool in chunks of whole blocks. The result is the same
/// bit for bit (every value depends only on its own block), for any thread count.
pub fn dequantize_row_par(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use rayon::prelude::*;
    /// Values per task: large enough to amortize scheduling, small enough to balance.
    const CHUNK_VALUES: usize = 1 << 16;

    let kernel = checked(ty, src, dst)?;
    let block = ty.block_size() as usize;
    let blocks_per_chunk = (CHUNK_VALUES / block).max(1);
    let bytes_per_chunk = blocks_per_chunk * ty.type_size() as usize;
    dst.par_chunks_mut(blocks_per_chunk * block).zip(src.par_chunks(bytes_per_chunk)).for_each(|(d, s)| kernel(s, d));
    Ok(())
}

/// Validates the buffers of a `ty` row and returns its kernel.
fn checked(ty: GgmlType, src: &[u8], dst: &[f32]) -> Result<RowFn, QuantError> {
    let kernel = kernel(ty).ok_or(QuantError::Unsupported { ty, op: "dequantize" })?;
    let block = ty.block_size();
    let n = dst.len();
    // Written without `%` so that it reads the same under the MSRV (no `is_multiple_of` before 1.87).
    let blocks = n as u64 / block;
    if blocks * block != n as u64 {
        return Err(QuantError::RowLength { ty, n, block });
    }
    let expected = blocks.checked_mul(ty.type_size()).and_then(|b| usize::try_from(b).ok()).unwrap_or(usize::MAX);
    if src.len() != expected {
        return Err(QuantError::BufferSize { what: "quantized source row", expected, got: src.len() });
    }
    Ok(kernel)
}

/// Calls `f` on each (block, block values) pair of a row whose lengths were checked by the caller.
#[inline(always)]
fn for_blocks<B: Block, const N: usize>(src: &[u8], dst: &mut [f32], mut f: impl FnMut(&B, &mut [f32; N])) {
    const { assert!(N == B::QK) };
    let Some(blocks) = as_blocks::<B>(src) else { unreachable!("source is a whole number of blocks") };
    let (values, _) = dst.as_chunks_mut::<N>();
    debug_assert_eq!(blocks.len(), values.len());
    for (b, y) in blocks.iter().zip(values) {
        f(b, y);
    }
}

/// `s ? -1.f : 1.f` as the i-quants write it (the product with ±1 is exact, so this is a sign flip).
#[inline(always)]
fn sign(negative: bool) -> f32 {
    if negative {
        -1.0
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_supported() {
        for &ty in GgmlType::ALL {
            assert!(can_dequantize(ty), "{ty}");
        }
    }

    #[test]
    fn parallel_matches_serial() {
        // Q4_0 with enough blocks to span several chunks, pseudo-random bytes with finite scales.
        let ty = GgmlType::Q4_0;
        let blocks = 5000;
        let mut src = vec![0u8; blocks * 18];
        let mut state = 0x1234_5678_u32;
        for b in src.iter_mut() {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (state >> 24) as u8;
        }
        for blk in src.chunks_exact_mut(18) {
            blk[1] &= 0x3b; // keep the f16 exponent small: finite
        }
        let mut a = vec![0f32; blocks * 32];
        let mut b = vec![1f32; blocks * 32];
        dequantize_row(ty, &src, &mut a).unwrap();
        dequantize_row_par(ty, &src, &mut b).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
