//! Activation-aware weight quantization (AWQ), as AutoAWQ runs it
//! (`casper-hansen/AutoAWQ` @88e4c76, `awq/quantize/quantizer.py`): pure functions on one group of linear
//! layers that read the same input, with no model in sight.
//!
//! - [`awq_quantize`]: AWQ's own quantizer (`pseudo_quantize_tensor`): asymmetric groups take their raw
//!   minimum and maximum (0 is not forced into the range, unlike GPTQ's `find_params`);
//! - [`search_scale`]: the per-input-column scale search (`_compute_best_scale`): a grid of ratios
//!   `α = i / n_grid`, each giving scales `s` from the activation and weight magnitudes; the candidate weights
//!   `Q(W·diag(s))·diag(1/s)` are handed to a [`ScaleLoss`] and the first minimum wins;
//! - [`search_clip`] / [`apply_clip`]: the per-(row, group) clipping search (`_compute_best_clip`) and the
//!   symmetric clamp it implies; [`skips_clip`] names the query/key projections the search leaves alone.
//!
//! Invariants: every function is deterministic and its result does not depend on the rayon thread count
//! (work is split by rows or groups, each computed whole by one thread, and reductions run in a fixed order);
//! bad shapes are typed errors, never panics.

mod clip;
mod error;
mod loss;
mod quantizer;
mod scale;
#[cfg(test)]
mod tests;

pub use clip::{apply_clip, search_clip, skips_clip};
pub use error::AwqError;
pub use loss::{LinearOutputLoss, ScaleLoss};
pub use quantizer::awq_quantize;
pub use scale::{normalized_weight_mean, ratio_scales, search_scale, ScaleSearch};

/// Knobs of the scale and clip searches; [`Default`] is AutoAWQ's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct AwqOptions {
    /// Ratios tried by the scale search: `α = i / n_grid` for `i` in `0..n_grid` (20).
    pub n_grid: usize,
    /// Divide the activation term by the weight term `w_mean^(1−α)` (AutoAWQ's `duo_scaling`, on).
    pub duo_scaling: bool,
    /// Grid of the clip search: the maximum tried at step `i` is `org_max · (1 − i / clip_grid)` (20).
    pub clip_grid: usize,
    /// The clip search tries `⌊max_shrink · clip_grid⌋` steps, at most `clip_grid` (0.5: 10 steps, down to 55 %
    /// of the maximum).
    pub max_shrink: f32,
    /// Tokens the clip search keeps, sampled by a stride of `max(1, n_tokens / n_sample_token)` (512).
    pub n_sample_token: usize,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions { n_grid: 20, duo_scaling: true, clip_grid: 20, max_shrink: 0.5, n_sample_token: 512 }
    }
}
