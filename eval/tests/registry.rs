//! Every architecture of the registry, end to end: a small synthetic checkpoint is built from the registry
//! entry alone (its tensor rules, optional tensors included, shapes from a config.json), converted to GGUF,
//! evaluated from the GGUF and from the HF directory (the same logits), and converted back (the same
//! tensors). Registering an architecture makes this test cover it with no other edit.

use std::path::{Path, PathBuf};

use quantforge_eval::LlamaModel;
use quantforge_formats::arch::{
    fill, fill_expert, Architecture, ExtraKey, HfConfig, Transform, VocabStyle, ARCHITECTURES,
};
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensorSpec};
use quantforge_quant::convert::to_hf::{gguf_to_hf, HfDtype};
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::progress::Silent;
use serde_json::json;

const N_LAYER: u32 = 2;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

/// A uniform pseudo-random value in [-1, 1) from a name and an index (splitmix64).
fn noise(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Values for a tensor: norms near 1, biases small, matrices scaled by 1/sqrt(inputs) and a little more, so
/// the logits are far from uniform.
fn values(name: &str, shape: &[u64]) -> Vec<f32> {
    let n: u64 = shape.iter().product();
    let seed = seed_of(name);
    let cols = *shape.last().unwrap_or(&1) as f32;
    (0..n)
        .map(|i| {
            let r = noise(seed, i);
            if shape.len() == 1 && name.contains("norm") {
                1.0 + 0.25 * r
            } else if shape.len() == 1 {
                0.1 * r
            } else if name.contains("embed") {
                r
            } else {
                2.0 * r / cols.sqrt()
            }
        })
        .collect()
}

/// The checkpoint's config.json for `arch`: with experts, 4 of them, 2 per token, the expert sizes the
/// architecture writes, and the config values its forward pass requires.
fn config(arch: &Architecture) -> serde_json::Value {
    let mut c = json!({
        "architectures": [arch.hf_names[0]], "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": N_LAYER,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 512, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
        // Keys some converters require and real checkpoints of those architectures always have (transformers
        // saves them): Granite's logit divisor (llama.cpp's loader requires `logit_scale`), Phi-3's original
        // context (`Phi3MiniModel` reads it unconditionally), Gemma's query scale (whose GGUF cannot record
        // another value than head_dim here). Other architectures ignore them.
        "logits_scaling": 1.0, "original_max_position_embeddings": 256, "query_pre_attn_scalar": 16
    });
    if arch.has_experts() {
        c["num_local_experts"] = json!(4);
        c["num_experts_per_tok"] = json!(2);
        if arch.extra_keys.contains(&ExtraKey::ExpertFeedForwardLength) {
            c["moe_intermediate_size"] = json!(32);
        }
        if arch.extra_keys.contains(&ExtraKey::ExpertSharedFeedForwardLength) {
            c["shared_expert_intermediate_size"] = json!(48);
        }
    }
    for r in arch.forward.config_requirements {
        c[r.key] = r.value.to_json();
    }
    c
}

/// Every HF tensor the architecture's rules name, optional ones included, with its shape.
fn tensors(arch: &Architecture, cfg: &HfConfig) -> Vec<(String, Vec<u64>)> {
    let mut out = Vec::new();
    for rule in arch.rules {
        let shape: Vec<u64> = rule.shape.iter().map(|d| d.resolve(cfg)).collect();
        let bids: Vec<Option<u32>> =
            if rule.hf.contains("{bid}") { (0..cfg.block_count).map(Some).collect() } else { vec![None] };
        // One tensor per expert where the rule stacks them.
        let xids: Vec<Option<u32>> =
            if rule.stacks_experts() { (0..cfg.expert_count.unwrap()).map(Some).collect() } else { vec![None] };
        for bid in bids {
            for &xid in &xids {
                let name = xid.map_or_else(|| fill(rule.hf, bid), |x| fill_expert(rule.hf, bid, x));
                out.push((name, shape.clone()));
            }
        }
    }
    out.sort();
    out
}

fn write_checkpoint(dir: &Path, arch: &Architecture) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    std::fs::create_dir_all(dir).unwrap();
    // A byte-level BPE vocabulary where the architecture reads nothing else.
    let (tokenizer, files) = match arch.vocab {
        VocabStyle::Gpt2 => ("archs/qwen2moe", &["tokenizer.json", "tokenizer_config.json"][..]),
        _ => ("stories260K", &["tokenizer.json", "tokenizer.model", "tokenizer_config.json"][..]),
    };
    for f in files {
        std::fs::copy(fixture(tokenizer).join(f), dir.join(f)).unwrap();
    }
    let cfg_json = config(arch);
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg_json).unwrap()).unwrap();
    let cfg = HfConfig::parse(&cfg_path, &cfg_json).unwrap();
    let all: Vec<(String, Vec<u64>, Vec<f32>)> = tensors(arch, &cfg)
        .into_iter()
        .map(|(name, shape)| {
            let v = values(&name, &shape);
            (name, shape, v)
        })
        .collect();
    let specs: Vec<StTensorSpec> = all
        .iter()
        .map(|(name, shape, _)| StTensorSpec { name: name.clone(), dtype: Dtype::F32, shape: shape.clone() })
        .collect();
    let mut w = SafetensorsWriter::create(dir.join("model.safetensors"), &[], &specs).unwrap();
    for (_, _, v) in &all {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor_data(&bytes).unwrap();
    }
    w.finish().unwrap();
    all
}

