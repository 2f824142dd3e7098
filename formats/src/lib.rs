//! quantforge-formats: bytes, names and metadata. GGUF and safetensors readers and writers, the ggml type
//! table, and atomic output files. No arithmetic on weights beyond dtype conversion lives here.

pub mod arch;
mod atomic;
pub mod bounded;
mod error;
pub mod ggml_type;
pub mod gguf;
pub mod hf;
pub mod kv;
mod mmap;
pub mod output_guard;
mod pending;
pub mod safetensors;
mod temp_name;
pub mod vocab;

pub use atomic::{check_not_input, interrupt, interrupt_from_fault, remove_pending, same_file, AtomicDir, AtomicFile};
pub use error::{FormatError, Result};
pub use ggml_type::GgmlType;
pub use mmap::mapped_files;
pub use pending::{path_list, InterruptReport};
