//! The scale searches shared by the legacy, k-quant and IQ4 quantizers, ported from
//! `ggml/src/ggml-quants.c` of llama.cpp (b9928, commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: every function performs the same IEEE f32 operations in the same order as the C code
//! (`a*b*c` is `(a*b)*c`, integers are converted to f32 where C converts them, no fused multiply-add),
//! so the results are bit-identical. Ties are broken exactly as upstream (strict `>`/`<`).
//! Quant indices are stored with C's conversion rules: an `int` stored into a `uint8_t`/`int8_t` wraps.

use super::search_lanes::{trials, Fit, Group};
use super::search_qx::{trial_iscale, trial_sums, TRIALS};
use crate::blocks::scalar::nearest_int;

/// `GROUP_MAX_EPS`: groups whose largest magnitude is below this are treated as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Longest group the searches handle (callers use 16 or 32); weights are staged in stack buffers.
pub(super) const MAX_GROUP: usize = 32;

/// The weights `make_qx_quants` uses: `qw` when given, else by `rmse_type` (1: x², 2: 1, 3: |x|, else √|x|).
#[inline]
fn qx_weights(x: &[f32], qw: Option<&[f32]>, rmse_type: i32, buf: &mut [f32; MAX_GROUP]) {
    for (i, (w, &xi)) in buf.iter_mut().zip(x).enumerate() {
        *w = match qw {
            Some(q) => q[i],
            None => match rmse_type {
                1 => xi * xi,
                2 => 1.0,
                3 => xi.abs(),
                _ => xi.abs().sqrt(),
            },
        };
    }
}

/// `Σx²`, accumulated in order (the `sumx2` of the quantizers).
#[inline]
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for &v in x {
        sum += v * v;
    }
    sum
}

/// The importance weights of the `_impl` quantizers, `w[i] = qw[i]·sqrt(sigma2 + x[i]²)`; returns their
/// sum, accumulated in order.
#[inline]
pub(crate) fn importance_weights(x: &[f32], qw: &[f32], sigma2: f32, w: &mut [f32]) -> f32 {
    for ((w, &q), &v) in w.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
    let mut sum = 0.0f32;
    for &v in &w[..x.len()] {
        sum += v;
    }
    sum
}

/// The largest value by strict `>` starting from 0 (0 when none is positive): the `max_scale`/`max_min`
/// of the k-quant ref paths.
#[inline]
pub(crate) fn max_positive(v: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &s in v {
        if s > max {
            max = s;
        }
    }
    max
}

/// The element with the largest magnitude (first one on ties, strict `>`), and that magnitude.
#[inline]
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `make_qx_quants`: symmetric quantization of `x` to `L[i] ∈ [0, 2·nmax)` (stored with offset `nmax`)
/// with a weighted least-squares scale, trying 18 perturbed inverse scales (side by side: [`super::search_qx`]).
/// Returns the scale.
///
/// `rmse_type` selects the default weights when `qw` is `None` (1: x², 2: 1, 3: |x|, else √|x|);
/// 0 skips the search, a negative value returns early after the first fit.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32, qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = (-nmax) as f32 / max;
    if rmse_type == 0 {
        for (l_i, &xi) in l_out.iter_mut().zip(x) {
            let l = nearest_int(iscale * xi);
            *l_i = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 { (-rmse_type, true) } else { (rmse_type, false) };
    assert!(n <= MAX_GROUP, "group of {n} values");
    let mut wbuf = [0.0f32; MAX_GROUP];
    qx_weights(x, qw, rmse_type, &mut wbuf);
    let weights = &wbuf[..n];
    let l_out = &mut l_out[..n];
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weights[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 { 0.5 * (scale + 1.0 / iscale) } else { 1.0 / iscale };
    }
    // The trials' sums side by side, accepted in upstream's order; the indices are those of the last accepted.
    let mut best = scale * sumlx;
    let mut accepted = None;
    for (&is, (sumlx, suml2)) in TRIALS.iter().zip(trial_sums(nmax, x, weights, max)) {
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            accepted = Some(is);
        }
    }
    if let Some(is) = accepted {
        iscale = trial_iscale(nmax, is, max);
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
    }
    scale
}

