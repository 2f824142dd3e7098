//! Compute (scratch) buffers: an estimate, not an exact figure.
//!
//! llama.cpp sizes its compute buffers by building the worst-case graph (`sched_reserve`: a prompt batch of
//! `u = n_ubatch` tokens against the whole cache, `n_outputs = u`) and letting `ggml-alloc` place every
//! intermediate tensor, reusing memory once a tensor's last consumer has run (inputs such as the KQ mask
//! included). The peak is therefore set by a few large tensors alive at the same time. We take them
//! (activations are f32):
//!
//! - at the head: the logits `n_vocab x u` plus about three `n_embd x u` hidden-state tensors (the last
//!   residual, its norm, the scaled norm);
//! - inside a layer: the KQ mask (`n_kv x u`, f16 with flash attention, else f32, one per cache), the FFN's
//!   gate, up and their product (`3 x n_ff x u`) or, without flash attention, the attention scores
//!   (`n_kv x u x n_head`, whichever is larger), plus about five `n_embd x u` tensors (residual, Q, K, V,
//!   attention output);
//!
//! and estimate `device = max(head, layer)` for the device that holds the output layer (the CPU when
//! nothing is offloaded), `layer` for a device that holds only repeating layers (the CPU under partial
//! offload), and `host = n_embd x u` f32 for the CPU-side embedding lookup when everything is offloaded.
//!
//! Basis: llama.cpp (the copy vendored in llama-cpp-python 0.3.36, CPU backend) reported for SmolLM2-135M
//! 98.25 MiB at `-c 8192` (we say 99.38), 99.38 MiB at `-c 4000 -ctk q8_0 -ctv q8_0` (99.38), 49.69 MiB at
//! `-c 4096 -ub 256` (49.69) and 166.38 MiB at `-c 8192 -fa off` (165.63). Other backends differ by a few percent (CUDA fuses norm and scale, adds a
//! cuBLAS workspace; pipeline parallelism keeps several graph copies), which this does not model.

use super::{KvCache, KvLayout, ModelShape};

/// Estimated compute-buffer bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeBuffers {
    /// The device holding the output layer (the CPU when nothing is offloaded).
    pub device: u64,
    /// A device that holds only repeating layers (the CPU under partial offload).
    pub layer: u64,
    /// The CPU's buffer for the input embedding when layers are offloaded.
    pub host: u64,
}

/// Estimate the compute buffers for `model` with cache `kv` and settings `layout` (see the module docs).
pub fn compute_buffers(model: &ModelShape, kv: &KvCache, layout: &KvLayout) -> ComputeBuffers {
    let u = layout.n_ubatch();
    let f32s = |n: u64| n.saturating_mul(4);
    let mask_elem = if layout.flash_attn { 2 } else { 4 };
    let mask: u64 = kv.segments.iter().map(|s| s.cells.saturating_mul(u).saturating_mul(mask_elem)).sum();
    let n_kv = kv.segments.iter().map(|s| s.cells).max().unwrap_or(0);
    let hidden = f32s(model.n_embd.saturating_mul(u));
    let head = f32s(model.n_vocab.saturating_mul(u)) + 3 * hidden;
    let ffn = f32s(3 * model.n_ff.saturating_mul(u));
    let scores =
        if layout.flash_attn { 0 } else { f32s(n_kv.saturating_mul(u).saturating_mul(u64::from(model.n_head))) };
    let layer = mask + ffn.max(scores) + 5 * hidden;
    ComputeBuffers { device: head.max(layer), layer, host: hidden }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{kv_cache, KvCacheType, LayerAttention};
    use crate::policy::ModelInfo;

    fn smollm2() -> ModelShape {
        let layer = LayerAttention { n_head_kv: 3, head_dim_k: 64, head_dim_v: 64, swa: false };
        ModelShape {
            path: "m".into(),
            info: ModelInfo { arch: "llama".into(), n_layer: 30, n_head: 9, n_head_kv: 3, n_expert: 0 },
            n_embd: 576,
            n_head: 9,
            n_vocab: 49152,
            n_ff: 1536,
            layers: vec![layer; 30],
            n_swa: 0,
            n_ctx_train: Some(8192),
            tensors: Vec::new(),
            file_type: None,
        }
    }

    fn mib(m: &ModelShape, layout: KvLayout) -> f64 {
        let kv = kv_cache(m, &layout).unwrap();
        compute_buffers(m, &kv, &layout).device as f64 / 1048576.0
    }

    #[test]
    fn close_to_llama_cpp_cpu_buffers_for_smollm2() {
        let m = smollm2();
        // (our estimate, llama.cpp's `CPU compute buffer size`), MiB.
        let q8 = KvLayout { type_k: KvCacheType::Q8_0, type_v: KvCacheType::Q8_0, ..KvLayout::new(4000) };
        let q4_ub256 =
            KvLayout { ubatch: 256, type_k: KvCacheType::Q4_0, type_v: KvCacheType::Q4_0, ..KvLayout::new(4096) };
        let no_fa = KvLayout { flash_attn: false, ..KvLayout::new(8192) };
        for (layout, llama_cpp) in [(KvLayout::new(8192), 98.25), (q8, 99.38), (q4_ub256, 49.69), (no_fa, 166.38)] {
            let ours = mib(&m, layout);
            assert!((ours - llama_cpp).abs() / llama_cpp < 0.02, "{layout:?}: {ours} vs {llama_cpp}");
        }
    }
}
