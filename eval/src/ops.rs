//! The CPU kernels of the forward pass: matrix products through the `gemm` crate (run-time dispatched
//! AVX2/AVX-512/NEON micro-kernels, parallel over the rayon pool) and the element-wise operations, written
//! to perform the same `f32` operations as ggml's CPU backend where that matters for matching llama.cpp
//! (`ggml/src/ggml-cpu/ops.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62: sums of squares and
//! softmax denominators in `f64`). RoPE lives in [`crate::rope`].

use gemm::Parallelism;

pub use crate::rope::RopeCache;

/// Parallelism for a product of `m x k` by `k x n`: the whole pool unless the product is tiny.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 64 * 64 * 64 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `out[m x n] = x[m x k] * w^T` where `w` is `n x k` row-major (one row per output), all row-major.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul_t buffer sizes");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above guarantee every index gemm touches lies inside the three slices:
    // dst (i, j) at i*n + j < m*n, lhs (i, l) at i*k + l < m*k, rhs (l, j) = w[j*k + l] < n*k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k),
        )
    }
}

/// A strided read-only matrix view for [`matmul_strided`]: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
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

/// `out[a.rows x b.cols]` (row-major, contiguous) = `a * b`, single-threaded (for use inside parallel loops).
pub fn matmul_strided(a: View<'_>, b: View<'_>, out: &mut [f32]) {
    assert_eq!(a.cols, b.rows, "matmul_strided inner dimensions");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() >= m * n, "matmul_strided output size");
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len(), "matmul_strided view bounds");
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
            Parallelism::None,
        )
    }
}

/// ggml's `rms_norm` followed by the multiplication with `weight`, for each row of `x` into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *d = (v * scale) * w;
        }
    }
}

/// ggml's `rms_norm` then `mul` in place, row by row: rows of `weight.len()` values (the whole hidden state,
/// or one head for Qwen3's per-head Q/K norms).
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for row in x.chunks_exact_mut(n) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// Add `bias` to every row of `x` (rows of `bias.len()` values).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// In-place softmax of `row[..n]` after multiplying by `scale`; `row[n..]` is set to 0 (causal mask).
/// As ggml's `soft_max`: max in `f32`, exponentials in `f32`, their sum in `f64`.
pub fn softmax_masked(row: &mut [f32], n: usize, scale: f32) {
    let (live, masked) = row.split_at_mut(n);
    masked.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    for v in live.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0.0f64;
    for v in live.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in live.iter_mut() {
        *v *= inv;
    }
}

/// ggml's SiLU times the up projection: `gate[i] = silu(gate[i]) * up[i]`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = (*g / (1.0 + (-*g).exp())) * u;
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_t_matches_naive() {
        let (m, k, n) = (5, 7, 3);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0.0; m * n];
        matmul_t(&x, m, k, &w, n, &mut out);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                assert!((out[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn softmax_masks_and_normalizes() {
        let mut row = vec![1.0, 2.0, 3.0, 100.0];
        softmax_masked(&mut row, 3, 1.0);
        assert_eq!(row[3], 0.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }
}
