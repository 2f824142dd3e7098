//! The searches against f64 reference code written here, and against their own claims (AWQ beats plain
//! round-to-nearest where one input column is loud; clipping an outlier lowers the output error).

use super::*;
use crate::calibrate::LinearWeight;
use crate::intquant::{IntScheme, ScaleDtype};

/// Uniform values in [−1, 1) from a fixed linear congruential sequence.
fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn layer(name: &str, rows: usize, cols: usize, seed: u64) -> LinearWeight {
    LinearWeight { name: name.into(), rows, cols, values: uniform(seed, rows * cols) }
}

/// Tokens whose column `loud` is `gain` times louder than the rest.
fn tokens(n: usize, cols: usize, loud: usize, gain: f32, seed: u64) -> Vec<f32> {
    let mut x = uniform(seed, n * cols);
    for t in 0..n {
        x[t * cols + loud] *= gain;
    }
    x
}

fn abs_mean(x: &[f32], cols: usize) -> Vec<f32> {
    let n = x.len() / cols;
    (0..cols).map(|c| ((0..n).map(|t| f64::from(x[t * cols + c].abs())).sum::<f64>() / n as f64) as f32).collect()
}

/// AWQ's quantizer in f64 (scales not rounded: used with `ScaleDtype::F32`).
fn quantize_f64(w: &[f64], glen: usize, bits: u32, sym: bool) -> Vec<f64> {
    let mut out = vec![0.0; w.len()];
    for (src, dst) in w.chunks(glen).zip(out.chunks_mut(glen)) {
        if sym {
            let qmax = f64::from((1u32 << (bits - 1)) - 1);
            let s = src.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-5) / qmax;
            for (d, v) in dst.iter_mut().zip(src) {
                *d = (v / s).round_ties_even().clamp(-qmax - 1.0, qmax) * s;
            }
        } else {
            let maxq = f64::from((1u32 << bits) - 1);
            let lo = src.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = src.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s = (hi - lo).max(1e-5) / maxq;
            let z = (-(lo / s).round_ties_even()).clamp(0.0, maxq);
            for (d, v) in dst.iter_mut().zip(src) {
                *d = (((v / s).round_ties_even() + z).clamp(0.0, maxq) - z) * s;
            }
        }
    }
    out
}

