//! MXFP4: 32 values as E2M1 nibbles under one E8M0 (power-of-two) scale. Ports `best_index_mxfp4` and
//! `quantize_row_mxfp4_ref` (which `quantize_mxfp4` always calls) from `ggml/src/ggml-quants.c` of
//! llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: the importance matrix is ignored. The exponent is `floor(log2(max|x|)) - 2 + 127` (0 for an
//! all-zero block), so the largest magnitude lands in the top binade of the doubled E2M1 codebook
//! `kvalues_mxfp4` at half the scale; each value takes the first codebook entry with the least `|k·d - x|`
//! (so 0 is coded as +0, index 0). Nibbles are ordered as Q4_0's (element `j` low, `j + 16` high).

use super::for_each_block;
use crate::blocks::kvalues::KVALUES_FP4;
use crate::blocks::scalar::e8m0_to_fp32_half;
use crate::blocks::BlockMxfp4;

/// `best_index_mxfp4`: the first index with the least `|kvalues_mxfp4[i]·d - x|`.
#[inline]
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (f32::from(KVALUES_FP4[0]) * d - x).abs();
    for (i, &k) in KVALUES_FP4.iter().enumerate().skip(1) {
        let err = (f32::from(k) * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// The E8M0 exponent of a block whose largest magnitude is `amax` (C's `(uint8_t)` of a float in range).
fn exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    }
}

fn mxfp4_block(x: &[f32]) -> BlockMxfp4 {
    let mut amax = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
        }
    }
    let e = exponent(amax);
    let d = e8m0_to_fp32_half(e);
    let mut b = BlockMxfp4 { e, qs: [0; 16] };
    for j in 0..16 {
        b.qs[j] = best_index(x[j], d) | best_index(x[j + 16], d) << 4;
    }
    b
}

/// MXFP4 rows (the importance matrix is ignored).
pub(crate) fn quantize_row_mxfp4(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, None, dst, |x, _| mxfp4_block(x));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent f64 reference: the OCP MX rule (shared exponent `floor(log2 amax) - 2`, E2M1 values
    /// 0, 0.5, 1, 1.5, 2, 3, 4, 6 with round-to-nearest, ties to the lower code index).
    fn reference(x: &[f32]) -> (u8, Vec<f64>) {
        let amax = x.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        let e = if amax > 0.0 { (amax.log2().floor() - 2.0 + 127.0) as u8 } else { 0 };
        let scale = 2f64.powi(i32::from(e) - 127);
        let grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let q = x
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                let mut best = 0.0f64;
                for g in grid.iter().flat_map(|&g| [g, -g]) {
                    if (g * scale - v).abs() < (best * scale - v).abs() {
                        best = g;
                    }
                }
                best * scale
            })
            .collect();
        (e, q)
    }

    #[test]
    fn matches_the_mx_rule() {
        let x: Vec<f32> =
            (0..32).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173 + if i == 5 { 7.7 } else { 0.0 }).collect();
        let b = mxfp4_block(&x);
        let (e, want) = reference(&x);
        assert_eq!(b.e, e);
        let d = e8m0_to_fp32_half(b.e);
        for j in 0..16 {
            for (pos, nib) in [(j, b.qs[j] & 15), (j + 16, b.qs[j] >> 4)] {
                let got = f64::from(f32::from(KVALUES_FP4[nib as usize]) * d);
                assert_eq!(got, want[pos], "element {pos}");
            }
        }
    }

    #[test]
    fn zero_block_and_exponents() {
        let b = mxfp4_block(&[0.0; 32]);
        assert_eq!((b.e, b.qs), (0, [0; 16]));
        assert_eq!(exponent(1.0), 125);
        assert_eq!(exponent(6.0), 127);
        assert_eq!(exponent(0.99), 124);
    }
}
