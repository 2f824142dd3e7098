//! `quantforge merge-lora` end to end on stories260K and its KJV adapter: every merged tensor against
//! W + (alpha/r)·B·A computed here independently (f64), untouched tensors byte for byte, the held-out KJV
//! perplexity of base and merged model against the figures in `fixtures/README.md`, and bad input.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use quantforge_eval::{LlamaModel, Tokenizer};
use serde_json::{json, Value};

use crate::util::{fixture, qf};

fn base() -> String {
    fixture("stories260K").display().to_string()
}

fn adapter() -> String {
    fixture("stories260K-lora-kjv-r4").display().to_string()
}

/// A tensor's shape, values (as f64) and raw bytes.
type Loaded = (Vec<usize>, Vec<f64>, Vec<u8>);

/// All tensors of an F32 safetensors file.
fn load(path: &Path) -> HashMap<String, Loaded> {
    let bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(info["dtype"], "F32", "{name}");
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let off: Vec<usize> =
            info["data_offsets"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let raw = data[off[0]..off[1]].to_vec();
        let vals = raw.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
        out.insert(name.clone(), (shape, vals, raw));
    }
    out
}

#[test]
fn merged_tensors_equal_w_plus_scaled_b_times_a() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("merged");
    let j = qf(["merge-lora", &base(), &adapter(), "-o", out.to_str().unwrap(), "--json"]).json();
    assert_eq!(j["merged"], 35, "{j}");
    assert_eq!(j["replaced"], 0);
    let w = load(&fixture("stories260K/model.safetensors"));
    let lora = load(&fixture("stories260K-lora-kjv-r4/adapter_model.safetensors"));
    let merged = load(&out.join("model.safetensors"));
    assert_eq!(merged.len(), w.len());
    let scale = 8.0 / 4.0; // lora_alpha / r from adapter_config.json
    let mut n_merged = 0;
    for (name, (shape, base_vals, raw)) in &w {
        let (mshape, mvals, mraw) = &merged[name];
        assert_eq!(mshape, shape, "{name}");
        let module = name.strip_suffix(".weight").unwrap_or(name);
        let Some((ashape, a, _)) = lora.get(&format!("base_model.model.{module}.lora_A.weight")) else {
            assert_eq!(mraw, raw, "{name} should be copied byte for byte");
            continue;
        };
        let (bshape, b, _) = &lora[&format!("base_model.model.{module}.lora_B.weight")];
        let (r, n_in, n_out) = (ashape[0], ashape[1], bshape[0]);
        assert_eq!((bshape[1], shape.as_slice()), (r, [n_out, n_in].as_slice()));
        for o in 0..n_out {
            for i in 0..n_in {
                let ba: f64 = (0..r).map(|k| b[o * r + k] * a[k * n_in + i]).sum();
                let want = base_vals[o * n_in + i] + scale * ba;
                let got = mvals[o * n_in + i];
                assert!((got - want).abs() <= 2e-6 * want.abs().max(1e-2), "{name}[{o},{i}]: {got} vs {want}");
            }
        }
        n_merged += 1;
    }
    assert_eq!(n_merged, 35);
    for f in ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"] {
        assert_eq!(fs::read(out.join(f)).unwrap(), fs::read(fixture("stories260K").join(f)).unwrap(), "{f}");
    }
}

/// Held-out KJV perplexity as `fixtures/README.md` defines it: 16 non-overlapping 256-id windows from
/// held-out id 2016594 of the whole KJV text's encoding, each run from position 0 without an added BOS, the
/// mean NLL of ids 1..255 per window, ppl = exp(mean over windows). The committed slice of the text
/// re-encodes to the same ids from its id 332 on (`kjv_slice_matches_the_whole_text` checks that).
fn heldout_ppl(model_dir: &Path) -> f64 {
    const SLICE_OFFSET: usize = 332;
    let text = fs::read_to_string(fixture("stories260K-lora-kjv-r4/kjv-heldout.txt")).unwrap();
    let ids = Tokenizer::from_hf_dir(model_dir).unwrap().encode(&text, true).unwrap();
    let windows: Vec<&[u32]> = (0..16).map(|w| &ids[SLICE_OFFSET + w * 256..SLICE_OFFSET + (w + 1) * 256]).collect();
    windows_ppl(model_dir, &windows)
}

