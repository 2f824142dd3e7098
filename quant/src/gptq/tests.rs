use super::*;
use crate::intquant::{rtn, ScaleDtype};

fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A layer and the `XᵀX` of correlated inputs with unequal column scales.
fn layer(rows: usize, cols: usize, tokens: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rnd = lcg(seed);
    let w: Vec<f32> = (0..rows * cols).map(|_| rnd() as f32).collect();
    let scale: Vec<f64> = (0..cols).map(|c| 0.2 + (c * 7 % 11) as f64 / 3.0).collect();
    let mut x = vec![0.0f64; tokens * cols];
    for t in 0..tokens {
        let common = rnd();
        for c in 0..cols {
            x[t * cols + c] = (0.7 * common + 0.5 * rnd()) * scale[c];
        }
    }
    let mut h = vec![0.0f32; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            h[i * cols + j] = (0..tokens).map(|t| x[t * cols + i] * x[t * cols + j]).sum::<f64>() as f32;
        }
    }
    (w, h)
}

fn scheme(bits: u8, group: Option<usize>, sym: bool) -> IntScheme {
    IntScheme::new(bits, group, sym, ScaleDtype::F32).unwrap()
}

/// GPTQ written plainly in f64: explicit `H⁻¹`, its upper Cholesky factor, every column's error applied to
/// all later columns at once; group parameters read from a snapshot taken every `block` columns.
fn reference(w: &[f32], rows: usize, cols: usize, h: &[f32], s: IntScheme, opts: &GptqOptions) -> QuantizedLinear {
    let n = cols;
    let mut w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let mut h: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
    let glen = s.group_len(cols);
    let ng = s.n_groups(cols);
    let as32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let whole: Vec<(f32, u8)> = (0..rows).map(|r| s.find_params(&as32(&w[r * n..(r + 1) * n]))).collect();
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
            (0..rows).for_each(|r| w[r * n + i] = 0.0);
        }
    }
    let stat: Vec<(f32, u8)> = (0..rows)
        .flat_map(|r| (0..ng).map(move |g| (r, g)))
        .map(|(r, g)| s.find_params(&as32(&w[r * n + g * glen..r * n + (g + 1) * glen])))
        .collect();
    let mut perm: Vec<usize> = (0..n).collect();
    if opts.act_order {
        perm.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]).then(a.cmp(&b)));
    }
    let w0 = w.clone();
    let mut w: Vec<f64> = (0..rows * n).map(|i| w0[(i / n) * n + perm[i % n]]).collect();
    let mut h: Vec<f64> = (0..n * n).map(|i| h[perm[i / n] * n + perm[i % n]]).collect();
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    (0..n).for_each(|i| h[i * n + i] += f64::from(opts.damp_percent) * mean);
    // H⁻¹ = LLᵀ (Cholesky), so U = Lᵀ gives H⁻¹ = UᵀU.
    let inv = invert(&h, n);
    let lp = cholesky(&inv, n);
    let u: Vec<f64> = (0..n * n).map(|i| lp[(i % n) * n + i / n]).collect();
    let mut codes = vec![0u8; rows * n];
    let mut gp = vec![(0.0f32, 0u8); rows * ng];
    for r in 0..rows {
        let mut snapshot = w[r * n..(r + 1) * n].to_vec();
        let mut cur = whole[r];
        for c in 0..n {
            if c % opts.block_size == 0 {
                snapshot = w[r * n..(r + 1) * n].to_vec();
            }
            if s.group_size.is_some() {
                if opts.static_groups {
                    cur = stat[r * ng + perm[c] / glen];
                } else if c % glen == 0 {
                    cur = s.find_params(&as32(&snapshot[c..c + glen]));
                    gp[r * ng + c / glen] = cur;
                }
            }
            let x = w[r * n + c] as f32;
            let q = s.code(x, cur.0, cur.1);
            codes[r * n + c] = q;
            let deq = f64::from(cur.0) * (f64::from(q) - f64::from(cur.1));
            let e = (f64::from(x) - deq) / u[c * n + c];
            for j in c + 1..n {
                w[r * n + j] -= e * u[c * n + j];
            }
        }
    }
    let mut q = vec![0u8; rows * n];
    for r in 0..rows {
        for c in 0..n {
            q[r * n + perm[c]] = codes[r * n + c];
        }
    }
    let grouped = s.group_size.is_some();
    let (scales, zeros) = if !grouped {
        whole.into_iter().unzip()
    } else if opts.static_groups {
        stat.into_iter().unzip()
    } else {
        gp.into_iter().unzip()
    };
    let g_idx = (opts.act_order && grouped && !opts.static_groups).then(|| {
        let mut g = vec![0u32; n];
        for (c, &k) in perm.iter().enumerate() {
            g[k] = (c / glen) as u32;
        }
        g
    });
    QuantizedLinear { rows, cols, scheme: s, q, scales, zeros, g_idx }
}

fn invert(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    for c in 0..n {
        let p = m[c * n + c];
        for j in 0..n {
            m[c * n + j] /= p;
            inv[c * n + j] /= p;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                for j in 0..n {
                    m[r * n + j] -= f * m[c * n + j];
                    inv[r * n + j] -= f * inv[c * n + j];
                }
            }
        }
    }
    inv
}

/// Lower `L` with `a = LLᵀ`.
fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j { (a[i * n + i] - s).sqrt() } else { (a[i * n + j] - s) / l[j * n + j] };
        }
    }
    l
}

