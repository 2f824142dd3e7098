//! `quantforge convert` end to end: stories260K HF -> GGUF in every outtype, against the source weights and
//! against the metadata llama.cpp's converter writes for that directory; bad inputs; SmolLM2 GGUF -> HF -> GGUF.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::safetensors::{SafetensorsFile, SafetensorsWriter, StTensorSpec};
use quantforge_formats::GgmlType;
use quantforge_quant::codecs::quantize_rows;
use quantforge_quant::dequant::dequantize_row;
use quantforge_quant::permute::rope_permute;

use crate::util::{fixture, qf, smollm2_q4_1};

fn convert(input: &Path, out: &Path, outtype: &str) -> String {
    qf([
        "convert".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--outtype".as_ref(),
        outtype.as_ref(),
        "-q".as_ref(),
    ])
    .ok()
}

fn dequant(g: &GgufFile, name: &str) -> Vec<f32> {
    let t = g.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    let mut out = vec![0f32; t.n_elements() as usize];
    dequantize_row(t.ggml_type, g.tensor_data(t), &mut out).unwrap();
    out
}

/// The metadata llama.cpp's `convert_hf_to_gguf.py` (b9928) writes for fixtures/stories260K, read from its
/// source: `general.architecture` (GGUFWriter), `general.type`, `general.name` = the directory name
/// (no README, `_name_or_path` absent; `id_to_title` keeps "stories260K" as it has an upper-case letter),
/// `general.size_label` = 260,032 parameters rounded ("260K"); `TextModel.set_gguf_parameters` (u32 counts,
/// f32 theta/eps; key/value_length because config.json has `head_dim`), `general.file_type`;
/// `LlamaModel.set_gguf_parameters` (vocab size, rope dimension = head_dim); `general.quantization_version`;
/// then `_set_vocab_sentencepiece` (tokenizer.model present): model, pre, tokens, scores, token types;
/// `SpecialVocab`: ids bos/eos/unk from tokenizer_config (looked up in tokenizer.json's added_tokens), then
/// the add flags in dict order: `bos` (TemplateProcessing single = [<s>, A]), `sep` = false (the pair template
/// `<s> A <s> B` has a middle token that is neither sep nor eos), then `eos` = false from tokenizer_config's
/// `add_eos_token` (`add_bos_token` = true overwrites bos in place). No chat template, no sampling keys
/// (generation_config.json only has token ids).
fn expected_stories_metadata(file_type: u32) -> Vec<(&'static str, GgufValue)> {
    use GgufValue::*;
    vec![
        ("general.architecture", String("llama".into())),
        ("general.type", String("model".into())),
        ("general.name", String("stories260K".into())),
        ("general.size_label", String("260K".into())),
        ("llama.block_count", U32(5)),
        ("llama.context_length", U32(512)),
        ("llama.embedding_length", U32(64)),
        ("llama.feed_forward_length", U32(172)),
        ("llama.attention.head_count", U32(8)),
        ("llama.attention.head_count_kv", U32(4)),
        ("llama.rope.freq_base", F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", F32(1e-5)),
        ("llama.attention.key_length", U32(8)),
        ("llama.attention.value_length", U32(8)),
        ("general.file_type", U32(file_type)),
        ("llama.vocab_size", U32(512)),
        ("llama.rope.dimension_count", U32(8)),
        ("general.quantization_version", U32(2)),
        ("tokenizer.ggml.model", String("llama".into())),
        ("tokenizer.ggml.pre", String("default".into())),
        ("tokenizer.ggml.tokens", Bool(false)), // arrays checked separately
        ("tokenizer.ggml.scores", Bool(false)),
        ("tokenizer.ggml.token_type", Bool(false)),
        ("tokenizer.ggml.bos_token_id", U32(1)),
        ("tokenizer.ggml.eos_token_id", U32(2)),
        ("tokenizer.ggml.unknown_token_id", U32(0)),
        ("tokenizer.ggml.add_bos_token", Bool(true)),
        ("tokenizer.ggml.add_sep_token", Bool(false)),
        ("tokenizer.ggml.add_eos_token", Bool(false)),
    ]
}

fn check_stories_metadata(g: &GgufFile, file_type: u32) {
    let expected = expected_stories_metadata(file_type);
    let got: Vec<&str> = g.metadata().iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(got, want);
    for ((k, v), (_, w)) in g.metadata().iter().zip(&expected) {
        if !matches!(w, GgufValue::Bool(false)) || !k.starts_with("tokenizer.ggml.t") && !k.ends_with("scores") {
            assert_eq!(v, w, "{k}");
        }
    }
    // Token texts: the SentencePiece pieces, which equal tokenizer.json's vocabulary in id order.
    let tj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("stories260K/tokenizer.json")).unwrap()).unwrap();
    let mut vocab: Vec<(u64, String)> =
        tj["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (v.as_u64().unwrap(), k.clone())).collect();
    vocab.sort();
    let tokens: Vec<String> =
        g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().iter().map(|v| v.to_string()).collect();
    assert_eq!(tokens, vocab.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    let types: Vec<u64> =
        g.get("tokenizer.ggml.token_type").unwrap().as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    // <unk> UNKNOWN, <s> </s> CONTROL, 256 byte pieces <0x00>..<0xFF> BYTE, the rest NORMAL.
    assert_eq!(&types[..3], [2, 3, 3]);
    assert!(types[3..259].iter().all(|&t| t == 6) && types[259..].iter().all(|&t| t == 1));
    assert_eq!(g.get("tokenizer.ggml.scores").unwrap().as_array().unwrap().len(), 512);
}

/// The source tensor in GGUF row order (Q/K rows permuted as llama.cpp does).
fn source_in_gguf_order(st: &SafetensorsFile, hf: &str) -> Vec<f32> {
    let t = st.tensor(hf).unwrap();
    let v = st.to_f32(t).unwrap();
    let rows = t.shape[0] as usize;
    let heads = if hf.ends_with("q_proj.weight") {
        8
    } else if hf.ends_with("k_proj.weight") {
        4
    } else {
        return v;
    };
    rope_permute(&v, rows, heads, v.len() / rows)
}

fn gguf_name(hf: &str) -> String {
    let s = hf.replace("model.layers.", "blk.");
    [
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
    .iter()
    .fold(s, |s, (a, b)| s.replace(a, b))
}

#[test]
fn stories260k_converts_in_every_outtype() {
    let dir = tempfile::tempdir().unwrap();
    let st = SafetensorsFile::open(fixture("stories260K/model.safetensors")).unwrap();
    for (outtype, ty, file_type) in [
        ("f32", GgmlType::F32, 0),
        ("f16", GgmlType::F16, 1),
        ("bf16", GgmlType::BF16, 32),
        ("q8_0", GgmlType::Q8_0, 7),
    ] {
        let out = dir.path().join(format!("s-{outtype}.gguf"));
        convert(&fixture("stories260K"), &out, outtype);
        let g = GgufFile::open(&out).unwrap();
        check_stories_metadata(&g, file_type);
        // 1 + 5 * 9 + 1 tensors, in the converter's order (HF names sorted: embed, layers 0..4, norm).
        assert_eq!(g.tensors().len(), 47);
        assert_eq!(g.tensors()[0].name, "token_embd.weight");
        assert_eq!(g.tensors()[46].name, "output_norm.weight");
        let mut hf_names: Vec<&str> = st.tensors().iter().map(|t| t.name.as_str()).collect();
        hf_names.sort_unstable();
        let gguf_names: Vec<String> = g.tensors().iter().map(|t| t.name.clone()).collect();
        assert_eq!(gguf_names, hf_names.iter().map(|h| gguf_name(h)).collect::<Vec<_>>());
        let mut max_err = 0f32;
        for hf in hf_names {
            let name = gguf_name(hf);
            let info = g.tensor(&name).unwrap();
            let src = source_in_gguf_order(&st, hf);
            // 1-D norms stay F32; ffn_down rows (172) are not whole Q8_0 blocks and fall back to F16.
            let want_ty = if info.ne.len() == 1 {
                GgmlType::F32
            } else if ty == GgmlType::Q8_0 && !info.ne[0].is_multiple_of(32) {
                GgmlType::F16
            } else {
                ty
            };
            assert_eq!(info.ggml_type, want_ty, "{name}");
            assert_eq!(info.shape(), st.tensor(hf).unwrap().shape, "{name}");
            // The stored bytes are exactly llama.cpp's encoding of the (permuted) source.
            let mut bytes = vec![0u8; info.size as usize];
            quantize_rows(want_ty, &src, info.ne[0] as usize, None, &mut bytes).unwrap();
            assert!(bytes == g.tensor_data(info), "{name} {outtype}: bytes differ");
            let back = dequant(&g, &name);
            let tol = match want_ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 1.0 / 1024.0,
                GgmlType::BF16 => 1.0 / 128.0,
                _ => 1.0 / 64.0,
            };
            for (a, b) in src.iter().zip(&back) {
                let err = (a - b).abs();
                let scale = if want_ty == GgmlType::Q8_0 { 2.0 } else { a.abs().max(1e-4) };
                assert!(err <= tol * scale, "{name} {outtype}: {a} vs {b}");
                max_err = max_err.max(err);
            }
        }
        if ty == GgmlType::F32 {
            assert_eq!(max_err, 0.0);
        }
    }
}

/// A copy of stories260K to break in one way.
fn broken_copy(dir: &Path, edit_config: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let d = dir.join("stories260K");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("stories260K").join(f), d.join(f)).unwrap();
    }
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    edit_config(&mut c);
    std::fs::write(d.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    d
}

