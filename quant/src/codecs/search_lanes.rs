//! The trial loop of `make_qkx2_quants` / `make_qkx3_quants` ([`super::search`]), eight trial scales at a time.
//!
//! Upstream tries `nstep + 1` inverse scales one after the other, and each accepted trial moves `min`, which the
//! next trials use. Here eight consecutive trials run side by side, one per lane, with the current `min`; their
//! results are then accepted in the scalar order, and when an accepted trial moves `min` (bit for bit), the
//! trials after it are computed again from the new `min`. Each lane performs exactly the scalar loop's f32
//! operations in the same order (lanes are separate trials, never a reassociated sum), so the result is
//! bit-identical to the scalar loop ([`trials_scalar`], kept as the reference and for groups longer than
//! [`MAX_GROUP`]). The lanes are plain arrays that the compiler vectorizes; on x86-64 an AVX2 build of the same
//! code is chosen at run time.

use super::search::{err_term, MinSearch, MAX_GROUP};
use crate::blocks::scalar::nearest_int;

/// Trials computed side by side (also by [`super::search_qx`]).
pub(super) const LANES: usize = 8;

/// The best fit found so far: scale, min (≤ 0) and weighted error; its indices are in `l_out`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Fit {
    pub scale: f32,
    pub min: f32,
    pub error: f32,
}

/// What the trials search over: the group, its weights and their sums, and the group's max.
#[derive(Clone, Copy)]
pub(super) struct Group<'a> {
    pub x: &'a [f32],
    pub weights: &'a [f32],
    pub sum_w: f32,
    pub sum_x: f32,
    pub max: f32,
}

/// The index of one trial value: qkx2 clamps `nearest_int(v)`, qkx3 uses `v > 0 ? nearest_int(MIN(v, nmax)) : 0`.
#[inline(always)]
fn index<const QKX3: bool>(v: f32, nmax: i32) -> i32 {
    if QKX3 {
        if v > 0.0 {
            nearest_int(v.min(nmax as f32))
        } else {
            0
        }
    } else {
        nearest_int(v).clamp(0, nmax)
    }
}

