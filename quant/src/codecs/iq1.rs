//! IQ1_S and IQ1_M: groups of 8 ternary values (`-1, 0, 1` shifted by `±IQ1S_DELTA`) from a 2048-point
//! grid, times a sub-block scale. Ports `quantize_row_iq1_s_impl`, `quantize_row_iq1_m_impl` and
//! `iq1_find_best_neighbour2` from `ggml/src/ggml-quants.c` of llama.cpp b9928 (commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: per sub-block (32 values for IQ1_S, 16 for IQ1_M) the values are sorted (a stable sort, as
//! glibc's merge-sort `qsort` leaves equal values in index order) and every split into three runs
//! (`-1, 0, +1`) is scored exactly, for each delta sign (IQ1_M: per 8-value half); off-grid groups move to
//! their best neighbour. `sigma2 = 2·Σx²/256`, weights `qw·sqrt(sigma2 + x²)` (IQ1_M without an
//! importance matrix: `x²`; IQ1_S needs one). IQ1_S stores `d = 1.125·max_scale/15`; IQ1_M refits `d`
//! over the whole super-block and stores `1.1125·d` spread over the scale words' top nibbles.

use super::for_each_block;
use super::grid_search::{scale_code, square_weight, unit_weight, weights};
use super::lattice::{self, Lattice, Lookup};
use super::search::sum_squares;
use crate::blocks::kvalues::IQ1S_DELTA;
use crate::blocks::{BlockIq1M, BlockIq1S, Half, QK_K};

/// `GROUP_MAX_EPS_IQ1_S`, `GROUP_MAX_EPS_IQ1_M`.
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// The three values of each delta sign: `x_p` (delta `+δ`) and `x_m` (delta `-δ`).
const X_P: [f32; 3] = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
const X_M: [f32; 3] = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];

/// `iq1_find_best_neighbour2`: the neighbour minimising `Σ w·(scale·xx[l] - x)²` (first on ties).
fn best_neighbour2(lat: &Lattice<8>, neighbours: &[u16], x: &[f32], w: &[f32], scale: f32, xx: &[f32; 3]) -> usize {
    let mut best_score = f32::MAX;
    let mut best = neighbours.first().map_or(0, |&j| usize::from(j));
    for &j in neighbours {
        let pg = lat.point(usize::from(j));
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let q = xx[((pg[i] - 1) / 2) as usize];
            let diff = scale * q - x[i];
            d2 += w[i] * diff * diff;
        }
        if d2 < best_score {
            best_score = d2;
            best = usize::from(j);
        }
    }
    best
}

/// Grid index of group levels `l` (0, 1, 2), or the best neighbour when off the grid; and whether it was on.
fn group_index(lat: &Lattice<8>, l: &[i8], x: &[f32], w: &[f32], scale: f32, xx: &[f32; 3]) -> (usize, bool) {
    match lat.lookup(Lattice::<8>::index(l)) {
        Lookup::OnGrid(j) => (j, true),
        Lookup::Neighbours(n) => (best_neighbour2(lat, n, x, w, scale, xx), false),
    }
}

/// `Σ w·q·x` and `Σ w·q²` over the groups' grid points, `q = xx_k[level]`, accumulated in order.
fn refit(lat: &Lattice<8>, index: &[usize], xx: &[&[f32; 3]], x: &[f32], w: &[f32]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for (k, &j) in index.iter().enumerate() {
        let pg = lat.point(j);
        for i in 0..8 {
            let wi = w[8 * k + i];
            let q = xx[k][((pg[i] - 1) / 2) as usize];
            sumqx += wi * q * x[8 * k + i];
            sumq2 += wi * q * q;
        }
    }
    (sumqx, sumq2)
}

