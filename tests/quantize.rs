//! `quantforge quantize` reproduces llama.cpp's `llama-quantize` output byte for byte.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::util::{fixture, qf, smollm2_q4_1};

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `llama-quantize` type of a golden file name, e.g. `synth-tiny-imat-Q4_K_M.gguf` -> `Q4_K_M`.
fn golden_type(name: &str, prefix: &str) -> Option<String> {
    name.strip_prefix(prefix)?.strip_suffix(".gguf").map(String::from)
}

fn quantize_like_golden(input: &Path, ftype: &str, imatrix: bool, out: &Path, threads: &str) {
    // llama-quantize recorded the imatrix path as given from inside golden/, so run from there.
    let golden = fixture("golden");
    let mut a = args(&[&"quantize", &"--quiet", &"--threads", &threads, &input, &out, &"--type", &ftype]);
    if imatrix {
        a.extend(args(&[&"--imatrix", &"synth-tiny-imatrix.gguf"]));
    }
    let run =
        std::process::Command::new(env!("CARGO_BIN_EXE_quantforge")).args(&a).current_dir(&golden).output().unwrap();
    assert!(run.status.success(), "{ftype}: {}", String::from_utf8_lossy(&run.stderr));
}

#[test]
fn every_synth_tiny_golden_file_is_reproduced_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(fixture("golden/llama-quantize")).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for golden in entries {
        let name = golden.file_name().unwrap().to_string_lossy().into_owned();
        let (ftype, imatrix) = match (golden_type(&name, "synth-tiny-imat-"), golden_type(&name, "synth-tiny-")) {
            (Some(t), _) => (t, true),
            (None, Some(t)) => (t, false),
            _ => continue,
        };
        let out = dir.path().join(&name);
        // Alternate thread counts: the bytes must not depend on them.
        let threads = if checked % 2 == 0 { "1" } else { "2" };
        quantize_like_golden(&fixture("golden/synth-tiny-f32.gguf"), &ftype, imatrix, &out, threads);
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&golden).unwrap(), "{name} differs from llama-quantize");
        checked += 1;
    }
    // Every synth-tiny output listed in SHA256SUMS is committed and was checked.
    let sums = std::fs::read_to_string(fixture("golden/SHA256SUMS")).unwrap();
    assert_eq!(checked, sums.lines().filter(|l| l.contains("  llama-quantize/synth-tiny-")).count());
}

