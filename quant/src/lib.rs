//! quantforge-quant: block codecs (quantize and dequantize every ggml type), the per-tensor type policy
//! of llama.cpp's `llama-quantize`, and the quantization pipeline.

pub mod blocks;
pub mod calibrate;
pub mod checkpoint;
pub mod codecs;
pub mod convert;
pub mod dequant;
mod error;
pub mod imatrix;
pub mod intquant;
pub mod linalg;
pub mod lora;
pub mod memory;
pub mod permute;
pub mod pipeline;
pub mod policy;
pub mod progress;
pub mod solver;
pub mod stream;

pub use error::QuantError;
pub use quantforge_formats::GgmlType;
