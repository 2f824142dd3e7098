//! The forward pass's exponentials (attention softmax, SiLU, the log-sum-exp of perplexity), eight values at a
//! time with AVX2 + FMA when the CPU has them (chosen at run time), else one at a time by the same formula with the
//! same operations in the same order. Fused multiply-adds round once whether the CPU or software does them, so
//! both give the same bits: results depend neither on the machine nor on the thread count.
//!
//! `exp(x) = 2^n · e^r` with `n = round(x / ln 2)` and `r = x - n ln 2` (the product in two parts, so `r` is exact
//! to f32 precision), `e^r` by its Taylor series to degree 7 (`|r| ≤ ln 2 / 2`: truncation below 0.1 ulp), and
//! `2^n` applied as two exact powers of two so that `n = 128` (just below `f32::MAX`) still works. Results below
//! the smallest normal float (`x < -87.34`) are 0, above `f32::MAX` infinity; NaN stays NaN. Within 2 ulp of the
//! exact value (checked against `f64::exp` in the tests). Sums are kept in eight `f64` lanes (value `i` in lane
//! `i % 8`, the tail after the last full eight added one by one) and the lanes added in order.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts: `LN2_HI` is ln 2 rounded to f32, `LN2_LO` the rest.
const LN2_HI: f32 = std::f32::consts::LN_2;
const LN2_LO: f32 = -1.904_654_3e-9;
/// Below: the result would be subnormal (flushed to 0). Above: it overflows.
const MIN_X: f32 = -87.336_55;
const MAX_X: f32 = 88.722_83;
/// Taylor coefficients of `e^r` from degree 7 down to 0, for Horner's rule.
const TAYLOR: [f32; 8] = [1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
/// Values per step.
const LANES: usize = 8;

/// `e^x` as the module describes, one value.
#[inline(always)]
fn exp1(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let xc = x.clamp(MIN_X, MAX_X);
    let n = (xc * LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = TAYLOR[0];
    for c in &TAYLOR[1..] {
        p = p.mul_add(r, *c);
    }
    // n is in [-126, 128]: two halves, each in the normal exponent range.
    let ni = n as i32;
    let (a, b) = (ni >> 1, ni - (ni >> 1));
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(a) * pow2(b);
    if x < MIN_X {
        0.0
    } else if x > MAX_X {
        f32::INFINITY
    } else {
        y
    }
}

fn exp_store_sum_scalar(xs: &mut [f32], max: f32) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(&mut acc) {
            *v = exp1(*v - max);
            *a += f64::from(*v);
        }
    }
    let mut sum = lanes_sum(&acc);
    for v in chunks.into_remainder() {
        *v = exp1(*v - max);
        sum += f64::from(*v);
    }
    sum
}

fn exp_sum_scalar(xs: &[f32], max: f32) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (&v, a) in c.iter().zip(&mut acc) {
            *a += f64::from(exp1(v - max));
        }
    }
    let mut sum = lanes_sum(&acc);
    for &v in chunks.remainder() {
        sum += f64::from(exp1(v - max));
    }
    sum
}

fn silu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = (*g / (1.0 + exp1(-*g))) * u;
    }
}

fn max_scalar(xs: &[f32]) -> f32 {
    xs.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The lanes added in order.
fn lanes_sum(acc: &[f64; LANES]) -> f64 {
    acc.iter().fold(0.0, |s, &a| s + a)
}

/// `xs[i] = e^(xs[i] - max)`, returning their sum (in `f64`).
pub fn exp_store_sum(xs: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::exp_store_sum(xs, max) };
    }
    exp_store_sum_scalar(xs, max)
}

/// `Σ e^(xs[i] - max)` in `f64`.
pub fn exp_sum(xs: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: as above.
        return unsafe { avx2::exp_sum(xs, max) };
    }
    exp_sum_scalar(xs, max)
}