#[test]
fn tied_embedding_outputs_match_llama_cpp_hashes() {
    let sums = std::fs::read_to_string(fixture("golden/SHA256SUMS")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let Some((hash, file)) = line.split_once("  ") else { continue };
        let Some(ftype) = golden_type(file, "llama-quantize/synth-tied-") else { continue };
        let out = dir.path().join("tied.gguf");
        quantize_like_golden(&fixture("golden/synth-tied-f32.gguf"), &ftype, false, &out, "2");
        assert_eq!(sha256(&out), hash, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn split_output_holds_the_same_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gguf");
    let parts = dir.path().join("parts.gguf");
    let input = fixture("golden/synth-tiny-f32.gguf");
    qf(args(&[&"quantize", &"-q", &input, &whole, &"--type", &"q8_0"])).ok();
    let j =
        qf(args(&[&"quantize", &"-q", &"--json", &input, &parts, &"--type", &"q8_0", &"--split-max-size", &"400K"]))
            .json();
    let outputs = j["outputs"].as_array().unwrap();
    assert!(outputs.len() >= 3, "{j}");
    let whole_info = qf(args(&[&"inspect", &"--json", &whole])).json();
    let mut names = Vec::new();
    for (i, p) in outputs.iter().enumerate() {
        let p = p.as_str().unwrap();
        assert!(p.ends_with(&format!("parts-{:05}-of-{:05}.gguf", i + 1, outputs.len())), "{p}");
        let info = qf(args(&[&"inspect", &"--json", &"--single-file", &p])).json();
        assert_eq!(info["metadata"]["split.no"], i);
        assert_eq!(info["metadata"]["split.count"], outputs.len());
        assert_eq!(info["metadata"]["split.tensors.count"], 21);
        assert_eq!(info["metadata"].get("general.architecture").is_some(), i == 0);
        for t in info["tensors"].as_array().unwrap() {
            names.push(t["name"].clone());
        }
    }
    let whole_names: Vec<_> = whole_info["tensors"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
    assert_eq!(names, whole_names);
}

#[test]
fn dry_run_reports_plan_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.gguf");
    let j = qf(args(&[
        &"quantize",
        &"--dry-run",
        &"--json",
        &fixture("golden/synth-tiny-f32.gguf"),
        &out,
        &"--type",
        &"Q4_K_M",
    ]))
    .json();
    assert!(!out.exists());
    let golden = std::fs::metadata(fixture("golden/llama-quantize/synth-tiny-Q4_K_M.gguf")).unwrap().len();
    let bytes = j["output_bytes"].as_u64().unwrap();
    // Header and padding are what separates tensor bytes from the file size.
    assert!(bytes < golden && golden - bytes < 16 * 1024, "{bytes} vs {golden}");
    assert_eq!(j["tensors"][0]["name"], "output.weight");
    assert_eq!(j["tensors"][0]["to"], "q6_K");
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    let out = dir.path().join("o.gguf");
    let err = qf(args(&[&"quantize", &input, &out, &"--type", &"Q4_K_Z"])).fails();
    assert!(err.contains("Q4_K_Z"), "{err}");
    let err = qf(args(&[&"quantize", &input, &out, &"--type", &"Q2_K_S"])).fails();
    assert!(err.contains("importance matrix"), "{err}");
    // llama-quantize's refusal: the very low-bit types need an importance matrix.
    for ftype in ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS"] {
        let err = qf(args(&[&"quantize", &input, &out, &"--type", &ftype])).fails();
        assert!(err.contains("importance matrix"), "{ftype}: {err}");
    }
    let q8 = fixture("golden/llama-quantize/synth-tiny-Q8_0.gguf");
    let err = qf(args(&[&"quantize", &q8, &out, &"--type", &"Q4_K_M"])).fails();
    assert!(err.contains("--allow-requantize") && err.contains("q8_0"), "{err}");
    let tied = fixture("golden/synth-tied-f32.gguf");
    let imatrix = fixture("golden/synth-tiny-imatrix.gguf");
    let err = qf(args(&[&"quantize", &tied, &out, &"--type", &"Q4_K_M", &"--imatrix", &imatrix])).fails();
    assert!(err.contains("imatrix"), "{err}");
    // Never overwrites its input.
    let copy = dir.path().join("in.gguf");
    std::fs::copy(&input, &copy).unwrap();
    let err = qf(args(&[&"quantize", &copy, &copy, &"--type", &"Q8_0"])).fails();
    assert!(err.contains("overwrite"), "{err}");
    assert_eq!(sha256(&copy), sha256(&input));
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left behind");
}

/// The SmolLM2 model: Q4_1 -> F32 (llama.cpp's reference file), then the Q4_K_M plan llama.cpp chooses
/// for a 576-wide model: 180 of 272 tensors fall back, only ffn_down is K-quantized, 6.17 BPW.
#[test]
#[ignore = "slow: needs scripts/fetch-models.sh"]
fn smollm2_requantize_and_q4_k_m_plan() {
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("smollm2-f32.gguf");
    let q41 = smollm2_q4_1();
    qf(args(&[&"quantize", &"-q", &"--allow-requantize", &q41, &f32_path, &"--type", &"F32"])).ok();
    let j = qf(args(&[&"quantize", &"--dry-run", &"--json", &f32_path, &"--type", &"Q4_K_M"])).json();
    assert_eq!(j["fallbacks"], 180);
    let bpw = j["bits_per_weight"].as_f64().unwrap();
    assert!((bpw - 6.17).abs() < 0.005, "{bpw}");
    for t in j["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let to = t["to"].as_str().unwrap();
        if name.ends_with("ffn_down.weight") {
            assert!(to == "q4_K" || to == "q6_K", "{name} {to}");
        } else if name.ends_with("attn_v.weight") {
            assert!(to == "q5_0" || to == "q8_0", "{name} {to}");
        } else if name == "token_embd.weight" {
            assert_eq!(to, "q8_0");
        } else if name.ends_with("norm.weight") {
            assert_eq!(to, "f32");
        } else {
            assert_eq!(to, "q5_0", "{name}");
        }
    }
    let out = dir.path().join("q4km.gguf");
    let s = qf(args(&[&"quantize", &"--json", &f32_path, &out, &"--type", &"Q4_K_M"])).json();
    assert_eq!(s["bits_per_weight"], j["bits_per_weight"]);
    let info = qf(args(&[&"inspect", &"--json", &"--no-tensors", &out])).json();
    assert_eq!(info["totals"]["bits_per_weight"], j["bits_per_weight"]);
}

#[test]
fn default_output_name_is_llama_quantize_s() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model-f32.gguf");
    std::fs::copy(fixture("golden/synth-tiny-f32.gguf"), &input).unwrap();
    qf(args(&[&"quantize", &"-q", &input, &"--type", &"q8_0"])).ok();
    let out = dir.path().join("ggml-model-Q8_0.gguf");
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(fixture("golden/llama-quantize/synth-tiny-Q8_0.gguf")).unwrap()
    );
}

