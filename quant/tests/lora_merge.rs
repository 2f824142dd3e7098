//! `lora::merge_lora` on tiny hand-made bases and adapters, one test per PEFT flavour, each against values
//! computed by hand; and the errors for bad pairings.

use std::fs;
use std::path::Path;

use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensorSpec};
use quantforge_quant::lora::{merge_lora, LoraError, MergeOptions, OutDtype};
use quantforge_quant::progress::Silent;
use serde_json::{json, Value};

type Tensors<'a> = &'a [(&'a str, &'a [u64], &'a [f32])];

fn write_st(path: &Path, tensors: Tensors<'_>) {
    let specs: Vec<StTensorSpec> = tensors
        .iter()
        .map(|(n, s, _)| StTensorSpec { name: n.to_string(), dtype: Dtype::F32, shape: s.to_vec() })
        .collect();
    let mut w = SafetensorsWriter::create(path, &[("format".into(), "pt".into())], &specs).unwrap();
    for (_, _, v) in tensors {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor_data(&bytes).unwrap();
    }
    w.finish().unwrap();
}

const Q: &str = "model.layers.0.self_attn.q_proj";
/// W = [[1, 0, 0], [0, 1, 0]] (out 2, in 3).
const W: [f32; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
/// A = [[1, 2, 3], [0, -1, 1]] (r 2, in 3), B = [[1, 0], [2, 1]] (out 2, r 2): B·A = [[1, 2, 3], [2, 3, 7]].
const A: [f32; 6] = [1.0, 2.0, 3.0, 0.0, -1.0, 1.0];
const B: [f32; 4] = [1.0, 0.0, 2.0, 1.0];
const BA: [f32; 6] = [1.0, 2.0, 3.0, 2.0, 3.0, 7.0];

/// A base with one attention projection (with bias), an embedding [4, 2], a norm and an lm_head.
fn base(dir: &Path, fan_in_fan_out: bool) {
    fs::create_dir_all(dir).unwrap();
    let config = json!({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float32", "hidden_size": 2});
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let wt = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]; // W transposed, [in 3, out 2]
    let (w, ws): (&[f32], &[u64]) = if fan_in_fan_out { (&wt, &[3, 2]) } else { (&W, &[2, 3]) };
    write_st(
        &dir.join("model.safetensors"),
        &[
            ("lm_head.weight", &[4, 2], &[0.0; 8]),
            ("model.embed_tokens.weight", &[4, 2], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
            ("model.layers.0.self_attn.q_proj.bias", &[2], &[0.5, -0.5]),
            ("model.layers.0.self_attn.q_proj.weight", ws, w),
            ("model.norm.weight", &[2], &[1.0, 1.0]),
        ],
    );
}

fn adapter(dir: &Path, config: Value, tensors: Tensors<'_>) {
    fs::create_dir_all(dir).unwrap();
    let mut c = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 1, "target_modules": ["q_proj"]});
    for (k, v) in config.as_object().unwrap() {
        c[k] = v.clone();
    }
    fs::write(dir.join("adapter_config.json"), c.to_string()).unwrap();
    let named: Vec<(String, &[u64], &[f32])> =
        tensors.iter().map(|(n, s, v)| (format!("base_model.model.{n}"), *s, *v)).collect();
    let refs: Vec<(&str, &[u64], &[f32])> = named.iter().map(|(n, s, v)| (n.as_str(), *s, *v)).collect();
    write_st(&dir.join("adapter_model.safetensors"), &refs);
}

fn lora_ab() -> Vec<(String, Vec<u64>, Vec<f32>)> {
    vec![(format!("{Q}.lora_A.weight"), vec![2, 3], A.to_vec()), (format!("{Q}.lora_B.weight"), vec![2, 2], B.to_vec())]
}

/// Run a merge of the base (`fan_in_fan_out` layout or not) with an adapter; return the output dir's tensors.
fn merge_with(
    fifo: bool,
    config: Value,
    extra: &[(String, Vec<u64>, Vec<f32>)],
    opts: MergeOptions,
) -> Result<(tempfile::TempDir, SafetensorsFile), LoraError> {
    let d = tempfile::tempdir().unwrap();
    base(&d.path().join("base"), fifo);
    let tensors: Vec<(&str, &[u64], &[f32])> =
        extra.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
    adapter(&d.path().join("adapter"), config, &tensors);
    let out = d.path().join("out");
    merge_lora(&d.path().join("base"), &d.path().join("adapter"), &out, &opts, &Silent)?;
    let st = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
    Ok((d, st))
}

fn get(st: &SafetensorsFile, name: &str) -> Vec<f32> {
    st.to_f32(st.tensor(name).unwrap()).unwrap()
}

#[track_caller]
fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "element {i}: got {g}, want {w}\n{got:?}\n{want:?}");
    }
}

