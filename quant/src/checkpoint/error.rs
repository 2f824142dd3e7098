//! Errors of writing and reading GPTQ, AWQ and compressed-tensors checkpoints: each names the file, tensor,
//! module or option involved.

use std::path::PathBuf;

use quantforge_formats::FormatError;

use crate::intquant::IntQuantError;

/// Everything that can stop a checkpoint from being written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file could not be read or written, or a safetensors file is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A `--format` string that is not one of the formats written here.
    #[error("unknown checkpoint format '{0}' (use gptq, gptq_v2, awq or compressed-tensors)")]
    UnknownFormat(String),
    /// A scheme or option the format cannot hold, with the reason.
    #[error("{format} cannot hold {what}: {reason}")]
    Unsupported { format: &'static str, what: String, reason: String },
    /// A layer whose shape the format's packing cannot hold.
    #[error("module '{module}': {message}")]
    LayerShape { module: String, message: String },
    /// A layer inconsistent with the writer's scheme or with itself.
    #[error("module '{module}': {source}")]
    Layer { module: String, source: IntQuantError },
    /// A scale that is not exactly representable in the stored scale type (the written file would not
    /// dequantize to the layer's values).
    #[error("module '{module}': scale {value:e} is not exactly representable as {dtype}")]
    ScaleNotRepresentable { module: String, value: f32, dtype: &'static str },
    /// A layer whose scheme differs from the writer's.
    #[error("module '{module}': its scheme {found} differs from the checkpoint's {expected}")]
    SchemeMismatch { module: String, found: String, expected: String },
    /// A layer with a non-monotonic (act-order) `g_idx` given to a writer without act-order, or one the
    /// format cannot store.
    #[error("module '{module}': {message}")]
    GroupIndex { module: String, message: String },
    /// The same tensor (or module) added twice, or a float weight added for a quantized module.
    #[error("tensor '{name}' was added twice")]
    Duplicate { name: String },
    /// Tensor bytes that do not match the stated dtype and shape.
    #[error("tensor '{name}': {found} bytes given, {expected} expected for its dtype and shape")]
    TensorSize { name: String, expected: u64, found: u64 },
    /// An output directory that cannot be used.
    #[error("{path}: {message}")]
    OutputDir { path: PathBuf, message: String },
    /// A source model that cannot be the source of a quantized checkpoint.
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    /// A `quantization_config` (or `quantize_config.json`) that is missing a key, has a bad value, or
    /// describes a method or layout this reader does not implement.
    #[error("{path}: quantization config: {message}")]
    Config { path: PathBuf, message: String },
    /// A quantized tensor that is missing, or whose dtype or shape disagrees with the config.
    #[error("{path}: tensor '{name}': {message}")]
    Tensor { path: PathBuf, name: String, message: String },
    /// A file operation on the output directory.
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), source }
    }
}
