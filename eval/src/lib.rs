//! quantforge-eval: the forward pass, tokenization, perplexity and KL divergence.
//!
//! Model layer: [`ModelFile`] opens a GGUF file or HF directory and loads decoder [`Block`]s one at a time;
//! [`run_block`] runs one block on [`Activations`], and [`LlamaModel`] is every block loaded with its forward
//! pass made of the same [`run_block`] calls. Blocks are composed from the architecture registry's facts
//! (`quantforge_formats::arch`).
//!
//! Tensor layer: the forward pass is written once, on `f32` row-major buffers. Its weight matrix products go
//! through one dispatch ([`device`]) chosen per model with [`LlamaModel::set_device`]:
//!
//! - [`Device::Cpu`] (default, always built): the `gemm` crate (run-time CPU dispatch, rayon-parallel).
//! - [`Device::BurnCpu`] (cargo feature `burn-cpu`): burn 0.22 tensors on burn's pure-Rust `flex` CPU backend.
//! - [`Device::Wgpu`] (cargo feature `burn-wgpu`): burn 0.22 tensors on burn's wgpu backend (a GPU through
//!   Vulkan, Metal or DX12), on the default adapter.
//!
//! On a burn device each product copies the input rows and the layer's dequantized `f32` weight into burn
//! tensors, multiplies them there (`x.matmul(w.transpose())`) and copies the result back; weights are not kept
//! on the device between passes, and attention, norms, RoPE and the other element-wise operations stay on the
//! CPU code of [`ops`] on every device. burn's `flex` backend runs a 2-D matmul as a call to the same `gemm`
//! 0.19 on the strided (transposed) view, so `burn-cpu` gives the same logits as `cpu` (bit for bit on
//! stories260K, the same SmolLM2-135M perplexity); what it adds is the copies, which made it measure ~0.7-0.8x the speed of `cpu` on SmolLM2-135M F32 (2 threads). So `cpu`
//! stays the default and the burn paths are there to run the same model definition on burn's backends.
//! `wgpu` compiles but has not been run on a GPU here. burn's `cuda` backend is not offered (its build
//! downloads LLVM).

mod blocks;
pub mod calibration;
pub mod chat;
mod chunking;
pub mod compare;
pub mod config;
pub mod device;
mod error;
pub mod extras;
mod gguf_tensors;
mod hf_quantized;
pub mod imatrix;
pub mod intquant;
pub mod kld;
pub mod load;
pub mod logits_file;
pub mod mmlu;
pub mod model;
mod moe;
pub mod ops;
pub mod perplexity;
pub mod rope;
pub mod run;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
mod vexp;
pub mod weights;

pub use blocks::Observer;
pub use blocks::{run_block, Activations, Block, ModelFile};
pub use config::LlamaConfig;
pub use device::Device;
pub use error::{EvalError, Result};
pub use kld::{kl_divergence, Estimate, KldReport};
pub use kld::{kl_divergence_from_file, kl_divergence_save_base};
pub use logits_file::LogitsReader;
pub use model::LlamaModel;
pub use perplexity::{perplexity, save_base_logits, PerplexityOptions, PerplexityReport};
pub use tokenizer::Tokenizer;
