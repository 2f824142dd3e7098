//! The CPU kernels of the forward pass: matrix products through the `gemm` crate (run-time dispatched
//! AVX2/AVX-512/NEON micro-kernels, parallel over the rayon pool) and the element-wise operations, written
//! to perform the same `f32` operations as ggml's CPU backend where that matters for matching llama.cpp
//! (`ggml/src/ggml-cpu/ops.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62: sums of squares and
//! softmax denominators in `f64`, RoPE angles by repeated multiplication in `f32`).

use gemm::Parallelism;

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

/// Cos/sin of the RoPE angles of positions `0..n_pos` for the `n_rot / 2` rotated pairs, as ggml's
/// `ggml_rope_cache_init` computes them (no YaRN: `ext_factor = 0`, `mscale = 1`).
pub struct RopeCache {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeCache {
    pub fn new(n_pos: usize, n_rot: usize, freq_base: f32, freq_scale: f32, freq_factors: Option<&[f32]>) -> Self {
        let half = n_rot / 2;
        let theta_scale = freq_base.powf(-2.0 / n_rot as f32);
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for p in 0..n_pos {
            let mut theta = p as f32;
            for i in 0..half {
                let ff = freq_factors.map_or(1.0, |f| f[i]);
                let t = freq_scale * (theta / ff);
                cos.push(t.cos());
                sin.push(t.sin());
                theta *= theta_scale;
            }
        }
        RopeCache { half, cos, sin }
    }

    /// Rotate adjacent pairs (llama.cpp's NORM mode) of every head of `row` (a token at position `pos`).
    pub fn apply_norm(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        let cos = &self.cos[pos * self.half..(pos + 1) * self.half];
        let sin = &self.sin[pos * self.half..(pos + 1) * self.half];
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..self.half {
                let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = x0 * cos[i] - x1 * sin[i];
                head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
            }
        }
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

    #[test]
    fn rope_position_zero_is_identity() {
        let cache = RopeCache::new(2, 4, 10000.0, 1.0, None);
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        cache.apply_norm(&mut row, 4, 0);
        assert_eq!(row, vec![1.0, 2.0, 3.0, 4.0]);
        cache.apply_norm(&mut row, 4, 1);
        assert!((row[0] - (1f32.cos() - 2.0 * 1f32.sin())).abs() < 1e-6);
    }
}
