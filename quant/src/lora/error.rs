//! Errors of LoRA merging and adapter export: one variant per failure, each naming the file and the key or
//! tensor involved.

use std::path::PathBuf;

use quantforge_formats::FormatError;

use crate::solver::SolverError;
use crate::stream::StreamError;
use crate::QuantError;

/// Everything that can stop a LoRA merge or export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: key '{key}': {message}")]
    Config { path: PathBuf, key: String, message: String },
    #[error("{path}: peft_type is {found}; only LORA adapters (LoRA, rsLoRA, DoRA) can be merged")]
    UnknownPeftType { path: PathBuf, found: String },
    #[error("{path}: key '{key}': {message}")]
    Unsupported { path: PathBuf, key: String, message: String },
    #[error(
        "{path}: the base model is quantized ({detail}); LoRA cannot be merged into quantized weights. \
         Merge into the full-precision (f16/bf16/f32) base model, then quantize the merged model"
    )]
    QuantizedBase { path: PathBuf, detail: String },
    #[error("{path}: tensor '{tensor}' has rank {found}, but {expected_from} says r = {expected}")]
    RankMismatch { path: PathBuf, tensor: String, expected: u64, expected_from: String, found: u64 },
    #[error(
        "{path}: tensor '{tensor}' has shape {found:?}, but the base tensor '{base}' needs {expected:?} \
         (is the adapter for another model?)"
    )]
    ShapeMismatch { path: PathBuf, tensor: String, base: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("{path}: tensor '{name}' is missing ({why})")]
    MissingTensor { path: PathBuf, name: String, why: String },
    #[error(
        "{path}: the adapter's tensor '{tensor}' needs base tensor '{base}', which the base model does not have \
         (is the adapter for another architecture?)"
    )]
    MissingBaseTensor { path: PathBuf, tensor: String, base: String },
    #[error("{path}: tensor '{name}': {message}")]
    UnexpectedTensor { path: PathBuf, name: String, message: String },
    #[error(
        "{path}: tensor '{tensor}': lora_bias is set but base module '{module}' has no bias, so it cannot be merged \
         (PEFT: \"Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias\")"
    )]
    NoBaseBias { path: PathBuf, tensor: String, module: String },
    #[error("merging into '{tensor}' gives non-finite values; the adapter seems to be broken")]
    NonFinite { tensor: String },
    /// The base model's own tensor holds NaN or infinity, before any adapter is applied.
    #[error(
        "the base model's tensor '{tensor}' holds a non-finite value ({value}) at element {index}, before the \
         adapter is applied; the base model is broken, not the adapter"
    )]
    NonFiniteBase { tensor: String, index: usize, value: f32 },
    #[error("{path}: {message}; llama.cpp cannot apply this as a GGUF adapter: merge it with `quantforge merge-lora` instead")]
    NotExportable { path: PathBuf, message: String },
    #[error("tensor '{tensor}': {source}")]
    Codec { tensor: String, source: QuantError },
    #[error(transparent)]
    Stream(Box<StreamError>),
}

impl LoraError {
    pub(crate) fn config(path: &std::path::Path, key: &str, message: impl Into<String>) -> LoraError {
        LoraError::Config { path: path.into(), key: key.into(), message: message.into() }
    }
}

impl From<StreamError> for LoraError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Format(f) => LoraError::Format(f),
            StreamError::Solve { tensor, source: SolverError::Codec(source) } => LoraError::Codec { tensor, source },
            e => LoraError::Stream(Box::new(e)),
        }
    }
}
