//! KV-cache sizing, exactly as llama.cpp allocates it.
//!
//! For a context of `ctx` tokens per sequence and `P` sequences (llama.cpp run with `-c ctx*P -np P`):
//! - `llama_context` pads the context: `n_ctx = GGML_PAD(ctx*P, 256)`; with a unified cache (`-kvu`) one
//!   stream holds `n_ctx_seq = n_ctx` cells, otherwise each of the `P` streams holds
//!   `n_ctx_seq = GGML_PAD(n_ctx / P, 256)` cells (and `n_ctx` becomes `n_ctx_seq * P`).
//! - `llama_kv_cache` creates, per layer `il`, a K tensor of type `type_k` and shape
//!   `[n_embd_k_gqa(il), kv_size, n_stream]` and a V tensor `[n_embd_v_gqa(il), kv_size, n_stream]`, where
//!   `n_embd_k_gqa(il) = n_embd_head_k * n_head_kv(il)`. Without flash attention V is stored transposed and
//!   every layer uses the largest V width (`n_embd_v_gqa_max`). Bytes: `ggml_row_size(type, width)` per cell,
//!   i.e. `width / block * type_size`.
//! - Models with sliding-window layers get two caches (`llama_kv_cache_iswa`): the full-attention layers with
//!   `n_ctx_seq` cells, the SWA layers with `GGML_PAD(min(n_ctx_seq, n_swa * (unified ? P : 1) + n_ubatch),
//!   256)` cells (`n_ctx_seq` with `--swa-full`).
//! - The `llama_kv_cache: size = X MiB` log line is `(K bytes + V bytes) / 2^20` of one cache; we report each
//!   cache and their sum.

use quantforge_formats::GgmlType;

use super::{pad, MemoryError, ModelShape};

/// `--cache-type-k` / `--cache-type-v` values llama.cpp accepts (`kv_cache_types` in `common/arg.cpp`).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvCacheType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    IQ4_NL,
    Q5_0,
    Q5_1,
}

const CACHE_TYPES: &[(KvCacheType, &str, GgmlType)] = &[
    (KvCacheType::F32, "f32", GgmlType::F32),
    (KvCacheType::F16, "f16", GgmlType::F16),
    (KvCacheType::BF16, "bf16", GgmlType::BF16),
    (KvCacheType::Q8_0, "q8_0", GgmlType::Q8_0),
    (KvCacheType::Q4_0, "q4_0", GgmlType::Q4_0),
    (KvCacheType::Q4_1, "q4_1", GgmlType::Q4_1),
    (KvCacheType::IQ4_NL, "iq4_nl", GgmlType::IQ4_NL),
    (KvCacheType::Q5_0, "q5_0", GgmlType::Q5_0),
    (KvCacheType::Q5_1, "q5_1", GgmlType::Q5_1),
];

impl KvCacheType {
    /// Parse a case-insensitive name (`f16`, `q8_0`, ...).
    pub fn parse(name: &str) -> Result<KvCacheType, MemoryError> {
        CACHE_TYPES
            .iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(t, _, _)| t)
            .ok_or_else(|| MemoryError::UnknownCacheType { name: name.into() })
    }

    /// llama.cpp's spelling.
    pub fn name(self) -> &'static str {
        CACHE_TYPES.iter().find(|(t, _, _)| *t == self).map_or("?", |&(_, n, _)| n)
    }

    /// The ggml type of the cache tensors.
    pub fn ggml(self) -> GgmlType {
        CACHE_TYPES.iter().find(|(t, _, _)| *t == self).map_or(GgmlType::F16, |&(_, _, g)| g)
    }

    /// `ggml_row_size(type, n)`: bytes of `n` values.
    pub fn row_size(self, n: u64) -> u64 {
        let g = self.ggml();
        n / g.block_size() * g.type_size()
    }
}

