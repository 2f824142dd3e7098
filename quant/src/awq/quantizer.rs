//! AWQ's quantizer (AutoAWQ `pseudo_quantize_tensor`), per (row, group):
//!
//! - asymmetric (`zero_point=True`): `s = max(max − min, 1e-5) / maxq`, `z = clamp(−round(min / s), 0, maxq)`,
//!   `q = clamp(round(w / s) + z, 0, maxq)` with the group's raw extremes (0 is not forced into the range);
//! - symmetric: `s = max(max|w|, 1e-5) / (2^(bits−1) − 1)` and `q = clamp(round(w / s), −2^(bits−1), 2^(bits−1) − 1)`,
//!   stored offset by the scheme's symmetric zero `2^(bits−1)`.
//!
//! Every scale is rounded to the scheme's stored type before the codes are chosen, and rounding is half to
//! even as in torch, so [`awq_quantize`]`(..).dequantize()` and the fake quantization of the searches agree
//! to the bit.

use rayon::prelude::*;

use crate::intquant::{IntQuantError, IntScheme, QuantizedLinear};

/// AWQ's scale and unsigned zero point of one group of weights.
pub(super) fn awq_params(scheme: &IntScheme, values: &[f32]) -> (f32, u8) {
    if scheme.sym {
        let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-5);
        let qmax = ((1u32 << (scheme.bits - 1)) - 1) as f32;
        (scheme.round_scale(amax / qmax), scheme.sym_zero())
    } else {
        let maxq = scheme.maxq() as f32;
        let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let s = scheme.round_scale((hi - lo).max(1e-5) / maxq);
        let z = (-(lo / s).round_ties_even()).clamp(0.0, maxq);
        (s, z as u8)
    }
}

/// One row quantized and dequantized in place of `out`: `s · (q − z)` per value, groups of `glen` columns.
pub(super) fn fake_quantize_row(scheme: &IntScheme, glen: usize, row: &[f32], out: &mut [f32]) {
    for (src, dst) in row.chunks(glen).zip(out.chunks_mut(glen)) {
        let (s, z) = awq_params(scheme, src);
        for (o, &w) in dst.iter_mut().zip(src) {
            *o = s * (f32::from(scheme.code(w, s, z)) - f32::from(z));
        }
    }
}

/// `rows · cols`, or `usize::MAX` when it overflows (which no buffer length matches).
pub(super) fn area(rows: usize, cols: usize) -> usize {
    rows.saturating_mul(cols)
}

