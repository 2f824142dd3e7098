//! Q4_K and Q5_K, one family: 8 sub-blocks of 32 with an asymmetric (scale, min) fit each, 6-bit
//! scales and mins under two fp16 super-block factors. Ports `quantize_row_q4_K_ref`,
//! `quantize_row_q4_K_impl`, `quantize_row_q5_K_ref`, `quantize_row_q5_K_impl` and the
//! `quantize_q4_K`/`quantize_q5_K` dispatch from `ggml/src/ggml-quants.c` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: the two types differ only in `nmax` (15 or 31), the ref search parameters, a
//! `MIN(63, ·)` that only the Q5_K impl applies to its packed scales, and the final bit packing.
//! Quants are recomputed from the packed 6-bit values and the fp16-rounded `d`/`dmin`.

use super::for_each_block;
use super::search::{
    importance_weights, make_qkx2_quants, make_qkx3_quants, make_qp_quants, max_positive, sum_squares, MinSearch,
};
use crate::blocks::scalar::nearest_int;
use crate::blocks::{get_scale_min_k4, put_scale_min_k4, BlockQ4K, BlockQ5K, Half, K_SCALE_SIZE, QK_K};

/// Which of the two types is being produced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4K,
    Q5K,
}

impl Kind {
    fn nmax(self) -> i32 {
        match self {
            Kind::Q4K => 15,
            Kind::Q5K => 31,
        }
    }

    /// Search parameters of the ref path.
    fn ref_search(self) -> MinSearch {
        match self {
            Kind::Q4K => MinSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false },
            Kind::Q5K => MinSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false },
        }
    }
}

/// The scale part of a Q4_K/Q5_K block plus the quants before packing.
struct Fit {
    d: Half,
    dmin: Half,
    scales: [u8; K_SCALE_SIZE],
    l: [u8; QK_K],
}

/// Recompute the quants from the packed scales/mins and the stored fp16 factors.
fn requantize(x: &[f32], nmax: i32, fit: &mut Fit) {
    let d_all = fit.d.to_f32();
    let m_all = fit.dmin.to_f32();
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &fit.scales);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..32 {
            fit.l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn fit_ref(x: &[f32], kind: Kind) -> Fit {
    let p = kind.ref_search();
    let mut fit = Fit { d: Half::ZERO, dmin: Half::ZERO, scales: [0; K_SCALE_SIZE], l: [0; QK_K] };
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (sum_squares(xs) / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut fit.l[32 * j..32 * j + 32], &mut laux);
    }
    let (max_scale, max_min) = (max_positive(&scales), max_positive(&mins));
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..QK_K / 32 {
        // `uint8_t ls = nearest_int(...)` wraps before the MIN.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        put_scale_min_k4(&mut fit.scales, j, ls, lm);
    }
    fit.d = Half::from_f32(max_scale / 63.0);
    fit.dmin = Half::from_f32(max_min / 63.0);
    requantize(x, kind.nmax(), &mut fit);
    fit
}

fn fit_impl(x: &[f32], qw: &[f32], kind: Kind) -> Fit {
    let p = MinSearch { nmax: kind.nmax(), rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
    let mut fit = Fit { d: Half::ZERO, dmin: Half::ZERO, scales: [0; K_SCALE_SIZE], l: [0; QK_K] };
    let mut laux = [0u8; 32];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let mut weights = [0.0f32; 32];
    let mut sw = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];

    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        sw[j] = importance_weights(xs, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        (scales[j], mins[j]) = make_qkx3_quants(p, xs, Some(&weights), &mut fit.l[32 * j..32 * j + 32], &mut laux);
    }
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    for j in 0..QK_K / 32 {
        let (s, m) = match kind {
            Kind::Q4K => (ls[j], lm[j]),
            Kind::Q5K => (ls[j].min(63), lm[j].min(63)),
        };
        put_scale_min_k4(&mut fit.scales, j, s, m);
    }
    fit.d = Half::from_f32(d_block);
    fit.dmin = Half::from_f32(m_block);
    requantize(x, kind.nmax(), &mut fit);
    fit
}

fn fit(x: &[f32], qw: Option<&[f32]>, kind: Kind) -> Fit {
    match qw {
        None => fit_ref(x, kind),
        Some(qw) => fit_impl(x, qw, kind),
    }
}

fn pack_q4_k(f: &Fit) -> BlockQ4K {
    let mut b = BlockQ4K { d: f.d, dmin: f.dmin, scales: f.scales, qs: [0; 128] };
    for (p, j) in (0..QK_K).step_by(64).enumerate() {
        for l in 0..32 {
            b.qs[32 * p + l] = f.l[j + l] | (f.l[j + l + 32] << 4);
        }
    }
    b
}

fn pack_q5_k(f: &Fit) -> BlockQ5K {
    let mut b = BlockQ5K { d: f.d, dmin: f.dmin, scales: f.scales, qh: [0; 32], qs: [0; 128] };
    let (mut m1, mut m2) = (1u8, 2u8);
    for (p, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = f.l[n + j];
            if l1 > 15 {
                l1 -= 16;
                b.qh[j] |= m1;
            }
            let mut l2 = f.l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                b.qh[j] |= m2;
            }
            b.qs[32 * p + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
    b
}

/// Quantize one row (a whole number of 256-value super-blocks) to Q4_K.
pub(crate) fn quantize_row_q4_k(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, |x, qw| pack_q4_k(&fit(x, qw, Kind::Q4K)));
}

/// Quantize one row (a whole number of 256-value super-blocks) to Q5_K.
pub(crate) fn quantize_row_q5_k(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, |x, qw| pack_q5_k(&fit(x, qw, Kind::Q5K)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_all_zero() {
        let x = [0.0f32; QK_K];
        let w = [1.0f32; QK_K];
        let mut out = [0xFFu8; 144];
        quantize_row_q4_k(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
        quantize_row_q4_k(&x, Some(&w), &mut out);
        assert!(out.iter().all(|&b| b == 0));
        let mut out = [0xFFu8; 176];
        quantize_row_q5_k(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn constant_negative_block_uses_min_only() {
        // Every sub-block is constant -1: scale 0, min 1 ⇒ d = 0, dmin = fp16(1/63), all mins 63.
        let x = [-1.0f32; QK_K];
        let mut out = [0u8; 144];
        quantize_row_q4_k(&x, None, &mut out);
        let b = BlockQ4K {
            d: Half::ZERO,
            dmin: Half::from_f32(1.0 / 63.0),
            scales: out[4..16].try_into().unwrap(),
            qs: [0; 128],
        };
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), b.d.bits());
        assert_eq!(u16::from_le_bytes([out[2], out[3]]), b.dmin.bits());
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &b.scales), (0, 63));
        }
        assert!(out[16..].iter().all(|&v| v == 0));
    }
}
