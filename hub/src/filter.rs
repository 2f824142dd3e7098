//! Which repo files a download takes: by default what a conversion reads (top-level safetensors weights and
//! index, configs, tokenizer files, chat template, licence, README, a PEFT adapter's two files), else the
//! user's `--include` globs; `--exclude` always applies. Pickle files are never taken.

use crate::error::Result;
use crate::glob::{keep, Glob};

/// Top-level files a conversion reads.
pub const MODEL_FILES: &[&str] = &[
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "params.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "LICENSE*",
    "LICENCE*",
    "license*",
    "README.md",
    "adapter_config.json",
];

/// Extensions of pickle files (Python objects that run code when loaded).
pub const PICKLE_EXTENSIONS: &[&str] = &[".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"];

/// A selection of repo files.
#[derive(Clone, Debug)]
pub struct Filter {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
    top_level_only: bool,
}

impl Filter {
    /// What a conversion reads.
    pub fn model() -> Filter {
        let include = MODEL_FILES.iter().map(|p| Glob::new(p).expect("built-in globs are valid")).collect();
        Filter { include, exclude: Vec::new(), top_level_only: true }
    }

    /// `--include` globs (none: what a conversion reads) and `--exclude` globs.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        let mut f = if include.is_empty() {
            Filter::model()
        } else {
            let include = include.iter().map(|g| Glob::new(g)).collect::<Result<_>>()?;
            Filter { include, exclude: Vec::new(), top_level_only: false }
        };
        f.exclude = exclude.iter().map(|g| Glob::new(g)).collect::<Result<_>>()?;
        Ok(f)
    }

    /// Whether this is the default selection (what a conversion reads).
    pub fn is_model(&self) -> bool {
        self.top_level_only
    }

    /// Is `path` taken?
    pub fn keeps(&self, path: &str) -> bool {
        let nested_unwanted = self.top_level_only && path.contains('/');
        !is_pickle(path) && !nested_unwanted && keep(path, &self.include, &self.exclude)
    }
}

/// A pickle file, by extension.
pub fn is_pickle(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    PICKLE_EXTENSIONS.iter().any(|e| lower.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_takes_what_conversion_reads() {
        let f = Filter::model();
        for p in ["model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json", "LICENSE"] {
            assert!(f.keeps(p), "{p}");
        }
        for p in ["pytorch_model.bin", "original/consolidated.safetensors", "onnx/model.onnx", "model.gguf"] {
            assert!(!f.keeps(p), "{p}");
        }
    }

    #[test]
    fn user_globs_and_pickle() {
        let f = Filter::new(&["*".into()], &["*.md".into()]).unwrap();
        assert!(f.keeps("sub/x.json") && !f.keeps("README.md"));
        assert!(!f.keeps("pytorch_model.bin") && !f.keeps("x.PT"));
        assert!(Filter::new(&["[".into()], &[]).is_err());
    }
}
