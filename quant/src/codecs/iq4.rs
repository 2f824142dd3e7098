//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear codebook `kvalues_iq4nl`. Ports
//! `best_index_int8`, `quantize_row_iq4_nl_impl` (the 16-value case) and the `quantize_iq4_nl` /
//! `quantize_iq4_xs` dispatch from `ggml/src/ggml-quants.c` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: both types always go through the impl function with `ntry = 7`, with or without an
//! importance matrix (weights `qw·sqrt(sigma2 + x²)` or `x²`, `sigma2 = 2·Σx²/super_block_size`).
//! IQ4_NL stores the f32 block scale as fp16 and requantizes with the unrounded scale; IQ4_XS
//! quantizes the 8 sub-block scales to 6 bits against `d = -max_scale/32` (unrounded) and
//! requantizes each sub-block with `d·l`.

use zerocopy::FromZeros;

use super::for_each_block;
use super::search::{importance_weights, signed_max, sum_squares, GROUP_MAX_EPS};
use crate::blocks::kvalues::KVALUES_IQ4NL;
use crate::blocks::scalar::nearest_int;
use crate::blocks::{BlockIq4Nl, BlockIq4Xs, Half, QK_K};

/// Sub-block size of both types.
const BLOCK: usize = 32;

/// `best_index_int8`: index of the codebook entry nearest to `x`; an `x` exactly halfway between two
/// entries picks the upper one. Compares `2x` with the integer sum of neighbours, which is exact.
/// (Older upstream versions used a bisection with `x - val[mu-1] < val[mu] - x`; for finite `x` the
/// differences are exact in f32 near every midpoint, so both give the same index.)
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    let x2 = x + x;
    let mut idx = 0usize;
    let mut step = values.len() >> 1;
    while step > 0 {
        let j = idx + step;
        if x2 >= (values[j - 1] as i32 + values[j] as i32) as f32 {
            idx = j;
        }
        step >>= 1;
    }
    idx
}

/// What `quantize_row_iq4_nl_impl` produces for one super-block, before packing.
struct Iq4Fit {
    d: Half,
    /// The 6-bit sub-block scales `l + 32` (IQ4_XS only).
    scales: [u8; QK_K / BLOCK],
    l: [u8; QK_K],
}

