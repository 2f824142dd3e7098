//! IQ2_XXS, IQ2_XS and IQ2_S: groups of 8 magnitudes on an 8-dimensional grid (levels 1, 3, 5 times a
//! sub-block scale), with signs. Ports `quantize_row_iq2_xxs_impl`, `quantize_row_iq2_xs_impl`,
//! `quantize_row_iq2_s_impl` and their `quantize_iq2_*` row loops from `ggml/src/ggml-quants.c` of
//! llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: per 256 values, `sigma2 = Σx²/256` (IQ2_S: `2·Σx²/256`) and weights
//! `qw·sqrt(sigma2 + x²)`; IQ2_S without an importance matrix uses `sigma2/4 + x²`. IQ2_XXS and IQ2_XS
//! need an importance matrix (upstream asserts; [`super::quantize_rows`] refuses). IQ2_XXS fits 32-value
//! sub-blocks starting from `make_qp_quants`; IQ2_XS and IQ2_S fit 16-value halves by perturbing
//! `5/max`. The super-block scale is `max_scale/31` (IQ2_S stores it times 0.9875).

use super::for_each_block;
use super::grid_search::{
    c_max, fold_signs, fold_signs_even, scale_code, search, sqrt_weights, unit_weight, weights, Refit, Search, Values,
};
use super::lattice;
use super::search::{make_qp_quants, sum_squares, GROUP_MAX_EPS};
use crate::blocks::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, Half, QK_K};

/// `kMaxQ`: levels 0, 1, 2.
const KMAX: i32 = 3;
/// `GROUP_MAX_EPS_IQ2_S`.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

fn iq2_xxs_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq2Xxs {
    let lat = lattice::iq2_xxs();
    let params = Search { kmax: KMAX, steps: -6..=6, step: 0.1, refit: Refit::Always, on_grid_initially: true };
    let sigma2 = sum_squares(x) / QK_K as f32;
    let mut scales = [0.0f32; QK_K / 32];
    let mut q2 = [0u32; 2 * (QK_K / 32)];
    let mut max_scale = 0.0f32;
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let (mut weight, mut waux, mut xval) = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        weights(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), sigma2, unit_weight, &mut weight);
        sqrt_weights(&weight, &mut waux);
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = fold_signs_even(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
        }
        let max = c_max(&xval);
        if max < GROUP_MAX_EPS {
            continue;
        }
        let mut lq = [0u8; 32];
        let scale = make_qp_quants(KMAX + 1, &xval, &mut lq, &weight);
        let eff_max = scale * KMAX as f32;
        if eff_max <= 0.0 {
            continue;
        }
        let mut l: [i8; 32] = lq.map(|v| v as i8);
        let mut scale =
            search(lat, &params, &Values { xval: &xval, weight: &weight, waux: &waux }, eff_max, scale, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            let j = lat.grid_index(&l[8 * k..8 * k + 8]) as u32;
            q2[2 * ib] |= j << (8 * k);
            q2[2 * ib + 1] |= u32::from(signs[k]) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    let mut b = BlockIq2Xxs { d: Half::ZERO, qs: [[0; 8]; 8] };
    if max_scale == 0.0 {
        return b;
    }
    let d = max_scale / 31.0;
    b.d = Half::from_f32(d);
    let id = 1.0 / d;
    for (ib, out) in b.qs.iter_mut().enumerate() {
        let aux = q2[2 * ib + 1] | u32::from(scale_code(id, scales[ib], 15)) << 28;
        out[..4].copy_from_slice(&q2[2 * ib].to_le_bytes());
        out[4..].copy_from_slice(&aux.to_le_bytes());
    }
    b
}

/// The 16-value-half encoders (IQ2_XS, IQ2_S): per half, the scale and the two groups' grid indices and
/// sign bytes (7 parity-corrected bits for IQ2_XS, 8 plain bits for IQ2_S).
struct Halves {
    scales: [f32; QK_K / 16],
    index: [u16; QK_K / 8],
    signs: [u8; QK_K / 8],
    max_scale: f32,
}

