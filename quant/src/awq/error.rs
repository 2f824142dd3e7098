//! The one error type of the AWQ searches: a shape that does not fit, or a search with no usable result.

use crate::intquant::IntQuantError;

/// Why an AWQ search could not run or found nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AwqError {
    /// The scheme does not fit a layer (bits, group size, indivisible input count).
    #[error(transparent)]
    Quant(#[from] IntQuantError),
    /// The scale search was given no layer to balance.
    #[error("the AWQ scale search needs at least one layer")]
    NoLayers,
    /// A buffer's length does not match the shape it stands for.
    #[error("layer '{layer}': {what}: expected {expected} values, got {got}")]
    Size { layer: String, what: &'static str, expected: usize, got: usize },
    /// Every ratio of the scale search gave an infinite or NaN loss.
    #[error("layers {layers}: no AWQ scale ratio gave a finite loss (losses {losses:?})")]
    NoFiniteLoss { layers: String, losses: Vec<f64> },
}

/// `Ok` when `got == expected`, else [`AwqError::Size`].
pub(super) fn check_len(layer: &str, what: &'static str, expected: usize, got: usize) -> Result<(), AwqError> {
    if expected == got {
        Ok(())
    } else {
        Err(AwqError::Size { layer: layer.into(), what, expected, got })
    }
}
