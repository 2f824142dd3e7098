//! A Hugging Face model directory: `config.json` plus `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. Shards are memory-mapped; tensors are handed out one at a time in the
//! order llama.cpp's converter uses (shard files by name, then tensor names in string order).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{FormatError, Result};
use crate::safetensors::{SafetensorsFile, StTensor};

/// Largest JSON file (config, index, tokenizer config) read into memory.
pub use crate::bounded::MAX_JSON_BYTES;

/// An open HF model directory.
pub struct HfModel {
    dir: PathBuf,
    config: Value,
    shards: Vec<SafetensorsFile>,
    /// (shard, tensor) pairs in converter order.
    order: Vec<(usize, usize)>,
    by_name: HashMap<String, (usize, usize)>,
}

/// Read and parse a JSON file, refusing files over [`MAX_JSON_BYTES`] (also streams that never end).
pub fn read_json(path: &Path) -> Result<Value> {
    let text = crate::bounded::read_capped(path, MAX_JSON_BYTES, "JSON file")?;
    serde_json::from_slice(&text).map_err(|e| FormatError::Json { path: path.into(), message: e.to_string() })
}

impl HfModel {
    /// Whether `dir` looks like a HF model directory.
    pub fn is_model_dir(dir: &Path) -> bool {
        dir.is_dir() && dir.join("config.json").is_file()
    }

    /// Open the model in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModel> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(FormatError::NotAModel {
                path: dir,
                message: "no config.json: not a Hugging Face model directory".into(),
            });
        }
        let config = read_json(&config_path)?;
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (shards, expected) = if index_path.is_file() {
            open_sharded(&dir, &index_path)?
        } else if single.is_file() {
            (vec![SafetensorsFile::open(&single)?], None)
        } else {
            return Err(FormatError::NotAModel {
                path: dir,
                message: "neither model.safetensors nor model.safetensors.index.json found".into(),
            });
        };
        let mut by_name = HashMap::new();
        let mut order = Vec::new();
        for (si, shard) in shards.iter().enumerate() {
            let mut idx: Vec<usize> = (0..shard.tensors().len()).collect();
            idx.sort_by(|&a, &b| shard.tensors()[a].name.cmp(&shard.tensors()[b].name));
            for ti in idx {
                let name = &shard.tensors()[ti].name;
                if by_name.insert(name.clone(), (si, ti)).is_some() {
                    return Err(FormatError::DuplicateShardTensor { path: shard.path().into(), name: name.clone() });
                }
                order.push((si, ti));
            }
        }
        if let Some(expected) = expected {
            for (name, shard) in expected {
                match by_name.get(&name) {
                    Some(&(si, _))
                        if shards[si].path().file_name().map(|f| f.to_string_lossy() == shard.as_str())
                            == Some(true) => {}
                    _ => return Err(FormatError::MissingShardTensor { path: index_path.clone(), name, shard }),
                }
            }
        }
        Ok(HfModel { dir, config, shards, order, by_name })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Parsed `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The shard files, in name order.
    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// Tensors with the shard holding each, in converter order.
    pub fn tensors(&self) -> impl Iterator<Item = (&SafetensorsFile, &StTensor)> {
        self.order.iter().map(|&(s, t)| (&self.shards[s], &self.shards[s].tensors()[t]))
    }

    /// The tensor called `name` and its shard.
    pub fn tensor(&self, name: &str) -> Option<(&SafetensorsFile, &StTensor)> {
        self.by_name.get(name).map(|&(s, t)| (&self.shards[s], &self.shards[s].tensors()[t]))
    }

    /// Total bytes of all shard files.
    pub fn file_size(&self) -> u64 {
        self.shards.iter().map(SafetensorsFile::file_size).sum()
    }
}

type ShardMap = Vec<(String, String)>;

fn open_sharded(dir: &Path, index_path: &Path) -> Result<(Vec<SafetensorsFile>, Option<ShardMap>)> {
    let index = read_json(index_path)?;
    let bad = |message: String| FormatError::NotAModel { path: index_path.to_path_buf(), message };
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing \"weight_map\" object".into()))?;
    let mut files = BTreeSet::new();
    let mut expected = Vec::with_capacity(map.len());
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map entry '{name}' is not a string")))?;
        let p = Path::new(file);
        if p.components().count() != 1 || p.is_absolute() {
            return Err(bad(format!("shard name '{file}' for '{name}' must be a plain file name")));
        }
        files.insert(file.to_string());
        expected.push((name.clone(), file.to_string()));
    }
    let shards = files.iter().map(|f| SafetensorsFile::open(dir.join(f))).collect::<Result<Vec<_>>>()?;
    Ok((shards, Some(expected)))
}
