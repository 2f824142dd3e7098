//! Bounds on hostile inputs, end to end: config values above their limits (refused by file and key, before
//! anything is sized from them), products of config values that once wrapped, side files that never end,
//! zero-element tensors, and a layer count that once made `estimate` quadratic.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quantforge_formats::gguf::{GgufFile, GgufWriter, TensorSpec};
use quantforge_formats::GgmlType;
use serde_json::{json, Value};

use crate::util::{fixture, qf};

/// `fixtures/stories260K/config.json` with `edits` applied, written into `dir`.
fn config_with(dir: &Path, edits: &[(&str, Value)]) -> PathBuf {
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("stories260K/config.json")).unwrap()).unwrap();
    for (k, v) in edits {
        cfg[*k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

/// A copy of the stories260K model directory with `edits` applied to its config.
fn model_dir_with(dir: &Path, edits: &[(&str, Value)]) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(fixture("stories260K").join(f), m.join(f)).unwrap();
    }
    config_with(&m, edits);
    m
}

#[test]
fn config_values_above_their_limits_are_refused_by_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("num_hidden_layers", json!(4294967295u64)),
        ("num_attention_heads", json!(1u64 << 20)),
        ("hidden_size", json!(1u64 << 31)),
        ("intermediate_size", json!(1u64 << 31)),
        ("vocab_size", json!(1u64 << 30)),
        ("max_position_embeddings", json!(4294967295u64)),
    ] {
        let cfg = config_with(dir.path(), &[(key, value.clone())]);
        let t = Instant::now();
        let err = qf(["estimate", cfg.to_str().unwrap()]).fails();
        assert!(err.contains("config.json") && err.contains(key) && err.contains("limit"), "{key}={value}: {err}");
        assert!(t.elapsed().as_secs() < 30, "{key}: refused only after {:?}", t.elapsed());
    }
    // convert reads the same config first, and fails the same way (it once aborted allocating 34 GB).
    let model = model_dir_with(dir.path(), &[("num_hidden_layers", json!(4294967295u64))]);
    let out = dir.path().join("out.gguf");
    let err = qf(["convert", model.to_str().unwrap(), "-o", out.to_str().unwrap()]).fails();
    assert!(err.contains("num_hidden_layers") && err.contains("limit"), "{err}");
    assert!(!out.exists());
}

#[test]
fn heads_times_head_dim_is_checked_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    // 128 heads of 65,536: each within its own limit, the product (2^23) above the attention width's.
    let cfg = config_with(
        dir.path(),
        &[("num_attention_heads", json!(128)), ("num_key_value_heads", json!(8)), ("head_dim", json!(65536))],
    );
    let err = qf(["estimate", cfg.to_str().unwrap()]).fails();
    assert!(err.contains("num_attention_heads × head_dim") && err.contains("8388608"), "{err}");
    // A large but legal head size: Q is heads × head_dim wide, computed in 64 bits. stories260K has 8 heads,
    // 4 KV heads, hidden 64, FFN 172, vocab 512, 5 layers, tied embeddings; with head_dim 4096 each layer has
    // q (8·4096 × 64), k and v (4·4096 × 64 each), o (64 × 8·4096), three FFN matrices (172 × 64) and two
    // norms (64), plus the embedding (512 × 64) and the output norm (64).
    let cfg = config_with(dir.path(), &[("head_dim", json!(4096))]);
    let j: Value = qf(["estimate", "--json", "--type", "f16", cfg.to_str().unwrap()]).json();
    let per_layer = 2 * 8 * 4096 * 64 + 2 * 4 * 4096 * 64 + 3 * 172 * 64 + 2 * 64;
    let expected: u64 = 5 * per_layer + 512 * 64 + 64;
    assert_eq!(j["model"]["parameters"], expected, "{}", j["model"]);
}

#[test]
fn estimate_is_linear_in_the_layer_count() {
    let dir = tempfile::tempdir().unwrap();
    // 30,000 layers took over two minutes when placing each -ngl re-summed every layer's cache.
    let cfg = config_with(dir.path(), &[("num_hidden_layers", json!(30000))]);
    let t = Instant::now();
    let j: Value =
        qf(["estimate", "--json", "--vram", "100M", "--type", "q4_k_m", "--ctx", "512", cfg.to_str().unwrap()]).json();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(j["model"]["n_layer"], 30000);
    let best = &j["results"][0]["best_offload"];
    assert!(best["ngl"].as_u64().unwrap() < 30001, "{best}");
    // Generous for a loaded machine; the quadratic version needed minutes.
    assert!(secs < 30.0, "estimate of 30,000 layers took {secs:.1} s");
}

