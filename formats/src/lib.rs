//! quantforge-formats: bytes, names and metadata. GGUF and safetensors readers and writers, the ggml type
//! table, and atomic output files. No arithmetic on weights beyond dtype conversion lives here.

mod atomic;
mod error;
pub mod ggml_type;
pub mod gguf;
pub mod hf;
mod mmap;
pub mod safetensors;

pub use atomic::{check_not_input, same_file, AtomicFile};
pub use error::{FormatError, Result};
pub use ggml_type::GgmlType;
