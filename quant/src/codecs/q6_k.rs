//! Q6_K: `quantize_row_q6_K_ref` (no importance matrix) and `quantize_row_q6_K_impl` (with one),
//! dispatched as `quantize_q6_K` does, from `ggml/src/ggml-quants.c` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: 16 sub-blocks of 16 get a symmetric 6-bit fit (`make_qx_quants(16, 32, …)`, weights x²
//! without an importance matrix and the raw importance values with one); the signed 8-bit scales are
//! taken against one fp16 `d`, and the quants are recomputed from the fp16-rounded `d`. A super-block
//! whose largest scale is below `GROUP_MAX_EPS` is all zero bytes.

use super::for_each_block;
use super::search::{make_qx_quants, signed_max, GROUP_MAX_EPS};
use crate::blocks::scalar::nearest_int;
use crate::blocks::{BlockQ6K, Half, QK_K};
use zerocopy::FromZeros;

fn quantize_block(x: &[f32], qw: Option<&[f32]>) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for ib in 0..QK_K / 16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 1, w);
    }
    let (max_scale, max_abs_scale) = signed_max(&scales);
    let mut b = BlockQ6K::new_zeroed();
    if max_abs_scale < GROUP_MAX_EPS {
        return b;
    }
    let iscale = -128.0 / max_scale;
    b.d = Half::from_f32(1.0 / iscale);
    for (s, &scale) in b.scales.iter_mut().zip(&scales) {
        // `MIN(127, nearest_int(...))` stored into an int8_t (wraps below -128).
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    let d_all = b.d.to_f32();
    for j in 0..QK_K / 16 {
        let d = d_all * b.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let l = l.map(|v| v as u8);
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut b.ql[64 * h..64 * h + 64];
        for i in 0..32 {
            let q1 = l[j + i] & 0xF;
            let q2 = l[j + i + 32] & 0xF;
            let q3 = l[j + i + 64] & 0xF;
            let q4 = l[j + i + 96] & 0xF;
            ql[i] = q1 | (q3 << 4);
            ql[i + 32] = q2 | (q4 << 4);
        }
        let qh = &mut b.qh[32 * h..32 * h + 32];
        for (i, out) in qh.iter_mut().enumerate() {
            *out = (l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6);
        }
    }
    b
}

/// Quantize one row (a whole number of 256-value super-blocks) to Q6_K.
pub(crate) fn quantize_row_q6_k(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, quantize_block);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_is_all_zero() {
        let x = [0.0f32; QK_K];
        let mut out = [0xFFu8; 210];
        quantize_row_q6_k(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn exact_grid_round_trips() {
        // x = 0.01·(q - 32) with q cycling over [0, 63]: dequantizing gives x back closely.
        let x: Vec<f32> = (0..QK_K).map(|i| 0.01 * ((i * 11 % 64) as f32 - 32.0)).collect();
        let mut out = [0u8; 210];
        quantize_row_q6_k(&x, None, &mut out);
        let d = Half::from_bits(u16::from_le_bytes([out[208], out[209]])).to_f32();
        for (i, &xi) in x.iter().enumerate() {
            let (h, r) = (i / 128, i % 128);
            let (k, l) = (r / 32, r % 32);
            let ql = out[64 * h + l + if k % 2 == 1 { 32 } else { 0 }];
            let low = if k >= 2 { ql >> 4 } else { ql & 0xF };
            let high = (out[128 + 32 * h + l] >> (2 * k)) & 3;
            let q = (low | (high << 4)) as i32 - 32;
            let sc = out[192 + i / 16] as i8 as f32;
            let back = d * sc * q as f32;
            assert!((back - xi).abs() < 0.006, "{i}: {back} vs {xi}");
        }
    }
}
