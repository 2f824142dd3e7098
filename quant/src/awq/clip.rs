//! AWQ's clipping search (AutoAWQ `_search_best_clip` / `_compute_best_clip` and `apply_clip`).
//!
//! For every (row, group) of a weight, with `org_max = max|W[r, g]|`, step `i` in `0..⌊max_shrink · clip_grid⌋`
//! tries `m = org_max · (1 − i / clip_grid)`: the group clamped to `[−m, m]` and quantized with AWQ's quantizer
//! gives `Q`, and its error is `mean over sampled tokens t of (Σ_{k ∈ g} x[t, k] · (Q[r, k] − W[r, k]))²`, the
//! group's share of the output error. The first `m` strictly below the running minimum (starting at `1e9`)
//! wins (the step count is capped at `clip_grid`). Tokens are sampled with a stride of
//! `max(1, n_tokens / n_sample_token)`.
//!
//! Invariant: each step's differences are computed row by row and each group's errors by one product, so the
//! result does not depend on the thread count; the steps run in order.

use rayon::prelude::*;

use super::error::check_len;
use super::quantizer::{area, fake_quantize_row};
use super::{AwqError, AwqOptions};
use crate::calibrate::LinearWeight;
use crate::intquant::IntScheme;
use crate::linalg::{matmul_strided, View};

/// Whether AWQ leaves `layer_name`'s weight unclipped: the query and key projections (their outputs meet in
/// the attention product, where a clipping error is not measured by the layer's own output) and the fused
/// projections that contain them. GGUF names (`blk.3.attn_q.weight`, `attn_k`, `attn_qkv`) and HF names
/// (`…self_attn.q_proj.weight`, `k_proj`, `qkv_proj`, `query`, `key`, `query_key_value`, `Wqkv`).
pub fn skips_clip(layer_name: &str) -> bool {
    let name = layer_name.strip_suffix(".weight").unwrap_or(layer_name);
    let short = name.rsplit('.').next().unwrap_or(name);
    matches!(
        short,
        "attn_q"
            | "attn_k"
            | "attn_qkv"
            | "q_proj"
            | "k_proj"
            | "qkv_proj"
            | "query"
            | "key"
            | "query_key_value"
            | "Wqkv"
    )
}

/// `max|W[r, g]|` per (row, group), row-major `[rows, n_groups]`.
fn group_max(values: &[f32], cols: usize, glen: usize) -> Vec<f32> {
    values
        .chunks(cols.max(1))
        .flat_map(|row| row.chunks(glen).map(|g| g.iter().fold(0.0f32, |m, v| m.max(v.abs()))))
        .collect()
}

/// The error of every row's group starting at column `g0` (`glen` columns): `mean_t (X[t, g] · D[r, g]ᵀ)²`.
fn group_errors(sample: &[f32], ns: usize, cols: usize, d: &[f32], rows: usize, g0: usize, glen: usize) -> Vec<f64> {
    let xv = View { data: &sample[g0..], rows: ns, cols: glen, rs: cols, cs: 1 };
    let dv = View { data: &d[g0..], rows: glen, cols: rows, rs: 1, cs: cols };
    let mut out = vec![0.0f32; ns * rows];
    matmul_strided(xv, dv, &mut out);
    let mut err = vec![0.0f64; rows];
    for t in out.chunks_exact(rows) {
        for (e, &v) in err.iter_mut().zip(t) {
            *e += f64::from(v) * f64::from(v);
        }
    }
    err.iter_mut().for_each(|e| *e /= ns as f64);
    err
}

