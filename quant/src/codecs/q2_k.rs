//! Q2_K: `quantize_row_q2_K_ref` (no importance matrix) and `quantize_row_q2_K_impl` (with one),
//! dispatched as `quantize_q2_K` does, from `ggml/src/ggml-quants.c` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: 16 sub-blocks of 16 get an asymmetric (scale, min) fit; the 4-bit scales and mins are
//! quantized against fp16 super-block factors, and the quants are recomputed from the fp16-rounded
//! `d`/`dmin` read back from the block (sub-blocks whose effective scale is 0 keep their first fit).

use super::ref_or_impl;
use super::search::{
    importance_weights, make_qkx2_quants, make_qkx3_quants, make_qp_quants, max_positive, sum_squares, MinSearch,
};
use crate::blocks::scalar::nearest_int;
use crate::blocks::{BlockQ2K, Half, QK_K};
use zerocopy::FromZeros;

/// The 2-bit packing shared by Q2_K and Q3_K: byte `32h + l` holds elements `128h + l + 32k` at bit `2k`.
pub(super) fn pack_2bit(l: &[u8; QK_K]) -> [u8; 64] {
    let mut qs = [0u8; 64];
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] = l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
    qs
}

/// Recompute the quants of every sub-block from the stored scales, then pack.
fn requantize_and_pack(x: &[f32], l: &mut [u8; QK_K], b: &mut BlockQ2K) {
    let dm = b.d.to_f32();
    let mm = b.dmin.to_f32();
    for j in 0..QK_K / 16 {
        let d = dm * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (b.scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
    b.qs = pack_2bit(l);
}

fn quantize_block_ref(x: &[f32]) -> BlockQ2K {
    const Q4SCALE: f32 = 15.0;
    let p = MinSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut l[16 * j..16 * j + 16], &mut laux);
    }
    let (max_scale, max_min) = (max_positive(&scales), max_positive(&mins));
    let mut b = BlockQ2K::new_zeroed();
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..QK_K / 16 {
            b.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        b.d = Half::from_f32(max_scale / Q4SCALE);
    } else {
        b.d = Half::from_f32(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..QK_K / 16 {
            let lm = nearest_int(iscale * mins[j]);
            b.scales[j] |= (lm << 4) as u8;
        }
        b.dmin = Half::from_f32(max_min / Q4SCALE);
    } else {
        b.dmin = Half::from_f32(0.0);
    }
    requantize_and_pack(x, &mut l, &mut b);
    b
}

fn quantize_block_impl(x: &[f32], qw: &[f32]) -> BlockQ2K {
    let p = MinSearch { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];

    let sigma2 = sum_squares(x) / QK_K as f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        sw[j] = importance_weights(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        (scales[j], mins[j]) = make_qkx3_quants(p, xs, Some(&weight), &mut l[16 * j..16 * j + 16], &mut laux);
    }
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let mut b = BlockQ2K::new_zeroed();
    b.d = Half::from_f32(dm);
    b.dmin = Half::from_f32(mm);
    for j in 0..QK_K / 16 {
        b.scales[j] = ls[j] | (lm[j] << 4);
    }
    requantize_and_pack(x, &mut l, &mut b);
    b
}

/// Quantize one row (a whole number of 256-value super-blocks) to Q2_K.
pub(crate) fn quantize_row_q2_k(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    ref_or_impl(src, imatrix, dst, quantize_block_ref, quantize_block_impl);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_is_all_zero() {
        let x = [0.0f32; QK_K];
        let mut out = [0xFFu8; 84];
        quantize_row_q2_k(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
        let w = [1.0f32; QK_K];
        quantize_row_q2_k(&x, Some(&w), &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn pack_2bit_layout() {
        let mut l = [0u8; QK_K];
        l[0] = 1;
        l[32] = 2;
        l[64] = 3;
        l[96] = 1;
        l[128 + 5] = 3;
        let qs = pack_2bit(&l);
        assert_eq!(qs[0], 1 | (2 << 2) | (3 << 4) | (1 << 6));
        assert_eq!(qs[32 + 5], 3);
    }
}