#[test]
fn identity_hessian_gives_round_to_nearest() {
    let (rows, cols) = (6, 64);
    let (w, _) = layer(rows, cols, 1, 3);
    let h: Vec<f32> = (0..cols * cols).map(|i| if i / cols == i % cols { 1.0 } else { 0.0 }).collect();
    for (group, sym) in [(Some(16), true), (Some(32), false), (None, true)] {
        let s = scheme(4, group, sym);
        for act_order in [false, true] {
            let opts = GptqOptions { act_order, ..GptqOptions::default() };
            let g = gptq("t", &w, rows, cols, &h, s, &opts).unwrap();
            let r = rtn("t", &w, rows, cols, s).unwrap();
            assert_eq!(g.quantized.q, r.q, "{group:?} {sym} {act_order}");
            assert_eq!(g.quantized.scales, r.scales);
            assert_eq!(g.quantized.zeros, r.zeros);
        }
    }
}

#[test]
fn matches_the_f64_reference() {
    let (rows, cols) = (8, 64);
    let (w, h) = layer(rows, cols, 200, 11);
    let cases = [
        (scheme(4, Some(16), true), GptqOptions { block_size: 16, ..Default::default() }),
        (scheme(4, Some(16), false), GptqOptions { block_size: 32, ..Default::default() }),
        (scheme(3, None, false), GptqOptions { block_size: 16, ..Default::default() }),
        (scheme(4, Some(16), true), GptqOptions { block_size: 32, act_order: true, ..Default::default() }),
        (
            scheme(4, Some(16), false),
            GptqOptions { block_size: 16, act_order: true, static_groups: true, ..Default::default() },
        ),
        (scheme(2, Some(32), false), GptqOptions { block_size: 128, ..Default::default() }),
    ];
    for (s, opts) in cases {
        let got = gptq("t", &w, rows, cols, &h, s, &opts).unwrap().quantized;
        let want = reference(&w, rows, cols, &h, s, &opts);
        let same = got.q.iter().zip(&want.q).filter(|(a, b)| a == b).count();
        // f32 against f64 arithmetic: a code may flip only where a value sits on a rounding boundary.
        assert!(same * 1000 >= got.q.len() * 995, "{s:?} {opts:?}: {same} of {} codes agree", got.q.len());
        assert_eq!(got.g_idx, want.g_idx, "{opts:?}");
        for (a, b) in got.scales.iter().zip(&want.scales) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-3), "{s:?} {opts:?}: scale {a} vs {b}");
        }
        if opts.act_order && !opts.static_groups {
            let g = got.g_idx.as_ref().unwrap();
            assert!(g.windows(2).any(|p| p[0] > p[1]), "act-order g_idx should not be monotonic");
        }
    }
}

#[test]
fn beats_round_to_nearest_on_correlated_inputs() {
    let (rows, cols) = (32, 128);
    let (w, h) = layer(rows, cols, 400, 5);
    for opts in [
        GptqOptions::default(),
        GptqOptions { act_order: true, ..Default::default() },
        GptqOptions { act_order: true, static_groups: true, ..Default::default() },
        GptqOptions { mse: true, ..Default::default() },
    ] {
        let s = scheme(4, Some(32), true);
        let g = gptq("t", &w, rows, cols, &h, s, &opts).unwrap();
        let r = rtn("t", &w, rows, cols, s).unwrap();
        let (gd, rd) = (g.quantized.dequantize(), r.dequantize());
        let e = output_errors(&w, &[&gd, &rd], rows, cols, &h);
        let (eg, er) = (e[0], e[1]);
        assert!(eg < 0.8 * er, "{opts:?}: gptq {eg} vs rtn {er}");
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let (rows, cols) = (48, 256);
    let (w, h) = layer(rows, cols, 300, 9);
    let opts = GptqOptions { act_order: true, ..Default::default() };
    let s = scheme(4, Some(64), false);
    let a = gptq("t", &w, rows, cols, &h, s, &opts).unwrap().quantized;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let b = one.install(|| gptq("t", &w, rows, cols, &h, s, &opts).unwrap().quantized);
    assert_eq!(a, b);
}

#[test]
fn dead_columns_and_bad_input() {
    let (rows, cols) = (4, 32);
    let (w, mut h) = layer(rows, cols, 100, 2);
    for j in 0..cols {
        h[3 * cols + j] = 0.0;
        h[j * cols + 3] = 0.0;
    }
    let g = gptq("t", &w, rows, cols, &h, scheme(4, Some(16), true), &GptqOptions::default()).unwrap();
    assert_eq!(g.dead_columns, 1);
    let d = g.quantized.dequantize();
    assert!((0..rows).all(|r| d[r * cols + 3] == 0.0));
    let e = gptq("blk.0.attn_q.weight", &w, rows, cols, &h[1..], scheme(4, Some(16), true), &GptqOptions::default());
    assert!(matches!(e, Err(GptqError::Scheme(IntQuantError::Size { .. }))));
    let e = gptq("blk.0.attn_q.weight", &w, rows, cols, &h, scheme(4, Some(64), true), &GptqOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("multiple of the group size 64"), "{e}");
    let indefinite: Vec<f32> = (0..cols * cols).map(|i| if i / cols == i % cols { -1.0 } else { 0.0 }).collect();
    let e = gptq("blk.1.ffn_down.weight", &w, rows, cols, &indefinite, scheme(4, None, true), &GptqOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.1.ffn_down.weight") && e.contains("not positive definite"), "{e}");
}