/// exp(mean over windows of the mean NLL of ids 1.. given their prefixes), each window run from position 0.
fn windows_ppl(model_dir: &Path, windows: &[&[u32]]) -> f64 {
    let model = LlamaModel::load(model_dir).unwrap();
    let n_vocab = model.config().n_vocab;
    let logits = model.forward(windows, 0).unwrap();
    let mut sum = 0.0;
    let mut offset = 0;
    for win in windows {
        let mut nll = 0.0;
        for p in 0..win.len() - 1 {
            let row = &logits[(offset + p) * n_vocab..(offset + p + 1) * n_vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            nll += lse - row[win[p + 1] as usize] as f64;
        }
        sum += nll / (win.len() - 1) as f64;
        offset += win.len();
    }
    (sum / windows.len() as f64).exp()
}

#[test]
fn merged_model_reaches_the_trained_heldout_perplexity() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("merged");
    qf(["merge-lora", &base(), &adapter(), "-o", out.to_str().unwrap(), "-q"]).ok();
    let before = heldout_ppl(&fixture("stories260K"));
    let after = heldout_ppl(&out);
    eprintln!("held-out KJV ppl: base {before:.6}, merged {after:.6}");
    // training_log.json: 39.375073 before, 13.941457 after (numpy merge and forward).
    assert!((before - 39.375073).abs() < 1e-4, "base ppl {before}");
    assert!((after - 13.941457).abs() < 1e-4, "merged ppl {after}");
}

#[test]
#[ignore = "slow: tokenizes the whole KJV text"]
fn kjv_slice_matches_the_whole_text() {
    let text = fs::read_to_string(fixture("text/kjv.plain.txt")).unwrap();
    let tok = Tokenizer::from_hf_dir(&fixture("stories260K")).unwrap();
    let ids = tok.encode(&text, true).unwrap();
    assert_eq!(ids.len(), 2_240_661);
    let slice = fs::read_to_string(fixture("stories260K-lora-kjv-r4/kjv-heldout.txt")).unwrap();
    assert!(text.contains(&slice));
    let sids = tok.encode(&slice, true).unwrap();
    assert_eq!(sids[332..332 + 4096], ids[2_016_594..2_016_594 + 4096]);
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).display().to_string();
    // The output may not be an input, or an existing non-empty directory.
    let e = qf(["merge-lora", &base(), &adapter(), "-o", &base()]).fails();
    assert!(e.contains("refusing to overwrite the input"), "{e}");
    fs::create_dir(p("full")).unwrap();
    fs::write(d.path().join("full/x"), "x").unwrap();
    let e = qf(["merge-lora", &base(), &adapter(), "-o", &p("full")]).fails();
    assert!(e.contains("already exists and is not an empty directory"), "{e}");
    // A GPTQ base.
    let q = d.path().join("gptq");
    fs::create_dir(&q).unwrap();
    fs::copy(fixture("stories260K/model.safetensors"), q.join("model.safetensors")).unwrap();
    let mut config: Value = serde_json::from_slice(&fs::read(fixture("stories260K/config.json")).unwrap()).unwrap();
    config["quantization_config"] = json!({"quant_method": "gptq", "bits": 4});
    fs::write(q.join("config.json"), config.to_string()).unwrap();
    let e = qf(["merge-lora", &p("gptq"), &adapter(), "-o", &p("o1")]).fails();
    assert!(e.contains("merge into the full-precision") || e.contains("Merge into the full-precision"), "{e}");
    // Another PEFT type, named with its file.
    let a = d.path().join("ia3");
    fs::create_dir(&a).unwrap();
    fs::copy(fixture("stories260K-lora-kjv-r4/adapter_model.safetensors"), a.join("adapter_model.safetensors"))
        .unwrap();
    fs::write(a.join("adapter_config.json"), r#"{"peft_type": "IA3"}"#).unwrap();
    let e = qf(["merge-lora", &base(), &p("ia3"), "-o", &p("o2")]).fails();
    assert!(e.contains("adapter_config.json") && e.contains("IA3"), "{e}");
    // A rank that contradicts the config.
    fs::write(a.join("adapter_config.json"), r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16}"#).unwrap();
    let e = qf(["merge-lora", &base(), &p("ia3"), "-o", &p("o3")]).fails();
    assert!(e.contains("has rank 4") && e.contains("r = 8"), "{e}");
    let e = qf(["merge-lora", &base(), &adapter(), "-o", &p("o4"), "--dtype", "q4_0"]).fails();
    assert!(e.contains("--dtype q4_0"), "{e}");
    for o in ["o1", "o2", "o3", "o4"] {
        assert!(!d.path().join(o).exists());
    }
}

