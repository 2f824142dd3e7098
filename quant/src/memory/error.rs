//! Errors of the memory planner.

use std::path::PathBuf;

use quantforge_formats::FormatError;

use crate::policy::{FileType, PolicyError};

/// Everything that can go wrong estimating memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// A hyper-parameter missing from the model's metadata or config.
    #[error("{path}: model metadata lacks '{key}'")]
    MissingKey { path: PathBuf, key: String },
    /// A hyper-parameter of the wrong type or out of range.
    #[error("{path}: '{key}' {message}")]
    BadKey { path: PathBuf, key: String, message: String },
    /// The model has no tensors (or none the planner knows).
    #[error("{path}: the model has no tensors")]
    NoTensors { path: PathBuf },
    /// A KV cache type llama.cpp does not accept for `--cache-type-k/v`.
    #[error("unknown KV cache type '{name}' (expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1)")]
    UnknownCacheType { name: String },
    /// A quantized cache type whose block does not divide the head size.
    #[error("KV cache type {ty} needs head sizes that are a multiple of {block}, but layer {layer} has {head_dim}")]
    CacheBlock { ty: &'static str, block: u64, layer: usize, head_dim: u64 },
    /// A quantized V cache without flash attention (llama.cpp refuses it).
    #[error("a quantized V cache ({ty}) requires flash attention")]
    QuantizedVWithoutFlashAttention { ty: &'static str },
    /// Zero context, sequences or batch.
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    /// A figure that overflows 64 bits.
    #[error("{what} overflows (the request is too large)")]
    Overflow { what: &'static str },
    /// The per-tensor plan failed for a type.
    #[error("cannot plan {ftype}")]
    Plan { ftype: FileType, source: PolicyError },
    /// A quality file that does not follow the documented schema.
    #[error("{path}: {message}")]
    Quality { path: PathBuf, message: String },
    /// Reading the model failed.
    #[error(transparent)]
    Format(#[from] FormatError),
}