fn w_plus(scaling: f32) -> Vec<f32> {
    W.iter().zip(BA).map(|(w, d)| w + scaling * d).collect()
}

#[test]
fn plain_lora_scales_by_alpha_over_r_and_copies_the_rest() {
    let (d, st) = merge_with(false, json!({}), &lora_ab(), MergeOptions::default()).unwrap();
    // scaling = 1 / 2: [[1.5, 1, 1.5], [1, 2.5, 3.5]].
    assert_eq!(get(&st, &format!("{Q}.weight")), [1.5, 1.0, 1.5, 1.0, 2.5, 3.5]);
    assert_eq!(get(&st, &format!("{Q}.bias")), [0.5, -0.5]);
    assert_eq!(get(&st, "model.norm.weight"), [1.0, 1.0]);
    assert_eq!(st.tensors().len(), 5);
    assert_eq!(st.metadata(), [("format".to_string(), "pt".to_string())]);
    let out = d.path().join("out");
    assert_eq!(fs::read_to_string(out.join("tokenizer.json")).unwrap(), "{}");
    assert_eq!(fs::read(out.join("config.json")).unwrap(), fs::read(d.path().join("base/config.json")).unwrap());
    let mut names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["adapter", "base", "out"], "temporary directory left behind");
}

#[test]
fn user_scale_and_output_dtype() {
    let opts = MergeOptions { dtype: Some(OutDtype::BF16), scale: 2.0 };
    let (d, st) = merge_with(false, json!({}), &lora_ab(), opts).unwrap();
    let t = st.tensor(&format!("{Q}.weight")).unwrap();
    assert_eq!(t.dtype, Dtype::BF16);
    // scaling 1/2 · 2 = 1, all values exact in bf16.
    assert_eq!(get(&st, &format!("{Q}.weight")), w_plus(1.0));
    assert_eq!(st.tensor("model.norm.weight").unwrap().dtype, Dtype::BF16);
    let config: Value = serde_json::from_slice(&fs::read(d.path().join("out/config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
}

#[test]
fn rslora_scales_by_alpha_over_sqrt_r() {
    let (_d, st) =
        merge_with(false, json!({"use_rslora": true, "lora_alpha": 3}), &lora_ab(), MergeOptions::default()).unwrap();
    // scaling = 3 / sqrt(2).
    close(&get(&st, &format!("{Q}.weight")), &w_plus(3.0 / 2f32.sqrt()));
}

#[test]
fn rank_and_alpha_patterns_override_per_module() {
    // Global r 8 / alpha 1; the patterns give q_proj r 2 and alpha 6, so scaling = 3.
    let config = json!({"r": 8, "rank_pattern": {"v_proj": 1, "q_proj": 2}, "alpha_pattern": {r"layers\.0\.self_attn\.q_proj": 6}});
    let (_d, st) = merge_with(false, config, &lora_ab(), MergeOptions::default()).unwrap();
    close(&get(&st, &format!("{Q}.weight")), &w_plus(3.0));
    // Without the rank pattern, the tensors' rank 2 contradicts r = 8.
    let e = merge_with(false, json!({"r": 8}), &lora_ab(), MergeOptions::default()).err().unwrap().to_string();
    assert!(e.contains("lora_A.weight") && e.contains("rank 2") && e.contains("r = 8"), "{e}");
}

#[test]
fn fan_in_fan_out_adds_the_transposed_delta() {
    let (_d, st) = merge_with(true, json!({"fan_in_fan_out": true}), &lora_ab(), MergeOptions::default()).unwrap();
    // Stored [in, out]: (W + BA/2)ᵀ = [[1.5, 1], [1, 2.5], [1.5, 3.5]].
    assert_eq!(get(&st, &format!("{Q}.weight")), [1.5, 1.0, 1.0, 2.5, 1.5, 3.5]);
}

#[test]
fn dora_rescales_rows_by_magnitude_over_norm_of_original_plus_delta() {
    // r 1, alpha 1: A = [[0, 0, 1]], B = [[1], [0]]; W + ΔW = [[1, 0, 1], [0, 1, 0]], row norms sqrt 2 and 1.
    let t = vec![
        (format!("{Q}.lora_A.weight"), vec![1, 3], vec![0.0, 0.0, 1.0]),
        (format!("{Q}.lora_B.weight"), vec![2, 1], vec![1.0, 0.0]),
        (format!("{Q}.lora_magnitude_vector.weight"), vec![2], vec![2.0, 3.0]),
    ];
    let (_d, st) = merge_with(false, json!({"r": 1, "use_dora": true}), &t, MergeOptions::default()).unwrap();
    let s = 2f32.sqrt();
    close(&get(&st, &format!("{Q}.weight")), &[s, 0.0, s, 0.0, 3.0, 0.0]);
    // fan_in_fan_out: the same numbers transposed, norms taken per output column.
    let mut t2 = t.clone();
    t2[2].0 = format!("{Q}.lora_magnitude_vector"); // older files omit `.weight`
    let (_d, st) =
        merge_with(true, json!({"r": 1, "use_dora": true, "fan_in_fan_out": true}), &t2, MergeOptions::default())
            .unwrap();
    close(&get(&st, &format!("{Q}.weight")), &[s, 0.0, 0.0, 3.0, s, 0.0]);
}

#[test]
fn embedding_adapter_adds_transposed_b_times_a() {
    // r 1, alpha 2 (scaling 2): A = [[1, 2, 3, 4]] over 4 embeddings, B = [[1], [-1]] over 2 dims;
    // ΔW = 2·(B·A)ᵀ = [[2, -2], [4, -4], [6, -6], [8, -8]], added to all-ones.
    let t = vec![
        ("model.embed_tokens.lora_embedding_A".to_string(), vec![1, 4], vec![1.0, 2.0, 3.0, 4.0]),
        ("model.embed_tokens.lora_embedding_B".to_string(), vec![2, 1], vec![1.0, -1.0]),
    ];
    let config = json!({"r": 1, "lora_alpha": 2, "target_modules": ["embed_tokens"]});
    let (_d, st) = merge_with(false, config, &t, MergeOptions::default()).unwrap();
    assert_eq!(get(&st, "model.embed_tokens.weight"), [3.0, -1.0, 5.0, -3.0, 7.0, -5.0, 9.0, -7.0]);
    assert_eq!(get(&st, &format!("{Q}.weight")), W);
}

#[test]
fn modules_to_save_replace_whole_tensors() {
    let mut t = lora_ab();
    t.push(("lm_head.weight".to_string(), vec![4, 2], (1..=8).map(|i| i as f32).collect()));
    let (_d, st) = merge_with(false, json!({"modules_to_save": ["lm_head"]}), &t, MergeOptions::default()).unwrap();
    assert_eq!(get(&st, "lm_head.weight"), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    // Not listed in modules_to_save: refused, naming the tensor.
    let e = merge_with(false, json!({}), &t, MergeOptions::default()).err().unwrap().to_string();
    assert!(e.contains("base_model.model.lm_head.weight") && e.contains("modules_to_save"), "{e}");
}

#[test]
fn lora_bias_adds_scaled_b_bias() {
    let mut t = lora_ab();
    t.push((format!("{Q}.lora_B.bias"), vec![2], vec![1.0, 4.0]));
    let (_d, st) = merge_with(false, json!({"lora_bias": true}), &t, MergeOptions::default()).unwrap();
    // bias + scaling (1/2) · lora_B.bias.
    assert_eq!(get(&st, &format!("{Q}.bias")), [1.0, 1.5]);
    assert_eq!(get(&st, &format!("{Q}.weight")), w_plus(0.5));
}

#[test]
fn regex_and_all_linear_target_modules() {
    let (_d, st) =
        merge_with(false, json!({"target_modules": r".*\.q_proj"}), &lora_ab(), MergeOptions::default()).unwrap();
    assert_eq!(get(&st, &format!("{Q}.weight")), w_plus(0.5));
    let (_d, st) =
        merge_with(false, json!({"target_modules": "all-linear"}), &lora_ab(), MergeOptions::default()).unwrap();
    assert_eq!(get(&st, &format!("{Q}.weight")), w_plus(0.5));
    // A regex that does not select the adapted module.
    let e = merge_with(false, json!({"target_modules": r".*\.v_proj"}), &lora_ab(), MergeOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not selected by target_modules"), "{e}");
    // A list that selects embed_tokens too, with no tensors for it.
    let e =
        merge_with(false, json!({"target_modules": ["q_proj", "embed_tokens"]}), &lora_ab(), MergeOptions::default())
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("model.embed_tokens") && e.contains("missing"), "{e}");
}

#[test]
fn bad_adapters_fail_with_the_file_and_tensor() {
    let run = |config: Value, t: Vec<(String, Vec<u64>, Vec<f32>)>| {
        merge_with(false, config, &t, MergeOptions::default()).err().expect("should fail").to_string()
    };
    // Missing B.
    let e = run(json!({}), lora_ab()[..1].to_vec());
    assert!(e.contains("adapter_model.safetensors") && e.contains(&format!("{Q}.lora_B.weight")), "{e}");
    // A and B ranks differ.
    let mut t = lora_ab();
    t[1] = (format!("{Q}.lora_B.weight"), vec![1, 4], vec![0.0; 4]);
    let e = run(json!({}), t);
    assert!(e.contains("lora_B") && e.contains("rank"), "{e}");
    // Another shape (in 5 instead of 3).
    let mut t = lora_ab();
    t[0] = (format!("{Q}.lora_A.weight"), vec![2, 5], vec![0.0; 10]);
    let e = run(json!({}), t);
    assert!(e.contains("[2, 5]") && e.contains("[2, 3]") && e.contains("another model"), "{e}");
    // A module the base does not have.
    let t: Vec<_> = lora_ab().into_iter().map(|(n, s, v)| (n.replace("layers.0", "layers.7"), s, v)).collect();
    let e = run(json!({}), t);
    assert!(e.contains("model.layers.7.self_attn.q_proj.weight") && e.contains("another architecture"), "{e}");
    // Unknown PEFT type.
    let e = run(json!({"peft_type": "IA3"}), lora_ab());
    assert!(e.contains("adapter_config.json") && e.contains("IA3"), "{e}");
    // DoRA configured, magnitude missing.
    let e = run(json!({"use_dora": true}), lora_ab());
    assert!(e.contains("lora_magnitude_vector") && e.contains("use_dora"), "{e}");
    // Non-finite result.
    let mut t = lora_ab();
    t[0].2[0] = f32::INFINITY;
    let e = run(json!({}), t);
    assert!(e.contains("non-finite") && e.contains("q_proj.weight"), "{e}");
}

#[test]
fn lora_bias_needs_a_base_bias() {
    let d = tempfile::tempdir().unwrap();
    let b = d.path().join("base");
    base(&b, false);
    fs::remove_file(b.join("model.safetensors")).unwrap();
    write_st(&b.join("model.safetensors"), &[(&format!("{Q}.weight"), &[2, 3], &W)]);
    let mut t = lora_ab();
    t.push((format!("{Q}.lora_B.bias"), vec![2], vec![1.0, 4.0]));
    let refs: Vec<(&str, &[u64], &[f32])> =
        t.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
    adapter(&d.path().join("a"), json!({"lora_bias": true}), &refs);
    let e = merge_lora(&b, &d.path().join("a"), &d.path().join("o"), &MergeOptions::default(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no bias") && e.contains(Q), "{e}");
}

#[test]
fn quantized_bases_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let b = d.path().join("base");
    base(&b, false);
    let config =
        json!({"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "gptq", "bits": 4}});
    fs::write(b.join("config.json"), config.to_string()).unwrap();
    let refs: Vec<_> = lora_ab();
    let refs: Vec<(&str, &[u64], &[f32])> =
        refs.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
    adapter(&d.path().join("a"), json!({}), &refs);
    let e = merge_lora(&b, &d.path().join("a"), &d.path().join("o"), &MergeOptions::default(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gptq") && e.contains("full-precision"), "{e}");
    assert!(!d.path().join("o").exists());
    // An AWQ-style checkpoint without quantization_config is caught by its packed tensors.
    base(&b, false);
    write_st(&b.join("model.safetensors"), &[("model.layers.0.self_attn.q_proj.qweight", &[1], &[0.0])]);
    let e = merge_lora(&b, &d.path().join("a"), &d.path().join("o"), &MergeOptions::default(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("qweight") && e.contains("full-precision"), "{e}");
}
