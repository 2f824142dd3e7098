//! The trial loop of `make_qx_quants` ([`super::search`]), eight trial scales at a time.
//!
//! Upstream tries the inverse scales `-(nmax + 0.1·is) / max` for `is = -9..=9` (`is ≠ 0`) one after the other.
//! A trial's sums `Σ w·x·l` and `Σ w·l²` do not depend on the trials before it; only whether it is accepted does.
//! Here the sums of all eighteen trials are computed side by side, one trial per lane, each lane performing exactly
//! the scalar loop's f32 operations in the same order (lanes are separate trials, never a reassociated sum); they
//! are then accepted in the scalar order. The result is bit-identical to the scalar loop ([`trial_sums_scalar`],
//! kept as the reference). The lanes are plain arrays that the compiler vectorizes; on x86-64 an AVX2 build of
//! the same code is chosen at run time.

use super::search::MAX_GROUP;
use super::search_lanes::LANES;
use crate::blocks::scalar::nearest_int;

/// The trials' `is`, in upstream's order.
pub(super) const TRIALS: [i32; 18] = [-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// Lanes rounded up to whole batches.
const PADDED: usize = TRIALS.len().div_ceil(LANES) * LANES;

/// The inverse scale of trial `is`, as upstream computes it.
#[inline(always)]
pub(super) fn trial_iscale(nmax: i32, is: i32, max: f32) -> f32 {
    -(nmax as f32 + 0.1 * is as f32) / max
}

/// `(Σ w·x·l, Σ w·l²)` of every trial of [`TRIALS`], `l = clamp(nearest_int(iscale·x), -nmax, nmax - 1)`.
pub(super) fn trial_sums(nmax: i32, x: &[f32], weights: &[f32], max: f32) -> [(f32, f32); 18] {
    if x.len() > MAX_GROUP || weights.len() < x.len() {
        return trial_sums_scalar(nmax, x, weights, max);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { sums_avx2(nmax, x, weights, max) };
    }
    sums_lanes(nmax, x, weights, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
/// # Safety
/// The CPU must support AVX2.
unsafe fn sums_avx2(nmax: i32, x: &[f32], weights: &[f32], max: f32) -> [(f32, f32); 18] {
    sums_lanes(nmax, x, weights, max)
}

/// The upstream loop, one trial at a time.
pub(super) fn trial_sums_scalar(nmax: i32, x: &[f32], weights: &[f32], max: f32) -> [(f32, f32); 18] {
    TRIALS.map(|is| {
        let iscale = trial_iscale(nmax, is, max);
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for i in 0..x.len() {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = weights[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        (sumlx, suml2)
    })
}

#[inline(always)]
fn sums_lanes(nmax: i32, x: &[f32], weights: &[f32], max: f32) -> [(f32, f32); 18] {
    let n = x.len();
    let (x, weights) = (&x[..n], &weights[..n]);
    let mut lx = [0.0f32; PADDED];
    let mut l2 = [0.0f32; PADDED];
    for batch in 0..PADDED / LANES {
        let mut iscale = [0.0f32; LANES];
        for (j, s) in iscale.iter_mut().enumerate() {
            // Padding lanes repeat the last trial; their sums are dropped.
            *s = trial_iscale(nmax, TRIALS[(batch * LANES + j).min(TRIALS.len() - 1)], max);
        }
        let (mut sumlx, mut suml2) = ([0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..n {
            let (xi, w) = (x[i], weights[i]);
            for j in 0..LANES {
                let l = nearest_int(iscale[j] * xi).clamp(-nmax, nmax - 1) as f32;
                sumlx[j] += w * xi * l;
                suml2[j] += w * l * l;
            }
        }
        lx[batch * LANES..][..LANES].copy_from_slice(&sumlx);
        l2[batch * LANES..][..LANES].copy_from_slice(&suml2);
    }
    std::array::from_fn(|t| (lx[t], l2[t]))
}

#[cfg(test)]
mod tests {
    use super::super::search::signed_max;
    use super::*;

    #[test]
    fn lanes_match_the_scalar_loop_bit_for_bit() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for seed in 0..2000usize {
            let n = [16, 32, 8][seed % 3];
            let x: Vec<f32> = (0..n)
                .map(|i| match (seed + i) % 9 {
                    0 => 0.0,
                    1 => 0.5,
                    2 => next() * 50.0,
                    _ => next() * next().abs(),
                })
                .collect();
            let w: Vec<f32> = x.iter().map(|v| v * v + next().abs()).collect();
            let (max, amax) = signed_max(&x);
            if amax == 0.0 {
                continue;
            }
            for nmax in [4, 8, 16, 32, 127] {
                let a = trial_sums_scalar(nmax, &x, &w, max);
                let b = trial_sums(nmax, &x, &w, max);
                let bits = |v: [(f32, f32); 18]| v.map(|(p, q)| (p.to_bits(), q.to_bits()));
                assert_eq!(bits(a), bits(b), "seed {seed} nmax {nmax}");
            }
        }
    }
}