/// AWQ's clipping search for one layer given its input tokens `x` (row-major `[n_tokens, cols]`): the best
/// maximum of every (row, group), row-major `[rows, n_groups]` (see the module documentation).
///
/// Errors: a scheme that does not fit the layer, a weight or token buffer of the wrong length.
pub fn search_clip(
    w: &LinearWeight,
    x: &[f32],
    n_tokens: usize,
    scheme: IntScheme,
    opts: &AwqOptions,
) -> Result<Vec<f32>, AwqError> {
    let (rows, cols) = (w.rows, w.cols);
    scheme.check_layer(&w.name, cols)?;
    check_len(&w.name, "weight", area(rows, cols), w.values.len())?;
    check_len(&w.name, "tokens", area(n_tokens, cols), x.len())?;
    let (glen, ng) = (scheme.group_len(cols), scheme.n_groups(cols));
    let org_max = group_max(&w.values, cols, glen);
    let mut best = org_max.clone();
    let stride = (n_tokens / opts.n_sample_token.max(1)).max(1);
    let sample: Vec<f32> = x.chunks_exact(cols.max(1)).step_by(stride).flatten().copied().collect();
    let ns = sample.len() / cols.max(1);
    if rows == 0 || cols == 0 || ns == 0 {
        return Ok(best);
    }
    // At most `clip_grid` steps, so that every maximum tried stays positive.
    let steps = ((opts.max_shrink * opts.clip_grid as f32) as usize).min(opts.clip_grid);
    let mut min_err = vec![1e9f64; rows * ng];
    let mut d = vec![0.0f32; rows * cols];
    for i in 0..steps {
        let shrink = 1.0 - i as f32 / opts.clip_grid as f32;
        d.par_chunks_mut(cols).zip(w.values.par_chunks(cols)).zip(org_max.par_chunks(ng)).for_each(
            |((dst, src), maxes)| {
                let mut clipped = src.to_vec();
                for (c, &m) in clipped.chunks_mut(glen).zip(maxes) {
                    let m = m * shrink;
                    c.iter_mut().for_each(|v| *v = v.max(-m).min(m));
                }
                fake_quantize_row(&scheme, glen, &clipped, dst);
                dst.iter_mut().zip(src).for_each(|(q, &v)| *q -= v);
            },
        );
        let errs: Vec<Vec<f64>> =
            (0..ng).into_par_iter().map(|g| group_errors(&sample, ns, cols, &d, rows, g * glen, glen)).collect();
        for (g, err) in errs.iter().enumerate() {
            for (r, &e) in err.iter().enumerate() {
                let k = r * ng + g;
                if e < min_err[k] {
                    min_err[k] = e;
                    best[k] = org_max[k] * shrink;
                }
            }
        }
    }
    Ok(best)
}

/// Clamp every weight of (row `r`, group `g`) to `[−max_vals[r, g], max_vals[r, g]]` (symmetric, as AutoAWQ
/// does even for asymmetric schemes). `max_vals` is row-major `[rows, n_groups]`, as [`search_clip`] returns it.
pub fn apply_clip(
    layer: &str,
    w: &mut [f32],
    rows: usize,
    cols: usize,
    scheme: IntScheme,
    max_vals: &[f32],
) -> Result<(), AwqError> {
    scheme.check_layer(layer, cols)?;
    check_len(layer, "weight", area(rows, cols), w.len())?;
    let (glen, ng) = (scheme.group_len(cols), scheme.n_groups(cols));
    check_len(layer, "clip maxima", area(rows, ng), max_vals.len())?;
    if cols == 0 {
        return Ok(());
    }
    for (row, maxes) in w.chunks_mut(cols).zip(max_vals.chunks(ng)) {
        for (grp, &m) in row.chunks_mut(glen).zip(maxes) {
            grp.iter_mut().for_each(|v| *v = v.max(-m).min(m));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intquant::ScaleDtype;

    #[test]
    fn query_and_key_projections_are_not_clipped() {
        for name in [
            "blk.0.attn_q.weight",
            "blk.12.attn_k.weight",
            "blk.1.attn_qkv.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "k_proj",
            "transformer.h.0.attn.Wqkv.weight",
        ] {
            assert!(skips_clip(name), "{name}");
        }
        for name in [
            "blk.0.attn_v.weight",
            "blk.0.attn_output.weight",
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
            "v_proj",
            "blk.0.attn_q_norm.weight",
        ] {
            assert!(!skips_clip(name), "{name}");
        }
    }

    #[test]
    fn clip_clamps_each_group_symmetrically() {
        let sch = IntScheme::new(4, Some(8), false, ScaleDtype::F16).unwrap();
        let mut w: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        apply_clip("t", &mut w, 2, 16, sch, &[3.0, 1.0, 100.0, 5.5]).unwrap();
        let want: Vec<f32> = (0..32)
            .map(|i| {
                let m = [3.0f32, 1.0, 100.0, 5.5][i / 8];
                (i as f32 - 10.0).clamp(-m, m)
            })
            .collect();
        assert_eq!(w, want);
        assert!(matches!(apply_clip("t", &mut w, 2, 16, sch, &[1.0; 3]), Err(AwqError::Size { .. })));
        assert!(matches!(apply_clip("t", &mut w, 2, 12, sch, &[1.0; 4]), Err(AwqError::Quant(_))));
    }
}