/// `mean((X·Wᵀ − X·Ŵᵀ)²)` over all layers' outputs, directly, in f64.
fn output_mse(x: &[f32], cols: usize, originals: &[&[f32]], candidates: &[Vec<f64>]) -> f64 {
    let n = x.len() / cols;
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (w, q) in originals.iter().zip(candidates) {
        for r in 0..w.len() / cols {
            for t in 0..n {
                let xt = &x[t * cols..(t + 1) * cols];
                let y: f64 = (0..cols).map(|k| f64::from(xt[k]) * f64::from(w[r * cols + k])).sum();
                let yq: f64 = (0..cols).map(|k| f64::from(xt[k]) * q[r * cols + k]).sum();
                sum += (y - yq) * (y - yq);
                count += 1;
            }
        }
    }
    sum / count as f64
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn a_loud_input_column_gets_a_larger_scale_and_beats_round_to_nearest() {
    let (cols, loud) = (32, 5);
    let layers = [layer("blk.0.attn_q.weight", 16, cols, 1), layer("blk.0.attn_k.weight", 8, cols, 2)];
    let refs: Vec<&LinearWeight> = layers.iter().collect();
    let x = tokens(64, cols, loud, 100.0, 3);
    let xm = abs_mean(&x, cols);
    let loss = LinearOutputLoss::new(&x, 64, &refs).unwrap();
    let originals: Vec<&[f32]> = layers.iter().map(|l| l.values.as_slice()).collect();
    for sym in [false, true] {
        let sch = IntScheme::new(4, Some(16), sym, ScaleDtype::F32).unwrap();
        // Plain round-to-nearest with AWQ's quantizer, scored in f64.
        let rtn: Vec<Vec<f64>> = layers
            .iter()
            .map(|l| quantize_f64(&l.values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 16, 4, sym))
            .collect();
        let rtn_loss = output_mse(&x, cols, &originals, &rtn);
        for duo_scaling in [false, true] {
            let case = format!("sym {sym}, duo {duo_scaling}");
            let opts = AwqOptions { duo_scaling, ..AwqOptions::default() };
            let found = search_scale(&refs, &xm, sch, &opts, &loss).unwrap();
            assert_eq!(found.losses.len(), 20);
            assert_eq!(found.loss, found.losses.iter().copied().fold(f64::INFINITY, f64::min));
            let first_best = found.losses.iter().position(|&l| l == found.loss).unwrap();
            assert_eq!(found.ratio, first_best as f32 / 20.0);
            assert!(found.ratio > 0.0, "{case}: {:?}", found.losses);
            if !duo_scaling {
                // α = 0 without duo scaling is s = 1: plain round-to-nearest.
                let l0 = found.losses[0];
                assert!((l0 - rtn_loss).abs() <= 1e-4 * rtn_loss, "{case}: {l0} vs {rtn_loss}");
                assert!(found.loss <= l0);
            }
            assert!(found.loss < rtn_loss, "{case}: {} vs RTN {rtn_loss}", found.loss);
            let others = found.scales.iter().enumerate().filter(|&(c, _)| c != loud).map(|(_, &s)| s);
            let max_other = others.fold(0.0f32, f32::max);
            assert!(found.scales[loud] > 2.0 * max_other, "{case}: {:?}", found.scales);
        }
    }
}

#[test]
fn losses_equal_an_f64_reference() {
    let (cols, glen) = (32, 16);
    let layers = [layer("up", 12, cols, 11), layer("gate", 12, cols, 12)];
    let refs: Vec<&LinearWeight> = layers.iter().collect();
    let x = tokens(40, cols, 9, 30.0, 13);
    let xm = abs_mean(&x, cols);
    let sch = IntScheme::new(4, Some(glen), false, ScaleDtype::F32).unwrap();
    let found =
        search_scale(&refs, &xm, sch, &AwqOptions::default(), &LinearOutputLoss::new(&x, 40, &refs).unwrap()).unwrap();
    // w_mean: per group-normalised |W| averaged over the 24 concatenated rows.
    let mut w_mean = vec![0.0f64; cols];
    for l in &layers {
        for r in 0..l.rows {
            for g in 0..cols / glen {
                let grp = &l.values[r * cols + g * glen..r * cols + (g + 1) * glen];
                let m = grp.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs())) + 1e-6;
                for (k, &v) in grp.iter().enumerate() {
                    w_mean[g * glen + k] += f64::from(v).abs() / m / 24.0;
                }
            }
        }
    }
    for i in [0usize, 7, 13] {
        let a = i as f64 / 20.0;
        let raw: Vec<f64> =
            (0..cols).map(|c| (f64::from(xm[c]).powf(a) / (w_mean[c].powf(1.0 - a) + 1e-4)).max(1e-4)).collect();
        let hi = raw.iter().copied().fold(f64::MIN, f64::max);
        let lo = raw.iter().copied().fold(f64::MAX, f64::min);
        let s: Vec<f64> = raw.iter().map(|v| v / (hi * lo).sqrt()).collect();
        let cands: Vec<Vec<f64>> = layers
            .iter()
            .map(|l| {
                let scaled: Vec<f64> = l.values.iter().enumerate().map(|(k, &v)| f64::from(v) * s[k % cols]).collect();
                let q = quantize_f64(&scaled, glen, 4, false);
                q.iter().enumerate().map(|(k, v)| v / s[k % cols]).collect()
            })
            .collect();
        let originals: Vec<&[f32]> = layers.iter().map(|l| l.values.as_slice()).collect();
        let want = output_mse(&x, cols, &originals, &cands);
        let got = found.losses[i];
        assert!((got - want).abs() <= 1e-3 * want, "α {a}: {got} vs {want}");
        if i == 7 {
            let got_s = ratio_scales(&xm, &normalized_weight_mean(&refs, sch).unwrap(), a as f32, true);
            for (g, w) in got_s.iter().zip(&s) {
                assert!((f64::from(*g) - w).abs() <= 1e-5 * w, "{g} vs {w}");
            }
        }
    }
}

