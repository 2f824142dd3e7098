//! Errors of the quantization pipeline.

use std::path::PathBuf;

use quantforge_formats::{FormatError, GgmlType};

use crate::policy::PolicyError;
use crate::solver::SolverError;
use crate::stream::StreamError;
use crate::QuantError;

/// Everything that can stop a quantization.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Convert(Box<crate::convert::ConvertError>),
    #[error("tensor '{tensor}': {source}")]
    Codec { tensor: String, source: QuantError },
    #[error("tensor '{tensor}' is already quantized ({from}); requantizing to {to} is disabled (pass --allow-requantize to do it anyway, at a cost in quality)")]
    Requantize { tensor: String, from: GgmlType, to: GgmlType },
    #[error("tensor '{tensor}': type {ty} cannot be decoded")]
    NoDecoder { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}': type {ty} has no encoder yet")]
    NoEncoder { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}': type {ty} needs an importance matrix and the imatrix has no entry for it")]
    MissingImatrixEntry { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}': imatrix entry has {got} values, the tensor needs {expected} (is the imatrix for another model?)")]
    ImatrixSize { tensor: String, got: u64, expected: u64 },
    #[error("imatrix '{imatrix}' has no entry for any tensor of {model}: it was computed for another model")]
    ImatrixForOtherModel { imatrix: String, model: PathBuf },
    #[error("tensor '{tensor}': its shape does not fit its type")]
    Shape { tensor: String },
    #[error("tensor '{tensor}' has non-finite values (value {index} is {value}); refusing to quantize it")]
    NonFinite { tensor: String, index: usize, value: f32 },
    #[error("--split-max-size {max_size} would make {n_splits} files; a split model has at most 65535")]
    TooManySplits { n_splits: usize, max_size: u64 },
    #[error("the plan's tensor '{tensor}' is not where the plan says in {input}: the plan was made for another input")]
    PlanForOtherInput { tensor: String, input: PathBuf },
    #[error(transparent)]
    Stream(Box<StreamError>),
}

impl From<StreamError> for PipelineError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Format(f) => PipelineError::Format(f),
            StreamError::NonFinite { tensor, index, value } => PipelineError::NonFinite { tensor, index, value },
            StreamError::Solve { tensor, source: SolverError::Codec(source) } => {
                PipelineError::Codec { tensor, source }
            }
            StreamError::Solve { tensor, source: SolverError::Shape { .. } } => PipelineError::Shape { tensor },
            e => PipelineError::Stream(Box::new(e)),
        }
    }
}
