//! The memory planner: how many bytes a model needs in llama.cpp for a quantization type, a context length
//! and a number of parallel sequences, where those bytes live (VRAM or host RAM), how many layers fit on a
//! GPU (`-ngl`), and the memory-bandwidth bound on decode speed.
//!
//! Invariants:
//! - Weight bytes are exact: they come from the same per-tensor plan as `quantize --dry-run`
//!   ([`crate::policy::plan_all`]), so they equal the tensor bytes `quantize` writes.
//! - KV-cache bytes are exact: they follow llama.cpp's context and cache construction (context padding to
//!   256 cells, one stream per sequence unless the cache is unified, per-layer K/V widths, the separate
//!   sliding-window cache) and equal the `llama_kv_cache: size = ... MiB` figure llama.cpp logs.
//! - Compute buffers are an estimate from the dominant tensors of llama.cpp's worst-case graph; the formula
//!   and its basis are in [`compute`].
//!
//! Sources, llama.cpp at <https://github.com/ggml-org/llama.cpp/tree/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62>
//! (b9928): `src/llama-context.cpp` (`cparams.n_ctx = GGML_PAD(n_ctx, 256)`, `n_ctx_seq`, `sched_reserve`,
//! `output_reserve`), `src/llama-model.cpp` (`create_memory`, the `-ngl` layer split in `load_tensors`),
//! `src/llama-kv-cache.cpp` (one `[n_embd_k_gqa(il), kv_size, n_stream]` K tensor and one V tensor per layer,
//! the `size = ...` log line), `src/llama-kv-cache-iswa.cpp` (SWA cache size), `src/llama-hparams.cpp`
//! (`n_embd_k_gqa`, `set_swa_pattern`) and `src/llama-graph.cpp` (the KQ mask).

mod compute;
mod error;
mod fit;
mod kv;
mod rank;
mod shape;
mod speed;
mod weights;

pub use compute::{compute_buffers, ComputeBuffers};
pub use error::MemoryError;
pub use fit::{estimate, max_context, offload_for, Estimate, Offload, Placement, Resources, Settings};
pub use kv::{kv_cache, KvCache, KvCacheType, KvLayout, KvSegment};
pub use rank::{rank, Candidate, Quality, QualityTable, RankBy};
pub use shape::{config_tensors, LayerAttention, ModelShape, TensorShape};
pub use speed::{decode_bound, Bandwidth, DecodeBound, Device, DeviceKind, DEVICES};
pub use weights::{weight_plan, WeightPlan};

/// `GGML_PAD(x, n)`: `x` rounded up to a multiple of `n`.
pub(crate) fn pad(x: u64, n: u64) -> u64 {
    x.div_ceil(n) * n
}