/// The context settings that decide the cache (llama.cpp's `-c`, `-np`, `-kvu`, `-b`, `-ub`, `-ctk`, `-ctv`,
/// `-fa`, `--swa-full`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// Context per sequence; llama.cpp is run with `-c ctx*parallel`.
    pub ctx: u64,
    /// Parallel sequences (`-np`, `n_seq_max`).
    pub parallel: u64,
    /// One cache stream shared by all sequences (`-kvu`).
    pub unified: bool,
    /// Logical batch (`-b`, default 2048).
    pub batch: u64,
    /// Physical batch (`-ub`, default 512).
    pub ubatch: u64,
    pub type_k: KvCacheType,
    pub type_v: KvCacheType,
    pub flash_attn: bool,
    pub swa_full: bool,
}

impl KvLayout {
    /// llama.cpp's defaults for a context of `ctx` tokens and one sequence.
    pub fn new(ctx: u64) -> KvLayout {
        KvLayout {
            ctx,
            parallel: 1,
            unified: false,
            batch: 2048,
            ubatch: 512,
            type_k: KvCacheType::F16,
            type_v: KvCacheType::F16,
            flash_attn: true,
            swa_full: false,
        }
    }

    /// `(n_ctx, n_ctx_seq)` after llama_context's padding.
    pub fn contexts(&self) -> Result<(u64, u64), MemoryError> {
        let requested = self.ctx.checked_mul(self.parallel).ok_or(MemoryError::Overflow { what: "context" })?;
        let n_ctx = pad(requested, 256);
        if self.unified {
            return Ok((n_ctx, n_ctx));
        }
        let n_ctx_seq = pad(n_ctx / self.parallel, 256);
        Ok((n_ctx_seq * self.parallel, n_ctx_seq))
    }

    /// `cparams.n_ubatch`: the physical batch, capped by the logical batch, itself capped by the context.
    pub fn n_ubatch(&self) -> u64 {
        let n_batch = self.batch.min(self.ctx.saturating_mul(self.parallel));
        self.ubatch.min(n_batch)
    }

    fn check(&self) -> Result<(), MemoryError> {
        for (v, what) in [
            (self.ctx, "context"),
            (self.parallel, "parallel sequences"),
            (self.batch, "batch"),
            (self.ubatch, "ubatch"),
        ] {
            if v == 0 {
                return Err(MemoryError::Zero { what });
            }
        }
        if !self.flash_attn && self.type_v.ggml().is_quantized() {
            return Err(MemoryError::QuantizedVWithoutFlashAttention { ty: self.type_v.name() });
        }
        Ok(())
    }
}

/// One cache (`llama_kv_cache`): the full-attention layers, or the sliding-window layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSegment {
    pub swa: bool,
    /// Cells per stream (`kv_size`).
    pub cells: u64,
    pub n_stream: u64,
    /// `(layer, K bytes, V bytes)` for each layer in this cache.
    pub layers: Vec<(usize, u64, u64)>,
}

impl KvSegment {
    pub fn k_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.1).sum()
    }

    pub fn v_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.2).sum()
    }

    /// What llama.cpp logs as `llama_kv_cache: size`.
    pub fn bytes(&self) -> u64 {
        self.k_bytes() + self.v_bytes()
    }
}

/// The KV cache of a model for one [`KvLayout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCache {
    /// llama.cpp's `n_ctx` after padding.
    pub n_ctx: u64,
    /// Cells per sequence stream (`n_ctx_seq`).
    pub n_ctx_seq: u64,
    /// The full-attention cache first, then the SWA cache if the model has one.
    pub segments: Vec<KvSegment>,
    /// Bytes of one cell (K and V of one token) per layer, and each layer's window (`None`: full context).
    pub per_token: Vec<(u64, Option<u64>)>,
}

