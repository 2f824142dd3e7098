//! GGUF (versions 2 and 3): metadata values, tensor infos, a memory-mapped reader and a streaming writer.
//!
//! Layout and limits follow llama.cpp's `ggml/src/gguf.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62:
//! little-endian; `u64` string lengths without NUL; strings and arrays at most 1024³ bytes/elements; tensor
//! names shorter than 64 bytes; at most 4 dimensions in ggml order (`ne[0]` is the row length); tensor data
//! aligned to `general.alignment` (default 32) and zero-padded.
//!
//! [`GgufFile::open`] reads a model split over several files ([`split`]) as one model.

mod array;
mod reader;
pub mod split;
mod value;
mod writer;

pub use array::{ArrayIter, GgufArray, StringArray};
pub use reader::GgufFile;
pub use split::SplitError;
pub use value::{GgufValue, GgufValueType};
pub use writer::{GgufWriter, TensorSpec};

use crate::GgmlType;

/// GGUF magic bytes.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string and largest array llama.cpp accepts (`GGUF_MAX_STRING_LENGTH`, `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_STRING_LENGTH: u64 = 1024 * 1024 * 1024;
/// See [`MAX_STRING_LENGTH`].
pub const MAX_ARRAY_ELEMENTS: u64 = 1024 * 1024 * 1024;
/// Tensor names must be shorter than this (`GGML_MAX_NAME`).
pub const MAX_NAME_LENGTH: usize = 64;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// The metadata key holding the data alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Dimensions in ggml order (`ne[0]` = row length), as many as the file stores.
    pub ne: Vec<u64>,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (without padding).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Number of rows (`n_elements / ne[0]`).
    pub fn n_rows(&self) -> u64 {
        self.ne.iter().skip(1).product()
    }

    /// Shape in numpy/torch order (reverse of `ne`).
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }
}

/// Round `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? / align * align)
}