fn fails_cleanly(input: &Path, out_dir: &Path, needles: &[&str]) {
    let out = out_dir.join("out.gguf");
    let err = qf(["convert".as_ref(), input.as_os_str(), "-o".as_ref(), out.as_os_str()]).fails();
    for n in needles {
        assert!(err.contains(n), "expected '{n}' in: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "output left behind: {left:?}");
}

#[test]
fn bad_inputs_fail_with_clear_errors_and_no_output() {
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = broken_copy(work.path(), |c| {
        c.as_object_mut().unwrap().remove("num_attention_heads");
    });
    fails_cleanly(&d, out.path(), &["config.json", "num_attention_heads", "missing"]);
    let d = broken_copy(work.path(), |c| c["intermediate_size"] = 128.into());
    fails_cleanly(&d, out.path(), &["model.safetensors", "mlp.down_proj.weight", "[64, 172]", "[64, 128]"]);
    let d = broken_copy(work.path(), |c| c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]));
    fails_cleanly(
        &d,
        out.path(),
        &[
            "GPT2LMHeadModel",
            "LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Olmo2ForCausalLM, Phi3ForCausalLM",
        ],
    );
    // A tensor no rule maps.
    let d = broken_copy(work.path(), |_| {});
    let st = SafetensorsFile::open(fixture("stories260K/model.safetensors")).unwrap();
    let mut specs: Vec<StTensorSpec> = st
        .tensors()
        .iter()
        .map(|t| StTensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    specs.push(StTensorSpec {
        name: "model.layers.0.mlp.extra.weight".into(),
        dtype: st.tensors()[0].dtype,
        shape: vec![2],
    });
    let mut w = SafetensorsWriter::create(d.join("model.safetensors"), &[], &specs).unwrap();
    for t in st.tensors() {
        w.write_tensor_data(st.data(t)).unwrap();
    }
    w.write_tensor_data(&[0u8; 8]).unwrap();
    w.finish().unwrap();
    fails_cleanly(&d, out.path(), &["model.layers.0.mlp.extra.weight", "not mapped"]);
    // A pickle checkpoint is refused, not loaded.
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"\x80\x02cos\nsystem\n").unwrap();
    fails_cleanly(&d, out.path(), &["pytorch_model.bin", "pickle", "execute"]);
    // Unknown outtype.
    let err = qf([
        "convert".as_ref(),
        fixture("stories260K").as_os_str(),
        "-o".as_ref(),
        out.path().join("x.gguf").as_os_str(),
        "--outtype".as_ref(),
        "q4_k".as_ref(),
    ])
    .fails();
    assert!(err.contains("q4_k"), "{err}");
}