#[test]
fn overrides_and_tensor_type_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let types = dir.path().join("types.txt");
    std::fs::write(&types, "attn_v=q8_0\n  ffn_down=q5_0 ").unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    let a = args(&[
        &"quantize",
        &"-q",
        &input,
        &out,
        &"-t",
        &"q4_k_m",
        &"--tensor-type-file",
        &types,
        &"--override-kv",
        &"general.name=str:renamed",
        &"--override-kv",
        &"llama.context_length=int:4096",
    ]);
    qf(a).ok();
    let j = qf(args(&[&"inspect", &"--json", &out])).json();
    assert_eq!(j["metadata"]["general.name"], "renamed");
    assert_eq!(j["metadata"]["llama.context_length"], 4096);
    let keys: Vec<&String> = j["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(keys[keys.len() - 2..], ["general.name", "llama.context_length"]);
    for t in j["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.contains("attn_v") {
            assert_eq!(t["type"], "q8_0");
        } else if name.contains("ffn_down") {
            assert_eq!(t["type"], "q5_0");
        }
    }
    let err = qf(args(&[&"quantize", &input, &out, &"-t", &"q8_0", &"--override-kv", &"x=int:abc"])).fails();
    assert!(err.contains("--override-kv"), "{err}");
}

#[test]
fn row_length_without_fallback_is_refused() {
    use quantforge_formats::gguf::{GgufValue, GgufWriter, TensorSpec};
    use quantforge_formats::GgmlType;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.gguf");
    let meta: Vec<(String, GgufValue)> = vec![
        ("general.architecture".into(), GgufValue::String("llama".into())),
        ("llama.block_count".into(), GgufValue::U32(1)),
        ("llama.attention.head_count".into(), GgufValue::U32(1)),
    ];
    let spec = TensorSpec { name: "blk.0.attn_q.weight".into(), ggml_type: GgmlType::F32, ne: vec![48, 4] };
    let mut w = GgufWriter::create(&input, &meta, vec![spec]).unwrap();
    w.write_tensor_data(&[0u8; 48 * 4 * 4]).unwrap();
    w.finish().unwrap();
    let err = qf(args(&[&"quantize", &input, &dir.path().join("o.gguf"), &"-t", &"q8_0"])).fails();
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("48"), "{err}");
}