/// SiLU times the up projection: `gate[i] = gate[i] / (1 + e^-gate[i]) * up[i]`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: as above.
        return unsafe { avx2::silu_mul(&mut gate[..n], &up[..n]) };
    }
    silu_mul_scalar(&mut gate[..n], &up[..n]);
}

/// The largest value (`-inf` for none; NaNs are skipped, as `f32::max` does).
pub fn max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: as above.
        return unsafe { avx2::max(xs) };
    }
    max_scalar(xs)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The same operations as the scalar functions above, eight lanes at a time.
    use std::arch::x86_64::*;

    use super::{lanes_sum, LANES, LN2_HI, LN2_LO, LOG2_E, MAX_X, MIN_X, TAYLOR};

    pub(super) fn usable() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `exp1` on eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(MIN_X)), _mm256_set1_ps(MAX_X));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            xc,
            _mm256_set1_ps(LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc));
        let mut p = _mm256_set1_ps(TAYLOR[0]);
        for c in &TAYLOR[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let ni = _mm256_cvtps_epi32(n);
        let a = _mm256_srai_epi32::<1>(ni);
        let b = _mm256_sub_epi32(ni, a);
        let bias = _mm256_set1_epi32(127);
        let pow2 = |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k, bias)));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, pow2(a)), pow2(b));
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_X));
        let high = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(MAX_X));
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let y = _mm256_andnot_ps(low, y);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), high);
        _mm256_blendv_ps(y, x, nan)
    }

    /// Adds the eight values of `v` to the lanes `(lo, hi)` in `f64`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn accumulate(acc: (__m256d, __m256d), v: __m256) -> (__m256d, __m256d) {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        (_mm256_add_pd(acc.0, lo), _mm256_add_pd(acc.1, hi))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lanes(acc: (__m256d, __m256d)) -> [f64; LANES] {
        let mut out = [0.0f64; LANES];
        // SAFETY: `out` holds eight f64 values; unaligned stores.
        unsafe {
            _mm256_storeu_pd(out.as_mut_ptr(), acc.0);
            _mm256_storeu_pd(out.as_mut_ptr().add(4), acc.1);
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_store_sum(xs: &mut [f32], max: f32) -> f64 {
        let m = _mm256_set1_ps(max);
        let mut acc = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut chunks = xs.chunks_exact_mut(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds eight f32 values; unaligned loads and stores.
            let y = exp8(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, m));
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), y) };
            acc = accumulate(acc, y);
        }
        let mut sum = lanes_sum(&lanes(acc));
        for v in chunks.into_remainder() {
            *v = super::exp1(*v - max);
            sum += f64::from(*v);
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sum(xs: &[f32], max: f32) -> f64 {
        let m = _mm256_set1_ps(max);
        let mut acc = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds eight f32 values.
            acc = accumulate(acc, exp8(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, m)));
        }
        let mut sum = lanes_sum(&lanes(acc));
        for &v in chunks.remainder() {
            sum += f64::from(super::exp1(v - max));
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `gate` and `up` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
        let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
        let mut g_chunks = gate.chunks_exact_mut(LANES);
        let mut u_chunks = up.chunks_exact(LANES);
        for (g, u) in (&mut g_chunks).zip(&mut u_chunks) {
            // SAFETY: both chunks hold eight f32 values.
            let gv = unsafe { _mm256_loadu_ps(g.as_ptr()) };
            let uv = unsafe { _mm256_loadu_ps(u.as_ptr()) };
            let den = _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign)));
            unsafe { _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(_mm256_div_ps(gv, den), uv)) };
        }
        super::silu_mul_scalar(g_chunks.into_remainder(), u_chunks.remainder());
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max(xs: &[f32]) -> f32 {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds eight f32 values. `max_ps(v, acc)` returns `acc` when `v` is NaN.
            acc = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, acc);
        }
        let mut out = [0.0f32; LANES];
        // SAFETY: `out` holds eight f32 values.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
        out.iter().chain(chunks.remainder()).copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        if got == w {
            return 0.0;
        }
        let ulp = f64::from(f32::from_bits(w.abs().to_bits() + 1)) - f64::from(w.abs());
        (f64::from(got) - want).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulp_everywhere() {
        let mut worst = (0.0f64, 0.0f32);
        let wide = (0..2_000_000).map(|i| MIN_X + (MAX_X - MIN_X) * (i as f32 / 2e6));
        let near_zero = (-1_000_000..1_000_000).map(|i| i as f32 * 1e-6);
        for x in wide.chain(near_zero).chain([MIN_X, MAX_X]) {
            let want = f64::from(x).exp();
            if want >= f64::from(f32::MIN_POSITIVE) {
                let e = ulps(exp1(x), want);
                if e > worst.0 {
                    worst = (e, x);
                }
            }
        }
        assert!(worst.0 <= 2.0, "worst error {} ulp at {}", worst.0, worst.1);
        assert_eq!(exp1(0.0), 1.0);
        assert_eq!(exp1(-100.0), 0.0);
        assert_eq!(exp1(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp1(89.0), f32::INFINITY);
        assert_eq!(exp1(f32::INFINITY), f32::INFINITY);
        assert!(exp1(f32::NAN).is_nan());
        assert!(exp1(MAX_X).is_finite());
        assert!(exp1(f32::from_bits(MAX_X.to_bits() + 1)).is_infinite());
    }

    #[test]
    fn dispatched_and_generic_builds_agree_bit_for_bit() {
        let xs: Vec<f32> = (0..1003).map(|i| ((i * 7919) % 2000) as f32 * 0.05 - 60.0).collect();
        let mut a = xs.clone();
        let mut b = xs.clone();
        let (sa, sb) = (exp_store_sum(&mut a, 3.0), exp_store_sum_scalar(&mut b, 3.0));
        assert_eq!(sa.to_bits(), sb.to_bits());
        assert_eq!(a, b);
        assert_eq!(exp_sum(&xs, 3.0).to_bits(), sa.to_bits());
        let want: f64 = xs.iter().map(|&x| f64::from(x - 3.0).exp()).sum();
        assert!((sa - want).abs() < 1e-6 * want);
        let up: Vec<f32> = (0..1003).map(|i| i as f32 * 0.01).collect();
        let (mut g1, mut g2) = (xs.clone(), xs.clone());
        silu_mul(&mut g1, &up);
        silu_mul_scalar(&mut g2, &up);
        assert_eq!(g1, g2);
        for ((&g, &x), &u) in g1.iter().zip(&xs).zip(&up) {
            let want = f64::from(x) / (1.0 + (-f64::from(x)).exp()) * f64::from(u);
            assert!((f64::from(g) - want).abs() <= 1e-6 * want.abs().max(1e-30), "silu({x})");
        }
        assert_eq!(max(&xs), xs.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn special_values_are_the_same_in_every_build() {
        let specials = [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 100.0, -100.0, MIN_X, MAX_X, 0.0, -0.0, 1e-30];
        let xs: Vec<f32> = specials.iter().cycle().take(37).copied().collect();
        let (mut a, mut b) = (xs.clone(), xs.clone());
        assert!(exp_store_sum(&mut a, 0.0).is_nan() && exp_store_sum_scalar(&mut b, 0.0).is_nan());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(a[0].to_bits(), f32::NAN.to_bits());
        assert_eq!(&a[1..5], &[0.0, f32::INFINITY, f32::INFINITY, 0.0]);
        let finite: Vec<f32> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        assert_eq!((max(&xs), max(&finite)), (f32::INFINITY, 100.0));
        assert_eq!(exp_sum(&finite, 100.0).to_bits(), exp_sum_scalar(&finite, 100.0).to_bits());
        let (mut g1, mut g2) = (xs.clone(), xs.clone());
        silu_mul(&mut g1, &xs);
        silu_mul_scalar(&mut g2, &xs);
        assert_eq!(bits(&g1), bits(&g2));
    }
}