/// Run trials `0..=p.nstep`, improving `fit` and `l_out` as upstream does.
pub(super) fn trials<const QKX3: bool>(p: MinSearch, g: Group<'_>, fit: &mut Fit, l_out: &mut [u8], laux: &mut [u8]) {
    if g.x.len() > MAX_GROUP || g.weights.len() < g.x.len() {
        return trials_scalar::<QKX3>(p, g, fit, l_out, laux);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { trials_avx2::<QKX3>(p, g, fit, l_out) };
    }
    trials_lanes::<QKX3>(p, g, fit, l_out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
/// # Safety
/// The CPU must support AVX2.
unsafe fn trials_avx2<const QKX3: bool>(p: MinSearch, g: Group<'_>, fit: &mut Fit, l_out: &mut [u8]) {
    trials_lanes::<QKX3>(p, g, fit, l_out);
}

/// The upstream loop, one trial at a time.
pub(super) fn trials_scalar<const QKX3: bool>(
    p: MinSearch,
    g: Group<'_>,
    fit: &mut Fit,
    l_out: &mut [u8],
    laux: &mut [u8],
) {
    let (x, weights, n) = (g.x, g.weights, g.x.len());
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (g.max - fit.min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = index::<QKX3>(iscale * (x[i] - fit.min), p.nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let Some((this_scale, this_min)) = solve(g, sum_l, sum_l2, sum_xl) else { continue };
        let mut cur_error = 0.0f32;
        for i in 0..n {
            let diff = this_scale * laux[i] as f32 + this_min - x[i];
            cur_error += weights[i] * err_term(diff, p.use_mad);
        }
        if cur_error < fit.error {
            l_out[..n].copy_from_slice(&laux[..n]);
            *fit = Fit { scale: this_scale, min: this_min, error: cur_error };
        }
    }
}

/// The least-squares scale and min of one trial's indices, `None` when the system is singular.
#[inline(always)]
fn solve(g: Group<'_>, sum_l: f32, sum_l2: f32, sum_xl: f32) -> Option<(f32, f32)> {
    let d = g.sum_w * sum_l2 - sum_l * sum_l;
    if d > 0.0 {
        let mut this_scale = (g.sum_w * sum_xl - g.sum_x * sum_l) / d;
        let mut this_min = (sum_l2 * g.sum_x - sum_l * sum_xl) / d;
        if this_min > 0.0 {
            this_min = 0.0;
            this_scale = sum_xl / sum_l2;
        }
        Some((this_scale, this_min))
    } else {
        None
    }
}

#[inline(always)]
fn trials_lanes<const QKX3: bool>(p: MinSearch, g: Group<'_>, fit: &mut Fit, l_out: &mut [u8]) {
    let n = g.x.len();
    let (x, weights) = (&g.x[..n], &g.weights[..n]);
    let nmax = p.nmax;
    let mut lq = [[0u8; LANES]; MAX_GROUP];
    let mut is = 0i32;
    while is <= p.nstep {
        let min = fit.min;
        let mut iscale = [0.0f32; LANES];
        for (j, s) in iscale.iter_mut().enumerate() {
            *s = (p.rmin + p.rdelta * (is + j as i32) as f32 + nmax as f32) / (g.max - min);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..n {
            let (xi, w) = (x[i], weights[i]);
            let row = &mut lq[i];
            for j in 0..LANES {
                let l = index::<QKX3>(iscale[j] * (xi - min), nmax);
                row[j] = l as u8;
                let lf = l as f32;
                sum_l[j] += w * lf;
                sum_l2[j] += w * lf * lf;
                sum_xl[j] += w * lf * xi;
            }
        }
        let mut scale = [0.0f32; LANES];
        let mut mins = [0.0f32; LANES];
        let mut ok = [false; LANES];
        for j in 0..LANES {
            if let Some((s, m)) = solve(g, sum_l[j], sum_l2[j], sum_xl[j]) {
                (scale[j], mins[j], ok[j]) = (s, m, true);
            }
        }
        let mut err = [0.0f32; LANES];
        if p.use_mad {
            lane_errors(x, weights, &lq, &scale, &mins, &mut err, f32::abs);
        } else {
            lane_errors(x, weights, &lq, &scale, &mins, &mut err, |d| d * d);
        }
        // Accept in trial order; a moved `min` makes the later lanes stale.
        let live = ((p.nstep - is + 1) as usize).min(LANES);
        let mut next = is + live as i32;
        for j in 0..live {
            if ok[j] && err[j] < fit.error {
                for (o, row) in l_out[..n].iter_mut().zip(&lq[..n]) {
                    *o = row[j];
                }
                let moved = mins[j].to_bits() != fit.min.to_bits();
                *fit = Fit { scale: scale[j], min: mins[j], error: err[j] };
                if moved {
                    next = is + j as i32 + 1;
                    break;
                }
            }
        }
        is = next;
    }
}

/// Each lane's weighted error of its fit, summed in the scalar order.
#[inline(always)]
fn lane_errors(
    x: &[f32],
    weights: &[f32],
    lq: &[[u8; LANES]; MAX_GROUP],
    scale: &[f32; LANES],
    mins: &[f32; LANES],
    err: &mut [f32; LANES],
    term: impl Fn(f32) -> f32,
) {
    for ((&xi, &w), row) in x.iter().zip(weights).zip(lq) {
        for j in 0..LANES {
            let diff = scale[j] * row[j] as f32 + mins[j] - xi;
            err[j] += w * term(diff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random group with heavy tails, ties and zeros.
    fn group(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let x: Vec<f32> = (0..n)
            .map(|i| match (seed + i as u64) % 11 {
                0 => 0.0,
                1 => 0.25,
                2 => next() * 40.0,
                _ => next() * next().abs(),
            })
            .collect();
        let w: Vec<f32> = x.iter().map(|v| 0.5 + v.abs() + next().abs()).collect();
        (x, w)
    }

    fn check<const QKX3: bool>(p: MinSearch, seed: u64, n: usize) {
        let (x, w) = group(seed, n);
        let (mut min, mut max) = (x[0], x[0]);
        let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
        for i in 1..n {
            min = min.min(x[i]);
            max = max.max(x[i]);
            sum_w += w[i];
            sum_x += w[i] * x[i];
        }
        let g = Group { x: &x, weights: &w, sum_w, sum_x, max };
        let start = Fit { scale: 1.0 / 3.0, min: min.min(0.0), error: f32::MAX };
        let (mut a, mut b) = (start, start);
        let (mut la, mut lb, mut laux) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        trials_scalar::<QKX3>(p, g, &mut a, &mut la, &mut laux);
        trials::<QKX3>(p, g, &mut b, &mut lb, &mut laux);
        assert_eq!(
            (a.scale.to_bits(), a.min.to_bits(), a.error.to_bits()),
            (b.scale.to_bits(), b.min.to_bits(), b.error.to_bits())
        );
        assert_eq!(la, lb, "seed {seed}");
    }

    #[test]
    fn lanes_match_the_scalar_loop_bit_for_bit() {
        // Q4_K/Q5_K (32 values, nmax 15 or 31, 21 trials), Q2_K (16 values, nmax 3, 16 trials, MAD), qkx3.
        let q4 = MinSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
        let q5 = MinSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
        let q2 = MinSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
        for seed in 0..400 {
            check::<false>(q4, seed, 32);
            check::<false>(q5, seed, 32);
            check::<false>(q2, seed, 16);
            check::<true>(q4, seed, 32);
            check::<true>(q2, seed, 16);
        }
    }
}
