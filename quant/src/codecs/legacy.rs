//! The legacy 32-value block quants Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: `quantize_row_*_ref` without an
//! importance matrix and `quantize_row_*_impl` with one, as dispatched by `quantize_q4_0` etc. in
//! `ggml/src/ggml-quants.c` of llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariants: the ref paths use the f32 scale (not its fp16 rounding) and C's truncating float→int
//! conversions (`(int8_t)(x + 8.5f)`); Q8_0 rounds with `roundf` (half away from zero) and ignores the
//! importance matrix; the `_impl` paths take `sigma2 = Σx²/n_per_row` over the whole row, so they must
//! be called with exactly one row.

use zerocopy::FromZeros;

use super::search::{importance_weights, make_qkx3_quants, make_qx_quants, signed_max, sum_squares, MinSearch};
use super::{for_each_block, ref_or_impl};
use crate::blocks::{Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, Half, QK32};

/// The (min, max) search of Q4_1/Q5_1: starts from ±FLT_MAX, strict comparisons.
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `sigma2 = Σx²/n` over one row, the weight base of the legacy `_impl` quantizers.
fn row_sigma2(row: &[f32]) -> f32 {
    sum_squares(row) / row.len() as f32
}

/// What the ref and `_impl` fits of the 4- and 5-bit types produce for one block.
struct Fit {
    /// Scale.
    d: Half,
    /// Offset (Q4_1/Q5_1 only).
    m: Half,
    /// Indices, `[0, 2·nmax)` for the symmetric types and `[0, nmax]` for the offset ones.
    l: [u8; QK32],
}

/// The ref fit of Q4_0/Q5_0: `d = max/-nmax` from the signed maximum, `L = (int8)(x/d + nmax + 0.5)`
/// capped at `2·nmax - 1`.
fn ref_symmetric(x: &[f32], nmax: i32) -> Fit {
    let (max, _) = signed_max(x);
    let d = max / -(nmax as f32);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (bias, top) = (nmax as f32 + 0.5, (2 * nmax - 1) as i8);
    let mut l = [0u8; QK32];
    for (l, &v) in l.iter_mut().zip(x) {
        *l = ((v * id + bias) as i8).min(top) as u8;
    }
    Fit { d: Half::from_f32(d), m: Half::ZERO, l }
}

/// The `_impl` fit of Q4_0/Q5_0: symmetric, `L ∈ [0, 2·nmax)` stored with offset `nmax`.
fn fit_symmetric(x: &[f32], qw: &[f32], sigma2: f32, nmax: i32) -> Fit {
    let mut weight = [0.0f32; QK32];
    importance_weights(x, qw, sigma2, &mut weight);
    let mut l = [0i8; QK32];
    let d = make_qx_quants(nmax, x, &mut l, 1, Some(&weight));
    Fit { d: Half::from_f32(d), m: Half::ZERO, l: l.map(|v| v as u8) }
}

/// The ref fit of Q4_1/Q5_1: `d = (max - min)/nmax`, `m = min`, `L = index((x - min)/d + 0.5)`.
fn ref_with_min(x: &[f32], nmax: i32, index: impl Fn(f32) -> u8) -> Fit {
    let (min, max) = min_max(x);
    let d = (max - min) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut l = [0u8; QK32];
    for (l, &v) in l.iter_mut().zip(x) {
        *l = index((v - min) * id + 0.5);
    }
    Fit { d: Half::from_f32(d), m: Half::from_f32(min), l }
}

