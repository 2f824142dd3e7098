//! The memory-bandwidth bound on decode speed.
//!
//! Generating one token runs every weight matrix once against a single activation vector, and attention
//! reads the sequence's whole live KV cache; on CPUs and on most GPUs this is limited by how fast memory can
//! be read, not by arithmetic. So `tokens/s <= 1 / (bytes_gpu / bw_gpu + bytes_host / bw_host)`, where the
//! bytes read per token are: every offloaded weight and the offloaded layers' KV cells up to the current
//! position (the window for sliding-window layers) on the GPU; the CPU layers, the output layer if it stays
//! on the CPU, one row of `token_embd`, and the CPU layers' KV on the host. It is an upper bound: real
//! kernels reach 60-90% of peak bandwidth, and compute, synchronisation and PCIe transfers come on top.

use super::{KvCache, Offload, WeightPlan};

/// What kind of memory a [`Device`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A discrete GPU with its own VRAM.
    Gpu,
    /// A CPU with system RAM.
    Cpu,
    /// CPU and GPU share one memory (Apple silicon, AMD Strix Halo).
    Unified,
}

/// A device with a published peak memory bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Device {
    /// Lower-case identifier used on the command line.
    pub id: &'static str,
    pub name: &'static str,
    pub kind: DeviceKind,
    /// Peak memory bandwidth, GB/s (10^9 bytes per second).
    pub gb_per_s: f64,
    /// Memory size in GiB where the model has one size (GPUs), else `None`.
    pub memory_gib: Option<u64>,
    /// Where the figures come from.
    pub source: &'static str,
}

const fn dev(
    id: &'static str,
    name: &'static str,
    kind: DeviceKind,
    gb_per_s: f64,
    memory_gib: Option<u64>,
    source: &'static str,
) -> Device {
    Device { id, name, kind, gb_per_s, memory_gib, source }
}

use DeviceKind::{Cpu, Gpu, Unified};

/// Common devices and their published peak bandwidths.
pub static DEVICES: &[Device] = &[
    dev("rtx-3060", "NVIDIA GeForce RTX 3060 12GB", Gpu, 360.0, Some(12), "NVIDIA RTX 3060 family specifications"),
    dev("rtx-3090", "NVIDIA GeForce RTX 3090", Gpu, 936.2, Some(24), "NVIDIA RTX 3090 specifications"),
    dev(
        "rtx-4060-ti-16gb",
        "NVIDIA GeForce RTX 4060 Ti 16GB",
        Gpu,
        288.0,
        Some(16),
        "NVIDIA RTX 4060 Ti specifications",
    ),
    dev("rtx-4070", "NVIDIA GeForce RTX 4070", Gpu, 504.2, Some(12), "NVIDIA RTX 4070 family specifications"),
    dev("rtx-4080", "NVIDIA GeForce RTX 4080", Gpu, 716.8, Some(16), "NVIDIA RTX 4080 specifications"),
    dev("rtx-4090", "NVIDIA GeForce RTX 4090", Gpu, 1008.0, Some(24), "NVIDIA RTX 4090 specifications"),
    dev("rtx-5090", "NVIDIA GeForce RTX 5090", Gpu, 1792.0, Some(32), "NVIDIA RTX 5090 specifications"),
    dev("t4", "NVIDIA T4", Gpu, 320.0, Some(16), "NVIDIA T4 datasheet"),
    dev("l4", "NVIDIA L4", Gpu, 300.0, Some(24), "NVIDIA L4 datasheet"),
    dev("a100-80gb", "NVIDIA A100 80GB SXM", Gpu, 2039.0, Some(80), "NVIDIA A100 datasheet"),
    dev("h100-sxm", "NVIDIA H100 SXM 80GB", Gpu, 3350.0, Some(80), "NVIDIA H100 datasheet"),
    dev("h100-pcie", "NVIDIA H100 PCIe 80GB", Gpu, 2000.0, Some(80), "NVIDIA H100 datasheet"),
    dev("h200", "NVIDIA H200 SXM 141GB", Gpu, 4800.0, Some(141), "NVIDIA H200 datasheet"),
    dev("rx-7900-xtx", "AMD Radeon RX 7900 XTX", Gpu, 960.0, Some(24), "AMD Radeon RX 7900 XTX specifications"),
    dev("mi300x", "AMD Instinct MI300X", Gpu, 5300.0, Some(192), "AMD Instinct MI300X datasheet"),
    dev("m1", "Apple M1", Unified, 68.25, None, "Apple M1 technical specifications"),
    dev("m2", "Apple M2", Unified, 100.0, None, "Apple M2 press release"),
    dev("m2-pro", "Apple M2 Pro", Unified, 200.0, None, "Apple M2 Pro/Max press release"),
    dev("m2-max", "Apple M2 Max", Unified, 400.0, None, "Apple M2 Pro/Max press release"),
    dev("m2-ultra", "Apple M2 Ultra", Unified, 800.0, None, "Apple M2 Ultra press release"),
    dev(
        "m3-max",
        "Apple M3 Max (16-core CPU)",
        Unified,
        400.0,
        None,
        "Apple MacBook Pro (M3) technical specifications",
    ),
    dev("m4", "Apple M4", Unified, 120.0, None, "Apple M4 press release"),
    dev("m4-pro", "Apple M4 Pro", Unified, 273.0, None, "Apple M4 Pro/Max press release"),
    dev("m4-max", "Apple M4 Max (16-core CPU)", Unified, 546.0, None, "Apple M4 Pro/Max press release"),
    dev(
        "ryzen-ai-max-395",
        "AMD Ryzen AI Max+ 395 (LPDDR5X-8000, 256-bit)",
        Unified,
        256.0,
        None,
        "AMD product specifications",
    ),
    dev(
        "ddr4-3200-2ch",
        "Desktop CPU, dual-channel DDR4-3200",
        Cpu,
        51.2,
        None,
        "JEDEC DDR4-3200: 2 x 8 B x 3200 MT/s",
    ),
    dev(
        "ddr5-5600-2ch",
        "Desktop CPU, dual-channel DDR5-5600",
        Cpu,
        89.6,
        None,
        "JEDEC DDR5-5600: 2 x 8 B x 5600 MT/s",
    ),
    dev("epyc-9004", "AMD EPYC 9004 (12 x DDR5-4800)", Cpu, 460.8, None, "AMD EPYC 9004 product brief"),
    dev(
        "xeon-sapphire-rapids",
        "Intel Xeon 4th gen (8 x DDR5-4800)",
        Cpu,
        307.2,
        None,
        "Intel Xeon Scalable 4th gen product brief",
    ),
];