#[test]
fn the_gram_form_equals_the_token_form() {
    let l = layer("down", 8, 16, 21);
    let refs = [&l];
    let cand: Vec<f32> = l.values.iter().map(|v| v * 0.9 + 0.01).collect();
    let cand64: Vec<f64> = cand.iter().map(|&v| f64::from(v)).collect();
    // 30 tokens of 16 features: `new` keeps XᵀX; 8 tokens: it keeps the tokens.
    for n in [30, 8] {
        let x = tokens(n, 16, 0, 1.0, 22);
        let want = output_mse(&x, 16, &[&l.values], std::slice::from_ref(&cand64));
        let from_x = LinearOutputLoss::new(&x, n, &refs).unwrap();
        let mut gram = vec![0.0f32; 256];
        crate::linalg::xtx(&x, n, 16, &mut gram);
        let from_g = LinearOutputLoss::from_gram(gram, n as u64, &refs).unwrap();
        for got in [from_x.loss(std::slice::from_ref(&cand)), from_g.loss(std::slice::from_ref(&cand))] {
            assert!((got - want).abs() <= 1e-5 * want, "{n} tokens: {got} vs {want}");
        }
        assert_eq!(from_x.loss(std::slice::from_ref(&l.values)), 0.0);
        assert!(from_x.loss(&[]).is_nan());
        assert!(from_x.loss(&[vec![0.0; 3]]).is_nan());
    }
    // Fewer tokens than features, but more than one product takes at a time.
    let wide = layer("o", 3, 1100, 23);
    let x = tokens(1050, 1100, 0, 1.0, 24);
    let cand: Vec<f32> = wide.values.iter().map(|v| v * 1.1).collect();
    let want = output_mse(&x, 1100, &[&wide.values], &[cand.iter().map(|&v| f64::from(v)).collect()]);
    let got = LinearOutputLoss::new(&x, 1050, &[&wide]).unwrap().loss(&[cand]);
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
}