/// Quantize a `[rows, cols]` row-major weight with AWQ's quantizer (see the module documentation).
///
/// Refuses an input count that is not a whole number of groups and a buffer of the wrong length. NaN weights
/// are not refused (AutoAWQ asserts there are none); they take code 0.
pub fn awq_quantize(
    layer: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    scheme: IntScheme,
) -> Result<QuantizedLinear, IntQuantError> {
    scheme.check_layer(layer, cols)?;
    if w.len() != area(rows, cols) {
        return Err(IntQuantError::Size {
            layer: layer.into(),
            what: "weight",
            expected: area(rows, cols),
            got: w.len(),
        });
    }
    let (glen, ng) = (scheme.group_len(cols), scheme.n_groups(cols));
    let mut out = QuantizedLinear {
        rows,
        cols,
        scheme,
        q: vec![0; w.len()],
        scales: vec![0.0; rows * ng],
        zeros: vec![0; rows * ng],
        g_idx: None,
    };
    if w.is_empty() {
        return Ok(out);
    }
    out.q
        .par_chunks_mut(cols)
        .zip(out.scales.par_chunks_mut(ng))
        .zip(out.zeros.par_chunks_mut(ng))
        .zip(w.par_chunks(cols))
        .for_each(|(((q, scales), zeros), row)| {
            for (g, (src, codes)) in row.chunks(glen).zip(q.chunks_mut(glen)).enumerate() {
                let (s, z) = awq_params(&scheme, src);
                scales[g] = s;
                zeros[g] = z;
                for (c, &v) in codes.iter_mut().zip(src) {
                    *c = scheme.code(v, s, z);
                }
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intquant::ScaleDtype;

    fn scheme(bits: u8, group: Option<usize>, sym: bool) -> IntScheme {
        IntScheme::new(bits, group, sym, ScaleDtype::F32).unwrap()
    }

    #[test]
    fn asymmetric_groups_take_their_raw_range_and_round_half_to_even() {
        // Range 15 → s = 1; z = −round(−2.5) = 2 (half to even, not 3); codes round(w) + 2.
        let q = awq_quantize("t", &[-2.5, 0.5, 3.5, 12.5], 1, 4, scheme(4, None, false)).unwrap();
        assert_eq!((q.scales[0], q.zeros[0]), (1.0, 2));
        assert_eq!(q.q, [0, 2, 6, 14]);
        // All positive: the range is [1, 8.5], not [0, 8.5]: s = 0.5, z = clamp(−2, 0, 15) = 0, and the top
        // values saturate at code 15.
        let q = awq_quantize("t", &[1.0, 2.5, 4.0, 8.5], 1, 4, scheme(4, None, false)).unwrap();
        assert_eq!((q.scales[0], q.zeros[0]), (0.5, 0));
        assert_eq!(q.q, [2, 5, 8, 15]);
        assert_eq!(q.dequantize(), [1.0, 2.5, 4.0, 7.5]);
        // A constant group: the range is clamped to 1e-5.
        let q = awq_quantize("t", &[0.0; 4], 1, 4, scheme(4, None, false)).unwrap();
        assert_eq!(q.scales[0], 1e-5 / 15.0);
        assert_eq!(q.dequantize(), [0.0; 4]);
    }

    #[test]
    fn symmetric_groups_scale_by_max_abs_over_half_range() {
        // s = 7 / 7 = 1; round(−3.5) = −4 (half to even); codes offset by 8.
        let q = awq_quantize("t", &[-3.5, 1.0, 0.2, 7.0], 1, 4, scheme(4, None, true)).unwrap();
        assert_eq!((q.scales[0], q.zeros[0]), (1.0, 8));
        assert_eq!(q.q, [4, 9, 8, 15]);
        assert_eq!(q.dequantize(), [-4.0, 1.0, 0.0, 7.0]);
        // 8-bit: s = 2.54 / 127 (in f32), and −max lands on −127, not on the −128 that GPTQ's range would use.
        let q = awq_quantize("t", &[-2.54, 2.54, 0.0, 0.0], 1, 4, scheme(8, None, true)).unwrap();
        assert_eq!(q.scales[0], 2.54f32 / 127.0);
        assert_eq!(q.q, [1, 255, 128, 128]);
    }

    #[test]
    fn stored_scale_type_rounds_before_codes() {
        let s16 = IntScheme::new(4, None, false, ScaleDtype::F16).unwrap();
        let w = [-0.3, 0.1, 0.7, 1.1];
        let q = awq_quantize("t", &w, 1, 4, s16).unwrap();
        let s = half::f16::from_f32(1.4f32 / 15.0).to_f32();
        assert_eq!(q.scales[0], s);
        let z = (-(-0.3f32 / s).round_ties_even()).clamp(0.0, 15.0);
        assert_eq!(f32::from(q.zeros[0]), z);
        for (k, &v) in w.iter().enumerate() {
            assert_eq!(f32::from(q.q[k]), ((v / s).round_ties_even() + z).clamp(0.0, 15.0));
        }
    }

    #[test]
    fn fake_quantization_equals_the_dequantized_layer() {
        let (rows, cols) = (5, 32);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 113) as f32 - 50.0) / 37.0).collect();
        for sym in [false, true] {
            let sch = IntScheme::new(3, Some(16), sym, ScaleDtype::F16).unwrap();
            let q = awq_quantize("t", &w, rows, cols, sch).unwrap();
            q.check("t").unwrap();
            let mut fake = vec![0.0; rows * cols];
            for (src, dst) in w.chunks(cols).zip(fake.chunks_mut(cols)) {
                fake_quantize_row(&sch, 16, src, dst);
            }
            assert_eq!(fake, q.dequantize());
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let sch = IntScheme::new(4, Some(32), false, ScaleDtype::F16).unwrap();
        assert!(matches!(awq_quantize("t", &[0.0; 48], 1, 48, sch), Err(IntQuantError::Indivisible { .. })));
        assert!(matches!(awq_quantize("t", &[0.0; 31], 1, 32, sch), Err(IntQuantError::Size { .. })));
        assert!(matches!(awq_quantize("t", &[], usize::MAX, 32, sch), Err(IntQuantError::Size { .. })));
        let empty = awq_quantize("t", &[], 0, 32, sch).unwrap();
        assert!(empty.q.is_empty() && empty.scales.is_empty());
    }

    proptest::proptest! {
        /// A group whose range holds 0 dequantizes every value to within one step: half a step from rounding,
        /// plus at most one more where the top code saturates (`round(max / s) + z` can exceed `maxq` by one).
        #[test]
        fn groups_spanning_zero_dequantize_within_a_step(
            lo in 0.01f32..10.0,
            hi in 0.01f32..10.0,
            rest in proptest::collection::vec(-1.0f32..1.0, 14),
            bits in proptest::sample::select(vec![2u8, 3, 4, 8]),
            sym: bool,
        ) {
            let mut w = vec![-lo, hi];
            w.extend(rest.iter().map(|v| if *v < 0.0 { v * lo } else { v * hi }));
            let sch = IntScheme::new(bits, None, sym, ScaleDtype::F16).unwrap();
            let q = awq_quantize("t", &w, 1, 16, sch).unwrap();
            let s = q.scales[0];
            for (d, v) in q.dequantize().iter().zip(&w) {
                proptest::prop_assert!((d - v).abs() <= s * 1.001, "{} vs {} (scale {})", d, v, s);
            }
        }
    }
}
