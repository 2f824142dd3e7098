//! AWQ's scale search (AutoAWQ `_search_best_scale` / `_compute_best_scale`).
//!
//! For the layers that share one input (and one preceding op that will absorb `1/s`):
//! - `w_mean[c]`: the mean over all their rows of `|W[r, c]| / (max|W[r, group(c)]| + 1e-6)`;
//! - for `α = i / n_grid`, `i` in `0..n_grid`: `s = x_mean^α / (w_mean^(1−α) + 1e-4)` (duo scaling) or
//!   `x_mean^α`, clamped below at `1e-4`, divided by `sqrt(max(s) · min(s))`, infinities and NaN set to 1;
//! - each layer's candidate is `Q(W · diag(s)) · diag(1/s)` with [`awq_quantize`]'s quantizer, the
//!   [`ScaleLoss`] scores the candidates, and the first α with the smallest finite loss wins.
//!
//! Invariant: the result depends only on the inputs (rows are quantized in parallel, each by one thread;
//! the grid runs in order).
//!
//! [`awq_quantize`]: super::awq_quantize

use rayon::prelude::*;

use super::error::check_len;
use super::quantizer::{area, fake_quantize_row};
use super::{AwqError, AwqOptions, ScaleLoss};
use crate::calibrate::LinearWeight;
use crate::intquant::IntScheme;

/// The outcome of [`search_scale`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScaleSearch {
    /// The chosen per-input-column scales (`cols` values): the balanced layers take `W · diag(s)`, the
    /// preceding op `1/s`.
    pub scales: Vec<f32>,
    /// The chosen `α`.
    pub ratio: f32,
    /// The loss at the chosen `α`.
    pub loss: f64,
    /// The loss of every `α` tried, in grid order.
    pub losses: Vec<f64>,
}

/// The input count shared by `layers`, each checked against its buffer.
pub(super) fn common_cols(layers: &[&LinearWeight]) -> Result<usize, AwqError> {
    let first = layers.first().ok_or(AwqError::NoLayers)?;
    for l in layers {
        check_len(&l.name, "input features", first.cols, l.cols)?;
        check_len(&l.name, "weight", area(l.rows, l.cols), l.values.len())?;
    }
    Ok(first.cols)
}

/// `w_mean[c]`: the mean over every row of `layers` of `|W[r, c]| / (max|W[r, g]| + 1e-6)`, `g` the group of
/// column `c` under `scheme` (accumulated in `f64`, row after row).
pub fn normalized_weight_mean(layers: &[&LinearWeight], scheme: IntScheme) -> Result<Vec<f32>, AwqError> {
    let cols = common_cols(layers)?;
    for l in layers {
        scheme.check_layer(&l.name, cols)?;
    }
    let glen = scheme.group_len(cols);
    let mut sum = vec![0.0f64; cols];
    let mut rows = 0usize;
    for l in layers {
        for row in l.values.chunks_exact(cols.max(1)) {
            for (src, acc) in row.chunks(glen).zip(sum.chunks_mut(glen)) {
                let m = src.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-6;
                for (a, v) in acc.iter_mut().zip(src) {
                    *a += f64::from(v.abs() / m);
                }
            }
        }
        rows += l.rows;
    }
    Ok(sum.iter().map(|s| (s / rows as f64) as f32).collect())
}

/// The scales AutoAWQ tries at ratio `α` (see the module documentation), in `f32` as torch computes them.
/// `max` and `min` propagate NaN as torch's do, so one NaN column makes every scale 1.
pub fn ratio_scales(x_abs_mean: &[f32], w_mean: &[f32], ratio: f32, duo_scaling: bool) -> Vec<f32> {
    let mut s: Vec<f32> = x_abs_mean
        .iter()
        .zip(w_mean)
        .map(|(&x, &w)| {
            let v = if duo_scaling { x.powf(ratio) / (w.powf(1.0 - ratio) + 1e-4) } else { x.powf(ratio) };
            if v.is_nan() {
                v
            } else {
                v.max(1e-4)
            }
        })
        .collect();
    let norm = if s.iter().any(|v| v.is_nan()) {
        f32::NAN
    } else {
        let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
        (hi * lo).sqrt()
    };
    for v in &mut s {
        *v /= norm;
        if !v.is_finite() {
            *v = 1.0;
        }
    }
    s
}

/// `Q(W · diag(s)) · diag(1/s)` for one layer, rows in parallel.
fn candidate(layer: &LinearWeight, scales: &[f32], scheme: &IntScheme) -> Vec<f32> {
    let (cols, glen) = (layer.cols, scheme.group_len(layer.cols));
    let mut out = vec![0.0f32; layer.values.len()];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(cols).zip(layer.values.par_chunks(cols)).for_each(|(dst, src)| {
        let scaled: Vec<f32> = src.iter().zip(scales).map(|(w, s)| w * s).collect();
        fake_quantize_row(scheme, glen, &scaled, dst);
        for (d, s) in dst.iter_mut().zip(scales) {
            *d /= s;
        }
    });
    out
}

