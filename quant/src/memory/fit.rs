//! Putting it together: where every byte lives for a given `-ngl`, the largest `-ngl` and the largest context
//! that fit a memory budget.
//!
//! Layer placement follows `llama_model::load_tensors`: with `-ngl k` on an `n`-layer model the GPU gets the
//! output layer first (any `k >= 1`), then the last `k - 1` repeating layers; `k = n + 1` is full offload; the
//! input embedding always stays on the CPU. A layer's KV cache lives with the layer (`offload_kqv`, the
//! default). The logits output buffer (`n_vocab x n_seq_max` f32, `output_reserve`) is host memory.

use super::{
    compute_buffers, kv_cache, weight_plan, ComputeBuffers, KvCache, KvLayout, MemoryError, ModelShape, WeightPlan,
};
use crate::policy::FileType;

/// Bytes in one memory (VRAM or host RAM), by purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub weights: u64,
    pub kv: u64,
    pub compute: u64,
    /// The logits output buffer (host only).
    pub output_buffer: u64,
}

impl Placement {
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.kv).saturating_add(self.compute).saturating_add(self.output_buffer)
    }
}

/// The memory of one `-ngl` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offload {
    /// llama.cpp's `-ngl` (0 ..= n_layer + 1).
    pub ngl: usize,
    pub n_layer: usize,
    pub device: Placement,
    pub host: Placement,
    /// Whether each repeating layer is on the GPU.
    pub gpu_layers: Vec<bool>,
    pub output_on_gpu: bool,
}

impl Offload {
    /// Every layer, output included, is on the GPU.
    pub fn is_full(&self) -> bool {
        self.ngl > self.n_layer
    }
}

/// Memory budgets; `None` means unlimited / not asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub vram: Option<u64>,
    pub ram: Option<u64>,
}

/// Everything `estimate` needs besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub layout: KvLayout,
    pub resources: Resources,
    /// Largest context to consider when searching for the largest one that fits (per sequence).
    pub max_ctx: u64,
}

/// Per-layer weight and KV bytes summed from each layer to the last, so that the placement of any `-ngl`
/// costs O(1) and a search over every `-ngl` stays linear in the layer count.
struct LayerSums {
    /// `weights[i]`: weight bytes of layers `i..n_layer`; `weights[n_layer]` is 0.
    weights: Vec<u64>,
    /// The same for KV-cache bytes.
    kv: Vec<u64>,
}

impl LayerSums {
    fn new(n_layer: usize, weights: &WeightPlan, kv: &KvCache) -> LayerSums {
        let kv_layers = kv.bytes_by_layer(n_layer);
        let suffix = |f: &dyn Fn(usize) -> u64| -> Vec<u64> {
            let mut out = vec![0u64; n_layer + 1];
            for il in (0..n_layer).rev() {
                out[il] = out[il + 1].saturating_add(f(il));
            }
            out
        };
        LayerSums {
            weights: suffix(&|il| weights.layers.get(il).copied().unwrap_or(0)),
            kv: suffix(&|il| kv_layers[il]),
        }
    }
}

/// What one `-ngl` puts where: (ngl clamped, first GPU layer, device, host).
fn placements(
    model: &ModelShape,
    weights: &WeightPlan,
    compute: &ComputeBuffers,
    layout: &KvLayout,
    sums: &LayerSums,
    ngl: usize,
) -> (usize, usize, Placement, Placement) {
    let n_layer = model.n_layer();
    let ngl = ngl.min(n_layer + 1);
    // Layers first_gpu.. are on the GPU (none when ngl is 0: first_gpu is then n_layer + 1).
    let first_gpu = (n_layer + 1).saturating_sub(ngl);
    let output_on_gpu = ngl >= 1;
    let gpu_weights = sums.weights[first_gpu.min(n_layer)];
    let gpu_kv = sums.kv[first_gpu.min(n_layer)];
    let mut device = Placement { weights: gpu_weights, kv: gpu_kv, ..Placement::default() };
    let mut host = Placement {
        weights: weights.token_embd.saturating_add(sums.weights[0] - gpu_weights),
        kv: sums.kv[0] - gpu_kv,
        ..Placement::default()
    };
    if output_on_gpu {
        device.weights = device.weights.saturating_add(weights.output_layer_bytes());
    } else {
        // On the CPU a tied output reads the input layer's (memory-mapped) copy.
        host.weights = host.weights.saturating_add(weights.output);
    }
    if ngl == 0 {
        host.compute = compute.device;
    } else {
        device.compute = compute.device;
        host.compute = compute.host + if first_gpu == 0 { 0 } else { compute.layer };
    }
    host.output_buffer = model.n_vocab.saturating_mul(layout.parallel).saturating_mul(4);
    (ngl, first_gpu, device, host)
}

