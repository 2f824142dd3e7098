//! Fuzz targets of the evaluator's tokenizer loader (see `formats/tests/fuzz_support` and
//! the README's Fuzzing section): a tokenizer rebuilt from GGUF `tokenizer.ggml.*` metadata, and one read from a HF
//! directory's `tokenizer.json`; whatever loads also encodes and decodes a short text.

#[path = "../../formats/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use quantforge_eval::tokenizer::Tokenizer;
use quantforge_formats::gguf::GgufFile;

#[global_allocator]
static ALLOC: fuzz_support::Counting = fuzz_support::Counting;

fn exercise(t: &Tokenizer) {
    if let Ok(ids) = t.encode("Once upon a time, ab!\n", true) {
        let _ = t.decode(&ids);
    }
}

#[test]
fn fuzz_tokenizer_from_gguf() {
    fuzz_support::fuzz("tokenizer_gguf", &["gguf_vocab"], 1000, |bytes| {
        let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes.to_vec()) else { return };
        if let Ok(t) = Tokenizer::from_gguf(&f) {
            exercise(&t);
        }
    });
}

#[test]
fn fuzz_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    fuzz_support::fuzz("tokenizer_hf", &["tokenizer_json"], 400, |bytes| {
        std::fs::write(dir.path().join("tokenizer.json"), bytes).unwrap();
        if let Ok(t) = Tokenizer::from_hf_dir(dir.path()) {
            exercise(&t);
        }
    });
}