#[test]
fn side_files_that_never_end_or_are_too_large_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    let out = dir.path().join("out.gguf");
    let quantize = |extra: &[&str]| {
        let mut a = vec!["quantize", input.to_str().unwrap(), out.to_str().unwrap(), "--type", "q8_0"];
        a.extend_from_slice(extra);
        qf(a)
    };
    // A stream that never ends is refused by its kind before it is opened.
    if Path::new("/dev/zero").exists() {
        let t = Instant::now();
        let err = quantize(&["--tensor-type-file", "/dev/zero"]).fails();
        assert!(err.contains("/dev/zero") && err.contains("character device"), "{err}");
        assert!(t.elapsed().as_secs() < 60);
    }
    // Regular files over their cap are refused from their size, before they are read (sparse files).
    let sparse = |name: &str, len: u64| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let types = sparse("types.txt", (16 << 20) + 1);
    let err = quantize(&["--tensor-type-file", types.to_str().unwrap()]).fails();
    assert!(err.contains("types.txt") && err.contains("limit of 16 MiB"), "{err}");
    let text = sparse("text.txt", (256 << 20) + 1);
    let model = fixture("stories260K");
    let err = qf(["eval", "perplexity", model.to_str().unwrap(), "--text", text.to_str().unwrap()]).fails();
    assert!(err.contains("text.txt") && err.contains("limit of 256 MiB"), "{err}");
    // A legacy imatrix larger than its cap is refused from its size, before it is read (a sparse file).
    let big = dir.path().join("big.dat");
    std::fs::File::create(&big).unwrap().set_len((1 << 30) + 1).unwrap();
    let err = quantize(&["--imatrix", big.to_str().unwrap()]).fails();
    assert!(err.contains("big.dat") && err.contains("limit of 1 GiB"), "{err}");
    assert!(!out.exists());
}

/// synth-tiny with two zero-element tensors added (legal GGUF: no data, no padding).
fn with_empty_tensors(dir: &Path) -> PathBuf {
    let src = GgufFile::open(fixture("golden/synth-tiny-f32.gguf")).unwrap();
    let mut specs: Vec<TensorSpec> = src
        .tensors()
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() })
        .collect();
    let empties = [
        TensorSpec { name: "blk.0.ffn_empty.weight".into(), ggml_type: GgmlType::F32, ne: vec![256, 0] },
        TensorSpec { name: "zero.bias".into(), ggml_type: GgmlType::F32, ne: vec![0] },
    ];
    specs.insert(1, empties[0].clone());
    specs.push(empties[1].clone());
    let path = dir.join("with-empty.gguf");
    let mut w = GgufWriter::create(&path, src.metadata(), specs.clone()).unwrap();
    for s in &specs {
        let data = src.tensor(&s.name).map_or(&[][..], |t| src.tensor_data(t));
        w.write_tensor(&s.name, data).unwrap();
    }
    w.finish().unwrap();
    path
}

#[test]
fn zero_element_tensors_quantize_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let input = with_empty_tensors(dir.path());
    for ty in ["q8_0", "q4_k_m", "f16"] {
        let out = dir.path().join(format!("out-{ty}.gguf"));
        qf(["quantize", "-q", input.to_str().unwrap(), out.to_str().unwrap(), "--type", ty]).ok();
        let f = GgufFile::open(&out).unwrap();
        let src = GgufFile::open(&input).unwrap();
        assert_eq!(f.tensors().len(), src.tensors().len(), "{ty}");
        for name in ["blk.0.ffn_empty.weight", "zero.bias"] {
            let t = f.tensor(name).unwrap_or_else(|| panic!("{ty}: {name} missing"));
            assert_eq!((t.n_elements(), t.size), (0, 0), "{ty}: {name}");
            assert_eq!(t.ne, src.tensor(name).unwrap().ne, "{ty}: {name} keeps its shape");
        }
    }
    let j: Value = qf(["inspect", "--json", input.to_str().unwrap()]).json();
    let text = j.to_string();
    assert!(text.contains("blk.0.ffn_empty.weight") && text.contains("zero.bias"), "{text}");
}
