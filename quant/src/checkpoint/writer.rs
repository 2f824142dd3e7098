//! Writing a quantized checkpoint directory: safetensors shard(s) (`model.safetensors`, or
//! `model-0000i-of-0000N.safetensors` with `model.safetensors.index.json` past the shard size), `config.json`
//! = the source's plus the format's `quantization_config`, `quantize_config.json` for GPTQ, and the source's
//! tokenizer and generation files.
//!
//! Invariants:
//! - quantized layers are packed as they are added, and every tensor's bytes go straight to a spool file in
//!   the output's temporary directory, so memory holds one layer at a time;
//! - the output appears only when complete: everything is written into a temporary directory beside
//!   `OUT_DIR` and renamed into place by [`CheckpointWriter::finish`]; dropping the writer (an error, an
//!   interrupt) leaves nothing behind;
//! - `OUT_DIR` may not be the source directory, lie inside it or contain it; an existing `OUT_DIR` must be
//!   empty or a previous quantized checkpoint (its `config.json` has a `quantization_config` and it holds only
//!   files a checkpoint written here holds), which is replaced as a whole once the new one is complete;
//! - tensors are written in name order and the files do not depend on the order layers were added.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use quantforge_formats::hf::read_json;
use quantforge_formats::safetensors::{Dtype, SafetensorsWriter, StTensorSpec};
use quantforge_formats::AtomicDir;
use serde_json::{json, Map, Value};

use super::config::{gptq_config, quantization_config, safetensors_metadata, QuantInfo};
use super::{awq, ct, gptq, CheckpointError, CheckpointFormat, PackedTensor};
use crate::intquant::{IntScheme, QuantizedLinear};

/// Shard size above which the safetensors output is split (transformers' `max_shard_size="5GB"`).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

const SPOOL: &str = ".tensors.spool";

/// What [`CheckpointWriter::finish`] wrote.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckpointSummary {
    pub out_dir: PathBuf,
    pub format: CheckpointFormat,
    /// File names written, sorted.
    pub files: Vec<String>,
    pub quantized_modules: usize,
    pub tensors: usize,
    /// Bytes of tensor data over all shards.
    pub tensor_bytes: u64,
}

struct Entry {
    dtype: Dtype,
    shape: Vec<u64>,
    offset: u64,
    len: u64,
}

/// Where the finished directory goes.
struct Output {
    dir: AtomicDir,
    dest: PathBuf,
    /// `dest` holds a previous checkpoint, replaced on finish; `dir` then commits to a staging name.
    replace: bool,
}

/// Writes one quantized checkpoint directory.
pub struct CheckpointWriter {
    out: Output,
    src_dir: PathBuf,
    src_config: Value,
    format: CheckpointFormat,
    scheme: IntScheme,
    info: QuantInfo,
    spool: BufWriter<File>,
    spool_len: u64,
    entries: BTreeMap<String, Entry>,
    modules: BTreeSet<String>,
    max_shard_bytes: u64,
}

/// Files copied from the source directory: tokenizer, chat template, generation and licence files.
fn is_copied_file(name: &str) -> bool {
    const NAMES: [&str; 12] = [
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "generation_config.json",
        "chat_template.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "processor_config.json",
        "spiece.model",
        "sentencepiece.bpe.model",
    ];
    name.starts_with("tokenizer") || name.starts_with("LICENSE") || name.starts_with("NOTICE") || NAMES.contains(&name)
}

/// Whether `name` is a file a checkpoint written here can hold.
fn is_checkpoint_file(name: &str) -> bool {
    matches!(name, "config.json" | "quantize_config.json" | "model.safetensors.index.json")
        || (name.ends_with(".safetensors") && name.starts_with("model"))
        || is_copied_file(name)
}