fn logits(path: &Path) -> Vec<f32> {
    let model = LlamaModel::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let seqs: Vec<Vec<u32>> = (0..3u32).map(|s| (0..40u32).map(|i| (s * 97 + i * 13 + 1) % 512).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    model.forward(&refs, 0).unwrap()
}

#[test]
fn every_registered_architecture_converts_evaluates_and_converts_back() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!ARCHITECTURES.is_empty());
    for arch in ARCHITECTURES {
        let name = arch.hf_names[0];
        let hf = dir.path().join(name);
        let original = write_checkpoint(&hf, arch);

        let gguf = dir.path().join(format!("{name}.gguf"));
        let converted = ConvertedModel::open(&hf, OutType::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        converted.write_gguf(&gguf, &Silent, None).unwrap();

        // The same logits from the GGUF and from the HF directory, far from uniform.
        let from_gguf = logits(&gguf);
        let from_hf = logits(&hf);
        assert_eq!(from_gguf.len(), 3 * 40 * 512, "{name}");
        let max_diff = from_gguf.iter().zip(&from_hf).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_diff <= 1e-5, "{name}: GGUF and HF logits differ by {max_diff}");
        let spread = from_gguf[..512].iter().fold(f32::MIN, |m, &v| m.max(v))
            - from_gguf[..512].iter().fold(f32::MAX, |m, &v| m.min(v));
        assert!(from_gguf.iter().all(|v| v.is_finite()) && spread > 1.0, "{name}: logits spread {spread}");

        // Back to HF: every tensor as it was.
        let back = dir.path().join(format!("{name}-back"));
        gguf_to_hf(&GgufFile::open(&gguf).unwrap(), &back, HfDtype::F32, &Silent).unwrap();
        let st = SafetensorsFile::open(back.join("model.safetensors")).unwrap();
        assert_eq!(st.tensors().len(), original.len(), "{name}");
        for (t, shape, v) in &original {
            let got = st.tensor(t).unwrap_or_else(|| panic!("{name}: {t} not written back"));
            assert_eq!(&got.shape, shape, "{name}: {t}");
            let back = st.to_f32(got).unwrap();
            if arch.rule_for(t).is_some_and(|(r, _)| r.transform == Transform::NormShift) {
                // The converter's + 1 rounds in f32 (as llama.cpp's does): w comes back within an ulp of 1 + w.
                let near = back.iter().zip(v).all(|(b, w)| (b - w).abs() <= (1.0 + w.abs()) * f32::EPSILON);
                assert!(near, "{name}: {t}");
            } else {
                assert_eq!(&back, v, "{name}: {t}");
            }
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(back.join("config.json")).unwrap()).unwrap();
        // GGUF -> HF names the first architecture registered under the GGUF name (Mistral comes back as Llama),
        // with experts exactly when it has them (Mixtral comes back as Mixtral).
        let first = ARCHITECTURES
            .iter()
            .find(|a| a.gguf_name == arch.gguf_name && a.has_experts() == arch.has_experts())
            .unwrap();
        assert_eq!(cfg["architectures"][0], first.hf_names[0], "{name}");
        for key in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "head_dim"] {
            assert_eq!(cfg[key], config(arch)[key], "{name}: {key}");
        }
        // And the model read back evaluates to the same logits.
        assert_eq!(logits(&back), from_hf, "{name}: logits after the round trip");
    }
}
