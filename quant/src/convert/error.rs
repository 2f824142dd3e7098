//! Errors of `convert` (HF <-> GGUF).

use quantforge_formats::FormatError;

use crate::solver::SolverError;
use crate::stream::StreamError;
use crate::QuantError;

/// Everything that can stop a conversion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("tensor '{tensor}': {source}")]
    Codec { tensor: String, source: QuantError },
    #[error("--outtype {0} is not supported (use f32, f16, bf16, q8_0 or auto)")]
    OutType(String),
    #[error("interrupted; no output was written")]
    Interrupted,
    #[error(transparent)]
    Lora(Box<crate::lora::LoraError>),
    #[error(transparent)]
    Stream(Box<StreamError>),
}

impl From<StreamError> for ConvertError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Format(f) => ConvertError::Format(f),
            StreamError::Interrupted => ConvertError::Interrupted,
            StreamError::Solve { tensor, source: SolverError::Codec(source) } => ConvertError::Codec { tensor, source },
            e => ConvertError::Stream(Box::new(e)),
        }
    }
}
