//! Each architecture-specific feature of the fixtures in `fixtures/archs/` matters: the fixture's model run
//! with the feature taken away (by editing a copy of its config.json) is far from transformers' reference,
//! so the 1e-4 mean KLD of `arch_fixtures` could not be met without implementing it. Also: configs the
//! forward pass cannot honour are refused by key before any tensor is read, and fused Phi-3 projections are
//! refused by GPTQ/AWQ calibration.

use std::path::{Path, PathBuf};

use quantforge_eval::calibration::BlockCalibrator;
use quantforge_eval::{Device, LlamaModel, ModelFile};
use serde_json::{json, Value};

/// Ablations must move the mean KLD to at least this (100x the fixtures' tolerance).
const FAR: f64 = 1e-2;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name)
}

/// A copy of fixture `name` whose config.json is `edit`ed.
fn edited(name: &str, case: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arch_features").join(format!("{name}-{case}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
        // The BPE fixtures (OLMo 2) have no tokenizer.model.
        if fixture(name).join(f).exists() {
            std::fs::copy(fixture(name).join(f), dir.join(f)).unwrap();
        }
    }
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(fixture(name).join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    dir
}

/// Mean KL(reference || model) over the fixture's tokens.
fn mean_kld(name: &str, model_dir: &Path) -> f64 {
    let meta: Value = serde_json::from_slice(&std::fs::read(fixture(name).join("reference.json")).unwrap()).unwrap();
    let vocab = meta["vocab_size"].as_u64().unwrap() as usize;
    let tokens: Vec<u32> = meta["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let bytes = std::fs::read(fixture(name).join("reference-logprobs.f32")).unwrap();
    let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let logits = LlamaModel::load(model_dir).unwrap().forward(&[&tokens], 0).unwrap();
    let mut sum = 0.0;
    for (row, ref_row) in logits.chunks(vocab).zip(want.chunks(vocab)) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        sum += ref_row.iter().zip(row).map(|(&lp, &x)| (lp as f64).exp() * (lp as f64 - (x as f64 - lse))).sum::<f64>();
    }
    sum / tokens.len() as f64
}

fn assert_far(name: &str, case: &str, edit: impl FnOnce(&mut Value)) {
    let k = mean_kld(name, &edited(name, case, edit));
    eprintln!("{name} without {case}: mean KLD {k:.3e}");
    assert!(k > FAR, "{name} without {case}: mean KLD {k:e} is not far from the reference");
}

#[test]
fn granite_multipliers_each_matter() {
    assert!(mean_kld("granite", &fixture("granite")) < 1e-4);
    for key in ["embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"] {
        // 1.0 is transformers' default; for the attention scale that is far from 1/sqrt(8) and from 0.9.
        assert_far("granite", key, |c| c[key] = json!(if key == "attention_multiplier" { 0.0 } else { 1.0 }));
    }
}

#[test]
fn smollm3_nope_layers_matter() {
    // The same checkpoint as a Llama: RoPE on every layer, everything else identical.
    assert_far("smollm3", "NoPE", |c| c["architectures"] = json!(["LlamaForCausalLM"]));
}

#[test]
fn phi3_longrope_choice_and_partial_rotary_matter() {
    let rope = |c: &mut Value| c["rope_parameters"].as_object_mut().unwrap().clone();
    // Without LongRoPE factors (and so without its attention factor).
    assert_far("phi3", "LongRoPE", |c| {
        let mut r = rope(c);
        for k in ["long_factor", "short_factor"] {
            r.remove(k);
        }
        r.insert("rope_type".into(), json!("default"));
        c["rope_parameters"] = Value::Object(r);
    });
    // All 8 dimensions of each head rotated instead of the first 6 (the extra pair with factor 1).
    assert_far("phi3", "partial rotary", |c| {
        let mut r = rope(c);
        r.insert("partial_rotary_factor".into(), json!(1.0));
        for k in ["long_factor", "short_factor"] {
            let mut f = r[k].as_array().unwrap().clone();
            f.push(json!(1.0));
            r.insert(k.into(), Value::Array(f));
        }
        c["rope_parameters"] = Value::Object(r);
    });
    // The short factors where llama.cpp's context (256) exceeds the original 32 and picks the long ones.
    assert_far("phi3", "long factors", |c| {
        let mut r = rope(c);
        r.insert("long_factor".into(), r["short_factor"].clone());
        c["rope_parameters"] = Value::Object(r);
    });
}

