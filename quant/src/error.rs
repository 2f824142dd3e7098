//! The crate's error type.

use quantforge_formats::GgmlType;

/// Everything that can go wrong in quantization.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The codec does not implement this direction for this type.
    #[error("{op} is not supported for type {ty}")]
    Unsupported { ty: GgmlType, op: &'static str },
    /// A row length that is not a whole number of blocks.
    #[error("row length {n} is not a multiple of the {ty} block size {block}")]
    RowLength { ty: GgmlType, n: usize, block: u64 },
    /// A buffer of the wrong size was handed to a codec.
    #[error("{what}: expected {expected} bytes/elements, got {got}")]
    BufferSize { what: &'static str, expected: usize, got: usize },
    /// An importance matrix row of the wrong length.
    #[error("importance matrix has {got} values, the row has {expected}")]
    ImatrixLength { expected: usize, got: usize },
    /// A type whose quantizer needs an importance matrix was asked to run without one.
    #[error("type {ty} cannot be quantized without an importance matrix")]
    ImatrixRequired { ty: GgmlType },
}
