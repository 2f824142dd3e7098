//! GPTQ, AWQ and compressed-tensors checkpoints end to end: stories260K's attention linears quantized
//! round-to-nearest and written in every format, then `quantforge eval perplexity` on each checkpoint must
//! give exactly the perplexity of a float HF directory holding the dequantized weights; converting or
//! quantizing a quantized checkpoint is refused with a clear error.

use std::fs;
use std::path::{Path, PathBuf};

use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensorSpec};
use quantforge_quant::checkpoint::{CheckpointFormat, CheckpointWriter, QuantInfo};
use quantforge_quant::intquant::{rtn, IntScheme};

use crate::util::{fixture, qf};

const QUANTIZED: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

fn is_quantized(name: &str) -> bool {
    name.contains(".self_attn.") && QUANTIZED.iter().any(|p| name.ends_with(&format!("{p}.weight")))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Quantize stories260K's attention linears with `scheme`, write them in `format` to `dir/<format>` and the
/// dequantized float model to `dir/<format>-f32`; returns both directories.
fn write_pair(dir: &Path, format: CheckpointFormat, scheme: IntScheme) -> (PathBuf, PathBuf) {
    let src = fixture("stories260K");
    let st = SafetensorsFile::open(src.join("model.safetensors")).unwrap();
    let out = dir.join(format.name());
    let reference = dir.join(format!("{}-f32", format.name()));
    fs::create_dir_all(&reference).unwrap();
    let mut info = QuantInfo::new("rtn");
    info.not_quantized = vec!["lm_head".into()];
    for l in 0..5 {
        for p in ["gate_proj", "up_proj", "down_proj"] {
            info.not_quantized.push(format!("model.layers.{l}.mlp.{p}"));
        }
    }
    let mut w = CheckpointWriter::create(&out, &src, format, scheme, info).unwrap();
    let mut specs = Vec::new();
    let mut data = Vec::new();
    for t in st.tensors() {
        let values = st.to_f32(t).unwrap();
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let values = if is_quantized(&t.name) {
            let layer = rtn(&t.name, &values, shape[0], shape[1], scheme).unwrap();
            w.add_quantized(t.name.strip_suffix(".weight").unwrap(), &layer).unwrap();
            layer.dequantize()
        } else {
            w.add_tensor(&t.name, t.dtype, &shape, st.data(t)).unwrap();
            values
        };
        specs.push(StTensorSpec { name: t.name.clone(), dtype: Dtype::F32, shape: t.shape.clone() });
        data.push(f32_bytes(&values));
    }
    w.finish().unwrap();
    let mut f = SafetensorsWriter::create(reference.join("model.safetensors"), &[], &specs).unwrap();
    for d in &data {
        f.write_tensor_data(d).unwrap();
    }
    f.finish().unwrap();
    for name in ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
        fs::copy(src.join(name), reference.join(name)).unwrap();
    }
    (out, reference)
}

fn perplexity(model: &Path) -> serde_json::Value {
    let text = fixture("text/tinystories-valid-sample.txt");
    let (model, text) = (model.display().to_string(), text.display().to_string());
    let j = qf(["eval", "perplexity", &model, "--text", &text, "--ctx", "128", "--chunks", "3", "--json"]).json();
    j["ppl"].clone()
}

#[test]
fn every_format_evaluates_exactly_as_its_dequantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let s = |bits, group, sym, format: CheckpointFormat| {
        IntScheme::new(bits, group, sym, format.scale_dtype(Some("float32"))).unwrap()
    };
    let mut seen = Vec::new();
    for (format, bits, group, sym) in [
        (CheckpointFormat::Gptq, 4, Some(32), true),
        (CheckpointFormat::Gptq, 3, None, true),
        (CheckpointFormat::GptqV2, 4, Some(64), false),
        (CheckpointFormat::Awq, 4, Some(32), false),
        (CheckpointFormat::CompressedTensors, 4, Some(32), false),
        (CheckpointFormat::CompressedTensors, 8, None, true),
    ] {
        let sub = dir.path().join(format!("{}-{bits}-{sym}", format.name()));
        let (quantized, reference) = write_pair(&sub, format, s(bits, group, sym, format));
        assert!(
            !quantized.join("model.safetensors").exists() || {
                let st = SafetensorsFile::open(quantized.join("model.safetensors")).unwrap();
                st.tensor("model.layers.0.self_attn.q_proj.weight").is_none()
            }
        );
        let (q, f) = (perplexity(&quantized), perplexity(&reference));
        assert!(q.is_number(), "{q}");
        assert_eq!(q, f, "{format} {bits}-bit: the checkpoint and its dequantized weights disagree");
        seen.push(q.as_f64().unwrap());
    }
    // Quantization did change the model (each scheme its own perplexity), so the test can fail.
    let mut distinct = seen.clone();
    distinct.dedup();
    assert!(distinct.len() > 1, "{seen:?}");
}

#[test]
fn converting_or_quantizing_a_quantized_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let format = CheckpointFormat::CompressedTensors;
    let scheme = IntScheme::new(4, Some(32), true, format.scale_dtype(None)).unwrap();
    let (quantized, _) = write_pair(dir.path(), format, scheme);
    let out = dir.path().join("x.gguf");
    for args in [
        vec!["convert".to_string(), "--output".into(), out.display().to_string(), quantized.display().to_string()],
        vec![
            "quantize".to_string(),
            "--type".into(),
            "Q4_K_M".into(),
            quantized.display().to_string(),
            out.display().to_string(),
        ],
    ] {
        let err = qf(&args).fails();
        assert!(err.contains("quantized") && err.contains("compressed-tensors"), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

fn kld(base: &Path, model: &Path) -> f64 {
    let text = fixture("text/tinystories-valid-sample.txt");
    let (base, model, text) = (base.display().to_string(), model.display().to_string(), text.display().to_string());
    let j = qf(["eval", "kld", &base, &model, "--text", &text, "--ctx", "128", "--chunks", "2", "--json", "-q"]).json();
    j["kld"]["value"].as_f64().expect("kld value")
}

#[test]
fn kld_of_a_checkpoint_is_that_of_its_dequantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let format = CheckpointFormat::Awq;
    let scheme = IntScheme::new(4, Some(32), false, format.scale_dtype(None)).unwrap();
    let (quantized, reference) = write_pair(dir.path(), format, scheme);
    // The checkpoint's logits are the dequantized model's, so its KLD against that model is the same
    // (round-off only) figure as the model's against itself.
    assert_eq!(kld(&reference, &quantized), kld(&reference, &reference));
    let original = fixture("stories260K");
    let k = kld(&original, &quantized);
    assert!(k > 1e-4, "4-bit attention should move the logits: {k}");
    assert_eq!(k, kld(&original, &reference));
}
