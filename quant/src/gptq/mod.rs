//! GPTQ (Frantar et al.), as the reference implementations run it: the columns of a linear layer are
//! quantized one at a time in blocks of 128, and each column's rounding error is spread over the columns
//! not yet quantized through the upper Cholesky factor of the inverse Hessian `H = XᵀX` (lazy batch
//! updates: inside a block, then once per block for the rest of the matrix).
//!
//! Options follow the reference: act-order (`desc_act`: columns by decreasing `H[i,i]`, groups cut in that
//! order, with the `g_idx` it implies), static groups (group parameters fixed up front on the original
//! order, monotonic `g_idx`), the MSE range search, relative damping raised after a failed factorization.
//! Group parameters at a group's first column are read from the matrix as it stood at the start of the
//! current block, as the reference does.
//!
//! Invariants: the result is a [`QuantizedLinear`] whose dequantization is the weight the model continues
//! with; rows are independent inside a block and the block update is one matrix product, so the output
//! does not depend on the thread count.

mod factor;
mod ggml;
pub mod grid;

use rayon::prelude::*;

use crate::intquant::{IntQuantError, IntScheme, QuantizedLinear};
use crate::linalg::{matmul_views, View};

pub use factor::NotPositiveDefinite;
pub use ggml::{gptq_ggml, GgmlLayer};

/// GPTQ's knobs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct GptqOptions {
    /// Columns per lazy-update block.
    pub block_size: usize,
    /// Damping, a fraction of the mean diagonal of `H` added to its diagonal.
    pub damp_percent: f32,
    /// Added to the damping after each failed factorization (0: never).
    pub damp_increment: f32,
    /// Quantize columns in order of decreasing `H[i,i]`.
    pub act_order: bool,
    /// Fix group parameters before the column loop, on the original column order.
    pub static_groups: bool,
    /// Search a shrunk range per group (`find_params` with MSE).
    pub mse: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            block_size: 128,
            damp_percent: 0.01,
            damp_increment: 0.01,
            act_order: false,
            static_groups: false,
            mse: false,
        }
    }
}

/// Why a layer could not be quantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GptqError {
    #[error(transparent)]
    Scheme(#[from] IntQuantError),
    #[error("layer '{layer}': {ty} cannot be coded one value at a time (no GPTQ for it)")]
    NoGrid { layer: String, ty: crate::GgmlType },
    #[error("layer '{layer}': {cols} columns are not a whole number of {ty} blocks")]
    Columns { layer: String, cols: usize, ty: crate::GgmlType },
    #[error("layer '{layer}': {source}")]
    NotPositiveDefinite {
        layer: String,
        #[source]
        source: NotPositiveDefinite,
    },
}

/// One quantized layer and what it took.
#[derive(Clone, Debug)]
pub struct GptqLayer {
    pub quantized: QuantizedLinear,
    /// The damping fraction used.
    pub damp: f32,
    /// Damping increases needed before the factorization succeeded.
    pub damp_retries: u32,
    /// Input columns that never varied (zeroed).
    pub dead_columns: usize,
    /// GPTQ's own loss, `Σ (w − ŵ)² / U[i,i]² / 2`.
    pub loss: f64,
}

