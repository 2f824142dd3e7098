//! The Hessian side of GPTQ: dead columns, relative damping with automatic increase, and the upper
//! Cholesky factor `U` of `H⁻¹` (`H⁻¹ = UᵀU`) that the column loop reads.
//!
//! `U` is computed without forming `H⁻¹`: with `J` the reversal permutation, the Cholesky factor `L'` of
//! `JHJ` gives `H = AAᵀ` with `A = JL'J` upper triangular, so `H⁻¹ = A⁻ᵀA⁻¹` and `U = A⁻¹ = J L'⁻¹ J`:
//! one factorization and one triangular inverse (faer), in `f32` as the reference implementations run.
//! faer's blocked kernels split work by output tiles, so the result does not depend on the thread count.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch, LltRegularization};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Mat, Par};

/// The damped Hessian's factorization and how much damping it took.
#[derive(Debug)]
pub struct Factor {
    /// Row-major `n x n`; only the upper triangle (`j ≥ i`) is meaningful.
    pub upper: Vec<f32>,
    /// The damping fraction finally used (of the mean diagonal).
    pub damp: f32,
    /// How many times the damping was increased before the factorization succeeded.
    pub retries: u32,
}

/// Why no factorization was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the Hessian is not positive definite even with damping {damp} of its mean diagonal")]
pub struct NotPositiveDefinite {
    pub damp: f32,
}

/// Zero the weight columns whose input never varies (`H[i,i] = 0`) and set those diagonal entries to 1,
/// as the reference does; returns how many columns were dead.
pub fn kill_dead_columns(h: &mut [f32], n: usize, weight: &mut [f32], rows: usize) -> usize {
    let mut dead = 0;
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
            for r in 0..rows {
                weight[r * n + i] = 0.0;
            }
            dead += 1;
        }
    }
    dead
}

/// Factor `h + damp·mean(diag h)·I`, raising `damp` by `increment` after each failure while it stays
/// below 1 (`increment = 0` tries once).
pub fn damped_inverse_factor(h: &[f32], n: usize, damp: f32, increment: f32) -> Result<Factor, NotPositiveDefinite> {
    let mean = (0..n).map(|i| f64::from(h[i * n + i])).sum::<f64>() / n.max(1) as f64;
    let mut damp_now = damp;
    let mut retries = 0;
    loop {
        let add = (f64::from(damp_now) * mean) as f32;
        if let Some(upper) = inverse_upper_factor(h, n, add) {
            return Ok(Factor { upper, damp: damp_now, retries });
        }
        let next = damp_now + increment;
        if increment <= 0.0 || next >= 1.0 {
            return Err(NotPositiveDefinite { damp: damp_now });
        }
        damp_now = next;
        retries += 1;
    }
}

/// `U` with `(h + add·I)⁻¹ = UᵀU`, or `None` when `h + add·I` is not positive definite.
fn inverse_upper_factor(h: &[f32], n: usize, add: f32) -> Option<Vec<f32>> {
    // R = J (h + add·I) J, lower triangle only is read by the factorization.
    let mut r = Mat::<f32>::from_fn(n, n, |i, j| {
        let (a, b) = (n - 1 - i, n - 1 - j);
        h[a * n + b] + if a == b { add } else { 0.0 }
    });
    let par = Par::rayon(0);
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f32>(n, par, Default::default()));
    let stack = MemStack::new(&mut mem);
    cholesky_in_place(r.as_mut(), LltRegularization::default(), par, stack, Default::default()).ok()?;
    let mut inv = Mat::<f32>::zeros(n, n);
    invert_lower_triangular(inv.as_mut(), r.as_ref(), par);
    let mut upper = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i..n {
            let v = inv[(n - 1 - i, n - 1 - j)];
            if !v.is_finite() {
                return None;
            }
            upper[i * n + j] = v;
        }
    }
    Some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric positive definite matrix `BᵀB + I` from a fixed pseudo-random `B`.
    fn spd(n: usize) -> Vec<f32> {
        let b: Vec<f64> = (0..n * n).map(|i| ((i * 7919 % 97) as f64 - 48.0) / 31.0).collect();
        let mut h = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum();
                h[i * n + j] = (s + if i == j { 1.0 } else { 0.0 }) as f32;
            }
        }
        h
    }

    #[test]
    fn upper_factor_times_its_transpose_inverts_the_damped_hessian() {
        let n = 37;
        let h = spd(n);
        let f = damped_inverse_factor(&h, n, 0.01, 0.01).unwrap();
        assert_eq!(f.retries, 0);
        let mean = (0..n).map(|i| f64::from(h[i * n + i])).sum::<f64>() / n as f64;
        // (UᵀU)(H + damp·mean·I) = I, checked in f64.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0f64;
                for k in 0..n {
                    let inv_ik: f64 =
                        (0..=i.min(k)).map(|m| f64::from(f.upper[m * n + i]) * f64::from(f.upper[m * n + k])).sum();
                    let hk = f64::from(h[k * n + j]) + if k == j { 0.01 * mean } else { 0.0 };
                    s += inv_ik * hk;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 2e-3, "({i},{j}) = {s}");
            }
        }
        for i in 0..n {
            assert!(f.upper[i * n + i] > 0.0);
            for j in 0..i {
                assert_eq!(f.upper[i * n + j], 0.0);
            }
        }
    }

    #[test]
    fn damping_grows_until_the_factorization_succeeds() {
        // Eigenvalues 3 and −1 with mean diagonal 1: damping 0.01 fails, anything above 1 works only past
        // the limit, so the search gives up; a positive semi-definite singular matrix needs one increase.
        let indefinite = [1.0f32, 2.0, 2.0, 1.0];
        let err = damped_inverse_factor(&indefinite, 2, 0.01, 0.01).unwrap_err();
        assert!(err.damp >= 0.98 && err.damp < 1.0, "{err}");
        let singular = [1.0f32, 1.0, 1.0, 1.0];
        let f = damped_inverse_factor(&singular, 2, 0.0, 0.01).unwrap();
        assert!(f.retries >= 1 && f.damp > 0.0);
        assert!(damped_inverse_factor(&singular, 2, 0.0, 0.0).is_err());
    }

    #[test]
    fn dead_columns_are_zeroed() {
        let mut h = vec![2.0f32, 0.0, 0.0, 0.0];
        let mut w = vec![1.0f32, 5.0, 3.0, 7.0];
        assert_eq!(kill_dead_columns(&mut h, 2, &mut w, 2), 1);
        assert_eq!(h, [2.0, 0.0, 0.0, 1.0]);
        assert_eq!(w, [1.0, 0.0, 3.0, 0.0]);
    }

    #[test]
    fn the_factor_does_not_depend_on_the_thread_count() {
        let n = 300;
        let h = spd(n);
        let a = damped_inverse_factor(&h, n, 0.01, 0.0).unwrap().upper;
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let b = one.install(|| damped_inverse_factor(&h, n, 0.01, 0.0).unwrap().upper);
        assert!(a == b);
    }
}
