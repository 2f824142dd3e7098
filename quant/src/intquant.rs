//! Integer weight quantization, the family GPTQ, AWQ and compressed-tensors checkpoints store: each output
//! row of a linear layer is cut into groups of input columns, each (row, group) has a scale `s` and an
//! unsigned zero point `z`, and a weight is stored as the code `q ∈ [0, 2^bits)` with the value
//! `s · (q − z)`.
//!
//! Invariants:
//! - [`QuantizedLinear`] holds codes and zero points unsigned and unpacked (one byte each), scales as `f32`
//!   values already rounded to the stored scale type ([`ScaleDtype`]), so that [`QuantizedLinear::dequantize`]
//!   is exactly what a loader computes from the written file;
//! - symmetric schemes have every zero point equal to `2^(bits−1)`;
//! - the group of input column `k` is `g_idx[k]` when a `g_idx` is present (act-order), else `k / group`.

use half::{bf16, f16};

/// Why an integer scheme or layer does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntQuantError {
    #[error("{bits}-bit weights are not supported (2, 3, 4 or 8)")]
    Bits { bits: u8 },
    #[error("group size {group} is not supported (-1, 32, 64 or 128, or a positive multiple of 8)")]
    GroupSize { group: usize },
    #[error("layer '{layer}': {cols} input features are not a multiple of the group size {group}")]
    Indivisible { layer: String, cols: usize, group: usize },
    #[error("layer '{layer}': {what}: expected {expected} values, got {got}")]
    Size { layer: String, what: &'static str, expected: usize, got: usize },
}

/// The type a checkpoint stores its scales in; every scale is rounded to it before codes are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum ScaleDtype {
    #[default]
    F16,
    BF16,
    F32,
}

impl ScaleDtype {
    /// `v` rounded to this type (round-to-nearest-even), back as `f32`.
    pub fn round(self, v: f32) -> f32 {
        match self {
            ScaleDtype::F16 => f16::from_f32(v).to_f32(),
            ScaleDtype::BF16 => bf16::from_f32(v).to_f32(),
            ScaleDtype::F32 => v,
        }
    }
}

/// Bits, groups and symmetry of an integer scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IntScheme {
    pub bits: u8,
    /// Input columns per group; `None` is one group per row (`group_size = -1`).
    pub group_size: Option<usize>,
    pub sym: bool,
    pub scale_dtype: ScaleDtype,
}

impl IntScheme {
    /// A checked scheme.
    pub fn new(bits: u8, group_size: Option<usize>, sym: bool, scale_dtype: ScaleDtype) -> Result<Self, IntQuantError> {
        if !matches!(bits, 2 | 3 | 4 | 8) {
            return Err(IntQuantError::Bits { bits });
        }
        if let Some(g) = group_size {
            if g == 0 || !g.is_multiple_of(8) {
                return Err(IntQuantError::GroupSize { group: g });
            }
        }
        Ok(IntScheme { bits, group_size, sym, scale_dtype })
    }

    /// The largest code, `2^bits − 1`.
    pub fn maxq(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// The zero point of a symmetric scheme, `2^(bits−1)`.
    pub fn sym_zero(&self) -> u8 {
        1u8 << (self.bits - 1)
    }

    /// Columns per group for a layer of `cols` inputs.
    pub fn group_len(&self, cols: usize) -> usize {
        self.group_size.unwrap_or(cols).max(1)
    }

    /// Groups per row for a layer of `cols` inputs.
    pub fn n_groups(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_len(cols))
    }

    /// Refuse a layer whose input count is not a whole number of groups.
    pub fn check_layer(&self, layer: &str, cols: usize) -> Result<(), IntQuantError> {
        match self.group_size {
            Some(g) if !cols.is_multiple_of(g) => {
                Err(IntQuantError::Indivisible { layer: layer.into(), cols, group: g })
            }
            _ => Ok(()),
        }
    }