/// AWQ's scale search over `layers` (the linear layers that read one input, in a fixed order), given the mean
/// absolute activation of each input column over the calibration tokens.
///
/// Errors: no layer, layers of different input counts, `x_abs_mean` of the wrong length, a scheme that does not
/// fit, or no ratio with a finite loss ([`AwqError::NoFiniteLoss`], carrying every loss).
pub fn search_scale(
    layers: &[&LinearWeight],
    x_abs_mean: &[f32],
    scheme: IntScheme,
    opts: &AwqOptions,
    loss: &dyn ScaleLoss,
) -> Result<ScaleSearch, AwqError> {
    let w_mean = normalized_weight_mean(layers, scheme)?;
    check_len(&layers[0].name, "activation means", w_mean.len(), x_abs_mean.len())?;
    let mut best: Option<(f64, f32, Vec<f32>)> = None;
    let mut losses = Vec::with_capacity(opts.n_grid);
    for i in 0..opts.n_grid {
        let ratio = i as f32 / opts.n_grid as f32;
        let scales = ratio_scales(x_abs_mean, &w_mean, ratio, opts.duo_scaling);
        let candidates: Vec<Vec<f32>> = layers.iter().map(|l| candidate(l, &scales, &scheme)).collect();
        let l = loss.loss(&candidates);
        losses.push(l);
        if l < best.as_ref().map_or(f64::INFINITY, |b| b.0) {
            best = Some((l, ratio, scales));
        }
    }
    match best {
        Some((loss, ratio, scales)) => Ok(ScaleSearch { scales, ratio, loss, losses }),
        None => Err(AwqError::NoFiniteLoss {
            layers: layers.iter().map(|l| format!("'{}'", l.name)).collect::<Vec<_>>().join(", "),
            losses,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_normalised_by_the_geometric_mean_of_their_extremes() {
        // α = 0.5, equal weight means: s ∝ sqrt(x_mean) = [1, 2], divided by sqrt(1 · 2) → [1/√2, √2].
        let s = ratio_scales(&[1.0, 4.0], &[0.5, 0.5], 0.5, true);
        assert!(
            (s[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (s[1] - std::f32::consts::SQRT_2).abs() < 1e-6
        );
        // α = 0 without duo scaling is identity.
        assert_eq!(ratio_scales(&[3.0, 0.0, 7.0], &[0.1, 0.2, 0.3], 0.0, false), [1.0; 3]);
        // α = 0 with duo scaling: s ∝ 1 / (w_mean + 1e-4).
        let s = ratio_scales(&[3.0, 5.0], &[0.2 - 1e-4, 0.8 - 1e-4], 0.0, true);
        assert!((s[0] / s[1] - 4.0).abs() < 1e-4);
        // A zero activation is clamped at 1e-4 before normalising by sqrt(1e-4 · 1) = 0.01.
        let s = ratio_scales(&[0.0, 1.0], &[1.0, 1.0], 0.5, false);
        assert!((s[0] - 0.01).abs() < 1e-7 && (s[1] - 100.0).abs() < 1e-3, "{s:?}");
        // NaN propagates through max/min as in torch: every scale becomes 1; so does an infinite one.
        assert_eq!(ratio_scales(&[f32::NAN, 2.0, 3.0], &[0.5; 3], 0.5, true), [1.0; 3]);
        let s = ratio_scales(&[f32::INFINITY, 2.0], &[0.5; 2], 0.5, false);
        assert_eq!(s, [1.0, 0.0]);
    }

    #[test]
    fn weight_means_normalise_each_group_by_its_maximum() {
        let sch = IntScheme::new(4, Some(8), false, crate::intquant::ScaleDtype::F16).unwrap();
        let mut v = vec![1.0f32; 16];
        v[0] = -4.0;
        v[8] = 2.0;
        let a = LinearWeight { name: "a".into(), rows: 1, cols: 16, values: v };
        let b = LinearWeight { name: "b".into(), rows: 1, cols: 16, values: vec![0.0; 16] };
        let m = normalized_weight_mean(&[&a, &b], sch).unwrap();
        // Row a: group 0 max 4, group 1 max 2; row b contributes zeros; the mean is over 2 rows.
        let want = |x: f32, max: f32| x / (max + 1e-6) / 2.0;
        assert!((m[0] - want(4.0, 4.0)).abs() < 1e-6);
        assert!((m[1] - want(1.0, 4.0)).abs() < 1e-6);
        assert!((m[8] - want(2.0, 2.0)).abs() < 1e-6);
        assert!((m[9] - want(1.0, 2.0)).abs() < 1e-6);
    }
}