struct Unusable;
impl ScaleLoss for Unusable {
    fn loss(&self, _: &[Vec<f32>]) -> f64 {
        f64::NAN
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let sch = IntScheme::new(4, Some(16), false, ScaleDtype::F16).unwrap();
    let opts = AwqOptions::default();
    let (a, b) = (layer("a", 4, 32, 1), layer("b", 4, 48, 2));
    let xm = vec![1.0; 32];
    assert!(matches!(search_scale(&[], &xm, sch, &opts, &Unusable), Err(AwqError::NoLayers)));
    match search_scale(&[&a], &xm, sch, &opts, &Unusable) {
        Err(AwqError::NoFiniteLoss { layers, losses }) => {
            assert_eq!(layers, "'a'");
            assert_eq!(losses.len(), 20);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(search_scale(&[&a, &b], &xm, sch, &opts, &Unusable), Err(AwqError::Size { .. })));
    assert!(matches!(search_scale(&[&a], &xm[..31], sch, &opts, &Unusable), Err(AwqError::Size { .. })));
    let coarse = IntScheme::new(4, Some(64), false, ScaleDtype::F16).unwrap();
    assert!(matches!(search_scale(&[&a], &xm, coarse, &opts, &Unusable), Err(AwqError::Quant(_))));
    let mut short = a.clone();
    short.values.pop();
    assert!(matches!(search_scale(&[&short], &xm, sch, &opts, &Unusable), Err(AwqError::Size { .. })));
    assert!(matches!(LinearOutputLoss::new(&[0.0; 33], 1, &[&a]), Err(AwqError::Size { .. })));
    assert!(matches!(LinearOutputLoss::from_gram(vec![0.0; 3], 1, &[&a]), Err(AwqError::Size { .. })));
    assert!(matches!(search_clip(&a, &[0.0; 33], 1, sch, &opts), Err(AwqError::Size { .. })));
    assert!(matches!(search_clip(&b, &[0.0; 48], 1, coarse, &opts), Err(AwqError::Quant(_))));
    // No tokens: nothing to measure, every group keeps its maximum.
    let kept = search_clip(&a, &[], 0, sch, &opts).unwrap();
    let wild = AwqOptions { max_shrink: 1e30, clip_grid: 4, ..opts };
    assert!(search_clip(&a, &[0.5; 64], 2, sch, &wild).unwrap().iter().all(|&m| m > 0.0));
    assert_eq!(kept.len(), 8);
    assert_eq!(kept[0], a.values[..16].iter().fold(0.0f32, |m, v| m.max(v.abs())));
}

#[test]
fn scale_search_does_not_depend_on_the_thread_count() {
    let layers = [layer("q", 128, 128, 31), layer("v", 64, 128, 32)];
    let refs: Vec<&LinearWeight> = layers.iter().collect();
    let x = tokens(96, 128, 17, 50.0, 33);
    let xm = abs_mean(&x, 128);
    let sch = IntScheme::new(4, Some(32), false, ScaleDtype::F16).unwrap();
    let run = || {
        let loss = LinearOutputLoss::new(&x, 96, &refs).unwrap();
        search_scale(&refs, &xm, sch, &AwqOptions::default(), &loss).unwrap()
    };
    let (one, two) = (in_pool(1, run), in_pool(2, run));
    assert_eq!(one, two);
    let clip = |t| in_pool(t, || search_clip(&layers[1], &x, 96, sch, &AwqOptions::default()).unwrap());
    assert_eq!(clip(1), clip(2));
}

/// Heavy-tailed rows (u³, so |w| < 1) with row 3 holding an outlier of 1.5 in its first group.
fn outlier_layer() -> LinearWeight {
    let mut l = layer("blk.0.ffn_down.weight", 8, 64, 41);
    l.values.iter_mut().for_each(|v| *v = v.powi(3));
    l.values[3 * 64 + 5] = 1.5;
    l
}

/// AWQ's asymmetric quantizer with torch's f32 arithmetic (`(max − min) / maxq`, `min / s`, rounded half to
/// even), each value dequantized to f64. A symmetric clamp makes `min / s` an exact tie (`−maxq / 2`) in real
/// numbers, so the clip reference has to round where torch does.
fn quantize_torch_f32(w: &[f32], glen: usize, bits: u32) -> Vec<f64> {
    let maxq = ((1u32 << bits) - 1) as f32;
    let mut out = Vec::with_capacity(w.len());
    for grp in w.chunks(glen) {
        let lo = grp.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = grp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s = (hi - lo).max(1e-5) / maxq;
        let z = (-(lo / s).round_ties_even()).clamp(0.0, maxq);
        out.extend(grp.iter().map(|v| f64::from(((v / s).round_ties_even() + z).clamp(0.0, maxq) - z) * f64::from(s)));
    }
    out
}

/// The clip search with f64 errors: per (row, group) the first of the 10 shrink steps with the smallest
/// `mean_t (x_t · (Q(clamp(w)) − w))²`; returns the chosen maxima, their errors and the unclipped errors.
fn clip_reference(l: &LinearWeight, x: &[f32], glen: usize, bits: u32) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let (cols, n) = (l.cols, x.len() / l.cols);
    let (mut best, mut best_err, mut first_err) = (vec![], vec![], vec![]);
    for r in 0..l.rows {
        for g in 0..cols / glen {
            let w = &l.values[r * cols + g * glen..r * cols + (g + 1) * glen];
            let org = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let (mut bm, mut be) = (org, 1e9);
            for i in 0..10 {
                let m = org * (1.0 - i as f32 / 20.0);
                let c: Vec<f32> = w.iter().map(|v| v.clamp(-m, m)).collect();
                let q = quantize_torch_f32(&c, glen, bits);
                let err = (0..n)
                    .map(|t| {
                        let e: f64 =
                            (0..glen).map(|k| f64::from(x[t * cols + g * glen + k]) * (q[k] - f64::from(w[k]))).sum();
                        e * e
                    })
                    .sum::<f64>()
                    / n as f64;
                if i == 0 {
                    first_err.push(err);
                }
                if err < be {
                    (bm, be) = (m, err);
                }
            }
            best.push(bm);
            best_err.push(be);
        }
    }
    (best, best_err, first_err)
}

#[test]
fn clipping_an_outlier_lowers_the_output_error() {
    let l = outlier_layer();
    let x = tokens(200, 64, 0, 1.0, 42);
    let sch = IntScheme::new(3, Some(32), false, ScaleDtype::F32).unwrap();
    let got = search_clip(&l, &x, 200, sch, &AwqOptions::default()).unwrap();
    let (want, best_err, unclipped_err) = clip_reference(&l, &x, 32, 3);
    assert_eq!(got.len(), 16);
    assert_eq!(got, want);
    // The outlier's group (row 3, group 0) is clipped, and clipping never raised a group's error.
    assert!(got[3 * 2] < 1.5 * 0.9, "{got:?}");
    assert!(best_err[6] < unclipped_err[6]);
    assert!(best_err.iter().zip(&unclipped_err).all(|(b, u)| b <= u));
    // Applying the maxima lowers the layer's whole output error, measured in f64.
    let mut clipped = l.values.clone();
    apply_clip(&l.name, &mut clipped, 8, 64, sch, &got).unwrap();
    let deq = |w: &[f32]| quantize_f64(&w.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 32, 3, false);
    let before = output_mse(&x, 64, &[&l.values], &[deq(&l.values)]);
    let after = output_mse(&x, 64, &[&l.values], &[deq(&clipped)]);
    assert!(after < before, "{after} vs {before}");
}

#[test]
fn tokens_are_sampled_by_stride() {
    let l = outlier_layer();
    let sch = IntScheme::new(3, Some(32), false, ScaleDtype::F32).unwrap();
    // Real tokens at odd positions only; 1100 tokens with 512 samples take every second token from 0: all zero,
    // every error is 0 and every group keeps its maximum.
    let real = tokens(1100, 64, 0, 1.0, 43);
    let mut x = vec![0.0f32; 1100 * 64];
    for t in (1..1100).step_by(2) {
        x[t * 64..(t + 1) * 64].copy_from_slice(&real[t * 64..(t + 1) * 64]);
    }
    let org: Vec<f32> = l.values.chunks(32).map(|g| g.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
    assert_eq!(search_clip(&l, &x, 1100, sch, &AwqOptions::default()).unwrap(), org);
    // With room for every token the odd ones count, and the outlier's group is clipped.
    let all = AwqOptions { n_sample_token: 2048, ..AwqOptions::default() };
    assert!(search_clip(&l, &x, 1100, sch, &all).unwrap()[6] < org[6]);
}

#[test]
fn the_quantizer_equals_an_f64_reference() {
    let (rows, cols, glen) = (6, 64, 16);
    let w = uniform(51, rows * cols);
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v) * 3.0).collect();
    let w: Vec<f32> = w64.iter().map(|&v| v as f32).collect();
    for bits in [2u8, 3, 4, 8] {
        for sym in [false, true] {
            let sch = IntScheme::new(bits, Some(glen), sym, ScaleDtype::F32).unwrap();
            let got = awq_quantize("t", &w, rows, cols, sch).unwrap().dequantize();
            let want = quantize_f64(&w64, glen, u32::from(bits), sym);
            for (k, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!((f64::from(*g) - r).abs() <= 1e-5, "{bits} bits, sym {sym}, value {k}: {g} vs {r}");
            }
        }
    }
}

