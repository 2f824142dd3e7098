//! Fuzz targets of the formats crate (see `fuzz_support` and `docs/fuzzing.md`): the GGUF reader, the
//! safetensors reader, the config.json parser (with the shapes and metadata derived from it), the tokenizer
//! vocabularies (GGUF metadata, SentencePiece `tokenizer.model`, `tokenizer.json`).

mod fuzz_support;

use std::path::Path;

use quantforge_formats::arch::{self, HfConfig, VocabStyle};
use quantforge_formats::gguf::GgufFile;
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