/// `quantize_row_iq4_nl_impl` with 16 codebook values and `ntry = 7`, for a super-block `x` of
/// 32 (IQ4_NL) or 256 (IQ4_XS) values; `qw` is the importance matrix slice for `x`.
fn iq4_nl_impl(x: &[f32], qw: Option<&[f32]>) -> Iq4Fit {
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let super_block_size = x.len();
    let nblocks = super_block_size / BLOCK;
    let mut fit = Iq4Fit { d: Half::from_f32(0.0), scales: [0; QK_K / BLOCK], l: [0; QK_K] };
    let mut scales = [0.0f32; QK_K / BLOCK];
    let mut weight = [0.0f32; BLOCK];

    let sigma2 = sum_squares(x) * (2.0 / super_block_size as f32);

    for ib in 0..nblocks {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let lb = &mut fit.l[ib * BLOCK..(ib + 1) * BLOCK];
        match qw {
            Some(q) => {
                importance_weights(xb, &q[ib * BLOCK..(ib + 1) * BLOCK], sigma2, &mut weight);
            }
            None => {
                for j in 0..BLOCK {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let (max, amax) = signed_max(xb);
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            lb.fill(0);
            continue;
        }
        // ntry > 0 ⇒ d = -max/values[0]
        let mut d = -max / values[0] as f32;
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..BLOCK {
            let al = id * xb[j];
            let l = best_index_int8(values, al);
            lb[j] = l as u8;
            let q = values[l] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BLOCK {
                let al = id * xb[j];
                let l = best_index_int8(values, al);
                let q = values[l] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
    }
    // Sub-blocks that were skipped keep scale 0, which never wins.
    let (max_scale, _) = signed_max(&scales);

    if nblocks > 1 {
        let d = -max_scale / 32.0;
        fit.d = Half::from_f32(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
            for (lj, &xj) in fit.l[ib * BLOCK..(ib + 1) * BLOCK].iter_mut().zip(xb) {
                *lj = best_index_int8(values, idl * xj) as u8;
            }
            fit.scales[ib] = (l + 32) as u8;
        }
    } else {
        fit.d = Half::from_f32(scales[0]);
        let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
        for (lj, &xj) in fit.l[..super_block_size].iter_mut().zip(x) {
            *lj = best_index_int8(values, id * xj) as u8;
        }
    }
    fit
}

/// Pack 4-bit indices: byte `16i + j` holds elements `32i + j` (low) and `32i + 16 + j` (high).
fn pack_nibbles(l: &[u8], qs: &mut [u8]) {
    for (q, lb) in qs.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
        for j in 0..16 {
            q[j] = lb[j] | (lb[16 + j] << 4);
        }
    }
}

/// Quantize one row (a whole number of 32-value blocks) to IQ4_NL.
pub(crate) fn quantize_row_iq4_nl(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, |x, qw| {
        let fit = iq4_nl_impl(x, qw);
        let mut b = BlockIq4Nl { d: fit.d, qs: [0; 16] };
        pack_nibbles(&fit.l[..BLOCK], &mut b.qs);
        b
    });
}

/// Quantize one row (a whole number of 256-value super-blocks) to IQ4_XS.
pub(crate) fn quantize_row_iq4_xs(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, |x, qw| {
        let fit = iq4_nl_impl(x, qw);
        let mut b = BlockIq4Xs::new_zeroed();
        b.d = fit.d;
        for (ib, &ls) in fit.scales.iter().enumerate() {
            b.put_scale(ib, ls);
        }
        pack_nibbles(&fit.l, &mut b.qs);
        b
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The older bisection form of `best_index_int8`, as an oracle.
    fn best_index_bisect(val: &[i8; 16], x: f32) -> usize {
        let n = val.len();
        if x <= val[0] as f32 {
            return 0;
        }
        if x >= val[n - 1] as f32 {
            return n - 1;
        }
        let (mut ml, mut mu) = (0usize, n - 1);
        while mu - ml > 1 {
            let mav = (ml + mu) / 2;
            if x < val[mav] as f32 {
                mu = mav;
            } else {
                ml = mav;
            }
        }
        if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
            mu - 1
        } else {
            mu
        }
    }

    #[test]
    fn best_index_ties_and_extremes() {
        let v = &KVALUES_IQ4NL;
        assert_eq!(best_index_int8(v, -1000.0), 0);
        assert_eq!(best_index_int8(v, 1000.0), 15);
        assert_eq!(best_index_int8(v, 0.0), 8);
        // Midpoint of -10 and 1 is -4.5: ties go up.
        assert_eq!(best_index_int8(v, -4.5), 8);
        assert_eq!(best_index_int8(v, -4.500001), 7);
        assert_eq!(best_index_int8(v, 113.0), 15);
    }

    #[test]
    fn best_index_agrees_with_bisection() {
        let v = &KVALUES_IQ4NL;
        let mut x = -140.0f32;
        while x < 140.0 {
            for c in [x, f32::from_bits(x.to_bits() + 1), f32::from_bits(x.to_bits().wrapping_sub(1))] {
                if c.is_nan() {
                    continue; // the two forms differ only for NaN (0 vs 15), which never reaches them
                }
                assert_eq!(best_index_int8(v, c), best_index_bisect(v, c), "{c}");
            }
            x += 0.25;
        }
    }

    #[test]
    fn zero_blocks() {
        let x = [0.0f32; QK_K];
        let mut out = [0u8; 136];
        quantize_row_iq4_xs(&x, None, &mut out);
        // d = -0/32 = -0 ⇒ fp16 0x8000; every sub-block scale is 0 ⇒ stored 6-bit value 32 = 0b10_0000
        // ⇒ l_l = 0, l_h = 2 in every 2-bit slot of scales_h; every index is that of 0 (entry 8).
        assert_eq!(&out[..2], &[0x00, 0x80]);
        assert_eq!(u16::from_le_bytes([out[2], out[3]]), 0xAAAA);
        assert_eq!(&out[4..8], &[0; 4]);
        assert!(out[8..].iter().all(|&b| b == 0x88));
        let mut out = [0u8; 18];
        quantize_row_iq4_nl(&x[..32], None, &mut out);
        assert_eq!(&out[..2], &[0, 0]);
        assert!(out[2..].iter().all(|&b| b == 0x88));
    }
}