fn f32s(g: &quantforge_formats::gguf::GgufFile, name: &str) -> (Vec<u64>, Vec<f64>) {
    let t = g.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(t.ggml_type, quantforge_formats::GgmlType::F32, "{name}");
    let v = g.tensor_data(t).chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
    (t.ne.clone(), v)
}

/// The GGUF adapter applied as llama.cpp does (W + alpha/r · B·A in ggml layout, r from B) must turn the base's
/// GGUF into the merged model's GGUF: that checks names, shapes, the Q/K permutation of B and alpha at once.
#[test]
fn gguf_adapter_reproduces_the_merge_under_llama_cpp_rules() {
    use quantforge_formats::gguf::GgufFile;
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).display().to_string();
    let j = qf(["convert", &adapter(), "--lora-base", &base(), "-o", &p("a.gguf"), "--json"]).json();
    assert_eq!((j["modules"].as_u64(), j["alpha"].as_f64()), (Some(35), Some(8.0)), "{j}");
    qf(["merge-lora", &base(), &adapter(), "-o", &p("merged"), "-q"]).ok();
    qf(["convert", &base(), "-o", &p("base.gguf"), "--outtype", "f32", "-q"]).ok();
    qf(["convert", &p("merged"), "-o", &p("merged.gguf"), "--outtype", "f32", "-q"]).ok();
    let a = GgufFile::open(p("a.gguf")).unwrap();
    let str_kv = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
    assert_eq!(str_kv("general.architecture").as_deref(), Some("llama"));
    assert_eq!(str_kv("general.type").as_deref(), Some("adapter"));
    assert_eq!(str_kv("adapter.type").as_deref(), Some("lora"));
    let alpha = a.get("adapter.lora.alpha").and_then(|v| v.as_f64()).unwrap();
    assert_eq!(a.tensors().len(), 70);
    let (b, m) = (GgufFile::open(p("base.gguf")).unwrap(), GgufFile::open(p("merged.gguf")).unwrap());
    let mut checked = 0;
    for t in b.tensors() {
        let (ne, w) = f32s(&b, &t.name);
        let (_, merged) = f32s(&m, &t.name);
        if a.tensor(&format!("{}.lora_a", t.name)).is_none() {
            assert_eq!(w, merged, "{} is not adapted", t.name);
            continue;
        }
        let (ne_a, la) = f32s(&a, &format!("{}.lora_a", t.name));
        let (ne_b, lb) = f32s(&a, &format!("{}.lora_b", t.name));
        // llama-adapter.cpp's checks: model ne[0] == a ne[0], model ne[1] == b ne[1], a ne[1] == b ne[0].
        assert_eq!((ne[0], ne[1], ne_a[1]), (ne_a[0], ne_b[1], ne_b[0]), "{}", t.name);
        let (n_in, n_out, r) = (ne[0] as usize, ne[1] as usize, ne_b[0] as usize);
        for o in 0..n_out {
            for i in 0..n_in {
                let ba: f64 = (0..r).map(|k| lb[o * r + k] * la[k * n_in + i]).sum();
                let want = w[o * n_in + i] + alpha / r as f64 * ba;
                let got = merged[o * n_in + i];
                assert!((got - want).abs() <= 2e-6 * want.abs().max(1e-2), "{}[{o},{i}]: {got} vs {want}", t.name);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 35);
}

/// Copy the stories260K adapter with config changes (and extra tensors).
fn adapter_variant(dir: &Path, changes: Value, extra: &[(&str, Vec<u64>, Vec<f32>)]) {
    use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensorSpec};
    fs::create_dir_all(dir).unwrap();
    let mut config: Value =
        serde_json::from_slice(&fs::read(fixture("stories260K-lora-kjv-r4/adapter_config.json")).unwrap()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        config[k] = v.clone();
    }
    fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let src = SafetensorsFile::open(fixture("stories260K-lora-kjv-r4/adapter_model.safetensors")).unwrap();
    let mut specs: Vec<StTensorSpec> = src
        .tensors()
        .iter()
        .map(|t| StTensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    specs.extend(extra.iter().map(|(n, s, _)| StTensorSpec {
        name: n.to_string(),
        dtype: Dtype::F32,
        shape: s.clone(),
    }));
    let mut w = SafetensorsWriter::create(dir.join("adapter_model.safetensors"), &[], &specs).unwrap();
    for t in src.tensors() {
        w.write_tensor_data(src.data(t)).unwrap();
    }
    for (_, _, v) in extra {
        w.write_tensor_data(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn gguf_adapter_alpha_for_rslora_and_refusals() {
    use quantforge_formats::gguf::GgufFile;
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).display().to_string();
    // rsLoRA: scale alpha/sqrt(r) = 8/2 = 4 must come out of llama.cpp's alpha/r, so alpha = 16.
    adapter_variant(&d.path().join("rs"), json!({"use_rslora": true}), &[]);
    qf(["convert", &p("rs"), "--lora-base", &base(), "-o", &p("rs.gguf"), "-q"]).ok();
    let g = GgufFile::open(p("rs.gguf")).unwrap();
    assert_eq!(g.get("adapter.lora.alpha").and_then(|v| v.as_f64()), Some(16.0));
    // DoRA and modules_to_save cannot be applied by llama.cpp: refused, pointing at merge-lora.
    let mags: Vec<(String, Vec<u64>, Vec<f32>)> = (0..5)
        .flat_map(|l| {
            [
                ("self_attn", "q_proj", 64),
                ("self_attn", "k_proj", 32),
                ("self_attn", "v_proj", 32),
                ("self_attn", "o_proj", 64),
                ("mlp", "gate_proj", 172),
                ("mlp", "up_proj", 172),
                ("mlp", "down_proj", 64),
            ]
            .map(|(blk, m, n)| {
                (
                    format!("base_model.model.model.layers.{l}.{blk}.{m}.lora_magnitude_vector.weight"),
                    vec![n as u64],
                    vec![1.0; n],
                )
            })
        })
        .collect();
    let refs: Vec<(&str, Vec<u64>, Vec<f32>)> =
        mags.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.clone())).collect();
    adapter_variant(&d.path().join("dora"), json!({"use_dora": true}), &refs);
    let e = qf(["convert", &p("dora"), "--lora-base", &base(), "-o", &p("dora.gguf")]).fails();
    assert!(e.contains("DoRA") && e.contains("merge-lora"), "{e}");
    // The DoRA adapter itself merges.
    qf(["merge-lora", &base(), &p("dora"), "-o", &p("dora-merged"), "-q"]).ok();
    adapter_variant(
        &d.path().join("mts"),
        json!({"modules_to_save": ["lm_head"]}),
        &[("base_model.model.lm_head.weight", vec![512, 64], vec![0.0; 512 * 64])],
    );
    let e = qf(["convert", &p("mts"), "--lora-base", &base(), "-o", &p("mts.gguf")]).fails();
    assert!(e.contains("modules_to_save") && e.contains("merge-lora"), "{e}");
    // stories260K ties its embeddings: there is no lm_head.weight to replace.
    let e = qf(["merge-lora", &base(), &p("mts"), "-o", &p("mts-merged")]).fails();
    assert!(e.contains("lm_head.weight") && e.contains("does not have"), "{e}");
    assert!(!d.path().join("dora.gguf").exists() && !d.path().join("mts.gguf").exists());
}

/// `--lora` on `convert` and `quantize` merges in one pass exactly what `merge-lora` then `convert`/`quantize` give.
#[test]
fn lora_flag_equals_merge_then_convert() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("stories260K");
    let adapter = fixture("stories260K-lora-kjv-r4");
    // Same directory name as the base: `general.name` is derived from it.
    let merged = dir.path().join("m").join("stories260K");
    let p = |n: &str| dir.path().join(n);
    let run = |a: &[&std::path::Path]| {
        let a: Vec<&std::ffi::OsStr> = a.iter().map(|x| x.as_os_str()).collect();
        qf(a).ok()
    };
    let s = |x: &'static str| std::path::Path::new(x);
    run(&[s("merge-lora"), &base, &adapter, s("-o"), &merged, s("-q")]);
    run(&[s("convert"), s("-q"), &merged, s("-o"), &p("two.gguf"), s("--outtype"), s("f32")]);
    run(&[s("convert"), s("-q"), &base, s("--lora"), &adapter, s("-o"), &p("one.gguf"), s("--outtype"), s("f32")]);
    assert!(fs::read(p("one.gguf")).unwrap() == fs::read(p("two.gguf")).unwrap());
    run(&[s("quantize"), s("-q"), &merged, &p("q-two.gguf"), s("-t"), s("q4_k_m")]);
    run(&[s("quantize"), s("-q"), &base, &p("q-one.gguf"), s("-t"), s("q4_k_m"), s("--lora"), &adapter]);
    assert!(fs::read(p("q-one.gguf")).unwrap() == fs::read(p("q-two.gguf")).unwrap());
    // A scale of 0 gives back the base model.
    let zero = std::path::PathBuf::from(format!("{}:0", adapter.display()));
    run(&[s("convert"), s("-q"), &base, s("--lora"), &zero, s("-o"), &p("zero.gguf")]);
    run(&[s("convert"), s("-q"), &base, s("-o"), &p("plain.gguf")]);
    assert!(fs::read(p("zero.gguf")).unwrap() == fs::read(p("plain.gguf")).unwrap());
    let err = qf([
        s("quantize").as_os_str(),
        fixture("golden/synth-tiny-f32.gguf").as_os_str(),
        s("--lora").as_os_str(),
        adapter.as_os_str(),
        s("-t").as_os_str(),
        s("q8_0").as_os_str(),
    ])
    .fails();
    assert!(err.contains("--lora"), "{err}");
}