#[test]
fn the_gram_form_holds_with_large_shared_activations() {
    // Activations with a large common offset in a few channels (as LLM hidden states have), so that `XᵀX` is
    // dominated by one direction and the quadratic form cancels much of it.
    let (n, cols) = (512, 256);
    let mut x = uniform(61, n * cols);
    for t in 0..n {
        for c in [3, 77, 200] {
            x[t * cols + c] += 60.0;
        }
    }
    let l = layer("o", 32, cols, 62);
    let refs = [&l];
    let sch = IntScheme::new(4, Some(64), false, ScaleDtype::F16).unwrap();
    let cand = awq_quantize("o", &l.values, 32, cols, sch).unwrap().dequantize();
    let got = LinearOutputLoss::new(&x, n, &refs).unwrap().loss(std::slice::from_ref(&cand));
    let want = output_mse(&x, cols, &[&l.values], &[cand.iter().map(|&v| f64::from(v)).collect()]);
    assert!((got - want).abs() <= 1e-3 * want, "{got} vs {want}");
}

/// Returns the losses of a table, one per call, and checks each call's candidates.
struct Table {
    losses: Vec<f64>,
    calls: std::cell::Cell<usize>,
    shapes: Vec<usize>,
}
impl ScaleLoss for Table {
    fn loss(&self, candidates: &[Vec<f32>]) -> f64 {
        assert_eq!(candidates.iter().map(Vec::len).collect::<Vec<_>>(), self.shapes);
        let i = self.calls.get();
        self.calls.set(i + 1);
        self.losses[i]
    }
}

#[test]
fn the_first_smallest_finite_loss_wins() {
    let (a, b) = (layer("a", 4, 32, 71), layer("b", 2, 32, 72));
    let sch = IntScheme::new(4, Some(16), false, ScaleDtype::F16).unwrap();
    let xm = abs_mean(&tokens(8, 32, 1, 10.0, 73), 32);
    let mut losses = vec![5.0, f64::NAN, 3.0, f64::INFINITY, 3.0, 2.5, 2.5, 9.0];
    losses.resize(10, 4.0);
    let table = Table { losses: losses.clone(), calls: 0.into(), shapes: vec![128, 64] };
    let opts = AwqOptions { n_grid: 10, ..AwqOptions::default() };
    let found = search_scale(&[&a, &b], &xm, sch, &opts, &table).unwrap();
    assert_eq!(table.calls.get(), 10);
    assert_eq!((found.ratio, found.loss), (0.5, 2.5));
    assert_eq!(found.losses.len(), 10);
    assert!(found.losses[1].is_nan() && found.losses[3].is_infinite());
    let w_mean = normalized_weight_mean(&[&a, &b], sch).unwrap();
    assert_eq!(found.scales, ratio_scales(&xm, &w_mean, 0.5, true));
}
