//! Helpers of the crate's unit tests: a scratch directory and the committed stories260K model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::LlamaModel;
use crate::tokenizer::Tokenizer;

/// A scratch directory under the system's temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qf-eval-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of a committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

/// The stories260K model, its BOS and the tokens of the TinyStories sample.
pub fn stories() -> (LlamaModel, Option<u32>, Vec<u32>) {
    let dir = fixture("stories260K");
    let model = LlamaModel::load(&dir).unwrap();
    let tok = Tokenizer::load(&dir).unwrap();
    let text = std::fs::read_to_string(fixture("text/tinystories-valid-sample.txt")).unwrap();
    let tokens = tok.encode(&text, true).unwrap();
    (model, tok.bos_if_added(), tokens)
}

/// A base log-probabilities file of `n_chunks` chunks of `n_ctx` tokens over a vocabulary of `n_vocab`, with
/// made-up logits, in `dir`.
pub fn small_logits_file(dir: &Scratch, n_vocab: usize, n_ctx: usize, n_chunks: usize) -> PathBuf {
    use crate::chunking::scored_rows;
    use crate::logits_file::{BaseChunk, LogitsWriter};
    let path = dir.path("small.bin");
    let tokens: Vec<u32> = (0..n_ctx * n_chunks).map(|i| (i % n_vocab) as u32).collect();
    let (_, rows) = scored_rows(n_ctx);
    let mut w = LogitsWriter::create(&path, n_ctx, n_vocab, &tokens).unwrap();
    for c in 0..n_chunks {
        let logits: Vec<f32> = (0..rows * n_vocab).map(|i| ((i * 7 + c) % 13) as f32 * 0.5).collect();
        w.write_chunk(&BaseChunk::from_logits(&logits, n_vocab)).unwrap();
    }
    w.finish().unwrap();
    path
}
