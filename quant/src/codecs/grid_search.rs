//! The scale search shared by the IQ2 and IQ3 quantizers: fold signs into magnitudes, try a range of
//! inverse scales, snap each group of `N` levels onto the grid (or to its best neighbour), keep the
//! scale with the best weighted fit, then refit once at that scale. Ported from the bodies of
//! `quantize_row_iq2_xxs_impl`, `quantize_row_iq2_xs_impl`, `quantize_row_iq2_s_impl`,
//! `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl` in `ggml/src/ggml-quants.c` of llama.cpp
//! b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62), which differ only in the parameters of
//! [`Search`]:
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: the same f32 operations in the same order as upstream (no FMA; `a*b*c` is `(a*b)*c`), ties
//! broken as upstream (strict `<` / `>`), so the chosen levels and scales are bit-identical.

use std::ops::RangeInclusive;

use super::lattice::{Lattice, Lookup};
use super::search::importance_weights;
use crate::blocks::scalar::nearest_int;

/// Which groups the final refit moves back onto the grid at the chosen scale.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refit {
    /// Every group, whenever the scale is positive (IQ2_XXS).
    Always,
    /// Only the groups that were off the grid at the chosen scale, if any (IQ2_XS, IQ2_S, IQ3_XXS).
    OffGrid,
    /// Every group, if any was off the grid at the chosen scale (IQ3_S).
    AllIfAnyOffGrid,
}

/// The parameters that distinguish the five searches.
pub(crate) struct Search {
    /// Levels are `0..kmax` (`kMaxQ`), values `2l + 1`.
    pub kmax: i32,
    /// The perturbations `is` tried: inverse scale `(2·kmax - 1 + is·step)/max`.
    pub steps: RangeInclusive<i32>,
    pub step: f32,
    pub refit: Refit,
    /// Whether groups count as on the grid before any candidate is accepted (false only for IQ3_S).
    pub on_grid_initially: bool,
}

/// Weights of one sub-block: `qw·sqrt(sigma2 + x²)`, or `fallback(sigma2, x)` without an importance matrix.
pub(crate) fn weights(x: &[f32], qw: Option<&[f32]>, sigma2: f32, fallback: fn(f32, f32) -> f32, w: &mut [f32]) {
    match qw {
        Some(qw) => {
            importance_weights(x, qw, sigma2, w);
        }
        None => {
            for (w, &v) in w.iter_mut().zip(x) {
                *w = fallback(sigma2, v);
            }
        }
    }
}

/// `waux[i] = sqrt(w[i])`: the weights of the neighbour searches.
pub(crate) fn sqrt_weights(w: &[f32], waux: &mut [f32]) {
    for (a, &w) in waux.iter_mut().zip(w) {
        *a = w.sqrt();
    }
}

/// The no-imatrix weight `x²` (IQ3_XXS, IQ3_S, IQ1_M).
pub(crate) fn square_weight(_sigma2: f32, x: f32) -> f32 {
    x * x
}

/// Unit weights for IQ2_XXS, IQ2_XS and IQ1_S, which upstream never runs without an importance matrix:
/// only reached when a caller bypasses [`super::quantize_rows`]'s check.
pub(crate) fn unit_weight(_sigma2: f32, _x: f32) -> f32 {
    1.0
}

/// Largest number of values in one search (a 32-value sub-block).
const MAX_VALUES: usize = 32;

/// C's `MAX` over a slice starting from its first element: `m = m > v ? m : v`.
#[inline]
pub(crate) fn c_max(v: &[f32]) -> f32 {
    let mut m = v[0];
    for &x in &v[1..] {
        m = if m > x { m } else { x };
    }
    m
}

/// The level `clamp(nearest_int(0.5·(id·x - 1)), 0, kmax - 1)` of a magnitude `x` at inverse scale `id`.
#[inline]
pub(crate) fn level(id: f32, x: f32, kmax: i32) -> i8 {
    nearest_int(0.5 * (id * x - 1.0)).clamp(0, kmax - 1) as i8
}

/// `|x|` of one group of 8 into `xval`, with its sign bits (bit `i` set for a negative `x[i]`).
#[inline]
pub(crate) fn fold_signs(x: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    for i in 0..8 {
        if x[i] >= 0.0 {
            xval[i] = x[i];
        } else {
            xval[i] = -x[i];
            s |= 1 << i;
        }
    }
    s
}