/// The memory of `model` for `weights` with `-ngl ngl` (0 = CPU only).
pub fn offload_for(
    model: &ModelShape,
    weights: &WeightPlan,
    kv: &KvCache,
    compute: &ComputeBuffers,
    layout: &KvLayout,
    ngl: usize,
) -> Offload {
    let sums = LayerSums::new(model.n_layer(), weights, kv);
    offload_with(model, weights, compute, layout, &sums, ngl)
}

fn offload_with(
    model: &ModelShape,
    weights: &WeightPlan,
    compute: &ComputeBuffers,
    layout: &KvLayout,
    sums: &LayerSums,
    ngl: usize,
) -> Offload {
    let n_layer = model.n_layer();
    let (ngl, first_gpu, device, host) = placements(model, weights, compute, layout, sums, ngl);
    let gpu_layers: Vec<bool> = (0..n_layer).map(|il| il >= first_gpu).collect();
    Offload { ngl, n_layer, device, host, gpu_layers, output_on_gpu: ngl >= 1 }
}

/// The estimate for one type at one context.
#[derive(Clone, Debug)]
pub struct Estimate {
    pub weights: WeightPlan,
    pub kv: KvCache,
    pub compute: ComputeBuffers,
    /// Everything on the GPU (`-ngl n_layer+1`).
    pub full: Offload,
    /// Nothing offloaded (CPU only).
    pub cpu: Offload,
    /// With a VRAM budget: the largest `-ngl` whose device memory fits (and whose host memory fits the RAM
    /// budget, if any); `None` when not even `-ngl 0` fits the RAM.
    pub best: Option<Offload>,
    /// With a budget: the largest context per sequence (a multiple of 256, at most `max_ctx`) that fits fully
    /// offloaded in VRAM, or CPU-only in RAM when no VRAM is given. `Some(0)`: not even 256 tokens fit.
    pub max_ctx: Option<u64>,
}

impl Estimate {
    /// Whether the whole model and cache fit in VRAM (and the rest in RAM).
    pub fn fits_fully(&self, r: &Resources) -> bool {
        r.vram.is_some_and(|v| self.full.device.total() <= v) && r.ram.is_none_or(|m| self.full.host.total() <= m)
    }
}

fn fits(o: &Offload, r: &Resources) -> bool {
    fits_placed(&o.device, &o.host, r)
}

fn fits_placed(device: &Placement, host: &Placement, r: &Resources) -> bool {
    r.vram.is_none_or(|v| device.total() <= v) && r.ram.is_none_or(|m| host.total() <= m)
}

/// Estimate `model` quantized to `ftype` (`None`: as it is) under `settings`.
pub fn estimate(model: &ModelShape, ftype: Option<FileType>, settings: &Settings) -> Result<Estimate, MemoryError> {
    let weights = weight_plan(model, ftype)?;
    let layout = settings.layout;
    let kv = kv_cache(model, &layout)?;
    let compute = compute_buffers(model, &kv, &layout);
    let n_layer = model.n_layer();
    let sums = LayerSums::new(n_layer, &weights, &kv);
    let full = offload_with(model, &weights, &compute, &layout, &sums, n_layer + 1);
    let cpu = offload_with(model, &weights, &compute, &layout, &sums, 0);
    let r = settings.resources;
    let best = if r.vram.is_some() {
        (0..=n_layer + 1)
            .rev()
            .find(|&ngl| {
                let (_, _, device, host) = placements(model, &weights, &compute, &layout, &sums, ngl);
                fits_placed(&device, &host, &r)
            })
            .map(|ngl| offload_with(model, &weights, &compute, &layout, &sums, ngl))
    } else {
        None
    };
    let max_ctx = match (r.vram, r.ram) {
        (None, None) => None,
        _ => Some(max_context(model, &weights, &layout, &r, settings.max_ctx)?),
    };
    Ok(Estimate { weights, kv, compute, full, cpu, best, max_ctx })
}

