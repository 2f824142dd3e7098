//! The CPU kernels of the forward pass: matrix products through quant's `linalg` (the one wrapper of the
//! `gemm` crate) and the element-wise operations, written
//! to perform the same `f32` operations as ggml's CPU backend where that matters for matching llama.cpp
//! (`ggml/src/ggml-cpu/ops.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62: sums of squares and
//! softmax denominators in `f64`). RoPE lives in [`crate::rope`].

pub use quantforge_quant::linalg::{matmul_strided, matmul_t, View};

pub use crate::rope::RopeCache;

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