    /// GPTQ's `find_params` for one row's group of values: the range always includes 0; symmetric ranges
    /// are centred with zero `2^(bits−1)`; an all-zero group gets the range `[−1, 1]`. The scale is rounded
    /// to [`IntScheme::scale_dtype`] (a scale that rounds to 0 becomes the smallest positive value of it).
    pub fn find_params(&self, values: &[f32]) -> (f32, u8) {
        let (xmin, xmax) = self.range(values);
        self.params_for_range(xmin, xmax)
    }

    /// GPTQ's range of a group: `[min(x, 0), max(x, 0)]`, centred when symmetric, `[−1, 1]` when all zero.
    fn range(&self, values: &[f32]) -> (f32, f32) {
        let mut xmin = values.iter().copied().fold(0.0f32, f32::min);
        let mut xmax = values.iter().copied().fold(0.0f32, f32::max);
        if self.sym {
            xmax = xmax.max(-xmin);
            if xmin < 0.0 {
                xmin = -xmax;
            }
        }
        if xmin == 0.0 && xmax == 0.0 {
            (-1.0, 1.0)
        } else {
            (xmin, xmax)
        }
    }

    /// Scale and zero point of the range `[xmin, xmax]`.
    fn params_for_range(&self, xmin: f32, xmax: f32) -> (f32, u8) {
        let maxq = self.maxq() as f32;
        let scale = self.round_scale((xmax - xmin) / maxq);
        let zero = if self.sym { self.sym_zero() } else { (-xmin / scale).round_ties_even().clamp(0.0, maxq) as u8 };
        (scale, zero)
    }

    /// [`IntScheme::find_params`] with GPTQ's optional MSE search: the range shrunk by `p = 1 − i/100` for
    /// `i < 80`, keeping the first one whose codes minimise `Σ |x − x̂|^2.4`.
    pub fn find_params_mse(&self, values: &[f32]) -> (f32, u8) {
        let (xmin, xmax) = self.range(values);
        let err = |s: f32, z: u8| -> f64 {
            let deq = |x: f32| s * (f32::from(self.code(x, s, z)) - f32::from(z));
            values.iter().map(|&x| f64::from((deq(x) - x).abs()).powf(2.4)).sum()
        };
        let mut best: Option<(f64, f32, u8)> = None;
        for i in 0..80 {
            let p = 1.0 - i as f32 / 100.0;
            let (s, z) = self.params_for_range(p * xmin, p * xmax);
            let e = err(s, z);
            if best.is_none_or(|b| e < b.0) {
                best = Some((e, s, z));
            }
        }
        best.map(|b| (b.1, b.2)).unwrap_or_else(|| self.params_for_range(xmin, xmax))
    }

    /// `scale` rounded to the stored type, never zero.
    pub fn round_scale(&self, scale: f32) -> f32 {
        let s = self.scale_dtype.round(scale);
        if s > 0.0 && s.is_finite() {
            s
        } else if s.is_infinite() {
            self.scale_dtype.round(f32::MAX)
        } else {
            match self.scale_dtype {
                ScaleDtype::F16 => f16::from_bits(1).to_f32(),
                ScaleDtype::BF16 => bf16::from_bits(1).to_f32(),
                ScaleDtype::F32 => f32::from_bits(1),
            }
        }
    }

    /// The code of `x`: `clamp(round(x / scale) + zero, 0, maxq)`, rounding half to even as torch does.
    pub fn code(&self, x: f32, scale: f32, zero: u8) -> u8 {
        ((x / scale).round_ties_even() + f32::from(zero)).clamp(0.0, self.maxq() as f32) as u8
    }
}

/// A quantized linear layer (`y = W x`, `W` of `rows` outputs by `cols` inputs), unpacked.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLinear {
    pub rows: usize,
    pub cols: usize,
    pub scheme: IntScheme,
    /// Codes, row-major `[rows, cols]`.
    pub q: Vec<u8>,
    /// Scales, row-major `[rows, n_groups]`.
    pub scales: Vec<f32>,
    /// Unsigned zero points, row-major `[rows, n_groups]`.
    pub zeros: Vec<u8>,
    /// The group of each input column (act-order); `None` means `k / group_len`.
    pub g_idx: Option<Vec<u32>>,
}