#[test]
fn unimplemented_configs_are_refused_by_key() {
    for (name, case, edit, key) in [
        ("smollm3", "no_rope_layers", json!({"no_rope_layers": [1, 0, 1, 1]}), "no_rope_layers"),
        ("smollm3", "interval", json!({"no_rope_layers": null, "no_rope_layer_interval": 3}), "no_rope_layer_interval"),
        ("smollm3", "swa", json!({"use_sliding_window": true, "sliding_window": 16}), "use_sliding_window"),
        ("granite", "mlp_bias", json!({"mlp_bias": true}), "mlp_bias"),
        ("granite", "logits", json!({"logits_scaling": 0.0}), "logits_scaling"),
        ("phi3", "head_dim", json!({"head_dim": 16}), "head_dim"),
        ("olmo2", "attention_bias", json!({"attention_bias": true}), "attention_bias"),
        ("olmo2", "hidden_act", json!({"hidden_act": "gelu"}), "hidden_act"),
        ("olmo2", "head_dim", json!({"head_dim": 16}), "head_dim"),
        ("olmo2", "tied", json!({"tie_word_embeddings": true}), "tie_word_embeddings"),
        ("olmo2", "sliding_window", json!({"sliding_window": 16}), "sliding_window"),
        ("olmo2", "llama3", json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}), "rope_parameters"),
    ] {
        let dir = edited(name, case, |c| {
            for (k, v) in edit.as_object().unwrap() {
                c[k] = v.clone();
            }
        });
        let e = LlamaModel::load(&dir).unwrap_err().to_string();
        assert!(e.contains(key), "{name} {case}: {e}");
    }
    let dir = edited("phi3", "attention_factor", |c| c["rope_parameters"]["attention_factor"] = json!(1.5));
    let e = LlamaModel::load(&dir).unwrap_err().to_string();
    assert!(e.contains("attention_factor"), "{e}");
}

#[test]
fn fused_phi3_projections_are_calibrated_whole_and_observed_once() {
    let file = ModelFile::open(&fixture("phi3")).unwrap();
    assert!(BlockCalibrator::new(&file, &[vec![1, 5, 9]], 1, Device::Cpu).is_ok());
    let block = file.load_block(0).unwrap();
    assert_eq!(
        block.linear_names(),
        ["blk.0.attn_qkv.weight", "blk.0.attn_output.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"]
    );
    // A fused tensor is handed out whole, rows as the file stores them, and taken back whole.
    let stored = |name: &str| {
        let f = quantforge_formats::gguf::GgufFile::open(fixture("phi3").join("llama.cpp-f32.gguf")).unwrap();
        let t = f.tensor(name).unwrap().clone();
        f.tensor_data(&t).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<f32>>()
    };
    let file = ModelFile::open(&fixture("phi3").join("llama.cpp-f32.gguf")).unwrap();
    let mut block_gguf = file.load_block(0).unwrap();
    for (name, rows) in [("blk.0.attn_qkv.weight", 32 + 2 * 16), ("blk.0.ffn_up.weight", 2 * 48)] {
        let (r, c, v) = block_gguf.weight_f32(name).unwrap();
        assert_eq!((r, c), (rows, 32), "{name}");
        assert!(v == stored(name), "{name}: rows differ from the file's");
        let doubled: Vec<f32> = v.iter().map(|x| x * 2.0).collect();
        block_gguf.replace_weight(name, doubled.clone()).unwrap();
        assert_eq!(block_gguf.weight_f32(name).unwrap().2, doubled);
        assert!(block_gguf.replace_weight(name, v[1..].to_vec()).is_err());
    }
    // Granite has separate projections and calibrates like Llama.
    let file = ModelFile::open(&fixture("granite")).unwrap();
    assert!(BlockCalibrator::new(&file, &[vec![1, 5, 9]], 1, Device::Cpu).is_ok());
}

#[test]
fn olmo2_calibrates_with_gptq_and_refuses_awq_by_type() {
    use quantforge_eval::intquant::{quantize_int, IntQuantJob, Method, WindowOptions};
    use quantforge_eval::EvalError;
    use quantforge_quant::calibrate::CalibrationProgress;
    use quantforge_quant::gptq::GptqOptions;
    use quantforge_quant::intquant::{IntScheme, ScaleDtype};

    struct Quiet;
    impl CalibrationProgress for Quiet {}
    let dir = fixture("olmo2");
    // Block-by-block calibration runs the block without pre-norms (GPTQ and imatrix need nothing else).
    let file = ModelFile::open(&dir).unwrap();
    assert!(BlockCalibrator::new(&file, &[vec![1, 5, 9]], 1, Device::Cpu).is_ok());
    let job = |method| IntQuantJob {
        model: &dir,
        method,
        scheme: IntScheme { bits: 4, group_size: Some(16), sym: true, scale_dtype: ScaleDtype::F16 },
        gptq: GptqOptions::default(),
        true_sequential: true,
        calib: None,
        windows: WindowOptions { nsamples: 2, seqlen: 16, seed: 0 },
        batch_seqs: 2,
        device: Device::Cpu,
    };
    let mut n = 0;
    let report = quantize_int(
        &job(Method::Gptq),
        &mut |_, _| {
            n += 1;
            Ok(())
        },
        &Quiet,
    )
    .unwrap();
    assert_eq!(report.layers.len(), 2 * 7);
    // AWQ folds its Q/K/V and gate/up scales into the pre-norms, which OLMo 2 does not have.
    let e = quantize_int(&job(Method::Awq), &mut |_, _| Ok(()), &Quiet).unwrap_err();
    assert!(matches!(e, EvalError::AwqWithoutPreNorms { arch: "olmo2", .. }), "{e}");
    assert!(e.to_string().contains("gptq"), "{e}");
}