/// The IQ2_XS / IQ2_S search over the 16 halves of one super-block.
fn halves(x: &[f32], qw: Option<&[f32]>, is_s: bool) -> Halves {
    let lat = if is_s { lattice::iq2_s() } else { lattice::iq2_xs() };
    let params = Search { kmax: KMAX, steps: -9..=9, step: 0.1, refit: Refit::OffGrid, on_grid_initially: true };
    let sumx2 = sum_squares(x);
    let (sigma2, eps, fallback): (f32, f32, fn(f32, f32) -> f32) = if is_s {
        (2.0 * sumx2 / QK_K as f32, GROUP_MAX_EPS_IQ2_S, |s2, v| 0.25 * s2 + v * v)
    } else {
        (sumx2 / QK_K as f32, GROUP_MAX_EPS, unit_weight)
    };
    let mut h = Halves { scales: [0.0; QK_K / 16], index: [0; QK_K / 8], signs: [0; QK_K / 8], max_scale: 0.0 };
    for (ib, xb) in x.chunks_exact(16).enumerate() {
        let (mut weight, mut waux, mut xval) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        weights(xb, qw.map(|q| &q[16 * ib..16 * ib + 16]), sigma2, fallback, &mut weight);
        sqrt_weights(&weight, &mut waux);
        let mut signs = [0u8; 2];
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            signs[k] = if is_s {
                fold_signs(&xb[r.clone()], &mut xval[r])
            } else {
                fold_signs_even(&xb[r.clone()], &weight[r.clone()], &mut xval[r])
            };
        }
        let max = c_max(&xval);
        if max < eps {
            continue;
        }
        let mut l = [0i8; 16];
        let start = max / (2 * KMAX - 1) as f32;
        let mut scale = search(lat, &params, &Values { xval: &xval, weight: &weight, waux: &waux }, max, start, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = if is_s { !*s } else { !*s & 127 };
            }
        }
        for k in 0..2 {
            h.index[2 * ib + k] = lat.grid_index(&l[8 * k..8 * k + 8]) as u16;
            h.signs[2 * ib + k] = signs[k];
        }
        h.scales[ib] = scale;
        h.max_scale = if h.max_scale > scale { h.max_scale } else { scale };
    }
    h
}

/// The packed 4-bit scales of the 16 halves (`scales[ib/2]`, low nibble first) against `d`.
fn half_scales(h: &Halves, d: f32) -> [u8; QK_K / 32] {
    let id = 1.0 / d;
    let mut out = [0u8; QK_K / 32];
    for (ib, &s) in h.scales.iter().enumerate() {
        out[ib / 2] |= scale_code(id, s, 15) << (4 * (ib % 2));
    }
    out
}

fn iq2_xs_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq2Xs {
    let h = halves(x, qw, false);
    let mut b = BlockIq2Xs { d: Half::ZERO, qs: [0u16.into(); 32], scales: [0; 8] };
    if h.max_scale == 0.0 {
        return b;
    }
    let d = h.max_scale / 31.0;
    b.d = Half::from_f32(d);
    b.scales = half_scales(&h, d);
    for (q, (&j, &s)) in b.qs.iter_mut().zip(h.index.iter().zip(&h.signs)) {
        *q = (j | u16::from(s) << 9).into();
    }
    b
}

fn iq2_s_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq2S {
    let h = halves(x, qw, true);
    let mut b = BlockIq2S { d: Half::ZERO, qs: [0; 32], signs: [0; 32], qh: [0; 8], scales: [0; 8] };
    // Indices and signs are stored even when the whole block has scale 0.
    for (i8, &j) in h.index.iter().enumerate() {
        b.qs[i8] = (j & 255) as u8;
        b.qh[i8 / 4] |= ((j >> 8) as u8) << (2 * (i8 % 4));
        b.signs[i8] = h.signs[i8];
    }
    if h.max_scale == 0.0 {
        return b;
    }
    let d = h.max_scale / 31.0;
    b.d = Half::from_f32(d * 0.9875);
    b.scales = half_scales(&h, d);
    b
}

/// IQ2_XXS rows.
pub(crate) fn quantize_row_iq2_xxs(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq2_xxs_block);
}

/// IQ2_XS rows.
pub(crate) fn quantize_row_iq2_xs(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq2_xs_block);
}

/// IQ2_S rows.
pub(crate) fn quantize_row_iq2_s(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq2_s_block);
}