/// SmolLM2-135M-Instruct + its KJV adapter (fixtures/smollm2-lora-kjv-r8): the base as the adapter was trained
/// on it (the PyPI GGUF dequantized to a bf16 HF directory), merged in f32, evaluated by our own evaluator on
/// the held-out definition of `fixtures/README.md`: whole KJV text encoded at once (SmolLM2 adds no BOS), held-out
/// ids [920691, 1022990), the first 6 non-overlapping 256-id windows, ppl = exp(mean of per-window mean NLL).
#[test]
#[ignore = "slow: SmolLM2 GGUF -> HF, merge, and two evaluations"]
fn smollm2_adapter_reaches_the_trained_heldout_perplexity() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("smollm2");
    let merged = d.path().join("merged");
    let gguf = crate::util::smollm2_q4_1();
    qf([
        std::ffi::OsStr::new("convert"),
        gguf.as_os_str(),
        "--to".as_ref(),
        "hf".as_ref(),
        "--outtype".as_ref(),
        "bf16".as_ref(),
        "-o".as_ref(),
        base.as_os_str(),
        "-q".as_ref(),
    ])
    .ok();
    let adapter = fixture("smollm2-lora-kjv-r8");
    qf([
        std::ffi::OsStr::new("merge-lora"),
        base.as_os_str(),
        adapter.as_os_str(),
        "-o".as_ref(),
        merged.as_os_str(),
        "--dtype".as_ref(),
        "f32".as_ref(),
        "-q".as_ref(),
    ])
    .ok();
    let text = fs::read_to_string(fixture("text/kjv.plain.txt")).unwrap();
    let ids = Tokenizer::from_hf_dir(&base).unwrap().encode(&text, true).unwrap();
    assert_eq!(ids.len(), 1_022_990);
    let windows: Vec<&[u32]> = (0..6).map(|w| &ids[920_691 + w * 256..920_691 + (w + 1) * 256]).collect();
    let (before, after) = (windows_ppl(&base, &windows), windows_ppl(&merged, &windows));
    eprintln!("SmolLM2 held-out KJV ppl: base {before:.6}, merged {after:.6}");
    // training_log.json: 28.353545 (base, f32 copy of the bf16 weights), 21.319813 (merged in f32).
    assert!((before - 28.353545).abs() < 1e-4, "base ppl {before}");
    assert!((after - 21.319813).abs() < 1e-4, "merged ppl {after}");
}