/// The largest context per sequence, a multiple of 256 up to `cap`, at which `weights` fit: fully offloaded
/// within `r.vram` (host part within `r.ram`) when a VRAM budget is given, else CPU-only within `r.ram`.
/// 0 when not even 256 tokens fit.
pub fn max_context(
    model: &ModelShape,
    weights: &WeightPlan,
    layout: &KvLayout,
    r: &Resources,
    cap: u64,
) -> Result<u64, MemoryError> {
    let ngl = if r.vram.is_some() { model.n_layer() + 1 } else { 0 };
    let fits_at = |blocks: u64| -> Result<bool, MemoryError> {
        let l = KvLayout { ctx: blocks * 256, ..*layout };
        let kv = kv_cache(model, &l)?;
        let compute = compute_buffers(model, &kv, &l);
        Ok(fits(&offload_for(model, weights, &kv, &compute, &l, ngl), r))
    };
    let (mut lo, mut hi) = (0u64, (cap / 256).max(1));
    if fits_at(hi)? {
        return Ok(hi * 256);
    }
    // Invariant: lo blocks fit (0 trivially), hi blocks do not; memory grows with the context.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits_at(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo * 256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{kv_cache, LayerAttention};
    use crate::policy::ModelInfo;

    fn model(n_layer: usize) -> ModelShape {
        let layers = (0..n_layer)
            .map(|il| LayerAttention {
                n_head_kv: 2 + (il % 3) as u32,
                head_dim_k: 64,
                head_dim_v: 64,
                swa: il % 4 != 3,
            })
            .collect();
        ModelShape {
            path: "m".into(),
            info: ModelInfo { arch: "gemma3".into(), n_layer: n_layer as u32, n_head: 8, n_head_kv: 2, n_expert: 0 },
            n_embd: 512,
            n_head: 8,
            n_vocab: 1000,
            n_ff: 1024,
            layers,
            n_swa: 512,
            n_ctx_train: None,
            tensors: Vec::new(),
            file_type: None,
        }
    }

    fn weights(n_layer: usize, tied: bool) -> WeightPlan {
        WeightPlan {
            ftype: None,
            bytes: 0,
            bits_per_weight: 0.0,
            token_embd: 4000,
            token_embd_row: 4,
            output: 300,
            layers: (0..n_layer as u64).map(|il| 1000 + 37 * il).collect(),
            tied,
            token_embd_type: None,
            output_type: None,
        }
    }

    /// Every `-ngl` places exactly what summing layer by layer places (llama.cpp's split, written out).
    #[test]
    fn placement_matches_a_layer_by_layer_sum() {
        let n = 9;
        let m = model(n);
        let layout = KvLayout::new(4096);
        let kv = kv_cache(&m, &layout).unwrap();
        let compute = compute_buffers(&m, &kv, &layout);
        for tied in [false, true] {
            let w = weights(n, tied);
            for ngl in 0..=n + 3 {
                let o = offload_for(&m, &w, &kv, &compute, &layout, ngl);
                let first_gpu = (n + 1).saturating_sub(ngl);
                let (mut dev_w, mut host_w, mut dev_kv, mut host_kv) = (0, w.token_embd, 0, 0);
                for il in 0..n {
                    let layer_kv: u64 =
                        kv.segments.iter().flat_map(|s| &s.layers).filter(|l| l.0 == il).map(|l| l.1 + l.2).sum();
                    if il >= first_gpu {
                        dev_w += w.layers[il];
                        dev_kv += layer_kv;
                    } else {
                        host_w += w.layers[il];
                        host_kv += layer_kv;
                    }
                }
                if ngl >= 1 {
                    dev_w += w.output + if tied { w.token_embd } else { 0 };
                } else {
                    host_w += w.output;
                }
                assert_eq!(
                    (o.device.weights, o.device.kv, o.host.weights, o.host.kv),
                    (dev_w, dev_kv, host_w, host_kv),
                    "ngl {ngl}"
                );
                assert_eq!(o.gpu_layers.iter().filter(|&&g| g).count(), n.min(ngl.saturating_sub(1)), "ngl {ngl}");
                let all_gpu = ngl > n;
                let host_compute =
                    if ngl == 0 { compute.device } else { compute.host + if all_gpu { 0 } else { compute.layer } };
                assert_eq!(o.host.compute, host_compute, "ngl {ngl}");
            }
        }
    }

    /// The best `-ngl` under a budget is found in time linear in the layers (each -ngl is placed in O(1)):
    /// 30,000 layers, where placing each -ngl by summing every layer took minutes.
    #[test]
    fn best_offload_of_thirty_thousand_layers() {
        let n = 30_000;
        let m = model(n);
        let w = weights(n, false);
        let total: u64 = w.layers.iter().sum();
        let settings = Settings {
            layout: KvLayout::new(512),
            resources: Resources { vram: Some(total / 2), ram: None },
            max_ctx: 1024,
        };
        let layout = settings.layout;
        let kv = kv_cache(&m, &layout).unwrap();
        let compute = compute_buffers(&m, &kv, &layout);
        let t = std::time::Instant::now();
        let sums = LayerSums::new(n, &w, &kv);
        let best = (0..=n + 1).rev().find(|&ngl| {
            let (_, _, device, host) = placements(&m, &w, &compute, &layout, &sums, ngl);
            fits_placed(&device, &host, &settings.resources)
        });
        let ngl = best.unwrap();
        assert!(ngl > 1 && ngl < n, "{ngl}");
        // The next -ngl does not fit, this one does, as the full placement confirms.
        assert!(fits(&offload_for(&m, &w, &kv, &compute, &layout, ngl), &settings.resources));
        assert!(!fits(&offload_for(&m, &w, &kv, &compute, &layout, ngl + 1), &settings.resources));
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
}
