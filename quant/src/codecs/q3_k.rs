//! Q3_K: `quantize_row_q3_K_ref` (no importance matrix) and `quantize_row_q3_K_impl` (with one),
//! dispatched as `quantize_q3_K` does, from `ggml/src/ggml-quants.c` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: 16 sub-blocks of 16 get a symmetric fit; their signed scales become 6-bit values
//! (`l + 32`) under one fp16 super-block scale, and the quants are recomputed from the packed scales
//! and the fp16-rounded `d` (sub-blocks whose effective scale is 0 keep their first fit).

use super::q2_k::pack_2bit;
use super::ref_or_impl;
use super::search::{importance_weights, make_q3_quants, make_qx_quants, signed_max, sum_squares};
use crate::blocks::scalar::nearest_int;
use crate::blocks::{put_q3_k_scale, unpack_q3_k_scales, BlockQ3K, Half, QK_K};
use zerocopy::FromZeros;

/// Requantize from the packed scales and the stored `d`, then fill `hmask` and `qs`.
fn requantize_and_pack(x: &[f32], l: &mut [i8; QK_K], b: &mut BlockQ3K) {
    let d_all = b.d.to_f32();
    let scales = unpack_q3_k_scales(&b.scales);
    for j in 0..QK_K / 16 {
        let d = d_all * (scales[j] as i8 - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // The high bit of element j goes to hmask[j % 32], bit j / 32.
    let mut low = [0u8; QK_K];
    for (j, &q) in l.iter().enumerate() {
        let mut q = q;
        if q > 3 {
            b.hmask[j % 32] |= 1 << (j / 32);
            q -= 4;
        }
        low[j] = q as u8;
    }
    b.qs = pack_2bit(&low);
}

fn quantize_block_ref(x: &[f32]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], true);
    }
    let (max_scale, _) = signed_max(&scales);
    let mut b = BlockQ3K::new_zeroed();
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..QK_K / 16 {
            // `int8_t l = nearest_int(...)` wraps, then clamps to [-32, 31].
            let q = nearest_int(iscale * scales[j]) as i8;
            put_q3_k_scale(&mut b.scales, j, (q.clamp(-32, 31) + 32) as u8);
        }
        b.d = Half::from_f32(1.0 / iscale);
    } else {
        b.d = Half::from_f32(0.0);
    }
    requantize_and_pack(x, &mut l, &mut b);
    b
}

fn quantize_block_impl(x: &[f32], qw: &[f32]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut ls = [0i8; 16];

    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        sw[j] = importance_weights(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
    }
    let mut b = BlockQ3K::new_zeroed();
    let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
    for (j, &q) in ls.iter().enumerate() {
        put_q3_k_scale(&mut b.scales, j, q as u8);
    }
    b.d = Half::from_f32(d_block);
    requantize_and_pack(x, &mut l, &mut b);
    b
}

/// Quantize one row (a whole number of 256-value super-blocks) to Q3_K.
pub(crate) fn quantize_row_q3_k(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    ref_or_impl(src, imatrix, dst, quantize_block_ref, quantize_block_impl);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block() {
        let x = [0.0f32; QK_K];
        let mut out = [0xFFu8; 110];
        quantize_row_q3_k(&x, None, &mut out);
        // make_q3_quants returns L = 0 before adding the offset and d = 0 skips the requantization,
        // so no hmask bit is set and the whole block is zero.
        assert!(out.iter().all(|&b| b == 0));
    }
}