/// `quantize HF_DIR` in one pass writes exactly what `convert` followed by `quantize` writes.
#[test]
fn hf_directory_in_one_pass_equals_convert_then_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("stories260K");
    for outtype in ["f16", "f32"] {
        let converted = dir.path().join(format!("conv-{outtype}.gguf"));
        let two_step = dir.path().join(format!("two-{outtype}.gguf"));
        let one_pass = dir.path().join(format!("one-{outtype}.gguf"));
        qf(args(&[&"convert", &"-q", &model, &"-o", &converted, &"--outtype", &outtype])).ok();
        qf(args(&[&"quantize", &"-q", &converted, &two_step, &"-t", &"q4_k_m"])).ok();
        qf(args(&[&"quantize", &"-q", &model, &one_pass, &"-t", &"q4_k_m", &"--outtype", &outtype])).ok();
        assert!(std::fs::read(&one_pass).unwrap() == std::fs::read(&two_step).unwrap(), "outtype {outtype}");
    }
}

/// The mixture-of-experts fixtures (stacked 3-D expert tensors, F32 routers, Qwen2-MoE's shared expert and its
/// `[n_embd, 1]` gate written back as `[n_embd]`), and OLMo 2's (whole-width Q/K norms, post norms), quantized
/// exactly as `llama-quantize` (llama.cpp 0c1e57098) quantizes them: the hashes of its outputs are in
/// `fixtures/archs/llama-quantize/SHA256SUMS`.
#[test]
fn moe_fixtures_match_llama_quantize_hashes() {
    let sums = std::fs::read_to_string(fixture("archs/llama-quantize/SHA256SUMS")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        let (arch, ftype) = file.strip_suffix(".gguf").unwrap().split_once('-').unwrap();
        let input = fixture(&format!("archs/{arch}/llama.cpp-f32.gguf"));
        let out = dir.path().join(file);
        qf(args(&[&"quantize", &"--quiet", &input, &out, &"--type", &ftype])).ok();
        assert_eq!(sha256(&out), hash, "{file}");
        if ftype == "Q4_K_M" {
            // The quantized file evaluates (its 1-D shared-expert gate included).
            let text = fixture("text/tinystories-valid-sample.txt");
            let ppl =
                qf(args(&[&"eval", &"perplexity", &out, &"-f", &text, &"-c", &"64", &"--chunks", &"1", &"-q"])).ok();
            assert!(ppl.contains("PPL"), "{file}: {ppl}");
        }
        checked += 1;
    }
    assert_eq!(checked, 32);
}

/// The same fixtures quantized with llama-imatrix's per-expert importance matrices
/// (`fixtures/archs/llama-imatrix/<arch>.gguf`): each expert's rows weighted by its own slice, byte for byte
/// as `llama-quantize --imatrix` (hashes in `fixtures/archs/llama-quantize/imatrix-SHA256SUMS`; llama-quantize
/// ran from the repository root, so `quantize.imatrix.file` records the relative path given here).
#[test]
fn moe_fixtures_with_imatrix_match_llama_quantize_hashes() {
    let sums = std::fs::read_to_string(fixture("archs/llama-quantize/imatrix-SHA256SUMS")).unwrap();
    let root = fixture("..");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        let (arch, ftype) = file.strip_suffix(".gguf").unwrap().split_once('-').unwrap();
        let input = format!("fixtures/archs/{arch}/llama.cpp-f32.gguf");
        let imatrix = format!("fixtures/archs/llama-imatrix/{arch}.gguf");
        let out = dir.path().join(file);
        let a = args(&[&"quantize", &"--quiet", &input, &out, &"--type", &ftype, &"--imatrix", &imatrix]);
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_quantforge")).args(&a).current_dir(&root).output();
        let run = run.unwrap();
        assert!(run.status.success(), "{file}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(sha256(&out), hash, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 24);
}