impl QuantizedLinear {
    /// Groups per row.
    pub fn n_groups(&self) -> usize {
        self.scheme.n_groups(self.cols)
    }

    /// The group of input column `k`.
    pub fn group_of(&self, k: usize) -> usize {
        match &self.g_idx {
            Some(g) => g[k] as usize,
            None => k / self.scheme.group_len(self.cols),
        }
    }

    /// Check that every buffer has its shape's length and every index is in range.
    pub fn check(&self, layer: &str) -> Result<(), IntQuantError> {
        let size = |what, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(IntQuantError::Size { layer: layer.into(), what, expected, got })
            }
        };
        let ng = self.n_groups();
        size("codes", self.rows * self.cols, self.q.len())?;
        size("scales", self.rows * ng, self.scales.len())?;
        size("zero points", self.rows * ng, self.zeros.len())?;
        if let Some(g) = &self.g_idx {
            size("g_idx", self.cols, g.len())?;
            if let Some(bad) = g.iter().find(|&&v| v as usize >= ng) {
                return Err(IntQuantError::Size {
                    layer: layer.into(),
                    what: "g_idx group",
                    expected: ng,
                    got: *bad as usize,
                });
            }
        }
        Ok(())
    }

    /// Row `r` dequantized into `out` (`cols` values): `scales[r, g(k)] · (q[r, k] − zeros[r, g(k)])`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let ng = self.n_groups();
        let (s, z) = (&self.scales[r * ng..(r + 1) * ng], &self.zeros[r * ng..(r + 1) * ng]);
        for (k, (o, &q)) in out.iter_mut().zip(&self.q[r * self.cols..(r + 1) * self.cols]).enumerate() {
            let g = self.group_of(k);
            *o = s[g] * (f32::from(q) - f32::from(z[g]));
        }
    }

    /// The whole weight dequantized, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// The same layer with its output rows reordered: row `i` of the result is row `perm[i]` of `self`.
    pub fn permute_rows(&self, perm: &[usize]) -> QuantizedLinear {
        let ng = self.n_groups();
        let gather = |v: &[u8], w: usize| perm.iter().flat_map(|&p| v[p * w..(p + 1) * w].iter().copied()).collect();
        QuantizedLinear {
            q: gather(&self.q, self.cols),
            zeros: gather(&self.zeros, ng),
            scales: perm.iter().flat_map(|&p| self.scales[p * ng..(p + 1) * ng].iter().copied()).collect(),
            ..self.clone()
        }
    }
}