#[test]
fn gguf_to_hf_to_gguf_round_trips_stories260k() {
    let dir = tempfile::tempdir().unwrap();
    let g1 = dir.path().join("a.gguf");
    convert(&fixture("stories260K"), &g1, "f32");
    let hf = dir.path().join("hf");
    qf([
        "convert".as_ref(),
        g1.as_os_str(),
        "--to".as_ref(),
        "hf".as_ref(),
        "-o".as_ref(),
        hf.as_os_str(),
        "-q".as_ref(),
    ])
    .ok();
    // The weights come back in HF layout (permutation undone) bit for bit.
    let a = SafetensorsFile::open(fixture("stories260K/model.safetensors")).unwrap();
    let b = SafetensorsFile::open(hf.join("model.safetensors")).unwrap();
    for t in a.tensors() {
        assert_eq!(a.data(t), b.data(b.tensor(&t.name).unwrap()), "{}", t.name);
    }
    // The rebuilt tokenizer.json has the original vocabulary, merges (derived from the SentencePiece pieces)
    // and post-processor.
    let read = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let (orig, rebuilt) = (read(fixture("stories260K/tokenizer.json")), read(hf.join("tokenizer.json")));
    for key in ["vocab", "merges"] {
        assert_eq!(orig["model"][key], rebuilt["model"][key], "{key}");
    }
    assert_eq!(orig["post_processor"], rebuilt["post_processor"]);
    assert_eq!(orig["added_tokens"], rebuilt["added_tokens"]);
    // Renamed to stories260K so general.name matches too, then converted back: the same file byte for byte.
    let again = dir.path().join("stories260K");
    std::fs::rename(&hf, &again).unwrap();
    let g2 = dir.path().join("b.gguf");
    convert(&again, &g2, "f32");
    assert!(std::fs::read(&g1).unwrap() == std::fs::read(&g2).unwrap(), "GGUF -> HF -> GGUF changed the file");
}

