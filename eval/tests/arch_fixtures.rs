//! Every registered architecture against two independent references, from the committed fixtures of
//! `fixtures/archs/<name>/` (made by `fixtures/archs/make_fixture.py`):
//!
//! - `convert` to F32 GGUF gives, byte for byte, the file llama.cpp's `convert_hf_to_gguf.py` wrote for the same
//!   directory (`llama.cpp-f32.gguf`): every key, value, tensor name, shape, order, dtype and value. On a
//!   mismatch the first differing key or tensor is named.
//! - The forward pass, run from the HF directory and from that GGUF, gives next-token distributions whose mean
//!   KL divergence from transformers' own (`reference-logprobs.f32`, computed in float64) is below 1e-4, on a
//!   reference that is far from uniform (so a wrong model cannot pass by accident).
//! - GGUF -> HF -> GGUF gives the same file back.

use std::path::{Path, PathBuf};

use quantforge_eval::LlamaModel;
use quantforge_formats::arch::ARCHITECTURES;
use quantforge_formats::gguf::GgufFile;
use quantforge_quant::convert::to_hf::{gguf_to_hf, parse_hf_dtype};
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::progress::Silent;
use serde_json::Value;

const MAX_MEAN_KLD: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arch_fixtures").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture folders, sorted.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn reference(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name).join("reference.json")).unwrap()).unwrap()
}

/// The first difference between two GGUF files, named (keys in order, then tensors in order, then data).
fn first_difference(ours: &Path, theirs: &Path) -> String {
    let (a, b) = (GgufFile::open(ours).unwrap(), GgufFile::open(theirs).unwrap());
    let (ka, kb) = (a.metadata(), b.metadata());
    for i in 0..ka.len().max(kb.len()) {
        match (ka.get(i), kb.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => return format!("key #{i}: ours {x:?}, llama.cpp {y:?}"),
        }
    }
    let (ta, tb) = (a.tensors(), b.tensors());
    for i in 0..ta.len().max(tb.len()) {
        match (ta.get(i), tb.get(i)) {
            (Some(x), Some(y)) if (&x.name, x.ggml_type, &x.ne) == (&y.name, y.ggml_type, &y.ne) => {
                if a.tensor_data(x) != b.tensor_data(y) {
                    return format!("tensor {}: different values", x.name);
                }
            }
            (x, y) => {
                let d = |t: Option<&quantforge_formats::gguf::TensorInfo>| {
                    t.map(|t| format!("{} {:?} {:?}", t.name, t.ggml_type, t.ne))
                };
                return format!("tensor #{i}: ours {:?}, llama.cpp {:?}", d(x), d(y));
            }
        }
    }
    "same keys and tensors; alignment or padding differs".into()
}

fn convert(dir: &Path, out: &Path) {
    ConvertedModel::open(dir, OutType::F32).unwrap().write_gguf(out, &Silent, None).unwrap();
}

fn assert_same_file(ours: &Path, theirs: &Path, what: &str) {
    if std::fs::read(ours).unwrap() != std::fs::read(theirs).unwrap() {
        panic!("{what}: {}", first_difference(ours, theirs));
    }
}

/// Mean and largest KL(reference || model) over the positions.
fn kld(model: &LlamaModel, tokens: &[u32], want: &[f32], vocab: usize) -> (f64, f64) {
    let logits = model.forward(&[tokens], 0).unwrap();
    assert_eq!(logits.len(), want.len(), "logits for every position");
    let (mut sum, mut worst) = (0.0f64, 0.0f64);
    for (row, ref_row) in logits.chunks(vocab).zip(want.chunks(vocab)) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let k: f64 = ref_row.iter().zip(row).map(|(&lp, &x)| (lp as f64).exp() * (lp as f64 - (x as f64 - lse))).sum();
        sum += k;
        worst = worst.max(k);
    }
    (sum / (logits.len() / vocab) as f64, worst)
}

fn check(name: &str) {
    let dir = fixtures().join(name);
    let meta = reference(name);
    let vocab = meta["vocab_size"].as_u64().unwrap() as usize;
    let tokens: Vec<u32> = meta["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let bytes = std::fs::read(dir.join("reference-logprobs.f32")).unwrap();
    let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(want.len(), tokens.len() * vocab, "{name}: reference size");

    // The reference is far from uniform: its mean entropy is well below ln(vocab).
    let entropy: f64 = want.iter().map(|&lp| -(lp as f64).exp() * lp as f64).sum::<f64>() / tokens.len() as f64;
    assert!(entropy < 0.6 * (vocab as f64).ln(), "{name}: reference entropy {entropy}");

    let tmp = scratch(name);
    let ours = tmp.join("ours-f32.gguf");
    convert(&dir, &ours);
    assert_same_file(&ours, &dir.join("llama.cpp-f32.gguf"), &format!("{name}: convert vs llama.cpp"));

    for (what, path) in [("HF directory", dir.clone()), ("GGUF", ours.clone())] {
        let model = LlamaModel::load(&path).unwrap_or_else(|e| panic!("{name} {what}: {e}"));
        let (mean, worst) = kld(&model, &tokens, &want, vocab);
        eprintln!("{name} {what}: mean KLD {mean:.3e}, worst position {worst:.3e}");
        assert!(mean < MAX_MEAN_KLD, "{name} {what}: mean KLD {mean:e} (worst position {worst:e})");
    }

    // GGUF -> HF -> GGUF: the HF directory is named like the fixture so general.name comes back too.
    let back = tmp.join("back").join(name);
    std::fs::create_dir_all(back.parent().unwrap()).unwrap();
    gguf_to_hf(&GgufFile::open(&ours).unwrap(), &back, parse_hf_dtype("f32").unwrap(), &Silent).unwrap();
    let again = tmp.join("again-f32.gguf");
    convert(&back, &again);
    assert_same_file(&again, &ours, &format!("{name}: GGUF -> HF -> GGUF"));
}

#[test]
fn every_registered_architecture_has_a_fixture() {
    let covered: Vec<String> =
        fixture_names().iter().map(|n| reference(n)["architecture"].as_str().unwrap().to_string()).collect();
    for arch in ARCHITECTURES {
        for hf in arch.hf_names {
            assert!(covered.iter().any(|c| c == hf), "{hf} has no fixture under fixtures/archs");
        }
    }
}

#[test]
fn every_fixture_matches_llama_cpp_and_transformers() {
    let names = fixture_names();
    assert!(!names.is_empty());
    let failed: Vec<&String> = names.iter().filter(|name| std::panic::catch_unwind(|| check(name)).is_err()).collect();
    assert!(failed.is_empty(), "fixtures that fail: {failed:?}");
}