/// The `_impl` fit of Q4_1/Q5_1: `x ≈ d·L + m` with `L ∈ [0, nmax]`.
fn fit_with_min(x: &[f32], qw: &[f32], sigma2: f32, nmax: i32) -> Fit {
    let p = MinSearch { nmax, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
    let mut weight = [0.0f32; QK32];
    importance_weights(x, qw, sigma2, &mut weight);
    let (mut l, mut laux) = ([0u8; QK32], [0u8; QK32]);
    let (d, min) = make_qkx3_quants(p, x, Some(&weight), &mut l, &mut laux);
    Fit { d: Half::from_f32(d), m: Half::from_f32(-min), l }
}

/// A row of a 4- or 5-bit type: `ref_fit` per block without an importance matrix, `impl_fit` (given the
/// block's weights and the row's `sigma2`) with one; `block` packs the fit.
fn quantize_fits<B: Block>(
    src: &[f32],
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    ref_fit: impl Fn(&[f32]) -> Fit,
    impl_fit: impl Fn(&[f32], &[f32], f32) -> Fit,
    block: impl Fn(&Fit) -> B,
) {
    let sigma2 = if imatrix.is_some() { row_sigma2(src) } else { 0.0 };
    ref_or_impl(src, imatrix, dst, |x| block(&ref_fit(x)), |x, qw| block(&impl_fit(x, qw, sigma2)));
}

/// Pack 32 four-bit indices into nibbles: byte `j` holds elements `j` (low) and `j + 16` (high).
fn pack_q4(l: &[u8; QK32]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
    qs
}

/// Pack 32 five-bit indices into Q5 `qs` nibbles and the `qh` bit field.
fn pack_q5(l: &[u8; QK32]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= ((u32::from(x0) & 0x10) >> 4) << j;
        qh |= ((u32::from(x1) & 0x10) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

/// Q8_0 (`quantize_q8_0` ignores the importance matrix).
pub(crate) fn quantize_row_q8_0(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, None, dst, |x, _| {
        let mut amax = 0.0f32;
        for &v in x {
            // MAX(amax, fabsf(v)) = amax > |v| ? amax : |v| (a NaN propagates, unlike `signed_max`)
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8_0::new_zeroed();
        b.d = Half::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        b
    });
}

/// Q4_0: `quantize_row_q4_0_ref`, or `quantize_row_q4_0_impl` with an importance matrix.
pub(crate) fn quantize_row_q4_0(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    let (ref_fit, impl_fit) = (|x: &[f32]| ref_symmetric(x, 8), |x: &[f32], qw: &[f32], s| fit_symmetric(x, qw, s, 8));
    quantize_fits(src, imatrix, dst, ref_fit, impl_fit, |f| BlockQ4_0 { d: f.d, qs: pack_q4(&f.l) });
}

/// Q4_1: `quantize_row_q4_1_ref`, or `quantize_row_q4_1_impl` with an importance matrix.
pub(crate) fn quantize_row_q4_1(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    let ref_fit = |x: &[f32]| ref_with_min(x, 15, |v| (v as i8).min(15) as u8);
    let impl_fit = |x: &[f32], qw: &[f32], s| fit_with_min(x, qw, s, 15);
    quantize_fits(src, imatrix, dst, ref_fit, impl_fit, |f| BlockQ4_1 { d: f.d, m: f.m, qs: pack_q4(&f.l) });
}

/// Q5_0: `quantize_row_q5_0_ref`, or `quantize_row_q5_0_impl` with an importance matrix.
pub(crate) fn quantize_row_q5_0(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    let (ref_fit, impl_fit) =
        (|x: &[f32]| ref_symmetric(x, 16), |x: &[f32], qw: &[f32], s| fit_symmetric(x, qw, s, 16));
    quantize_fits(src, imatrix, dst, ref_fit, impl_fit, |f| {
        let (qs, qh) = pack_q5(&f.l);
        BlockQ5_0 { d: f.d, qh, qs }
    });
}

/// Q5_1: `quantize_row_q5_1_ref`, or `quantize_row_q5_1_impl` with an importance matrix.
pub(crate) fn quantize_row_q5_1(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    // `(uint8_t)(x + 0.5f)`: unlike Q4_1, no clamp upstream.
    let ref_fit = |x: &[f32]| ref_with_min(x, 31, |v| v as u8);
    let impl_fit = |x: &[f32], qw: &[f32], s| fit_with_min(x, qw, s, 31);
    quantize_fits(src, imatrix, dst, ref_fit, impl_fit, |f| {
        let (qs, qh) = pack_q5(&f.l);
        BlockQ5_1 { d: f.d, m: f.m, qh, qs }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        // amax = 127 ⇒ d = 1, id = 1: 0.5 → 1, -0.5 → -1, 1.5 → 2, 2.5 → 3.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.5;
        x[4] = 2.5;
        let mut out = [0u8; 34];
        quantize_row_q8_0(&x, None, &mut out);
        assert_eq!(&out[..2], &0x3C00u16.to_le_bytes());
        assert_eq!(out[2] as i8, 127);
        assert_eq!(out[3] as i8, 1);
        assert_eq!(out[4] as i8, -1);
        assert_eq!(out[5] as i8, 2);
        assert_eq!(out[6] as i8, 3);
    }

    #[test]
    fn zero_blocks() {
        let x = [0.0f32; 32];
        let mut out = [0xAAu8; 18];
        quantize_row_q4_0(&x, None, &mut out);
        // d = 0/-8 = -0 ⇒ fp16 0x8000; id = 0 ⇒ every q = (int8)(8.5) = 8.
        assert_eq!(&out[..2], &[0x00, 0x80]);
        assert!(out[2..].iter().all(|&b| b == 0x88));
        let mut out = [0xAAu8; 24];
        quantize_row_q5_1(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn q4_0_uses_signed_max_and_clamps() {
        // The largest magnitude is negative: d = -4/-8 = 0.5 and x = -4 maps to q = (int8)0.5 = 0.
        let mut x = [0.0f32; 32];
        x[0] = -4.0;
        x[1] = 3.75; // id = 1/d = 2 ⇒ 7.5 + 8.5 = 16 ⇒ clamped to 15
        let mut out = [0u8; 18];
        quantize_row_q4_0(&x, None, &mut out);
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), Half::from_f32(0.5).bits());
        assert_eq!(out[2] & 0x0F, 0);
        assert_eq!(out[3] & 0x0F, 15);
    }

    #[test]
    fn imatrix_changes_only_impl_types() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013).collect();
        let w: Vec<f32> = (0..64).map(|i| 0.5 + (i % 5) as f32).collect();
        let (mut a, mut b) = (vec![0u8; 68], vec![0u8; 68]);
        quantize_row_q8_0(&x, None, &mut a);
        quantize_row_q8_0(&x, Some(&w), &mut b);
        assert_eq!(a, b);
        let (mut a, mut b) = (vec![0u8; 36], vec![0u8; 36]);
        quantize_row_q4_0(&x, None, &mut a);
        quantize_row_q4_0(&x, Some(&w), &mut b);
        assert_ne!(a, b);
    }
}