fn tokenizer_keys(g: &GgufFile) -> Vec<(String, GgufValue)> {
    let mut v: Vec<(String, GgufValue)> =
        g.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.") || k.starts_with("llama.")).cloned().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
#[ignore = "slow: SmolLM2 GGUF -> HF -> GGUF, about 10 s and 1.2 GB of temporary files"]
fn smollm2_gguf_to_hf_to_gguf_gives_back_weights_and_tokenizer() {
    let src = GgufFile::open(smollm2_q4_1()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // bf16 cannot hold Q4_1-dequantized values (d*q + m with f16 d and m) exactly: check that it does not,
    // which is why the exact round trip below goes through f32 safetensors.
    let hf16 = dir.path().join("hf-bf16");
    qf([
        "convert".as_ref(),
        smollm2_q4_1().as_os_str(),
        "--to".as_ref(),
        "hf".as_ref(),
        "--outtype".as_ref(),
        "bf16".as_ref(),
        "-o".as_ref(),
        hf16.as_os_str(),
        "-q".as_ref(),
    ])
    .ok();
    let st = SafetensorsFile::open(hf16.join("model.safetensors")).unwrap();
    let t = st.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
    let bf = st.to_f32(t).unwrap();
    let exact = dequant(&src, "blk.0.ffn_up.weight");
    assert_ne!(bf, exact, "bf16 unexpectedly holds Q4_1 values exactly");
    std::fs::remove_dir_all(&hf16).unwrap();

    let hf = dir.path().join("hf");
    qf([
        "convert".as_ref(),
        smollm2_q4_1().as_os_str(),
        "--to".as_ref(),
        "hf".as_ref(),
        "-o".as_ref(),
        hf.as_os_str(),
        "-q".as_ref(),
    ])
    .ok();
    let out = dir.path().join("rt.gguf");
    convert(&hf, &out, "f32");
    let rt = GgufFile::open(&out).unwrap();
    assert_eq!(tokenizer_keys(&rt), tokenizer_keys(&src));
    assert_eq!(rt.tensors().len(), src.tensors().len());
    for t in src.tensors() {
        assert_eq!(dequant(&rt, &t.name), dequant(&src, &t.name), "{}", t.name);
    }
}

/// Tokenizer parity: the vocabulary `convert` writes into the GGUF, rebuilt by the evaluator's tokenizer path,
/// encodes TinyStories and WikiText to the same ids as the model's own HF `tokenizer.json`.
#[test]
fn gguf_vocabulary_tokenizes_like_the_hf_tokenizer() {
    use quantforge_eval::Tokenizer;
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("stories.gguf");
    let model = fixture("stories260K");
    qf([std::ffi::OsStr::new("convert"), model.as_os_str(), "-q".as_ref(), "-o".as_ref(), gguf.as_os_str()]).ok();
    let from_gguf = Tokenizer::load(&gguf).unwrap();
    let from_hf = Tokenizer::from_hf_dir(&model).unwrap();
    let stories = std::fs::read_to_string(fixture("text/tinystories-valid-sample.txt")).unwrap();
    let wiki = std::fs::read_to_string(fixture("text/wiki.test.raw")).unwrap();
    let wiki = &wiki[..wiki.char_indices().nth(200_000).map_or(wiki.len(), |(i, _)| i)];
    for (name, text) in [("TinyStories", stories.as_str()), ("WikiText", wiki)] {
        let a = from_gguf.encode(text, true).unwrap();
        let b = from_hf.encode(text, true).unwrap();
        assert!(a.len() > 1000, "{name}");
        assert_eq!(a, b, "{name}: ids differ");
    }
}

/// The same for SmolLM2's byte-level BPE: the shipped GGUF's vocabulary and the `tokenizer.json` that
/// `convert --to hf` rebuilds from it agree on the whole WikiText test file.
#[test]
#[ignore = "slow: SmolLM2 GGUF -> HF and two tokenizations of WikiText"]
fn smollm2_vocabulary_round_trips_through_tokenizer_json() {
    use quantforge_eval::Tokenizer;
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let gguf = crate::util::smollm2_q4_1();
    qf([
        std::ffi::OsStr::new("convert"),
        gguf.as_os_str(),
        "--to".as_ref(),
        "hf".as_ref(),
        "--outtype".as_ref(),
        "bf16".as_ref(),
        "-q".as_ref(),
        "-o".as_ref(),
        hf.as_os_str(),
    ])
    .ok();
    let wiki = std::fs::read_to_string(fixture("text/wiki.test.raw")).unwrap();
    let a = Tokenizer::load(&gguf).unwrap().encode(&wiki, true).unwrap();
    let b = Tokenizer::from_hf_dir(&hf).unwrap().encode(&wiki, true).unwrap();
    assert!(a.len() > 250_000);
    assert_eq!(a, b);
}

/// A full disk (simulated with a file-size limit, the write failing with EFBIG) gives a clear error naming the
/// file and leaves no output or temporary file behind.
#[cfg(target_os = "linux")]
#[test]
fn write_failure_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec '{}' convert -q '{}' -o '{}' --outtype f32",
        env!("CARGO_BIN_EXE_quantforge"),
        fixture("stories260K").display(),
        out.display()
    );
    let run = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("File too large") && err.contains("x.gguf"), "{err}");
    assert_eq!(err.matches("File too large").count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "output or temporary file left behind");
}