/// `make_q3_quants`: symmetric quantization with x² weights refined coordinate-wise (up to 5 passes).
/// `L[i] ∈ [0, 2·nmax)` with offset `nmax`. Returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as i32;
                let mut slx = sumlx - w * x[i] * li as f32;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li as f32 * li as f32;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != li {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in l_out[..n].iter_mut() {
            *l = (*l as i32 + nmax) as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (l_i, &xi) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *l_i = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// Parameters of the asymmetric (scale, min) searches `make_qkx2_quants` / `make_qkx3_quants`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MinSearch {
    /// Largest quant index.
    pub nmax: i32,
    /// Offset of the first trial inverse scale (`rmin`).
    pub rmin: f32,
    /// Step between trial inverse scales (`rdelta`).
    pub rdelta: f32,
    /// Number of extra trials (`nstep`; trials `0..=nstep`).
    pub nstep: i32,
    /// Minimise the weighted absolute error instead of the squared error.
    pub use_mad: bool,
}

#[inline]
pub(super) fn err_term(diff: f32, use_mad: bool) -> f32 {
    if use_mad {
        diff.abs()
    } else {
        diff * diff
    }
}

/// `make_qkx2_quants`: asymmetric quantization `x ≈ scale·L + min` with `L ∈ [0, nmax]`, `min ≤ 0`.
/// Returns `(scale, -min)`; `laux` is scratch of the same length as `x`.
pub(crate) fn make_qkx2_quants(
    p: MinSearch,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    qkx_search::<false>(p, x, weights, l_out, laux)
}

/// `make_qkx3_quants`: [`make_qkx2_quants`] with x² weights when `weights` is `None`, and the
/// guarded index computation of the current upstream source (`v > 0 ? nearest_int(MIN(v, nmax)) : 0`).
/// Returns `(scale, -min)`.
pub(crate) fn make_qkx3_quants(
    p: MinSearch,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    match weights {
        Some(w) => qkx_search::<true>(p, x, w, l_out, laux),
        None => {
            assert!(x.len() <= MAX_GROUP, "group of {} values", x.len());
            let mut wbuf = [0.0f32; MAX_GROUP];
            for (w, &xi) in wbuf.iter_mut().zip(x) {
                *w = xi * xi;
            }
            qkx_search::<true>(p, x, &wbuf[..x.len()], l_out, laux)
        }
    }
}

/// The search shared by `make_qkx2_quants` (`QKX3 = false`) and `make_qkx3_quants` (`QKX3 = true`).
///
/// The two upstream functions differ in three places, reproduced here: the degenerate test
/// (`max == min` vs `max <= min`), and how a trial index is computed — qkx2 clamps
/// `nearest_int(v)` to `[0, nmax]`, qkx3 uses `v > 0 ? nearest_int(MIN(v, nmax)) : 0`. For finite
/// inputs with `max > min` the two forms agree; they differ only where `v` is NaN or huge.
/// Note that `min` moves to the best fit found so far, and later trials use the moved value. The trials run
/// eight at a time ([`super::search_lanes`]), with the same bits.
fn qkx_search<const QKX3: bool>(
    p: MinSearch,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (weights, l_out, laux) = (&weights[..n], &mut l_out[..n], &mut laux[..n]);
    let nmax = p.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if QKX3 { max <= min } else { max == min };
    if degenerate {
        l_out.fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err_term(diff, p.use_mad);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut fit = Fit { scale, min, error: best_error };
    trials::<QKX3>(p, Group { x, weights, sum_w, sum_x, max }, &mut fit, l_out, laux);
    (fit.scale, -fit.min)
}

/// `make_qp_quants`: quantization of non-negative values (the sub-block scales and mins of a
/// super-block) to `L ∈ [0, nmax]` with weights `qw`, trying 8 perturbed scales and then refining
/// coordinate-wise. Returns the scale.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        // C's MAX(max, x[i]) is `max > x ? max : x`.
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    // The same coordinate-wise refinement as `make_q3_quants`, but not the same guards: here both partial
    // sums must be positive before the update and the index is only capped above; there `slx > 0` alone is
    // tested first, `sl2 > 0` after the update, and the index is clamped to [-nmax, nmax). Kept apart on purpose.
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as i32;
            let mut slx = sumlx - w * x[i] * li as f32;
            let mut sl2 = suml2 - w * li as f32 * li as f32;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != li {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qx_quants_all_zero() {
        let x = [0.0f32; 16];
        let mut l = [7i8; 16];
        assert_eq!(make_qx_quants(32, &x, &mut l, 1, None), 0.0);
        assert_eq!(l, [0; 16]);
        let tiny = [1e-16f32; 16];
        assert_eq!(make_qx_quants(8, &tiny, &mut l, 1, None), 0.0);
    }

    #[test]
    fn qx_quants_exact_grid_is_recovered() {
        // Values on the grid d·q with d = 0.5 and q ∈ [-8, 7]: the search must find d exactly,
        // and `d·(L - 8)` (the Q4_0 dequantization) gives x back.
        let x: Vec<f32> = (0..16).map(|i| 0.5 * (i as f32 - 8.0)).collect();
        let mut l = [0i8; 16];
        let d = make_qx_quants(8, &x, &mut l, 1, None);
        for i in 0..16 {
            let back = d * (l[i] as f32 - 8.0);
            assert!((back - x[i]).abs() < 1e-6, "{i}: {back} vs {}", x[i]);
        }
    }

    #[test]
    fn q3_quants_constant_block() {
        let x = [0.25f32; 16];
        let mut l = [0i8; 16];
        let d = make_q3_quants(4, &x, &mut l, true);
        // max = 0.25 ⇒ iscale = -16 ⇒ every l = -4, stored as 0; scale = -1/16.
        assert_eq!(l, [0; 16]);
        assert_eq!(d, -0.0625);
    }

    #[test]
    fn qkx2_constant_and_positive_blocks() {
        let p = MinSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
        let w = [1.0f32; 32];
        let mut l = [9u8; 32];
        let mut aux = [0u8; 32];
        // Constant negative block: min = max ⇒ L = 0, the_min = -x.
        let x = [-0.5f32; 32];
        assert_eq!(make_qkx2_quants(p, &x, &w, &mut l, &mut aux), (0.0, 0.5));
        assert_eq!(l, [0; 32]);
        // All-zero block: min clamps to 0 = max.
        let z = [0.0f32; 32];
        let (s, m) = make_qkx2_quants(p, &z, &w, &mut l, &mut aux);
        assert_eq!(s, 0.0);
        assert_eq!(m, 0.0);
        // Constant positive block: min is forced to 0, so the scale carries the value.
        let c = [3.0f32; 32];
        let (s, m) = make_qkx2_quants(p, &c, &w, &mut l, &mut aux);
        assert_eq!(m, 0.0);
        for &li in &l {
            assert!((s * li as f32 - 3.0).abs() < 1e-5);
        }
    }

    #[test]
    fn qkx3_without_weights_uses_squares() {
        let p = MinSearch { nmax: 15, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
        let x: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = x.iter().map(|v| v * v).collect();
        let (mut l1, mut l2, mut aux) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        let a = make_qkx3_quants(p, &x, None, &mut l1, &mut aux);
        let b = make_qkx3_quants(p, &x, Some(&w), &mut l2, &mut aux);
        assert_eq!(a.0.to_bits(), b.0.to_bits());
        assert_eq!(a.1.to_bits(), b.1.to_bits());
        assert_eq!(l1, l2);
        let z = [0.0f32; 32];
        assert_eq!(make_qkx3_quants(p, &z, None, &mut l1, &mut aux), (0.0, 0.0));
    }

    #[test]
    fn qp_quants_zero_and_exact() {
        let w = [1.0f32; 8];
        let mut l = [5u8; 8];
        assert_eq!(make_qp_quants(63, &[0.0; 8], &mut l, &w), 0.0);
        assert_eq!(l, [0; 8]);
        // Values on an exact grid of step 0.01 with the maximum at index 63: recovered exactly.
        let grid = [63u8, 1, 5, 20, 33, 40, 50, 62];
        let x: Vec<f32> = grid.iter().map(|&g| g as f32 * 0.01).collect();
        let d = make_qp_quants(63, &x, &mut l, &w);
        assert_eq!(l, grid);
        assert!((d - 0.01).abs() < 1e-7, "{d}");
    }
}
