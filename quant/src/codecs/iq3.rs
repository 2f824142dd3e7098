//! IQ3_XXS and IQ3_S: groups of 4 magnitudes on a 4-dimensional grid (levels `2l + 1`, `l < 8`, times a
//! 32-value sub-block scale), with signs. Ports `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl`
//! (with `IQ3S_BLOCK_SIZE = 32`) and their `quantize_iq3_*` row loops from `ggml/src/ggml-quants.c` of
//! llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: per 256 values `sigma2 = 2·Σx²/256`, weights `qw·sqrt(sigma2 + x²)` or, without an importance
//! matrix, `x²`. IQ3_XXS stores 7 parity-corrected sign bits per 8 values and `d = 1.0125·max_scale/31`;
//! IQ3_S stores 8 sign bits, 9-bit grid indices and `d = 1.033·max_scale/31`. Quirk kept from upstream:
//! IQ3_S advances its grid-index and sign cursors only for sub-blocks that are not all zero, so after an
//! all-zero sub-block the following sub-blocks' indices and signs are stored one slot early.

use super::for_each_block;
use super::grid_search::{
    c_max, fold_signs, fold_signs_even, scale_code, search, sqrt_weights, square_weight, weights, Refit, Search, Values,
};
use super::lattice;
use super::search::sum_squares;
use crate::blocks::{BlockIq3S, BlockIq3Xxs, Half, QK_K};

/// `kMaxQ`: levels 0..8.
const KMAX: i32 = 8;
/// `GROUP_MAX_EPS_IQ3_XXS`.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

fn iq3_xxs_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq3Xxs {
    let lat = lattice::iq3_xxs();
    let params = Search { kmax: KMAX, steps: -15..=15, step: 0.2, refit: Refit::OffGrid, on_grid_initially: true };
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut b = BlockIq3Xxs { d: Half::ZERO, qs: [0; 64], scales_and_signs: [0u32.into(); 8] };
    let mut scales = [0.0f32; QK_K / 32];
    let mut signs_words = [0u32; QK_K / 32];
    let mut max_scale = 0.0f32;
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let (mut weight, mut waux, mut xval) = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        weights(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), sigma2, square_weight, &mut weight);
        sqrt_weights(&weight, &mut waux);
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = fold_signs_even(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
        }
        let max = c_max(&xval);
        if max < GROUP_MAX_EPS_IQ3_XXS {
            continue;
        }
        let mut l = [0i8; 32];
        let v = Values { xval: &xval, weight: &weight, waux: &waux };
        let mut scale = search(lat, &params, &v, max, max / (2 * KMAX - 1) as f32, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..8 {
            b.qs[8 * ib + k] = lat.grid_index(&l[4 * k..4 * k + 4]) as u8;
        }
        signs_words[ib] = signs.iter().enumerate().fold(0u32, |w, (k, &s)| w | u32::from(s) << (7 * k));
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        b.qs = [0; 64];
        return b;
    }
    let d = max_scale / 31.0;
    b.d = Half::from_f32(d * 1.0125);
    let id = 1.0 / d;
    for (ib, out) in b.scales_and_signs.iter_mut().enumerate() {
        *out = (signs_words[ib] | u32::from(scale_code(id, scales[ib], 15)) << 28).into();
    }
    b
}

fn iq3_s_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq3S {
    let lat = lattice::iq3_s();
    let params =
        Search { kmax: KMAX, steps: -9..=9, step: 0.2, refit: Refit::AllIfAnyOffGrid, on_grid_initially: false };
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut b = BlockIq3S { d: Half::ZERO, qs: [0; 64], qh: [0; 8], signs: [0; 32], scales: [0; 4] };
    let mut scales = [0.0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    // Upstream's `qs`/`signs` pointers, advanced only past sub-blocks that were quantized.
    let mut slot = 0usize;
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let (mut weight, mut waux, mut xval) = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        weights(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), sigma2, square_weight, &mut weight);
        sqrt_weights(&weight, &mut waux);
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = fold_signs(&xb[r.clone()], &mut xval[r]);
        }
        let max = c_max(&xval);
        if max == 0.0 {
            continue;
        }
        let mut l = [0i8; 32];
        let v = Values { xval: &xval, weight: &weight, waux: &waux };
        let mut scale = search(lat, &params, &v, max, max / (2 * KMAX - 1) as f32, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s;
            }
        }
        for k in 0..8 {
            let j = lat.grid_index(&l[4 * k..4 * k + 4]);
            b.qs[8 * slot + k] = (j & 255) as u8;
            b.qh[ib] |= ((j >> 8) as u8) << k;
        }
        b.signs[4 * slot..4 * slot + 4].copy_from_slice(&signs);
        slot += 1;
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return b;
    }
    let d = max_scale / 31.0;
    b.d = Half::from_f32(d * 1.033);
    let id = 1.0 / d;
    for (i, out) in b.scales.iter_mut().enumerate() {
        *out = scale_code(id, scales[2 * i], 15) | scale_code(id, scales[2 * i + 1], 15) << 4;
    }
    b
}

/// IQ3_XXS rows.
pub(crate) fn quantize_row_iq3_xxs(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq3_xxs_block);
}

/// IQ3_S rows.
pub(crate) fn quantize_row_iq3_s(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq3_s_block);
}