/// [`fold_signs`] for the types that store 7 sign bits per 8 values: with an odd number of negatives,
/// the value with the least `w·x²` (first on ties) keeps the wrong sign so the count becomes even.
/// Returns the 7 stored bits.
#[inline]
pub(crate) fn fold_signs_even(x: &[f32], w: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = fold_signs(x, xval);
    if s.count_ones() % 2 == 1 {
        let mut imin = 0;
        let mut min = w[0] * x[0] * x[0];
        for i in 1..8 {
            let ax = w[i] * x[i] * x[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// `Σ w·x·q` and `Σ w·q²` with `q = 2l + 1`, accumulated in order.
#[inline]
fn fit(xval: &[f32], weight: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..xval.len() {
        let w = weight[i];
        let q = (2 * i32::from(l[i]) + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Snap group `k` (values `N·k..N·k + N`) at inverse scale `id` onto the grid: on-grid points keep their
/// levels, others take their best neighbour at `scale`. Returns whether the point was on the grid.
#[inline]
fn snap<const N: usize>(
    lat: &Lattice<N>,
    kmax: i32,
    id: f32,
    scale: f32,
    xval: &[f32],
    waux: &[f32],
    l: &mut [i8],
) -> bool {
    for i in 0..N {
        l[i] = level(id, xval[i], kmax);
    }
    match lat.lookup(Lattice::<N>::index(l)) {
        Lookup::OnGrid(_) => true,
        Lookup::Neighbours(n) => {
            lat.best_neighbour(n, xval, waux, scale, l);
            false
        }
    }
}

/// The values one search fits: magnitudes, their weights and the square roots of the weights.
#[derive(Clone, Copy)]
pub(crate) struct Values<'a> {
    pub xval: &'a [f32],
    pub weight: &'a [f32],
    pub waux: &'a [f32],
}

/// The search: `xval` (magnitudes, `n ≤ 32` values in groups of `N`), `weight` and `waux = sqrt(weight)`,
/// `max` the reference magnitude the perturbed inverse scales divide, `scale` and `l` the starting point
/// (kept when no candidate fits better). Returns the final scale; `l` holds on-grid levels unless no
/// candidate was ever accepted and no refit ran.
pub(crate) fn search<const N: usize>(
    lat: &Lattice<N>,
    p: &Search,
    v: &Values<'_>,
    max: f32,
    mut scale: f32,
    l: &mut [i8],
) -> f32 {
    let Values { xval, weight, waux } = *v;
    let n = xval.len();
    let groups = n / N;
    let mut laux = [0i8; MAX_VALUES];
    let mut on_grid = [p.on_grid_initially; MAX_VALUES / 4];
    let mut on_grid_aux = [true; MAX_VALUES / 4];
    let mut best = 0.0f32;
    for is in p.steps.clone() {
        let id = ((2 * p.kmax - 1) as f32 + is as f32 * p.step) / max;
        let this_scale = 1.0 / id;
        for k in 0..groups {
            let r = N * k..N * k + N;
            on_grid_aux[k] = snap(lat, p.kmax, id, this_scale, &xval[r.clone()], &waux[r.clone()], &mut laux[r]);
        }
        let (sumqx, sumq2) = fit(xval, weight, &laux[..n]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l[..n].copy_from_slice(&laux[..n]);
            on_grid[..groups].copy_from_slice(&on_grid_aux[..groups]);
        }
    }
    let any_off = on_grid[..groups].iter().any(|&g| !g);
    let refit = match p.refit {
        Refit::Always => scale > 0.0,
        Refit::OffGrid | Refit::AllIfAnyOffGrid => any_off && scale > 0.0,
    };
    if refit {
        let id = 1.0 / scale;
        for k in 0..groups {
            if p.refit == Refit::OffGrid && on_grid[k] {
                continue;
            }
            let r = N * k..N * k + N;
            snap(lat, p.kmax, id, scale, &xval[r.clone()], &waux[r.clone()], &mut l[r]);
        }
        let (sumqx, sumq2) = fit(xval, weight, &l[..n]);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// The 4-bit sub-block scale `clamp(nearest_int(0.5·(id·s - 1)), 0, max)` of the super-block encoders.
#[inline]
pub(crate) fn scale_code(id: f32, s: f32, max: i32) -> u8 {
    nearest_int(0.5 * (id * s - 1.0)).clamp(0, max) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_sign_folding_flips_the_least_important_value() {
        let x = [1.0, -2.0, 3.0, -0.5, 4.0, -6.0, 7.0, 8.0];
        let w = [1.0; 8];
        let mut xval = [0.0; 8];
        let s = fold_signs_even(&x, &w, &mut xval);
        // Three negatives: the smallest w·x² is x[3] = -0.5, which keeps its (wrong) sign.
        assert_eq!(s, 0b0010_0010);
        assert_eq!(xval, [1.0, 2.0, 3.0, -0.5, 4.0, 6.0, 7.0, 8.0]);
        let s = fold_signs(&x, &mut xval);
        assert_eq!(s, 0b0010_1010);
    }

    #[test]
    fn levels_round_half_to_even_and_clamp() {
        // 0.5·(1·x - 1): x = 2 → 0.5 → 0 (ties to even), x = 4 → 1.5 → 2, x = 100 → clamped.
        assert_eq!(level(1.0, 2.0, 3), 0);
        assert_eq!(level(1.0, 4.0, 3), 2);
        assert_eq!(level(1.0, 100.0, 3), 2);
        assert_eq!(level(1.0, -100.0, 3), 0);
        assert_eq!(c_max(&[1.0, 3.0, 2.0]), 3.0);
    }
}
