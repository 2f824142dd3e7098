//! The CPU kernels of the forward pass: matrix products through quant's `linalg` (the one wrapper of the
//! `gemm` crate) and the element-wise operations, written
//! to perform the same `f32` operations as ggml's CPU backend where that matters for matching llama.cpp
//! (`ggml/src/ggml-cpu/ops.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62: sums of squares and
//! softmax denominators in `f64`). The exponentials of softmax and SiLU are [`crate::vexp`]'s (vectorized, within
//! 2 ulp; ggml uses its own vectorized approximation there too). RoPE lives in [`crate::rope`].

pub use quantforge_quant::linalg::{matmul_strided, matmul_t, View};

use rayon::prelude::*;

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
    live.iter_mut().for_each(|v| *v *= scale);
    let max = crate::vexp::max(live);
    normalize_exp(live, max);
}

/// `live[i] = exp(live[i] - max) / Σ`, the sum in `f64` (ggml's `soft_max`), the exponentials those of
/// [`crate::vexp`].
fn normalize_exp(live: &mut [f32], max: f32) {
    let sum = crate::vexp::exp_store_sum(live, max);
    let inv = (1.0 / sum) as f32;
    for v in live.iter_mut() {
        *v *= inv;
    }
}

/// The gated activation of an FFN kind: `gate[i] = act(gate[i]) * up[i]`.
pub fn glu(kind: quantforge_formats::arch::FfnKind) -> fn(&mut [f32], &[f32]) {
    match kind {
        quantforge_formats::arch::FfnKind::SwiGlu => silu_mul,
        quantforge_formats::arch::FfnKind::GeGlu => gelu_mul,
    }
}

/// ggml's SiLU times the up projection: `gate[i] = silu(gate[i]) * up[i]` (the exponential of
/// [`crate::vexp`]).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    crate::vexp::silu_mul(gate, up);
}

/// ggml's CPU GELU (tanh approximation, `GGML_GELU_FP16`): the input rounded to f16 and looked up in a table of
/// f16 results, 0 below -10 and the identity above 10 (`ggml/src/ggml-cpu/vec.h`, `ggml_vec_geglu_f32`).
pub fn gelu(x: f32) -> f32 {
    use half::f16;
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let v = f16::from_bits(bits).to_f32();
                f16::from_f32(0.5 * v * (1.0 + (SQRT_2_OVER_PI * v * (1.0 + GELU_COEF_A * v * v)).tanh()))
            })
            .collect()
    });
    table[usize::from(f16::from_f32(x).to_bits())].to_f32()
}

/// GeGLU: `gate[i] = gelu(gate[i]) * up[i]` (ggml's `geglu_split`).
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// [`softmax_masked`] over the live keys `lo..hi` of `row` (a sliding window), each score first multiplied by
/// `scale` and, with a `cap`, soft-capped to `cap * tanh(score / cap)` (llama.cpp's `attn_soft_cap`); the
/// other entries are set to 0.
pub fn softmax_window(row: &mut [f32], lo: usize, hi: usize, scale: f32, cap: Option<f32>) {
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    let live = &mut row[lo..hi];
    let mut max = f32::NEG_INFINITY;
    for v in live.iter_mut() {
        *v *= scale;
        if let Some(c) = cap {
            *v = (*v * (1.0 / c)).tanh() * c;
        }
        max = max.max(*v);
    }
    normalize_exp(live, max);
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rows per task of the `par_` operations below (each row's result is the serial one's, at any thread count).
const PAR_ROWS: usize = 32;

/// [`rms_norm`] over the rayon pool, rows of `weight.len()` values.
pub fn par_rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let step = PAR_ROWS * weight.len().max(1);
    out.par_chunks_mut(step).zip(x.par_chunks(step)).for_each(|(o, x)| rms_norm(x, weight, eps, o));
}

/// [`rms_norm_inplace`] over the rayon pool.
pub fn par_rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    x.par_chunks_mut(PAR_ROWS * weight.len().max(1)).for_each(|x| rms_norm_inplace(x, weight, eps));
}

/// [`add_assign`] over the rayon pool.
pub fn par_add_assign(x: &mut [f32], y: &[f32]) {
    const STEP: usize = 1 << 14;
    x.par_chunks_mut(STEP).zip(y.par_chunks(STEP)).for_each(|(x, y)| add_assign(x, y));
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
    fn gelu_is_ggmls_f16_table() {
        // gelu(1) = 0.8411920; the f16 table rounds it to 0.84130859375.
        assert_eq!(gelu(1.0), 0.841_308_6);
        assert_eq!((gelu(-11.0), gelu(12.5)), (0.0, 12.5));
        assert!(gelu(-3.0).abs() < 5e-3 && gelu(0.0) == 0.0);
        let mut row = vec![9.0, 1.0, 2.0, 3.0, 9.0];
        softmax_window(&mut row, 1, 4, 1.0, Some(1.0));
        assert_eq!((row[0], row[4]), (0.0, 0.0));
        assert!((row[1..4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Capped at 1, scores 1, 2 and 3 become tanh(1), tanh(2), tanh(3): far closer than uncapped.
        assert!(row[3] / row[1] < (3.0f32.tanh() - 1.0f32.tanh()).exp() * 1.0001);
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
