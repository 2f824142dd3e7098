//! The merge arithmetic, in f32 on row-major slices (PEFT `tuners/lora/layer.py` `get_delta_weight`,
//! `tuners/lora/variants.py` `DoraLinearVariant.merge_safe`/`DoraEmbeddingVariant.merge_safe`):
//!
//! - ΔW = (B·A) · scaling, `A` `[r, n_in]`, `B` `[n_out, r]`; transposed (`[n_in, n_out]`) for
//!   `fan_in_fan_out` linears and for embeddings (`[num_embeddings, embedding_dim]`).
//! - W' = W + ΔW.
//! - DoRA: W' = (m / ‖W + ΔW‖) · (W + ΔW), the L2 norm taken per output feature over the input features of the
//!   *original* W plus ΔW (rows of `[out, in]`; columns when the layout is transposed).
//!
//! PEFT multiplies B·A in the adapter's dtype (f32 on CPU even for 16-bit adapters, then casts ΔW back);
//! here everything stays f32, so 16-bit adapters differ from PEFT by one rounding of ΔW.

use rayon::prelude::*;

/// ΔW = (B·A) · scaling. `transposed` returns `[n_in, n_out]` instead of `[n_out, n_in]`.
pub fn delta(a: &[f32], b: &[f32], r: usize, n_in: usize, n_out: usize, scaling: f32, transposed: bool) -> Vec<f32> {
    assert_eq!(a.len(), r * n_in, "lora A is not [r, n_in]");
    assert_eq!(b.len(), n_out * r, "lora B is not [n_out, r]");
    let mut out = vec![0f32; n_in * n_out];
    if n_in == 0 || n_out == 0 {
        return out;
    }
    if transposed {
        // Row i of the result: (A[:, i] · B[o, :]) for every o.
        out.par_chunks_mut(n_out).enumerate().for_each(|(i, row)| {
            let col: Vec<f32> = (0..r).map(|k| a[k * n_in + i]).collect();
            for (o, v) in row.iter_mut().enumerate() {
                let bo = &b[o * r..(o + 1) * r];
                let s: f32 = bo.iter().zip(&col).fold(0.0, |acc, (x, y)| acc + x * y);
                *v = s * scaling;
            }
        });
    } else {
        out.par_chunks_mut(n_in).enumerate().for_each(|(o, row)| {
            for k in 0..r {
                let bk = b[o * r + k];
                for (v, &x) in row.iter_mut().zip(&a[k * n_in..(k + 1) * n_in]) {
                    *v += bk * x;
                }
            }
            row.iter_mut().for_each(|v| *v *= scaling);
        });
    }
    out
}

/// `w += d`.
pub fn add_assign(w: &mut [f32], d: &[f32]) {
    assert_eq!(w.len(), d.len());
    w.par_iter_mut().zip(d.par_iter()).for_each(|(x, y)| *x += y);
}

/// DoRA rescaling of an already merged `w` (`rows x cols`): each output feature is scaled by
/// `magnitude / norm`, where output features are rows, or columns when `per_column`.
pub fn dora_rescale(w: &mut [f32], rows: usize, cols: usize, magnitude: &[f32], per_column: bool) {
    assert_eq!(w.len(), rows * cols);
    if per_column {
        assert_eq!(magnitude.len(), cols);
        let mut sq = vec![0f64; cols];
        for row in w.chunks_exact(cols) {
            for (s, &x) in sq.iter_mut().zip(row) {
                *s += f64::from(x) * f64::from(x);
            }
        }
        let factor: Vec<f32> = sq.iter().zip(magnitude).map(|(s, m)| m / s.sqrt() as f32).collect();
        w.par_chunks_mut(cols).for_each(|row| row.iter_mut().zip(&factor).for_each(|(x, f)| *x *= f));
    } else {
        assert_eq!(magnitude.len(), rows);
        w.par_chunks_mut(cols).zip(magnitude.par_iter()).for_each(|(row, m)| {
            let norm = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32;
            let f = m / norm;
            row.iter_mut().for_each(|x| *x *= f);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A = [[1, 2, 3], [0, -1, 1]] (r = 2, in = 3); B = [[1, 0], [2, 1]] (out = 2).
    // B·A = [[1, 2, 3], [2, 3, 7]].
    const A: [f32; 6] = [1.0, 2.0, 3.0, 0.0, -1.0, 1.0];
    const B: [f32; 4] = [1.0, 0.0, 2.0, 1.0];

    #[test]
    fn delta_by_hand() {
        assert_eq!(delta(&A, &B, 2, 3, 2, 0.5, false), [0.5, 1.0, 1.5, 1.0, 1.5, 3.5]);
        assert_eq!(delta(&A, &B, 2, 3, 2, 0.5, true), [0.5, 1.0, 1.0, 1.5, 1.5, 3.5]);
    }

    #[test]
    fn dora_by_hand() {
        // Rows [3, 4] and [0, 2]: norms 5 and 2; magnitudes 10 and 1.
        let mut w = [3.0, 4.0, 0.0, 2.0];
        dora_rescale(&mut w, 2, 2, &[10.0, 1.0], false);
        assert_eq!(w, [6.0, 8.0, 0.0, 1.0]);
        // Columns [3, 0] and [4, 2] (norm sqrt 20); magnitudes 6 and sqrt 20.
        let mut w = [3.0, 4.0, 0.0, 2.0];
        dora_rescale(&mut w, 2, 2, &[6.0, 20f32.sqrt()], true);
        assert_eq!(w, [6.0, 4.0, 0.0, 2.0]);
    }
}