impl KvCache {
    /// Total bytes of all caches.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(KvSegment::bytes).sum()
    }

    /// K+V bytes allocated for layer `il` (in whichever cache holds it).
    pub fn layer_bytes(&self, il: usize) -> u64 {
        self.segments.iter().flat_map(|s| &s.layers).filter(|l| l.0 == il).map(|l| l.1 + l.2).sum()
    }

    /// K+V bytes allocated for each of the first `n_layer` layers, in one pass over the caches.
    pub fn bytes_by_layer(&self, n_layer: usize) -> Vec<u64> {
        let mut out = vec![0u64; n_layer];
        for &(il, k, v) in self.segments.iter().flat_map(|s| &s.layers) {
            if let Some(b) = out.get_mut(il) {
                *b = b.saturating_add(k.saturating_add(v));
            }
        }
        out
    }

    /// K+V bytes one sequence reads to decode the token at position `pos` (attention over `pos` cells, or
    /// the window for SWA layers).
    pub fn read_per_token(&self, pos: u64) -> u64 {
        self.per_token.iter().map(|&(cell, window)| cell * window.map_or(pos, |w| w.min(pos))).sum()
    }
}

/// Size the KV cache of `model` for `layout`.
pub fn kv_cache(model: &ModelShape, layout: &KvLayout) -> Result<KvCache, MemoryError> {
    layout.check()?;
    let (n_ctx, n_ctx_seq) = layout.contexts()?;
    let n_stream = if layout.unified { 1 } else { layout.parallel };
    for (ty, is_v) in [(layout.type_k, false), (layout.type_v, true)] {
        let block = ty.ggml().block_size();
        for (il, l) in model.layers.iter().enumerate() {
            let d = u64::from(if is_v { l.head_dim_v } else { l.head_dim_k });
            if d % block != 0 {
                return Err(MemoryError::CacheBlock { ty: ty.name(), block, layer: il, head_dim: d });
            }
        }
    }
    let v_max = model.layers.iter().map(|l| l.n_embd_v_gqa()).max().unwrap_or(0);
    let n_swa = u64::from(model.n_swa);
    let swa_cells = if layout.swa_full {
        n_ctx_seq
    } else {
        let window = n_swa * if layout.unified { layout.parallel } else { 1 } + layout.n_ubatch();
        pad(n_ctx_seq.min(window), 256)
    };
    let mut segments = Vec::new();
    for swa in [false, true] {
        let cells = if swa { swa_cells } else { n_ctx_seq };
        let mut layers = Vec::new();
        for (il, l) in model.layers.iter().enumerate().filter(|(_, l)| l.swa == swa) {
            let v_width = if layout.flash_attn { l.n_embd_v_gqa() } else { v_max };
            let per_cell = |bytes: u64| bytes.checked_mul(cells).and_then(|b| b.checked_mul(n_stream));
            let k = per_cell(layout.type_k.row_size(l.n_embd_k_gqa()));
            let v = per_cell(layout.type_v.row_size(v_width));
            let (Some(k), Some(v)) = (k, v) else { return Err(MemoryError::Overflow { what: "KV cache" }) };
            layers.push((il, k, v));
        }
        if !layers.is_empty() || !swa {
            segments.push(KvSegment { swa, cells, n_stream, layers });
        }
    }
    let per_token = model
        .layers
        .iter()
        .map(|l| {
            let v_width = if layout.flash_attn { l.n_embd_v_gqa() } else { v_max };
            let cell = layout.type_k.row_size(l.n_embd_k_gqa()) + layout.type_v.row_size(v_width);
            (cell, l.swa.then_some(n_swa))
        })
        .collect();
    Ok(KvCache { n_ctx, n_ctx_seq, segments, per_token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::LayerAttention;
    use crate::policy::ModelInfo;

    fn model(n_layer: usize, n_head_kv: u32, head_dim: u32, swa_every: Option<usize>, n_swa: u32) -> ModelShape {
        let layers = (0..n_layer)
            .map(|il| LayerAttention {
                n_head_kv,
                head_dim_k: head_dim,
                head_dim_v: head_dim,
                swa: swa_every.is_some_and(|n| il % n < n - 1),
            })
            .collect();
        ModelShape {
            path: "m".into(),
            info: ModelInfo { arch: "llama".into(), n_layer: n_layer as u32, n_head: 32, n_head_kv, n_expert: 0 },
            n_embd: 4096,
            n_head: 32,
            n_vocab: 128256,
            n_ff: 14336,
            layers,
            n_swa,
            n_ctx_train: None,
            tensors: Vec::new(),
            file_type: None,
        }
    }

    #[test]
    fn context_padding_and_streams() {
        let mut l = KvLayout::new(1000);
        assert_eq!(l.contexts().unwrap(), (1024, 1024));
        l.parallel = 3;
        // -c 3000 -np 3: n_ctx 3072, 1024 per stream.
        assert_eq!(l.contexts().unwrap(), (3072, 1024));
        l.ctx = 300;
        // -c 900 -np 3: n_ctx = 1024, n_ctx_seq = pad(341, 256) = 512, n_ctx = 1536.
        assert_eq!(l.contexts().unwrap(), (1536, 512));
        l.unified = true;
        assert_eq!(l.contexts().unwrap(), (1024, 1024));
    }

    #[test]
    fn llama3_8b_is_128_kib_per_token_at_f16() {
        // 32 layers x (K + V) x 8 heads x 128 x 2 bytes = 131072 bytes per cell.
        let m = model(32, 8, 128, None, 0);
        let kv = kv_cache(&m, &KvLayout::new(8192)).unwrap();
        assert_eq!(kv.bytes(), 8192 * 128 * 1024);
        assert_eq!(kv.read_per_token(100), 100 * 128 * 1024);
        // q8_0: 34 bytes per 32 values; q4_0: 18 per 32.
        let q8 = KvLayout { type_k: KvCacheType::Q8_0, type_v: KvCacheType::Q8_0, ..KvLayout::new(8192) };
        assert_eq!(kv_cache(&m, &q8).unwrap().bytes(), 8192 * 32 * 2 * (1024 / 32 * 34));
    }

    #[test]
    fn sliding_window_cache() {
        // gemma3-like: 6 layers, pattern 6 -> layers 0..5 SWA, layer 5 full; window 1024.
        let m = model(6, 4, 256, Some(6), 1024);
        let kv = kv_cache(&m, &KvLayout::new(32768)).unwrap();
        assert_eq!(kv.segments.len(), 2);
        assert_eq!((kv.segments[0].cells, kv.segments[0].layers.len()), (32768, 1));
        // pad(min(32768, 1024 + 512), 256) = 1536 cells.
        assert_eq!((kv.segments[1].cells, kv.segments[1].layers.len()), (1536, 5));
        let cell = 2 * 4 * 256 * 2;
        assert_eq!(kv.bytes(), cell * (32768 + 5 * 1536));
        let full = KvLayout { swa_full: true, ..KvLayout::new(32768) };
        assert_eq!(kv_cache(&m, &full).unwrap().bytes(), cell * 6 * 32768);
    }

    #[test]
    fn bad_layouts() {
        let m = model(2, 1, 80, None, 0);
        let q = KvLayout { type_k: KvCacheType::Q4_0, ..KvLayout::new(512) };
        assert!(matches!(kv_cache(&m, &q), Err(MemoryError::CacheBlock { block: 32, head_dim: 80, .. })));
        let no_fa = KvLayout { type_v: KvCacheType::Q8_0, flash_attn: false, ..KvLayout::new(512) };
        assert!(matches!(kv_cache(&m, &no_fa), Err(MemoryError::QuantizedVWithoutFlashAttention { .. })));
        assert!(matches!(kv_cache(&m, &KvLayout::new(0)), Err(MemoryError::Zero { .. })));
        assert!(KvCacheType::parse("Q8_0").is_ok() && KvCacheType::parse("q3_k").is_err());
    }
}
