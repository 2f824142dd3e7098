//! The one wrapper around the `gemm` crate (run-time dispatched AVX2/AVX-512/NEON micro-kernels, parallel over
//! the rayon pool): the evaluator's weight products and attention, and the calibration driver's `XᵀX`, all go
//! through [`matmul_views`]. Every index gemm touches is bounds-checked here, so callers stay safe code.

use gemm::Parallelism;

/// A strided read-only matrix view: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View<'_> {
    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
        }
    }
}

/// Parallelism for a product of `m x k` by `k x n`: the whole pool unless the product is tiny.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 64 * 64 * 64 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `out[a.rows x b.cols]` (row-major, contiguous) = `a * b`; over the rayon pool when `parallel` and the product
/// is not tiny. The result does not depend on the thread count.
pub fn matmul_views(a: View<'_>, b: View<'_>, out: &mut [f32], parallel: bool) {
    assert_eq!(a.cols, b.rows, "matmul inner dimensions");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() >= m * n, "matmul output size");
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len(), "matmul view bounds");
    let par = if parallel { parallelism(m, n, k) } else { Parallelism::None };
    // SAFETY: the asserts bound the largest index of each view and of the output, and gemm reads and writes
    // only (r, c) pairs inside the given dimensions.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `out[m x n] = x[m x k] * w^T` where `w` is `n x k` row-major (one row per output), all row-major, over the
/// rayon pool.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    let a = View { data: x, rows: m, cols: k, rs: k, cs: 1 };
    let b = View { data: w, rows: k, cols: n, rs: 1, cs: k };
    matmul_views(a, b, out, true);
}

/// `out[a.rows x b.cols] = a * b`, single-threaded (for use inside parallel loops).
pub fn matmul_strided(a: View<'_>, b: View<'_>, out: &mut [f32]) {
    matmul_views(a, b, out, false);
}

/// Rows of `XᵀX` computed by one product in [`xtx`].
const XTX_STRIP: usize = 128;

/// `out[n x n] = Xᵀ X` for row-major `x` of `m x n`, over the rayon pool. The product is symmetric: it is
/// computed in strips of rows from the diagonal rightwards (about half the work for wide inputs) and the lower
/// triangle mirrored, so `out` is exactly symmetric.
pub fn xtx(x: &[f32], m: usize, n: usize, out: &mut [f32]) {
    assert!(out.len() >= n * n, "xtx output size");
    if n <= XTX_STRIP {
        let xt = View { data: x, rows: n, cols: m, rs: 1, cs: n };
        let xv = View { data: x, rows: m, cols: n, rs: n, cs: 1 };
        matmul_views(xt, xv, out, true);
        return;
    }
    let mut strip = vec![0.0f32; XTX_STRIP * n];
    for i0 in (0..n).step_by(XTX_STRIP) {
        let (ni, nj) = (XTX_STRIP.min(n - i0), n - i0);
        let tail = &x[i0.min(x.len())..];
        let a = View { data: tail, rows: ni, cols: m, rs: 1, cs: n };
        let b = View { data: tail, rows: m, cols: nj, rs: n, cs: 1 };
        matmul_views(a, b, &mut strip[..ni * nj], true);
        for (r, row) in strip[..ni * nj].chunks_exact(nj).enumerate() {
            out[(i0 + r) * n + i0..(i0 + r + 1) * n].copy_from_slice(row);
        }
    }
    for i in 0..n {
        for j in 0..i {
            out[i * n + j] = out[j * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_naive_ones() {
        let (m, k, n) = (5, 7, 3);
        let x: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
        let mut out = vec![0.0; m * n];
        matmul_t(&x, m, k, &w, n, &mut out);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                assert_eq!(out[i * n + j], want);
            }
        }
        let mut g = vec![0.0; k * k];
        xtx(&x, m, k, &mut g);
        for i in 0..k {
            for j in 0..k {
                let want: f32 = (0..m).map(|r| x[r * k + i] * x[r * k + j]).sum();
                assert_eq!(g[i * k + j], want);
            }
        }
    }

    #[test]
    fn wide_xtx_is_symmetric_and_matches_the_naive_product() {
        for (m, n) in [(37, 300), (5, 129), (1, 257), (64, 128)] {
            let x: Vec<f32> = (0..m * n).map(|i| ((i * 7919 % 113) as f32 - 56.0) / 9.0).collect();
            let mut g = vec![f32::NAN; n * n];
            xtx(&x, m, n, &mut g);
            for i in 0..n {
                for j in 0..n {
                    let want: f64 = (0..m).map(|r| f64::from(x[r * n + i]) * f64::from(x[r * n + j])).sum();
                    let got = g[i * n + j];
                    assert!((f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0), "({m}, {n}) [{i}, {j}]");
                    assert_eq!(got.to_bits(), g[j * n + i].to_bits());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "matmul view bounds")]
    fn views_past_their_data_are_refused() {
        let d = [1.0f32; 4];
        let a = View { data: &d, rows: 2, cols: 3, rs: 3, cs: 1 };
        let b = View { data: &d, rows: 3, cols: 1, rs: 1, cs: 1 };
        matmul_strided(a, b, &mut [0.0; 2]);
    }
}
