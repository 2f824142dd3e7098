//! Errors of the type policy.

use quantforge_formats::GgmlType;

use super::FileType;

/// Everything that can go wrong choosing tensor types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file type name or id `llama-quantize` does not list.
    #[error("unknown quantization type '{name}' (expected a name such as Q4_K_M or Q8_0, or its numeric id)")]
    UnknownFileType { name: String },
    /// A ggml type name that does not exist (`--output-tensor-type`, `--tensor-type`, ...).
    #[error("unknown ggml type '{name}'")]
    UnknownType { name: String },
    /// `--tensor-type` without `NAME=TYPE` shape.
    #[error("malformed tensor type '{arg}' (expected NAME=TYPE, e.g. attn_v=q8_0)")]
    MalformedTensorType { arg: String },
    /// A `--tensor-type` pattern that is not a regular expression this build can compile.
    #[error("tensor type pattern '{pattern}' is not a supported regular expression: {reason}")]
    UnsupportedPattern { pattern: String, reason: String },
    /// A file type whose types quantforge cannot encode yet.
    #[error("quantization type {ftype} is not supported by quantforge yet (Q1_0 and Q2_0 have no encoder)")]
    UnsupportedFileType { ftype: FileType },
    /// The chosen type needs an importance matrix and none was given.
    #[error("tensor '{tensor}': type {ty} requires an importance matrix; pass one with --imatrix")]
    ImatrixRequired { tensor: String, ty: GgmlType },
    /// `tensor_type_fallback` has no fallback for this type (llama.cpp: "no tensor type fallback is defined").
    #[error(
        "tensor '{tensor}': row length {ne0} is not a multiple of the {ty} block size and no fallback type is defined"
    )]
    NoFallback { tensor: String, ty: GgmlType, ne0: u64 },
    /// A type forced by an override does not divide the rows of the tensor.
    #[error("tensor '{tensor}': row length {ne0} is not a multiple of the block size {block} of {ty}")]
    ShapeIncompatible { tensor: String, ty: GgmlType, ne0: u64, block: u64 },
    /// In a MoE model, an ffn tensor whose name has no `blk.N.` prefix.
    #[error("failed to determine the layer of tensor '{tensor}'")]
    NoLayer { tensor: String },
    /// In a MoE model, an ffn tensor whose layer is outside the model.
    #[error("bad layer {layer} for tensor '{tensor}': must be in [0, {n_layer})")]
    BadLayer { tensor: String, layer: i32, n_layer: i32 },
    /// A tensor name listed twice.
    #[error("duplicate tensor name '{tensor}'")]
    DuplicateTensor { tensor: String },
    /// A tensor planned that was not in the list given to the planner.
    #[error("tensor '{tensor}' was not in the tensor list the planner was built from")]
    UnknownTensor { tensor: String },
    /// A hyper-parameter missing from the model metadata.
    #[error("model metadata lacks '{key}'")]
    MissingMetadata { key: String },
    /// A hyper-parameter of the wrong type or range.
    #[error("model metadata '{key}' is not a valid count")]
    BadMetadata { key: String },
}
