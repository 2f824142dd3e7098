//! The result cache of a comparison: every finished measurement is a small JSON file named by a hash of the
//! inputs it depends on (model and text contents, settings, device), so an interrupted or repeated run redoes
//! nothing that is already measured. The base model's log-probabilities live beside them.
//!
//! An entry is `{"key": KEY, "value": VALUE}` in `KIND-<first 24 hex digits of sha256(KEY)>.json`; it counts
//! only when its stored key equals the key asked for, and is written whole or not at all.

use std::io::Read;
use std::path::{Path, PathBuf};

use quantforge_formats::AtomicFile;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// Where measurements are kept.
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// A cache in `dir` (created when needed), or none: everything is measured again.
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache { dir }
    }

    /// `$QUANTFORGE_CACHE/compare`, else `$XDG_CACHE_HOME/quantforge/compare`, else `~/.cache/quantforge/compare`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = env("QUANTFORGE_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("quantforge")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/quantforge")))?;
        Some(root.join("compare"))
    }

    /// The cached entry `kind` for `key`, if there is a readable one.
    pub fn get(&self, kind: &str, key: &Value) -> Option<Value> {
        let path = self.path(kind, key, "json")?;
        let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        (v.get("key") == Some(key)).then(|| v.get("value").cloned()).flatten()
    }

    /// Store entry `kind` for `key` (written whole or not at all).
    pub fn put<T: Serialize>(&self, kind: &str, key: &Value, value: &T) -> Result<()> {
        #[derive(Serialize)]
        struct Entry<'a, T> {
            key: &'a Value,
            value: &'a T,
        }
        let Some(path) = self.path(kind, key, "json") else { return Ok(()) };
        self.ensure_dir()?;
        let text = serde_json::to_vec_pretty(&Entry { key, value })
            .map_err(|source| EvalError::Json { path: path.clone(), source })?;
        let mut f = AtomicFile::create(&path)?;
        f.write_all(&text)?;
        f.commit()?;
        Ok(())
    }

    /// A file path for a large artefact of `kind` and `key` (e.g. base log-probabilities); `None` without a
    /// cache.
    pub fn artefact(&self, kind: &str, key: &Value, ext: &str) -> Result<Option<PathBuf>> {
        if self.dir.is_some() {
            self.ensure_dir()?;
        }
        Ok(self.path(kind, key, ext))
    }

    fn ensure_dir(&self) -> Result<()> {
        if let Some(d) = &self.dir {
            std::fs::create_dir_all(d).map_err(|source| EvalError::CreateDir { path: d.clone(), source })?;
        }
        Ok(())
    }

    fn path(&self, kind: &str, key: &Value, ext: &str) -> Option<PathBuf> {
        let digest = hex(&Sha256::digest(key.to_string().as_bytes()));
        Some(self.dir.as_ref()?.join(format!("{kind}-{}.{ext}", &digest[..24])))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's contents.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    feed(&mut h, path)?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 over a model: a GGUF file's contents, or a HF directory's files that define the model
/// (`*.json`, `*.safetensors`, `tokenizer.model`), names and contents, in name order.
pub fn hash_model(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return hash_file(path);
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|source| EvalError::Read { path: path.into(), source })?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") || n.ends_with(".safetensors") || n == "tokenizer.model")
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        h.update([0]);
        feed(&mut h, &path.join(&n))?;
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of a token sequence (to check that candidates tokenize the text as the base does).
pub fn hash_tokens(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    hex(&h.finalize())
}

fn feed(h: &mut Sha256, path: &Path) -> Result<()> {
    let read = |source| EvalError::Read { path: path.into(), source };
    let mut f = std::fs::File::open(path).map_err(read)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(read)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_round_trip_and_keys_must_match() {
        let dir = crate::test_util::Scratch::new();
        let c = Cache::new(Some(dir.path("c")));
        let key = json!({"model": "abc", "ctx": 512});
        assert!(c.get("ppl", &key).is_none());
        c.put("ppl", &key, &json!({"ppl": 28.5})).unwrap();
        assert_eq!(c.get("ppl", &key), Some(json!({"ppl": 28.5})));
        assert!(c.get("ppl", &json!({"model": "abc", "ctx": 256})).is_none());
        assert!(c.get("kld", &key).is_none());
        let none = Cache::new(None);
        none.put("ppl", &key, &json!(1)).unwrap();
        assert!(none.get("ppl", &key).is_none());
    }

    #[test]
    fn token_hashes_are_hex_sha256_of_little_endian_ids() {
        assert_eq!(hash_tokens(&[]), hex(&Sha256::digest(b"")));
        assert_eq!(hash_tokens(&[1, 256]), hex(&Sha256::digest([1, 0, 0, 0, 0, 1, 0, 0])));
    }
}
