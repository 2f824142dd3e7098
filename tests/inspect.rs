//! `quantforge inspect` on real files, as a user runs it.

use crate::util::{fixture, qf, smollm2_q4_1};

#[test]
fn inspect_gguf_json_totals() {
    let j = qf(["inspect", "--json"].iter().map(|s| s.to_string()).chain([fixture(
        "golden/llama-quantize/synth-tiny-Q4_K_M.gguf",
    )
    .display()
    .to_string()]))
    .json();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["totals"]["tensors"], 21);
    assert_eq!(j["totals"]["types"]["q6_K"], 3);
    assert_eq!(j["metadata"]["general.file_type"], 15);
    assert_eq!(j["metadata"]["tokenizer.ggml.tokens"]["length"], 512);
    assert_eq!(j["tensors"][0]["name"], "output.weight");
    assert_eq!(j["tensors"][0]["shape"], serde_json::json!([256, 512]));
}

#[test]
fn inspect_every_golden_file() {
    for dir in ["golden", "golden/llama-quantize"] {
        for e in std::fs::read_dir(fixture(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gguf") {
                let out = qf([std::ffi::OsStr::new("inspect"), p.as_os_str()]).ok();
                assert!(out.contains("BPW"), "{}", p.display());
            }
        }
    }
}

#[test]
fn inspect_hf_dir_and_safetensors() {
    let out = qf([std::ffi::OsStr::new("inspect"), fixture("stories260K").as_os_str()]).ok();
    assert!(out.contains("parameters   260.03 K (260032)"), "{out}");
    let j = qf([
        std::ffi::OsStr::new("inspect"),
        std::ffi::OsStr::new("--json"),
        fixture("stories260K/model.safetensors").as_os_str(),
    ])
    .json();
    assert_eq!(j["format"], "safetensors");
    assert_eq!(j["totals"]["parameters"], 260032);
    assert_eq!(j["totals"]["bits_per_weight"], 32.0);
}

#[test]
fn inspect_rejects_bad_input_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x01\x00\x00\x00").unwrap();
    let err = qf([std::ffi::OsStr::new("inspect"), bad.as_os_str()]).fails();
    assert!(err.contains("bad.gguf") && err.contains("GGUFv1"), "{err}");
    let err = qf(["inspect", "/definitely/not/here.gguf"]).fails();
    assert!(err.contains("/definitely/not/here.gguf"), "{err}");
    let err = qf([std::ffi::OsStr::new("inspect"), dir.path().as_os_str()]).fails();
    assert!(err.contains("config.json"), "{err}");
}

/// Agrees with what llama.cpp prints for the shipped SmolLM2 file: 272 tensors (61 f32, 210 q4_1,
/// 1 q8_0), 92.10 MiB of tensor data, 5.74 BPW.
#[test]
#[ignore = "slow: needs scripts/fetch-models.sh"]
fn inspect_smollm2_matches_llama_cpp() {
    let j = qf([std::ffi::OsStr::new("inspect"), std::ffi::OsStr::new("--json"), smollm2_q4_1().as_os_str()]).json();
    assert_eq!(j["totals"]["tensors"], 272);
    assert_eq!(j["totals"]["types"]["f32"], 61);
    assert_eq!(j["totals"]["types"]["q4_1"], 210);
    assert_eq!(j["totals"]["types"]["q8_0"], 1);
    assert_eq!(j["totals"]["parameters"], 134_515_008u64);
    let bpw = j["totals"]["bits_per_weight"].as_f64().unwrap();
    assert!((bpw - 5.74).abs() < 0.005, "{bpw}");
    assert_eq!(j["metadata"]["tokenizer.ggml.merges"]["length"], 48900);
    assert_eq!(j["file_size"], 98_362_432u64);
}
