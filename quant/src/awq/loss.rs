//! What the AWQ scale search minimises: the [`ScaleLoss`] seam, and [`LinearOutputLoss`], the mean squared
//! difference of the balanced layers' own outputs.
//!
//! Invariant: [`LinearOutputLoss`] sums in `f64` in a fixed order (layer, then row or token chunk), and its
//! products go through [`crate::linalg`], so its value does not depend on the thread count.

use super::error::check_len;
use super::quantizer::area;
use super::scale::common_cols;
use super::AwqError;
use crate::calibrate::LinearWeight;
use crate::linalg::{matmul_t, matmul_views, xtx, View};

/// Tokens per product in the token form, bounding its scratch output to `TOKEN_CHUNK · rows` values.
const TOKEN_CHUNK: usize = 1024;

/// What the scale search minimises.
pub trait ScaleLoss {
    /// The loss of one candidate: for each balanced layer, in the order given to
    /// [`search_scale`](super::search_scale), its candidate weight (row-major `[rows, cols]`, the original
    /// layout). Infinite or NaN means "unusable".
    fn loss(&self, candidates: &[Vec<f32>]) -> f64;
}

/// The inputs a [`LinearOutputLoss`] keeps: whichever makes a candidate cheaper to score.
enum Inputs<'a> {
    /// `XᵀX`, `[cols, cols]`: `rows · cols²` work per candidate layer.
    Gram(Vec<f32>),
    /// `X` itself, `[n_tokens, cols]`: `n_tokens · rows · cols` work, kept when `n_tokens < cols`.
    Tokens(&'a [f32]),
}

/// The mean squared difference between the concatenated outputs `X·Wᵀ` of the original layers and `X·Ŵᵀ` of
/// the candidates, over a token sample `X`: the loss AutoAWQ measures when the inspected module is the linear
/// layer itself.
///
/// With `d = Ŵ − W` it is `Σ_layers ‖X·dᵀ‖² / (n_tokens · Σ rows)`, computed either from the tokens or, when
/// they outnumber the input features, as `Σ_r d_r G d_rᵀ` with the Gram matrix `G = XᵀX` (equal in exact
/// arithmetic) — which is also how it is built from calibration statistics ([`LinearOutputLoss::from_gram`]).
pub struct LinearOutputLoss<'a> {
    layers: Vec<&'a LinearWeight>,
    inputs: Inputs<'a>,
    n_tokens: u64,
}

impl<'a> LinearOutputLoss<'a> {
    /// From tokens `x`, row-major `[n_tokens, cols]`, and the original weights of the balanced layers.
    pub fn new(x: &'a [f32], n_tokens: usize, layers: &[&'a LinearWeight]) -> Result<Self, AwqError> {
        let cols = common_cols(layers)?;
        check_len(&layers[0].name, "tokens", area(n_tokens, cols), x.len())?;
        if n_tokens < cols {
            return Ok(LinearOutputLoss {
                layers: layers.to_vec(),
                inputs: Inputs::Tokens(x),
                n_tokens: n_tokens as u64,
            });
        }
        let mut gram = vec![0.0f32; cols * cols];
        xtx(x, n_tokens, cols, &mut gram);
        Self::from_gram(gram, n_tokens as u64, layers)
    }

    /// From the Gram matrix `XᵀX` (row-major `[cols, cols]`) of `n_tokens` tokens.
    pub fn from_gram(gram: Vec<f32>, n_tokens: u64, layers: &[&'a LinearWeight]) -> Result<Self, AwqError> {
        let cols = common_cols(layers)?;
        check_len(&layers[0].name, "Gram matrix", area(cols, cols), gram.len())?;
        Ok(LinearOutputLoss { layers: layers.to_vec(), inputs: Inputs::Gram(gram), n_tokens })
    }

    /// `‖X·dᵀ‖²` for one layer's difference `d` (`[rows, cols]`).
    fn squared_error(&self, d: &[f32], rows: usize, cols: usize) -> f64 {
        match &self.inputs {
            Inputs::Gram(gram) => {
                let mut dg = vec![0.0f32; d.len()];
                let dv = View { data: d, rows, cols, rs: cols, cs: 1 };
                let gv = View { data: gram, rows: cols, cols, rs: cols, cs: 1 };
                matmul_views(dv, gv, &mut dg, true);
                d.iter().zip(&dg).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
            }
            Inputs::Tokens(x) => {
                let mut out = vec![0.0f32; TOKEN_CHUNK.min(self.n_tokens as usize) * rows];
                let mut total = 0.0f64;
                for chunk in x.chunks(TOKEN_CHUNK.saturating_mul(cols)) {
                    let n = chunk.len() / cols;
                    matmul_t(chunk, n, cols, d, rows, &mut out[..n * rows]);
                    total += out[..n * rows].iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
                }
                total
            }
        }
    }
}

impl ScaleLoss for LinearOutputLoss<'_> {
    fn loss(&self, candidates: &[Vec<f32>]) -> f64 {
        if candidates.len() != self.layers.len() {
            return f64::NAN;
        }
        let (mut total, mut outputs) = (0.0f64, 0u64);
        for (layer, cand) in self.layers.iter().zip(candidates) {
            if cand.len() != layer.values.len() {
                return f64::NAN;
            }
            let d: Vec<f32> = cand.iter().zip(&layer.values).map(|(q, w)| q - w).collect();
            total += self.squared_error(&d, layer.rows, layer.cols);
            outputs += layer.rows as u64;
        }
        total / (self.n_tokens as f64 * outputs as f64)
    }
}