/// Indices of `x` in ascending order of value, equal values in index order.
fn sorted_order<const N: usize>(x: &[f32]) -> [usize; N] {
    let mut idx: [usize; N] = std::array::from_fn(|i| i);
    idx.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

/// C's `MAX(fabsf(x[0]), ...)` from the first element.
fn abs_max(x: &[f32]) -> f32 {
    let mut m = x[0].abs();
    for &v in &x[1..] {
        let a = v.abs();
        m = if m > a { m } else { a };
    }
    m
}

/// Levels 0, 1, 2 from a split of the sorted order at `i1 ≤ i2`.
fn split_levels<const N: usize>(idx: &[usize; N], i1: usize, i2: usize) -> [i8; N] {
    let mut l = [0i8; N];
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
    l
}

fn iq1_s_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq1S {
    const BS: usize = 32;
    let lat = lattice::iq1();
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut b = BlockIq1S { d: Half::ZERO, qs: [0; 32], qh: [0u16.into(); 8] };
    let mut scales = [0.0f32; QK_K / BS];
    let mut shifts = [0i8; QK_K / BS];
    let mut max_scale = 0.0f32;
    for (ib, xb) in x.chunks_exact(BS).enumerate() {
        let mut weight = [0.0f32; BS];
        weights(xb, qw.map(|q| &q[BS * ib..BS * ib + BS]), sigma2, unit_weight, &mut weight);
        if abs_max(xb) < GROUP_MAX_EPS_IQ1_S {
            shifts[ib] = 1;
            continue;
        }
        let idx = sorted_order::<BS>(xb);
        let mut sumx = [0.0f32; BS + 1];
        let mut sumw = [0.0f32; BS + 1];
        for (j, &i) in idx.iter().enumerate() {
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        let mut best_score = -f32::MAX;
        let mut scale = abs_max(xb);
        let mut best: Option<(usize, usize, i8)> = None;
        for i1 in 0..=BS {
            for i2 in i1..=BS {
                for (shift, xv) in [(1i8, &X_P), (-1, &X_M)] {
                    let sumqx =
                        (sumx[i1] - sumx[0]) * xv[0] + (sumx[i2] - sumx[i1]) * xv[1] + (sumx[BS] - sumx[i2]) * xv[2];
                    let sumq2 = (sumw[i1] - sumw[0]) * xv[0] * xv[0]
                        + (sumw[i2] - sumw[i1]) * xv[1] * xv[1]
                        + (sumw[BS] - sumw[i2]) * xv[2] * xv[2];
                    if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        best = Some((i1, i2, shift));
                    }
                }
            }
        }
        let Some((i1, i2, mut shift)) = best else {
            shifts[ib] = 1;
            continue;
        };
        let mut l = split_levels(&idx, i1, i2);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            shift = -shift;
        }
        let xx = if shift == 1 { &X_P } else { &X_M };
        let mut index = [0usize; BS / 8];
        let mut all_on_grid = true;
        for k in 0..BS / 8 {
            let r = 8 * k..8 * k + 8;
            let (j, on) = group_index(lat, &l[r.clone()], &xb[r.clone()], &weight[r], scale, xx);
            index[k] = j;
            all_on_grid &= on;
        }
        if !all_on_grid {
            let (sumqx, sumq2) = refit(lat, &index, &[xx; BS / 8], xb, &weight);
            if sumqx > 0.0 && sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        let mut h = 0u16;
        for (k, &j) in index.iter().enumerate() {
            b.qs[(BS / 8) * ib + k] = (j & 255) as u8;
            h |= ((j >> 8) as u16) << (3 * k);
        }
        b.qh[ib] = h.into();
        scales[ib] = scale;
        shifts[ib] = shift;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return b;
    }
    let d = max_scale / 15.0;
    b.d = Half::from_f32(d * 1.125);
    let id = 1.0 / d;
    for ib in 0..QK_K / BS {
        let mut l = u16::from(scale_code(id, scales[ib], 7));
        if shifts[ib] == -1 {
            l |= 8;
        }
        b.qh[ib] = (b.qh[ib].get() | l << 12).into();
    }
    b
}

/// The delta-sign tables of an IQ1_M sub-block's two halves for `k` (`0: +,+  1: +,-  2: -,+  3: -,-`).
fn halves_xx(k: i8) -> [&'static [f32; 3]; 2] {
    [if k < 2 { &X_P } else { &X_M }, if k % 2 == 0 { &X_P } else { &X_M }]
}

/// The IQ1_M split search of one 16-value sub-block: `(i1, i2, k, scale)` of the best split and
/// delta-sign combination, with prefix sums kept per 8-value half.
fn iq1_m_split(xb: &[f32], weight: &[f32], idx: &[usize; 16]) -> Option<(usize, usize, i8, f32)> {
    const BS: usize = 16;
    let mut px = [[0.0f32; BS + 1]; 2];
    let mut pw = [[0.0f32; BS + 1]; 2];
    for (j, &i) in idx.iter().enumerate() {
        let h = usize::from(i >= BS / 2);
        px[h][j + 1] = px[h][j] + weight[i] * xb[i];
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = pw[h][j] + weight[i];
        pw[1 - h][j + 1] = pw[1 - h][j];
    }
    let txs = [px[0][BS], px[1][BS]];
    let tws = [pw[0][BS], pw[1][BS]];
    let (p2, m2) = (X_P[2], X_M[2]);
    let cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1];
    let cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
    let cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1];
    let cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
    let mut best_score = -f32::MAX;
    let mut best = None;
    for i1 in 0..=BS {
        for i2 in i1..=BS {
            let (mut qx_p, mut qx_m, mut q2_p, mut q2_m) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
            for h in 0..2 {
                let sx = px[h][i1] + px[h][i2];
                qx_p[h] = txs[h] * p2 - sx;
                qx_m[h] = txs[h] * m2 - sx;
                q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
            }
            let sumqx = [qx_p[0] + qx_p[1], qx_p[0] + qx_m[1], qx_m[0] + qx_p[1], qx_m[0] + qx_m[1]];
            let sumq2 = [q2_p[0] + q2_p[1], q2_p[0] + q2_m[1], q2_m[0] + q2_p[1], q2_m[0] + q2_m[1]];
            for k in 0..4 {
                if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                    let scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    best = Some((i1, i2, k as i8, scale));
                }
            }
        }
    }
    best
}