/// Round-to-nearest: every (row, group) quantized with [`IntScheme::find_params`], no calibration.
pub fn rtn(
    layer: &str,
    weight: &[f32],
    rows: usize,
    cols: usize,
    scheme: IntScheme,
) -> Result<QuantizedLinear, IntQuantError> {
    scheme.check_layer(layer, cols)?;
    if weight.len() != rows * cols {
        return Err(IntQuantError::Size {
            layer: layer.into(),
            what: "weight",
            expected: rows * cols,
            got: weight.len(),
        });
    }
    let (glen, ng) = (scheme.group_len(cols), scheme.n_groups(cols));
    let mut out = QuantizedLinear {
        rows,
        cols,
        scheme,
        q: vec![0; rows * cols],
        scales: vec![0.0; rows * ng],
        zeros: vec![0; rows * ng],
        g_idx: None,
    };
    for r in 0..rows {
        for g in 0..ng {
            let span = g * glen..((g + 1) * glen).min(cols);
            let (s, z) = scheme.find_params(&weight[r * cols..][span.clone()]);
            out.scales[r * ng + g] = s;
            out.zeros[r * ng + g] = z;
            for k in span {
                out.q[r * cols + k] = scheme.code(weight[r * cols + k], s, z);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(bits: u8, group: Option<usize>, sym: bool) -> IntScheme {
        IntScheme::new(bits, group, sym, ScaleDtype::F32).unwrap()
    }

    #[test]
    fn find_params_follows_gptq() {
        // Symmetric 4-bit: range [-max|x|, max|x|], zero 8, scale 2·max/15.
        let (s, z) = scheme(4, None, true).find_params(&[-1.5, 0.25, 3.0]);
        assert_eq!(z, 8);
        assert!((s - 6.0 / 15.0).abs() < 1e-7);
        // All non-negative, symmetric: xmin stays 0, so the scale is max/15 and zero still 8.
        let (s, z) = scheme(4, None, true).find_params(&[0.5, 3.0]);
        assert_eq!((s, z), (3.0 / 15.0, 8));
        // Asymmetric: zero = round(-xmin / scale); 0 when nothing is negative.
        let (s, z) = scheme(4, None, false).find_params(&[-1.0, 2.0]);
        assert!((s - 0.2).abs() < 1e-7);
        assert_eq!(z, 5);
        assert_eq!(scheme(4, None, false).find_params(&[0.5, 3.0]).1, 0);
        // All zero: range [-1, 1].
        let (s, z) = scheme(8, None, false).find_params(&[0.0; 4]);
        // -xmin / scale is 127.49999 in f32, as in torch.
        assert_eq!((s, z), (2.0 / 255.0, 127));
    }

    #[test]
    fn mse_search_shrinks_the_range_around_an_outlier() {
        let mut v: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 16.0).collect();
        v[0] = -8.0;
        let s = scheme(4, None, true);
        let err = |(sc, z): (f32, u8)| -> f64 {
            v.iter().map(|&x| f64::from((sc * (f32::from(s.code(x, sc, z)) - f32::from(z)) - x).abs()).powf(2.4)).sum()
        };
        let (plain, mse) = (s.find_params(&v), s.find_params_mse(&v));
        assert!(mse.0 < plain.0, "{mse:?} vs {plain:?}");
        assert!(err(mse) < err(plain));
    }

    #[test]
    fn scales_are_rounded_to_the_stored_type_and_never_zero() {
        let s = IntScheme::new(4, None, true, ScaleDtype::F16).unwrap();
        let (scale, _) = s.find_params(&[0.1234567]);
        assert_eq!(scale, f16::from_f32(0.1234567 / 15.0).to_f32());
        assert!(s.find_params(&[1e-12]).0 > 0.0);
    }

    #[test]
    fn rtn_dequantizes_to_the_nearest_grid_point() {
        let (rows, cols) = (3, 16);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let sch = scheme(4, Some(8), false);
        let q = rtn("t", &w, rows, cols, sch).unwrap();
        q.check("t").unwrap();
        let d = q.dequantize();
        for r in 0..rows {
            for g in 0..2 {
                let s = q.scales[r * 2 + g];
                for k in g * 8..(g + 1) * 8 {
                    assert!((d[r * cols + k] - w[r * cols + k]).abs() <= s / 2.0 + 1e-6, "r{r} k{k}");
                }
            }
        }
        assert!(matches!(rtn("t", &w, rows, cols, scheme(4, Some(32), true)), Err(IntQuantError::Indivisible { .. })));
        assert!(IntScheme::new(5, None, true, ScaleDtype::F16).is_err());
        assert!(IntScheme::new(4, Some(12), true, ScaleDtype::F16).is_err());
    }

    #[test]
    fn row_permutation_moves_whole_rows() {
        let w: Vec<f32> = (0..4 * 8).map(|i| i as f32 - 9.0).collect();
        let q = rtn("t", &w, 4, 8, scheme(4, Some(8), true)).unwrap();
        let p = q.permute_rows(&[2, 0, 3, 1]);
        let (d, dp) = (q.dequantize(), p.dequantize());
        assert_eq!(&dp[0..8], &d[16..24]);
        assert_eq!(&dp[24..32], &d[8..16]);
    }
}
