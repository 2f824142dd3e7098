//! Fuzz targets of the formats crate (see `fuzz_support` and the README's Fuzzing section): the GGUF reader, the
//! safetensors reader, the config.json parser (with the shapes and metadata derived from it), the tokenizer
//! vocabularies (GGUF metadata, SentencePiece `tokenizer.model`, `tokenizer.json`).

mod fuzz_support;

use std::path::Path;

use quantforge_formats::arch::{self, HfConfig, VocabStyle};
use quantforge_formats::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter};
use quantforge_formats::kv::KvList;
use quantforge_formats::safetensors::SafetensorsFile;
use quantforge_formats::vocab;

#[global_allocator]
static ALLOC: fuzz_support::Counting = fuzz_support::Counting;

#[test]
fn fuzz_gguf_reader() {
    fuzz_support::fuzz("gguf", &["gguf", "gguf_vocab", "imatrix"], 20000, |bytes| {
        let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes.to_vec()) else { return };
        for t in f.tensors() {
            assert_eq!(f.tensor_data(t).len() as u64, t.size, "{}", t.name);
        }
        for (_, v) in f.metadata() {
            let _ = v.display(8);
        }
        let _ = (f.n_elements(), f.bits_per_weight(), f.model_tensor_count());
    });
}

#[test]
fn fuzz_safetensors_reader() {
    fuzz_support::fuzz("safetensors", &["safetensors", "adapter_safetensors"], 20000, |bytes| {
        let Ok(f) = SafetensorsFile::from_bytes("fuzz.safetensors", bytes.to_vec()) else { return };
        for t in f.tensors() {
            assert_eq!(f.data(t).len() as u64, t.size(), "{}", t.name);
            let _ = f.to_f32(t);
        }
    });
}

/// A config.json is parsed, its architecture looked up, its GGUF hyper-parameters written and every tensor
/// shape its rules imply computed: all sized only by capped values.
#[test]
fn fuzz_config_json() {
    fuzz_support::fuzz("config", &["config"], 20000, |bytes| {
        let path = Path::new("config.json");
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
        let Ok(cfg) = HfConfig::parse(path, &value) else { return };
        let _ = (cfg.head_dim(), cfg.kv_heads());
        let Ok(a) = arch::lookup(path, &cfg.architecture) else { return };
        let mut kv = KvList::new();
        arch::arch_metadata(&mut kv, a, &cfg, 1);
        for rule in a.rules {
            let elements = rule.shape.iter().try_fold(1u64, |n, d| n.checked_mul(d.resolve(&cfg)));
            assert!(elements.is_some(), "{}: element count overflows", rule.gguf);
        }
    });
}

#[test]
fn fuzz_gguf_vocab_to_tokenizer_files() {
    fuzz_support::fuzz("gguf_vocab", &["gguf_vocab"], 20000, |bytes| {
        let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes.to_vec()) else { return };
        let _ = vocab::hf_tokenizer_files(&f);
    });
}

#[test]
fn fuzz_sentencepiece_model() {
    fuzz_support::fuzz("tokenizer_model", &["tokenizer_model"], 10000, |bytes| {
        let _ = vocab::parse_pieces(Path::new("tokenizer.model"), bytes);
    });
}

/// `tokenizer.json` (with the config of a 512-token Llama) through the converter's vocabulary reader.
#[test]
fn fuzz_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 172, "num_hidden_layers": 1, "num_attention_heads": 8, "vocab_size": 512});
    let cfg = HfConfig::parse(&dir.path().join("config.json"), &config).unwrap();
    fuzz_support::fuzz("tokenizer_json", &["tokenizer_json"], 600, |bytes| {
        std::fs::write(dir.path().join("tokenizer.json"), bytes).unwrap();
        let mut kv = KvList::new();
        let _ = vocab::tokenizer_metadata(&mut kv, dir.path(), &cfg, VocabStyle::Plain);
    });
}

/// Metadata arrays cost about what the file spends on them: an 8 MB u8 array once cost 32 bytes per element
/// (256 MB) to read, and as much again to write.
#[test]
fn large_metadata_arrays_cost_about_their_size() {
    const N: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    let strings: Vec<String> = (0..N / 64).map(|i| format!("t{i}")).collect();
    let metadata = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("big.u8".to_string(), GgufValue::Array(GgufArray::U8(vec![7; N]))),
        ("big.strings".to_string(), GgufValue::Array(strings.into())),
    ];
    let (written, grew) = fuzz_support::heap_growth(|| GgufWriter::create(&path, &metadata, vec![])?.finish());
    written.unwrap();
    assert!(grew < 2 * N, "writing grew the heap by {grew} bytes");
    let bytes = std::fs::read(&path).unwrap();
    let file_len = bytes.len();
    let (f, grew) = fuzz_support::heap_growth(|| GgufFile::from_bytes("big.gguf", bytes));
    let f = f.unwrap();
    // The owned input (file_len) plus the arrays' own copies (about N + the strings' bytes and offsets).
    assert!(grew < 2 * file_len + (4 << 20), "reading grew the heap by {grew} bytes for a {file_len}-byte file");
    let a = f.get("big.u8").and_then(GgufValue::as_array).unwrap();
    assert_eq!((a.len(), a.get(N - 1)), (N, Some(GgufValue::U8(7))));
    let s = f.get("big.strings").and_then(GgufValue::as_array).and_then(GgufArray::strings).unwrap();
    assert_eq!((s.len(), s.get(5)), (N / 64, Some("t5")));
}
