//! quantforge-eval: the forward pass, tokenization, perplexity and KL divergence.
//!
//! Tensor layer: the forward pass is written once, on `f32` row-major buffers, with the matrix products in
//! the `gemm` crate (run-time CPU dispatch, rayon-parallel). burn 0.22's pure-Rust CPU backend was measured
//! at 63-78 GFLOP/s for this model's shapes, below the ~90 GFLOP/s llama.cpp reaches on the same 2 cores, and
//! its per-op overhead and dequantization round-trips would come on top; so the CPU path does not go through
//! burn. A GPU backend (burn's cuda/wgpu behind cargo features) is not written yet.

pub mod config;
mod error;
pub mod imatrix;
pub mod kld;
pub mod logits_file;
pub mod mmlu;
pub mod model;
pub mod ops;
pub mod perplexity;
pub mod rope;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use error::{EvalError, Result};
pub use kld::{kl_divergence, Estimate, KldReport};
pub use kld::{kl_divergence_from_file, kl_divergence_save_base};
pub use logits_file::{save_base_logits, LogitsReader};
pub use model::{LlamaModel, Observer};
pub use perplexity::{perplexity, PerplexityOptions, PerplexityReport};
pub use tokenizer::Tokenizer;