fn iq1_m_block(x: &[f32], qw: Option<&[f32]>) -> BlockIq1M {
    const BS: usize = 16;
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let lat = lattice::iq1();
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut b = BlockIq1M { qs: [0; 32], qh: [0; 16], scales: [0u16.into(); 4] };
    let mut scales = [0.0f32; QK_K / BS];
    let mut shifts = [0i8; QK_K / BS];
    let mut max_scale = 0.0f32;
    for (ib, xb) in x.chunks_exact(BS).enumerate() {
        let mut weight = [0.0f32; BS];
        weights(xb, qw.map(|q| &q[BS * ib..BS * ib + BS]), sigma2, square_weight, &mut weight);
        if abs_max(xb) < GROUP_MAX_EPS_IQ1_M {
            continue;
        }
        let idx = sorted_order::<BS>(xb);
        let Some((i1, i2, mut k, mut scale)) = iq1_m_split(xb, &weight, &idx) else {
            continue;
        };
        let mut l = split_levels(&idx, i1, i2);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            k = 3 - k;
        }
        let xx = halves_xx(k);
        let mut index = [0usize; 2];
        let mut all_on_grid = true;
        for h in 0..2 {
            let r = 8 * h..8 * h + 8;
            let (j, on) = group_index(lat, &l[r.clone()], &xb[r.clone()], &weight[r], scale, xx[h]);
            index[h] = j;
            all_on_grid &= on;
        }
        if !all_on_grid {
            let (sumqx, sumq2) = refit(lat, &index, &xx, xb, &weight);
            if sumqx > 0.0 && sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        b.qs[2 * ib] = (index[0] & 255) as u8;
        b.qs[2 * ib + 1] = (index[1] & 255) as u8;
        b.qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = k;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return b;
    }
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for (ib, xb) in x.chunks_exact(BS).enumerate() {
        let l = scale_code(id, scales[ib], 7);
        sc[ib / 4] |= u16::from(l) << (3 * (ib % 4));
        b.qh[ib] |= MASKS[shifts[ib] as usize];
        let mut weight = [0.0f32; BS];
        weights(xb, qw.map(|q| &q[BS * ib..BS * ib + BS]), sigma2, square_weight, &mut weight);
        let xx = halves_xx(shifts[ib]);
        let m = (2 * i32::from(l) + 1) as f32;
        for h in 0..2 {
            let j = usize::from(b.qs[2 * ib + h]) | ((usize::from(b.qh[ib]) << (8 - 4 * h)) & 0x700);
            let pg = lat.point(j);
            for i in 0..8 {
                let w = weight[8 * h + i];
                let q = xx[h][((pg[i] - 1) / 2) as usize] * m;
                sumqx += w * q * xb[8 * h + i];
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    let s = Half::from_f32(d * 1.1125).bits();
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    b.scales = sc.map(Into::into);
    b
}

/// IQ1_S rows.
pub(crate) fn quantize_row_iq1_s(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq1_s_block);
}

/// IQ1_M rows.
pub(crate) fn quantize_row_iq1_m(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, imatrix, dst, iq1_m_block);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal values keep their index order (glibc's `qsort` is a stable merge sort), which decides which of
    /// them fall on each side of a split.
    #[test]
    fn sort_is_stable() {
        let x = [1.0f32, 0.5, 1.0, 0.5, -2.0, 0.5, 0.0, 0.0];
        assert_eq!(sorted_order::<8>(&x), [4, 6, 7, 1, 3, 5, 0, 2]);
        assert_eq!(split_levels(&sorted_order::<8>(&x), 1, 3), [2, 2, 2, 2, 0, 2, 1, 1]);
    }

    /// Delta-sign tables of IQ1_M's four combinations and the exact values they hold.
    #[test]
    fn delta_tables() {
        assert_eq!(X_P, [-0.875, 0.125, 1.125]);
        assert_eq!(X_M, [-1.125, -0.125, 0.875]);
        assert_eq!(halves_xx(0), [&X_P, &X_P]);
        assert_eq!(halves_xx(1), [&X_P, &X_M]);
        assert_eq!(halves_xx(2), [&X_M, &X_P]);
        assert_eq!(halves_xx(3), [&X_M, &X_M]);
    }

    #[test]
    fn zero_blocks_encode_as_zero() {
        let x = [0.0f32; QK_K];
        let w = [1.0f32; QK_K];
        assert_eq!(iq1_s_block(&x, Some(&w)), BlockIq1S { d: Half::ZERO, qs: [0; 32], qh: [0u16.into(); 8] });
        assert_eq!(iq1_m_block(&x, None), BlockIq1M { qs: [0; 32], qh: [0; 16], scales: [0u16.into(); 4] });
    }
}