impl Device {
    /// Look a device up by its id (case-insensitive).
    pub fn find(id: &str) -> Option<&'static Device> {
        DEVICES.iter().find(|d| d.id.eq_ignore_ascii_case(id))
    }

    /// Bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.gb_per_s * 1e9
    }
}

/// Bandwidths of the two memories, bytes per second; `None` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bandwidth {
    /// The GPU's VRAM (or unified memory).
    pub device: Option<f64>,
    /// System RAM, read by the CPU.
    pub host: Option<f64>,
}

/// The decode bound at one position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeBound {
    /// Bytes read per token from VRAM and from host RAM.
    pub device_bytes: u64,
    pub host_bytes: u64,
    /// Upper bound on tokens per second for one sequence; `None` when a needed bandwidth is unknown.
    pub tokens_per_s: Option<f64>,
}

/// The bound for one sequence decoding the token at position `pos` under `offload`.
pub fn decode_bound(weights: &WeightPlan, kv: &KvCache, offload: &Offload, pos: u64, bw: &Bandwidth) -> DecodeBound {
    let mut device = 0u64;
    let mut host = weights.token_embd_row;
    let kv_layer = |il: usize| {
        let (cell, window) = kv.per_token.get(il).copied().unwrap_or((0, None));
        cell * window.map_or(pos, |w| w.min(pos))
    };
    for (il, &on_gpu) in offload.gpu_layers.iter().enumerate() {
        let bytes = weights.layers.get(il).copied().unwrap_or(0) + kv_layer(il);
        if on_gpu {
            device += bytes;
        } else {
            host += bytes;
        }
    }
    // The output matrix is read in full; for a tied model it is token_embd.
    if offload.output_on_gpu {
        device += weights.output_layer_bytes();
    } else {
        host += weights.output_layer_bytes();
    }
    // With everything offloaded the host only looks up one embedding row; without a host bandwidth that
    // read (a few KiB) is left out rather than making the bound unknown.
    if bw.host.is_none() && host == weights.token_embd_row {
        host = 0;
    }
    let time = |bytes: u64, bw: Option<f64>| if bytes == 0 { Some(0.0) } else { bw.map(|b| bytes as f64 / b) };
    let tokens_per_s = match (time(device, bw.device), time(host, bw.host)) {
        (Some(a), Some(b)) if a + b > 0.0 => Some(1.0 / (a + b)),
        _ => None,
    };
    DecodeBound { device_bytes: device, host_bytes: host, tokens_per_s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_unique_and_lower_case() {
        let mut ids: Vec<&str> = DEVICES.iter().map(|d| d.id).collect();
        assert!(ids.iter().all(|i| i.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), DEVICES.len());
        assert_eq!(Device::find("RTX-4090").unwrap().gb_per_s, 1008.0);
        assert!(DEVICES.iter().all(|d| d.gb_per_s > 0.0 && !d.source.is_empty()));
    }
}
