//! Fuzz targets of the quant crate (see `formats/tests/fuzz_support` and the README's Fuzzing section): the PEFT adapter
//! parser (adapter_config.json, and the adapter's safetensors), the importance-matrix reader (GGUF and legacy
//! `.dat`), and the memory planner fed a config.json (the path that once tried to allocate per layer from an
//! unchecked `num_hidden_layers`).

#[path = "../../formats/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::path::Path;

use quantforge_quant::imatrix::Imatrix;
use quantforge_quant::lora::Adapter;
use quantforge_quant::memory::{self, KvLayout, ModelShape, Resources, Settings};
use quantforge_quant::policy::FileType;

#[global_allocator]
static ALLOC: fuzz_support::Counting = fuzz_support::Counting;

fn seed(target: &str, file: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz").join(target).join(file)).unwrap()
}

/// Every tensor of an adapter that opened is read, as the merge would.
fn open_adapter(dir: &Path) {
    let Ok(a) = Adapter::open(dir) else { return };
    for m in a.modules.values() {
        let _ = (a.values(&m.a), a.values(&m.b));
    }
}

#[test]
fn fuzz_adapter_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_model.safetensors"), seed("adapter_safetensors", "rank2.safetensors"))
        .unwrap();
    fuzz_support::fuzz("adapter_config", &["adapter_config"], 1000, |bytes| {
        std::fs::write(dir.path().join("adapter_config.json"), bytes).unwrap();
        open_adapter(dir.path());
    });
}

#[test]
fn fuzz_adapter_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), seed("adapter_config", "rank2.json")).unwrap();
    fuzz_support::fuzz("adapter_safetensors", &["adapter_safetensors"], 1000, |bytes| {
        std::fs::write(dir.path().join("adapter_model.safetensors"), bytes).unwrap();
        open_adapter(dir.path());
    });
}

#[test]
fn fuzz_imatrix() {
    fuzz_support::fuzz("imatrix", &["imatrix"], 20000, |bytes| {
        let _ = Imatrix::from_bytes("fuzz.imatrix", bytes.to_vec());
    });
}

/// A config.json through the memory planner: tensor shapes from the architecture's rules, the weight plan of
/// a quantization type, the KV cache and the best `-ngl` under a budget.
#[test]
fn fuzz_config_estimate() {
    fuzz_support::fuzz("config_estimate", &["config"], 3000, |bytes| {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
        let Ok(shape) = ModelShape::from_config_value(Path::new("config.json"), &json) else { return };
        let settings = Settings {
            layout: KvLayout::new(4096),
            resources: Resources { vram: Some(8 << 30), ram: Some(32 << 30) },
            max_ctx: 1 << 16,
        };
        let _ = memory::estimate(&shape, Some(FileType::Q4_K_M), &settings);
    });
}
