//! Loading what an evaluation needs, as every evaluation command does it: a model (a GGUF file or a Hugging
//! Face directory) with its tokenizer, checked to agree on the vocabulary and placed on a [`Device`], and the
//! evaluation text, read whole and checked to be UTF-8. The text is tokenized as llama.cpp does
//! (`add_special = true`: BOS first when the model adds it).

use std::path::Path;
use std::time::Instant;

use crate::device::Device;
use crate::error::{EvalError, Result};
use crate::model::LlamaModel;
use crate::tokenizer::Tokenizer;

/// A model and its tokenizer, ready to run.
pub struct Loaded {
    pub model: LlamaModel,
    pub tokenizer: Tokenizer,
}

impl Loaded {
    /// Load the model at `path` (GGUF file or HF directory) and its tokenizer; the model's matrix products will
    /// run on `device`.
    pub fn open(path: &Path, device: Device) -> Result<Loaded> {
        let mut model =
            LlamaModel::load(path).map_err(|e| EvalError::Load { path: path.into(), source: Box::new(e) })?;
        model.set_device(device).map_err(|e| EvalError::SetDevice { device: device.name(), source: Box::new(e) })?;
        let tokenizer =
            Tokenizer::load(path).map_err(|e| EvalError::LoadTokenizer { path: path.into(), source: Box::new(e) })?;
        let (tokens, rows) = (tokenizer.n_vocab(), model.config().n_vocab);
        if tokens != rows {
            return Err(EvalError::VocabularySize { path: path.into(), tokenizer: tokens, model: rows });
        }
        Ok(Loaded { model, tokenizer })
    }

    /// The tokens of `text` as llama.cpp's perplexity tokenizes it (BOS first when the model adds it).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }

    /// The token that replaces the first token of every chunk, when the model adds BOS.
    pub fn bos(&self) -> Option<u32> {
        self.tokenizer.bos_if_added()
    }
}

/// A loaded model with the tokens of a text, and the seconds loading and tokenizing took.
pub struct LoadedText {
    pub loaded: Loaded,
    pub tokens: Vec<u32>,
    pub seconds: f64,
}

impl LoadedText {
    /// Load the model at `path` onto `device` and tokenize `text` with its tokenizer.
    pub fn open(path: &Path, text: &str, device: Device) -> Result<LoadedText> {
        let t0 = Instant::now();
        let loaded = Loaded::open(path, device)?;
        let tokens = loaded.tokens(text)?;
        Ok(LoadedText { loaded, tokens, seconds: t0.elapsed().as_secs_f64() })
    }
}

/// The evaluation text at `path`, whole (at most [`quantforge_formats::bounded::MAX_TEXT_BYTES`]).
pub fn read_text(path: &Path) -> Result<String> {
    use quantforge_formats::{bounded, FormatError};
    let bytes = bounded::read_capped(path, bounded::MAX_TEXT_BYTES, "evaluation text").map_err(|e| match e {
        FormatError::Io { path, source } => EvalError::Read { path, source },
        other => EvalError::Format(other),
    })?;
    String::from_utf8(bytes).map_err(|source| EvalError::NotText { path: path.into(), source })
}

/// A model loaded on first use, at most once.
pub struct LazyModel<'a> {
    path: &'a Path,
    device: Device,
    loaded: Option<Loaded>,
}

impl<'a> LazyModel<'a> {
    /// The model at `path`, to be loaded onto `device` when first asked for.
    pub fn new(path: &'a Path, device: Device) -> LazyModel<'a> {
        LazyModel { path, device, loaded: None }
    }

    /// The model, loaded now if it was not yet.
    pub fn get(&mut self) -> Result<&Loaded> {
        let loaded = match self.loaded.take() {
            Some(l) => l,
            None => Loaded::open(self.path, self.device)?,
        };
        Ok(self.loaded.insert(loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{fixture, Scratch};

    #[test]
    fn loading_checks_the_text_and_names_the_file() {
        let dir = Scratch::new();
        let bad = dir.path("latin1.txt");
        std::fs::write(&bad, b"caf\xe9").unwrap();
        let err = read_text(&bad).unwrap_err();
        assert!(matches!(err, EvalError::NotText { .. }) && err.to_string().contains("latin1.txt"), "{err}");
        let err = read_text(&dir.path("none.txt")).unwrap_err();
        assert!(matches!(err, EvalError::Read { .. }) && err.to_string().contains("none.txt"), "{err}");
        let err = Loaded::open(&fixture("text/tinystories-valid-sample.txt"), Device::Cpu).err().unwrap();
        assert!(matches!(err, EvalError::Load { .. }), "{err}");
        let stories = fixture("stories260K");
        let mut lazy = LazyModel::new(&stories, Device::Cpu);
        let l = lazy.get().unwrap();
        assert_eq!(l.model.config().n_vocab, 512);
        assert_eq!(l.bos(), l.tokenizer.bos_if_added());
    }
}