/// Quantize `weight` (`rows x cols`, row-major, `y = W x`) given `hessian = XᵀX` (`cols x cols`; any
/// positive factor, damping is relative).
pub fn gptq(
    layer: &str,
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f32],
    scheme: IntScheme,
    opts: &GptqOptions,
) -> Result<GptqLayer, GptqError> {
    scheme.check_layer(layer, cols)?;
    let size = |what, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(IntQuantError::Size { layer: layer.into(), what, expected, got })
        }
    };
    size("weight", rows * cols, weight.len())?;
    size("hessian", cols * cols, hessian.len())?;
    let params = |v: &[f32]| if opts.mse { scheme.find_params_mse(v) } else { scheme.find_params(v) };
    let glen = scheme.group_len(cols);
    let ng = scheme.n_groups(cols);
    let grouped = scheme.group_size.is_some();

    // One group over the whole row: parameters from the weight as given, before dead columns are zeroed.
    let whole_row: Vec<(f32, u8)> =
        if grouped { Vec::new() } else { weight.chunks_exact(cols.max(1)).map(params).collect() };
    let mut w = weight.to_vec();
    let mut h = hessian.to_vec();
    let dead_columns = factor::kill_dead_columns(&mut h, cols, &mut w, rows);
    let static_params: Vec<(f32, u8)> = if grouped && opts.static_groups {
        (0..rows)
            .flat_map(|r| (0..ng).map(move |g| (r, g)))
            .map(|(r, g)| params(&w[r * cols + g * glen..][..glen]))
            .collect()
    } else {
        Vec::new()
    };
    let perm: Vec<usize> = if opts.act_order {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
        p
    } else {
        (0..cols).collect()
    };
    if opts.act_order {
        w = permute_columns(&w, rows, cols, &perm);
        h = (0..cols * cols).map(|i| h[perm[i / cols] * cols + perm[i % cols]]).collect();
    }
    let f = factor::damped_inverse_factor(&h, cols, opts.damp_percent, opts.damp_increment)
        .map_err(|source| GptqError::NotPositiveDefinite { layer: layer.into(), source })?;
    drop(h);
    let u = &f.upper;

    // Per row, in permuted column order: codes, and the (scale, zero) of every group.
    let mut codes = vec![0u8; rows * cols];
    let mut group_params = vec![(0.0f32, 0u8); rows * ng];
    let mut loss = 0.0f64;
    let bs = opts.block_size.max(1);
    for i1 in (0..cols).step_by(bs) {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        let mut err = vec![0.0f32; rows * count];
        let block_loss: f64 = w
            .par_chunks(cols)
            .zip(codes.par_chunks_mut(cols))
            .zip(group_params.par_chunks_mut(ng))
            .zip(err.par_chunks_mut(count))
            .enumerate()
            .map(|(r, (((row, code_row), gp), err_row))| {
                let mut w1 = row[i1..i2].to_vec();
                let mut row_loss = 0.0f64;
                let mut current = if grouped { (0.0, 0) } else { whole_row[r] };
                for i in 0..count {
                    let c = i1 + i;
                    if grouped {
                        if opts.static_groups {
                            current = static_params[r * ng + perm[c] / glen];
                        } else if c % glen == 0 {
                            current = params(&row[c..(c + glen).min(cols)]);
                            gp[c / glen] = current;
                        }
                    }
                    let (s, z) = current;
                    let x = w1[i];
                    let q = scheme.code(x, s, z);
                    code_row[c] = q;
                    let deq = s * (f32::from(q) - f32::from(z));
                    let d = u[c * cols + c];
                    let e = (x - deq) / d;
                    row_loss += f64::from(x - deq).powi(2) / f64::from(d).powi(2) / 2.0;
                    spread_error(&mut w1[i..], e, &u[c * cols + c..c * cols + i2]);
                    err_row[i] = e;
                }
                row_loss
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        loss += block_loss;
        lazy_update(&mut w, &err, u, rows, cols, i1, i2);
    }

    let (scales, zeros): (Vec<f32>, Vec<u8>) = if !grouped {
        whole_row.into_iter().unzip()
    } else if opts.static_groups {
        static_params.into_iter().unzip()
    } else {
        group_params.into_iter().unzip()
    };
    let mut inverse = vec![0usize; cols];
    for (c, &k) in perm.iter().enumerate() {
        inverse[k] = c;
    }
    let q = if opts.act_order { permute_columns(&codes, rows, cols, &inverse) } else { codes };
    let g_idx = (opts.act_order && grouped && !opts.static_groups)
        .then(|| (0..cols).map(|k| (inverse[k] / glen) as u32).collect());
    let quantized = QuantizedLinear { rows, cols, scheme, q, scales, zeros, g_idx };
    quantized.check(layer)?;
    Ok(GptqLayer { quantized, damp: f.damp, damp_retries: f.retries, dead_columns, loss })
}

/// One column's scaled error `e` spread over the batch's later columns: `w[1..] −= e · urow[1..]`, where `w[0]`
/// is the column just quantized and `urow` its row of the inverse-Hessian factor from the diagonal on.
fn spread_error(w: &mut [f32], e: f32, urow: &[f32]) {
    for (wj, &uj) in w.iter_mut().zip(urow).skip(1) {
        *wj -= e * uj;
    }
}

/// GPTQ's lazy batch update once columns `i1..i2` are quantized with scaled errors `err` (`rows x (i2 − i1)`):
/// `W[:, i2:] −= Err · U[i1:i2, i2:]`, one matrix product.
fn lazy_update(w: &mut [f32], err: &[f32], u: &[f32], rows: usize, cols: usize, i1: usize, i2: usize) {
    if i2 >= cols {
        return;
    }
    let (count, rest) = (i2 - i1, cols - i2);
    let mut update = vec![0.0f32; rows * rest];
    let a = View { data: err, rows, cols: count, rs: count, cs: 1 };
    let b = View { data: &u[i1 * cols + i2..], rows: count, cols: rest, rs: cols, cs: 1 };
    matmul_views(a, b, &mut update, true);
    w.par_chunks_mut(cols).zip(update.par_chunks(rest)).for_each(|(row, up)| {
        for (x, d) in row[i2..].iter_mut().zip(up) {
            *x -= d;
        }
    });
}

/// `out[r, c] = m[r, perm[c]]`.
fn permute_columns<T: Copy + Send + Sync + Default>(m: &[T], rows: usize, cols: usize, perm: &[usize]) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    out.par_chunks_mut(cols.max(1)).zip(m.par_chunks(cols.max(1))).for_each(|(o, row)| {
        for (x, &p) in o.iter_mut().zip(perm) {
            *x = row[p];
        }
    });
    let _ = rows;
    out
}

/// The relative output errors of replacing `w` by each of `candidates` on inputs with `h = XᵀX`:
/// `‖(W − Ŵ)Xᵀ‖² / ‖WXᵀ‖² = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)`, the denominator computed once.
pub fn output_errors(w: &[f32], candidates: &[&[f32]], rows: usize, cols: usize, h: &[f32]) -> Vec<f64> {
    let quad = |m: &[f32]| -> f64 {
        let mut mh = vec![0.0f32; rows * cols];
        let a = View { data: m, rows, cols, rs: cols, cs: 1 };
        let b = View { data: h, rows: cols, cols, rs: cols, cs: 1 };
        matmul_views(a, b, &mut mh, true);
        mh.iter().zip(m).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
    };
    let base = quad(w);
    candidates
        .iter()
        .map(|c| {
            let delta: Vec<f32> = w.iter().zip(c.iter()).map(|(a, b)| a - b).collect();
            if base > 0.0 {
                quad(&delta) / base
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