/// Build a tiny checkpoint of `arch` from stories260K's weights: same shapes, plus the tensors the architecture
/// adds (Qwen2 q/k/v biases, Qwen3 q/k norms), and stories260K's tokenizer files.
fn synthetic_checkpoint(dir: &Path, arch: &str) {
    let src_dir = fixture("stories260K");
    std::fs::create_dir_all(dir).unwrap();
    for f in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(src_dir.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src_dir.join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!([arch]);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let src = SafetensorsFile::open(src_dir.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> =
        src.tensors().iter().map(|t| (t.name.clone(), t.shape.clone(), src.to_f32(t).unwrap())).collect();
    for layer in 0..5 {
        let p = format!("model.layers.{layer}.self_attn");
        match arch {
            "Qwen2ForCausalLM" => {
                for (proj, n) in [("q_proj", 64u64), ("k_proj", 32), ("v_proj", 32)] {
                    let v = (0..n).map(|i| (i as f32 - 10.0) * 0.01 + layer as f32).collect();
                    tensors.push((format!("{p}.{proj}.bias"), vec![n], v));
                }
            }
            "Qwen3ForCausalLM" => {
                for norm in ["q_norm", "k_norm"] {
                    tensors.push((
                        format!("{p}.{norm}.weight"),
                        vec![8],
                        (0..8).map(|i| 1.0 + i as f32 * 0.1).collect(),
                    ));
                }
            }
            _ => {}
        }
    }
    let specs: Vec<StTensorSpec> = tensors
        .iter()
        .map(|(name, shape, _)| StTensorSpec {
            name: name.clone(),
            dtype: quantforge_formats::safetensors::Dtype::F32,
            shape: shape.clone(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(dir.join("model.safetensors"), &[], &specs).unwrap();
    for (_, _, v) in &tensors {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor_data(&bytes).unwrap();
    }
    w.finish().unwrap();
}

/// Mistral, Qwen2 and Qwen3 checkpoints convert with their architecture's names, extra tensors and RoPE layout
/// (Llama-style q/k permutation for Mistral, none for Qwen, which llama.cpp runs with NeoX RoPE), go back to HF
/// unchanged, and quantize.
#[test]
fn mistral_qwen2_qwen3_checkpoints_convert_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, gguf_arch, extra) in [
        ("MistralForCausalLM", "llama", None),
        ("Qwen2ForCausalLM", "qwen2", Some("blk.0.attn_q.bias")),
        ("Qwen3ForCausalLM", "qwen3", Some("blk.0.attn_q_norm.weight")),
    ] {
        let hf = dir.path().join(arch);
        synthetic_checkpoint(&hf, arch);
        let out = dir.path().join(format!("{arch}.gguf"));
        convert(&hf, &out, "f32");
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.get("general.architecture").and_then(GgufValue::as_str), Some(gguf_arch), "{arch}");
        assert!(g.get(&format!("{gguf_arch}.block_count")).is_some(), "{arch}");
        if let Some(name) = extra {
            let t = g.tensor(name).unwrap_or_else(|| panic!("{arch}: no {name}"));
            assert_eq!(t.ggml_type, GgmlType::F32, "{arch}: {name}");
        }
        let src = SafetensorsFile::open(hf.join("model.safetensors")).unwrap();
        let q_src = src.to_f32(src.tensor("model.layers.0.self_attn.q_proj.weight").unwrap()).unwrap();
        let q = dequant(&g, "blk.0.attn_q.weight");
        let expected = if gguf_arch == "llama" { rope_permute(&q_src, 64, 8, 64) } else { q_src.clone() };
        assert_eq!(q, expected, "{arch}: q rows");
        // Back to HF and to GGUF again: the same file.
        let back = dir.path().join(format!("{arch}-hf"));
        qf([
            "convert".as_ref(),
            out.as_os_str(),
            "--to".as_ref(),
            "hf".as_ref(),
            "-o".as_ref(),
            back.as_os_str(),
            "-q".as_ref(),
        ])
        .ok();
        let again = dir.path().join(format!("{arch}-again.gguf"));
        let renamed = dir.path().join("rt").join(arch);
        std::fs::create_dir_all(renamed.parent().unwrap()).unwrap();
        std::fs::rename(&back, &renamed).unwrap();
        convert(&renamed, &again, "f32");
        let a = GgufFile::open(&again).unwrap();
        for t in g.tensors() {
            assert_eq!(a.tensor_data(a.tensor(&t.name).unwrap()), g.tensor_data(t), "{arch}: {}", t.name);
        }
        let quantized = dir.path().join(format!("{arch}-q.gguf"));
        qf([
            "quantize".as_ref(),
            hf.as_os_str(),
            quantized.as_os_str(),
            "-t".as_ref(),
            "q4_k_m".as_ref(),
            "-q".as_ref(),
        ])
        .ok();
    }
}

/// sha256 of each output of [`every_writer_gives_the_recorded_bytes`], as `sha256sum` prints them.
const RECORDED_HASHES: &str = "\
82d41d3f29e8099eeab078d037acae7d3b593a8be2b3b60adcd2fdbf0dc76d79  ./adapter-q8.gguf\n\
b39ece3d2fa6d66ecded039302c8e0b2be44e53c5b682b9b93babef1c0df081e  ./adapter.gguf\n\
a6cfa24bf673ab76f3f988295681af2a0dfe5f648bc5fd8483c48eac592853ad  ./hf-bf16/config.json\n\
e2080da99766fab5c1c28c90a4bfc97b308db54f073bef95410eb0dd8549bc51  ./hf-bf16/model.safetensors\n\
175f1f62751350581deb56a265532506f8f77f7a314be5c9b160f6362969a71d  ./hf-bf16/tokenizer.json\n\
c6ad0406fe912976e73dd4fefe65a9c436a6e2f525df82e29c7e76245c85b1fe  ./hf-bf16/tokenizer.model\n\
1cb26873402342ff1d5ac1ab8a28209a50707e6a1399ca86e41d62d275da6a4c  ./hf-bf16/tokenizer_config.json\n\
e688afe520ed2b3ac1062a9d23440a5a6d855b2833a685bd7d2f7ef9d6f54c26  ./hf-q4km.gguf\n\
a0ad601750123e817af8c90e913ea83eaf3cf90aa8ca7d90f70319c760dfd218  ./hf/config.json\n\
d080026f801978c00579e3a27ad4eceeff4fecea29825a97079bccd33f5f68d5  ./hf/model.safetensors\n\
175f1f62751350581deb56a265532506f8f77f7a314be5c9b160f6362969a71d  ./hf/tokenizer.json\n\
c6ad0406fe912976e73dd4fefe65a9c436a6e2f525df82e29c7e76245c85b1fe  ./hf/tokenizer.model\n\
1cb26873402342ff1d5ac1ab8a28209a50707e6a1399ca86e41d62d275da6a4c  ./hf/tokenizer_config.json\n\
d110f1e9f0fff46a5619316aee808832f471211f6d8bd46c7626caa1d183b432  ./merged-bf16/config.json\n\
720858ddb18cc6e5fccab11219d725fa128fe9707bfdc42ad82c488e11e35fa5  ./merged-bf16/generation_config.json\n\
65f81810eb784015995c65b1cad2ec49cf0ac8fd99c5edefd5718de5ca43245a  ./merged-bf16/model.safetensors\n\
122d22ca558413499eac24a0a4373c6ac76528aa97bd1f1a6a889214df0b254b  ./merged-bf16/tokenizer.json\n\
a8e07338e5405e6f03dc29e93c1f2fbf404292d277d389d4333d187c92161671  ./merged-bf16/tokenizer.model\n\
c4af707d2694755594998e5b837045f51f7579252158d3dd7f5be770820ef8fb  ./merged-bf16/tokenizer_config.json\n\
9b8feb1031c66ffa5a8e46de013e6182aa24f2b1e3422210998f4693add4e9d3  ./merged-f16/config.json\n\
720858ddb18cc6e5fccab11219d725fa128fe9707bfdc42ad82c488e11e35fa5  ./merged-f16/generation_config.json\n\
1781a7df6f670a1ad5a6ef095c685f322b78c8002bfaf5f3b82f6169bdfd7312  ./merged-f16/model.safetensors\n\
122d22ca558413499eac24a0a4373c6ac76528aa97bd1f1a6a889214df0b254b  ./merged-f16/tokenizer.json\n\
a8e07338e5405e6f03dc29e93c1f2fbf404292d277d389d4333d187c92161671  ./merged-f16/tokenizer.model\n\
c4af707d2694755594998e5b837045f51f7579252158d3dd7f5be770820ef8fb  ./merged-f16/tokenizer_config.json\n\
8b859aed7b43fc8c35164b403d30fcf997c3980a3690dc91b900deda4e99d6f9  ./merged/config.json\n\
720858ddb18cc6e5fccab11219d725fa128fe9707bfdc42ad82c488e11e35fa5  ./merged/generation_config.json\n\
1c92e45937a662cf81ef854b74a7aaf156003be61afedf0aa92ed31081c9607b  ./merged/model.safetensors\n\
122d22ca558413499eac24a0a4373c6ac76528aa97bd1f1a6a889214df0b254b  ./merged/tokenizer.json\n\
a8e07338e5405e6f03dc29e93c1f2fbf404292d277d389d4333d187c92161671  ./merged/tokenizer.model\n\
c4af707d2694755594998e5b837045f51f7579252158d3dd7f5be770820ef8fb  ./merged/tokenizer_config.json\n\
f707f3fceccfd54ce50df0febe45f17c62c5808181b6f0fbd146cc9189e0d3cd  ./q4km.gguf\n\
58cebae86e994385d11fcd8e3950861c565c2426be9300315997ad84461a4f33  ./s-bf16.gguf\n\
afabca31bbf76db415a72a8601d8c9fa26e304c4969fb4d11ada612afb850967  ./s-f16.gguf\n\
db2a7012412c3199e07dce8585351dba3593c6523c4c78878c39271a5edc0184  ./s-f32.gguf\n\
e3530af622d902ac97a92dc37678b395e1331c3d4e58075b0e7cbe100c35e80e  ./s-lora-f16.gguf\n\
6c1aa974e420c49d73999a7fb8a11529355f88229700e264582f733c08d4ffce  ./s-q8_0.gguf\n\
65f2a386c24e290c0c58590a995572f53031e3bc2069e4fdd326afbc2ad7f315  ./split-00001-of-00003.gguf\n\
48a71a6b331df49b48d15bfae2c330f412431ac71999505f16bfe6bfde28f358  ./split-00002-of-00003.gguf\n\
a2d3a8934c68382408ee04e9b14f8c28be7a156e81a77101b1b3e3d93e3e3075  ./split-00003-of-00003.gguf\n\
";

/// sha256 of every file under `dir`, by path relative to it, sorted.
fn hashes(dir: &Path) -> Vec<(String, String)> {
    use sha2::Digest;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let digest = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                out.push((p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), hex));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every command that writes tensors (convert in each outtype, with a merged LoRA, to HF; merge-lora; the GGUF
/// adapter export; quantize from GGUF and from HF, whole and split) gives the same bytes as before they shared
/// one pipeline. The hashes were recorded from the binary before that change.
#[test]
fn every_writer_gives_the_recorded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let o = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (base, lora) = (fixture("stories260K"), fixture("stories260K-lora-kjv-r4"));
    let (base, lora) = (base.to_str().unwrap(), lora.to_str().unwrap());
    let lora_half = format!("{lora}:0.5");
    let runs: Vec<Vec<String>> = [
        vec!["convert", base, "-o", &o("s-f32.gguf"), "--outtype", "f32"],
        vec!["convert", base, "-o", &o("s-f16.gguf"), "--outtype", "f16"],
        vec!["convert", base, "-o", &o("s-bf16.gguf"), "--outtype", "bf16"],
        vec!["convert", base, "-o", &o("s-q8_0.gguf"), "--outtype", "q8_0"],
        vec!["convert", &o("s-f16.gguf"), "--to", "hf", "-o", &o("hf")],
        vec!["merge-lora", base, lora, "-o", &o("merged")],
        vec!["convert", lora, "--lora-base", base, "-o", &o("adapter.gguf")],
        vec!["quantize", &o("s-f32.gguf"), &o("q4km.gguf"), "--type", "Q4_K_M"],
        vec!["quantize", &o("s-f32.gguf"), &o("split.gguf"), "--type", "Q4_K_M", "--split-max-size", "100K"],
        vec!["merge-lora", base, lora, "-o", &o("merged-bf16"), "--dtype", "bf16", "--scale", "0.5"],
        vec!["merge-lora", base, lora, "-o", &o("merged-f16"), "--dtype", "f16"],
        vec!["convert", lora, "--lora-base", base, "-o", &o("adapter-q8.gguf"), "--outtype", "q8_0"],
        vec!["convert", &o("q4km.gguf"), "--to", "hf", "-o", &o("hf-bf16"), "--outtype", "bf16"],
        vec!["convert", base, "-o", &o("s-lora-f16.gguf"), "--outtype", "f16", "--lora", &lora_half],
        vec!["quantize", base, &o("hf-q4km.gguf"), "--type", "Q4_K_M", "--outtype", "f16"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    for args in runs {
        qf(args.iter().chain([&"-q".to_string()])).ok();
    }
    let got = hashes(dir.path());
    let mut expected: Vec<(String, String)> = RECORDED_HASHES
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("sha256sum format");
            (path.trim_start_matches("./").to_string(), hash.to_string())
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

/// A MoE config value the forward pass does not compute (Qwen3-MoE without renormalized routing weights, dense
/// layers between the sparse ones) is refused by key before any tensor is read, and nothing is written.
#[test]
fn unsupported_moe_config_values_are_refused_by_key() {
    for (key, value) in [("norm_topk_prob", serde_json::json!(false)), ("mlp_only_layers", serde_json::json!([0]))] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("qwen3moe");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixture("archs/qwen3moe").join(f), d.join(f)).unwrap();
        }
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        c[key] = value;
        std::fs::write(d.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let out = tempfile::tempdir().unwrap();
        fails_cleanly(&d, out.path(), &["config.json", key]);
    }
}