/// Whether `dir` holds a previous quantized checkpoint (and nothing else).
fn is_previous_output(dir: &Path) -> Result<bool, CheckpointError> {
    let quantized = read_json(&dir.join("config.json"))
        .map(|c| c.get("quantization_config").is_some_and(|q| !q.is_null()))
        .unwrap_or(false);
    if !quantized {
        return Ok(false);
    }
    for e in fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))? {
        let e = e.map_err(|e| CheckpointError::io(dir, e))?;
        let is_file = e.file_type().map_err(|err| CheckpointError::io(e.path(), err))?.is_file();
        if !is_file || !is_checkpoint_file(&e.file_name().to_string_lossy()) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Output {
    fn create(dest: &Path, src_dir: &Path) -> Result<Output, CheckpointError> {
        let non_empty = dest.is_dir() && fs::read_dir(dest).map_err(|e| CheckpointError::io(dest, e))?.next().is_some();
        if !non_empty {
            return Ok(Output { dir: AtomicDir::create(dest, &[src_dir])?, dest: dest.into(), replace: false });
        }
        let (d, s) = (canonical(dest), canonical(src_dir));
        if d.starts_with(&s) || s.starts_with(&d) {
            return Err(quantforge_formats::FormatError::WouldOverwriteInput {
                path: dest.into(),
                input: src_dir.into(),
            }
            .into());
        }
        if !is_previous_output(dest)? {
            return Err(CheckpointError::OutputDir {
                path: dest.into(),
                message:
                    "exists and is not empty (only an empty directory or a previous quantized checkpoint is replaced)"
                        .into(),
            });
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staging = dest.with_file_name(format!(".{name}.staging-{}", std::process::id()));
        Ok(Output { dir: AtomicDir::create(&staging, &[src_dir])?, dest: dest.into(), replace: true })
    }

    fn commit(self) -> Result<(), CheckpointError> {
        if !self.replace {
            return Ok(self.dir.commit()?);
        }
        let staging = self.dir.dest().to_path_buf();
        self.dir.commit()?;
        let name = self.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let aside = self.dest.with_file_name(format!(".{name}.old-{}", std::process::id()));
        let undo = |e: std::io::Error, path: &Path| {
            let _ = fs::remove_dir_all(&staging);
            CheckpointError::io(path, e)
        };
        fs::rename(&self.dest, &aside).map_err(|e| undo(e, &self.dest))?;
        if let Err(e) = fs::rename(&staging, &self.dest) {
            let _ = fs::rename(&aside, &self.dest);
            return Err(undo(e, &self.dest));
        }
        fs::remove_dir_all(&aside).map_err(|e| CheckpointError::io(&aside, e))
    }
}

impl CheckpointWriter {
    /// Start a checkpoint of `format` in `out_dir` for the HF model in `src_dir` (whose `config.json` is
    /// copied and whose tokenizer files are copied on finish). The scheme and options are checked against
    /// the format here, before anything is quantized.
    pub fn create(
        out_dir: &Path,
        src_dir: &Path,
        format: CheckpointFormat,
        scheme: IntScheme,
        info: QuantInfo,
    ) -> Result<CheckpointWriter, CheckpointError> {
        format.check(&scheme, info.dynamic_g_idx())?;
        let config_path = src_dir.join("config.json");
        if !config_path.is_file() {
            return Err(CheckpointError::Source { path: src_dir.into(), message: "no config.json".into() });
        }
        let src_config = read_json(&config_path)?;
        if !src_config.is_object() {
            return Err(CheckpointError::Source { path: config_path, message: "not a JSON object".into() });
        }
        if src_config.get("quantization_config").is_some_and(|q| !q.is_null()) {
            return Err(CheckpointError::Source {
                path: config_path,
                message: "the source is already quantized (config.json has a quantization_config)".into(),
            });
        }
        let out = Output::create(out_dir, src_dir)?;
        let spool_path = out.dir.tmp().join(SPOOL);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spool_path)
            .map_err(|e| CheckpointError::io(&spool_path, e))?;
        Ok(CheckpointWriter {
            out,
            src_dir: src_dir.into(),
            src_config,
            format,
            scheme,
            info,
            spool: BufWriter::with_capacity(1 << 20, file),
            spool_len: 0,
            entries: BTreeMap::new(),
            modules: BTreeSet::new(),
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        })
    }

    /// Split the safetensors output into shards of at most `bytes` of tensor data (a tensor larger than
    /// that gets a shard of its own).
    pub fn with_max_shard_bytes(mut self, bytes: u64) -> CheckpointWriter {
        self.max_shard_bytes = bytes.max(1);
        self
    }

    /// The format being written.
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// Refuse, before any work, a layer shape this format cannot pack (e.g. 4-bit GPTQ needs out_features a
    /// multiple of 8): a zero layer of that shape is packed and dropped.
    pub fn check_shape(&self, hf_module: &str, rows: usize, cols: usize) -> Result<(), CheckpointError> {
        let s = self.scheme;
        let ng = s.n_groups(cols);
        let zero = if s.sym { s.sym_zero() } else { 0 };
        let layer = QuantizedLinear {
            rows,
            cols,
            scheme: s,
            q: vec![0; rows * cols],
            scales: vec![1.0; rows * ng],
            zeros: vec![zero; rows * ng],
            g_idx: None,
        };
        match self.format {
            CheckpointFormat::Gptq | CheckpointFormat::GptqV2 => gptq::encode(hf_module, &layer, self.format).map(drop),
            CheckpointFormat::Awq => awq::encode(hf_module, &layer).map(drop),
            CheckpointFormat::CompressedTensors => Ok(()),
        }
    }

    /// Pack and spool the quantized linear `hf_module` (e.g. `model.layers.0.self_attn.q_proj`, without
    /// `.weight`). Its scheme must be the writer's, its scales exactly representable in the scale type,
    /// and its `g_idx` non-monotonic only when act-order (without static groups) was declared.
    pub fn add_quantized(&mut self, hf_module: &str, layer: &QuantizedLinear) -> Result<(), CheckpointError> {
        layer.check(hf_module).map_err(|source| CheckpointError::Layer { module: hf_module.into(), source })?;
        let s = &self.scheme;
        let l = &layer.scheme;
        if (l.bits, l.group_size, l.sym, l.scale_dtype) != (s.bits, s.group_size, s.sym, s.scale_dtype) {
            return Err(CheckpointError::SchemeMismatch {
                module: hf_module.into(),
                found: format!("{l:?}"),
                expected: format!("{s:?}"),
            });
        }
        if let Some(&v) = layer.scales.iter().find(|&&v| !v.is_finite() || s.scale_dtype.round(v) != v) {
            return Err(CheckpointError::ScaleNotRepresentable {
                module: hf_module.into(),
                value: v,
                dtype: scale_dtype_name(s),
            });
        }
        if s.sym {
            if let Some(&z) = layer.zeros.iter().find(|&&z| z != s.sym_zero()) {
                return Err(CheckpointError::LayerShape {
                    module: hf_module.into(),
                    message: format!("symmetric scheme with a zero point {z} (must be {})", s.sym_zero()),
                });
            }
        }
        let glen = s.group_len(layer.cols);
        if !self.info.dynamic_g_idx() && (0..layer.cols).any(|k| layer.group_of(k) != k / glen) {
            return Err(CheckpointError::GroupIndex {
                module: hf_module.into(),
                message: "the layer has an act-order g_idx but the checkpoint was declared without act-order (or with static groups)".into(),
            });
        }
        if self.modules.contains(hf_module) || self.entries.contains_key(&format!("{hf_module}.weight")) {
            return Err(CheckpointError::Duplicate { name: hf_module.into() });
        }
        let tensors = match self.format {
            CheckpointFormat::Gptq | CheckpointFormat::GptqV2 => gptq::encode(hf_module, layer, self.format)?,
            CheckpointFormat::Awq => awq::encode(hf_module, layer)?,
            CheckpointFormat::CompressedTensors => ct::encode(hf_module, layer, self.info.dynamic_g_idx()),
        };
        for t in &tensors {
            if self.entries.contains_key(&t.name) {
                return Err(CheckpointError::Duplicate { name: t.name.clone() });
            }
        }
        for PackedTensor { name, dtype, shape, data } in tensors {
            self.spool_tensor(name, dtype, shape, &data)?;
        }
        self.modules.insert(hf_module.into());
        Ok(())
    }

    /// Spool a tensor that stays as it is (embeddings, norms, `lm_head`, biases): `shape` in torch order,
    /// `bytes` little-endian data of `dtype`.
    pub fn add_tensor(
        &mut self,
        hf_name: &str,
        dtype: Dtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), CheckpointError> {
        let expected = shape
            .iter()
            .try_fold(dtype.bitsize() as u64, |a, &d| a.checked_mul(d as u64))
            .map(|bits| bits.div_ceil(8))
            .unwrap_or(u64::MAX);
        if expected != bytes.len() as u64 {
            return Err(CheckpointError::TensorSize { name: hf_name.into(), expected, found: bytes.len() as u64 });
        }
        let quantized_weight = hf_name.strip_suffix(".weight").is_some_and(|m| self.modules.contains(m));
        if quantized_weight || self.entries.contains_key(hf_name) {
            return Err(CheckpointError::Duplicate { name: hf_name.into() });
        }
        self.spool_tensor(hf_name.into(), dtype, shape.iter().map(|&d| d as u64).collect(), bytes)
    }

    fn spool_tensor(
        &mut self,
        name: String,
        dtype: Dtype,
        shape: Vec<u64>,
        data: &[u8],
    ) -> Result<(), CheckpointError> {
        let path = self.out.dir.tmp().join(SPOOL);
        self.spool.write_all(data).map_err(|e| CheckpointError::io(&path, e))?;
        let len = data.len() as u64;
        self.entries.insert(name, Entry { dtype, shape, offset: self.spool_len, len });
        self.spool_len += len;
        Ok(())
    }

    /// Write the shards, the configs and the copied files, then move the directory into place.
    pub fn finish(self) -> Result<CheckpointSummary, CheckpointError> {
        let tmp = self.out.dir.tmp().to_path_buf();
        let spool_path = tmp.join(SPOOL);
        let mut spool = self.spool.into_inner().map_err(|e| CheckpointError::io(&spool_path, e.into_error()))?;
        spool.flush().map_err(|e| CheckpointError::io(&spool_path, e))?;
        let mut files = Vec::new();
        let shards = plan_shards(&self.entries, self.max_shard_bytes);
        let metadata = safetensors_metadata(self.format, &self.scheme, &self.info);
        let n = shards.len();
        let mut weight_map = Map::new();
        let mut buf = vec![0u8; 1 << 22];
        for (i, shard) in shards.iter().enumerate() {
            let file_name = if n == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            };
            let specs: Vec<StTensorSpec> = shard
                .iter()
                .map(|name| {
                    let e = &self.entries[*name];
                    StTensorSpec { name: (*name).clone(), dtype: e.dtype, shape: e.shape.clone() }
                })
                .collect();
            let mut w = SafetensorsWriter::create(tmp.join(&file_name), &metadata, &specs)?;
            for name in shard {
                let e = &self.entries[*name];
                spool.seek(SeekFrom::Start(e.offset)).map_err(|err| CheckpointError::io(&spool_path, err))?;
                let mut left = e.len;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    spool.read_exact(&mut buf[..k]).map_err(|err| CheckpointError::io(&spool_path, err))?;
                    w.write_tensor_data(&buf[..k])?;
                    left -= k as u64;
                }
                weight_map.insert((*name).clone(), json!(file_name));
            }
            w.finish()?;
            files.push(file_name);
        }
        drop(spool);
        fs::remove_file(&spool_path).map_err(|e| CheckpointError::io(&spool_path, e))?;
        let tensor_bytes: u64 = self.entries.values().map(|e| e.len).sum();
        if n > 1 {
            let index = json!({"metadata": {"total_size": tensor_bytes}, "weight_map": weight_map});
            write_json(&tmp.join("model.safetensors.index.json"), &index)?;
            files.push("model.safetensors.index.json".into());
        }
        let mut config = self.src_config.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.insert("quantization_config".into(), quantization_config(self.format, &self.scheme, &self.info));
        }
        write_json(&tmp.join("config.json"), &config)?;
        files.push("config.json".into());
        if self.format.is_gptq() {
            write_json(&tmp.join("quantize_config.json"), &gptq_config(self.format, &self.scheme, &self.info))?;
            files.push("quantize_config.json".into());
        }
        let listing = fs::read_dir(&self.src_dir).map_err(|e| CheckpointError::io(&self.src_dir, e))?;
        let mut copied = Vec::new();
        for e in listing {
            let e = e.map_err(|e| CheckpointError::io(&self.src_dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && is_copied_file(&name) {
                fs::copy(e.path(), tmp.join(&name)).map_err(|err| CheckpointError::io(e.path(), err))?;
                copied.push(name);
            }
        }
        files.extend(copied);
        files.sort();
        let summary = CheckpointSummary {
            out_dir: self.out.dest.clone(),
            format: self.format,
            files,
            quantized_modules: self.modules.len(),
            tensors: self.entries.len(),
            tensor_bytes,
        };
        self.out.commit()?;
        Ok(summary)
    }
}

fn scale_dtype_name(s: &IntScheme) -> &'static str {
    match s.scale_dtype {
        crate::intquant::ScaleDtype::F16 => "float16",
        crate::intquant::ScaleDtype::BF16 => "bfloat16",
        crate::intquant::ScaleDtype::F32 => "float32",
    }
}

/// Tensor names (in order) per shard: a new shard starts when the next tensor would pass `max` bytes.
fn plan_shards(entries: &BTreeMap<String, Entry>, max: u64) -> Vec<Vec<&String>> {
    let mut shards: Vec<Vec<&String>> = vec![Vec::new()];
    let mut size = 0u64;
    for (name, e) in entries {
        if size > 0 && size + e.len > max {
            shards.push(Vec::new());
            size = 0;
        }
        if let Some(s) = shards.last_mut() {
            s.push(name);
        }
        size += e.len;
    }
    shards
}

fn write_json(path: &Path, value: &Value) -> Result<(), CheckpointError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CheckpointError::Config { path: path.into(), message: e.to_string() })?;
    text.push('\n');
    fs::write(path, text).map_err(|e| CheckpointError::io(path, e))
}
