//! safetensors: a memory-mapped reader (header validated by the `safetensors` crate: size cap, contiguous
//! non-overlapping offsets that cover the data exactly), conversion of float dtypes to f32, and a streaming
//! writer with the standard header (including `__metadata__`).

mod convert;
mod diagnose;
mod reader;
mod writer;

pub use convert::{dtype_name, to_f32};
pub use reader::{SafetensorsFile, StTensor};
pub use safetensors::Dtype;
pub use writer::{SafetensorsWriter, StTensorSpec};
