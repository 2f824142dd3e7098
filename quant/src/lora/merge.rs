//! `merge-lora`: base HF directory + PEFT adapter -> merged HF directory.
//!
//! Streaming: base tensors are read from the memory-mapped shards one at a time, merged in f32 and written
//! to the output shard before the next is read; only the adapter (small) and one base tensor are in memory.
//! The output mirrors the base's shard layout (same file names, tensor order and metadata) and copies its
//! config and tokenizer files. Everything goes into a temporary directory beside the output, renamed into
//! place only when complete.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensor, StTensorSpec};
use quantforge_formats::FormatError;
use serde_json::Value;

use super::adapter::LoraKind;
use super::plan::{plan, Action};
use super::{math, Adapter, LoraError};
use crate::progress::Progress;
use quantforge_formats::AtomicDir;

/// `--dtype` of the merged tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutDtype {
    F32,
    F16,
    BF16,
}

impl OutDtype {
    /// Parse a case-insensitive name.
    pub fn parse(s: &str) -> Option<OutDtype> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(OutDtype::F32),
            "f16" | "float16" => Some(OutDtype::F16),
            "bf16" | "bfloat16" => Some(OutDtype::BF16),
            _ => None,
        }
    }

    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            OutDtype::F32 => Dtype::F32,
            OutDtype::F16 => Dtype::F16,
            OutDtype::BF16 => Dtype::BF16,
        }
    }

    /// The `torch_dtype` name in config.json.
    fn torch_name(self) -> &'static str {
        match self {
            OutDtype::F32 => "float32",
            OutDtype::F16 => "float16",
            OutDtype::BF16 => "bfloat16",
        }
    }
}

/// Options of a merge.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Output dtype of float tensors; `None` keeps each base tensor's dtype.
    pub dtype: Option<OutDtype>,
    /// Multiplies every LoRA delta (and `lora_B.bias`), as llama.cpp's `--lora-scaled`. Replacement tensors
    /// (`modules_to_save`) are applied as they are.
    pub scale: f32,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions { dtype: None, scale: 1.0 }
    }
}

/// What a merge did.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSummary {
    pub tensors: usize,
    pub merged: usize,
    pub replaced: usize,
    pub dora: bool,
    pub bytes: u64,
}

/// Float dtypes written by converting through f32.
fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// f32 values as little-endian bytes of `dtype` (round to nearest even).
pub fn encode(dtype: Dtype, values: &[f32]) -> Option<Vec<u8>> {
    Some(match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        Dtype::F64 => values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect(),
        _ => return None,
    })
}

/// The merged values of the base weight of `module`, given its values `w`.
pub fn merge_module(adapter: &Adapter, module: &str, mut w: Vec<f32>, scale: f32) -> Result<Vec<f32>, LoraError> {
    let m = &adapter.modules[module];
    let (a, b) = (adapter.values(&m.a)?, adapter.values(&m.b)?);
    let r = m.rank as usize;
    let n_in = a.len() / r.max(1);
    let n_out = b.len() / r.max(1);
    let transposed = m.kind == LoraKind::Embedding || adapter.config.fan_in_fan_out;
    let scaling = m.scale.scaling as f32 * scale;
    let d = math::delta(&a, &b, r, n_in, n_out, scaling, transposed);
    math::add_assign(&mut w, &d);
    if let Some(mag) = &m.magnitude {
        let mag = adapter.values(mag)?;
        let (rows, cols) = if transposed { (n_in, n_out) } else { (n_out, n_in) };
        math::dora_rescale(&mut w, rows, cols, &mag, transposed);
    }
    Ok(w)
}

/// The merged values of the bias of `module`.
fn merge_bias(adapter: &Adapter, module: &str, mut bias: Vec<f32>, scale: f32) -> Result<Vec<f32>, LoraError> {
    let m = &adapter.modules[module];
    let lb = adapter.values(m.bias.as_deref().unwrap_or_default())?;
    let scaling = m.scale.scaling as f32 * scale;
    bias.iter_mut().zip(&lb).for_each(|(x, y)| *x += y * scaling);
    Ok(bias)
}

/// Merge the adapter in `adapter_dir` into the HF model in `base_dir`, writing an HF directory at `out`.
pub fn merge_lora(
    base_dir: &Path,
    adapter_dir: &Path,
    out: &Path,
    opts: &MergeOptions,
    progress: &dyn Progress,
) -> Result<MergeSummary, LoraError> {
    let base = HfModel::open(base_dir)?;
    let adapter = Adapter::open(adapter_dir)?;
    let actions = plan(&base, &adapter)?;
    let out_dir = AtomicDir::create(out, &[base_dir, adapter_dir])?;

    let out_dtype = |t: &StTensor| match opts.dtype {
        Some(d) if is_float(t.dtype) => d.dtype(),
        _ => t.dtype,
    };
    let total = base.tensors().count();
    let total_bytes: u64 = base.tensors().map(|(_, t)| t.n_elements() * out_dtype(t).bitsize() as u64 / 8).sum();
    progress.start(total, total_bytes);
    let mut summary = MergeSummary { tensors: total, merged: 0, replaced: 0, dora: adapter.config.use_dora, bytes: 0 };
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut index = 0;
    for shard in base.shards() {
        let file_name = shard.path().file_name().map(|f| f.to_os_string()).unwrap_or_default();
        let specs: Vec<StTensorSpec> = shard
            .tensors()
            .iter()
            .map(|t| StTensorSpec { name: t.name.clone(), dtype: out_dtype(t), shape: t.shape.clone() })
            .collect();
        let mut w = SafetensorsWriter::create(out_dir.tmp().join(&file_name), shard.metadata(), &specs)?;
        for t in shard.tensors() {
            let action = actions.get(&t.name).unwrap_or(&Action::Copy);
            let (bytes, detail) = tensor_bytes(shard, t, out_dtype(t), action, &adapter, opts.scale)?;
            progress.item(index, &t.name, &detail);
            match action {
                Action::Merge(_) => summary.merged += 1,
                Action::Replace(_) => summary.replaced += 1,
                _ => {}
            }
            w.write_tensor_data(&bytes)?;
            shard.release(t);
            summary.bytes += bytes.len() as u64;
            sizes.insert(t.name.clone(), bytes.len() as u64);
            progress.item_done(index, bytes.len() as u64);
            index += 1;
        }
        w.finish()?;
    }
    copy_side_files(base_dir, &out_dir, opts.dtype, summary.bytes)?;
    out_dir.commit()?;
    progress.finish();
    Ok(summary)
}

/// The values of a base tensor after `action` (not [`Action::Copy`]) of `adapter` at user scale `scale`; shared by
/// `merge-lora` and by `convert`/`quantize --lora`.
pub fn apply(
    adapter: &Adapter,
    action: &Action,
    values: Vec<f32>,
    scale: f32,
    tensor: &str,
) -> Result<Vec<f32>, LoraError> {
    let out = match action {
        Action::Copy => return Ok(values),
        Action::Merge(module) => merge_module(adapter, module, values, scale)?,
        Action::AddBias(module) => merge_bias(adapter, module, values, scale)?,
        Action::Replace(name) => adapter.values(name)?,
    };
    if out.iter().any(|v| !v.is_finite()) {
        return Err(LoraError::NonFinite { tensor: tensor.to_string() });
    }
    Ok(out)
}

/// The output bytes of one base tensor, and a word on what happened to it.
fn tensor_bytes(
    shard: &SafetensorsFile,
    t: &StTensor,
    dtype: Dtype,
    action: &Action,
    adapter: &Adapter,
    scale: f32,
) -> Result<(Vec<u8>, String), LoraError> {
    let values = match action {
        Action::Copy if dtype == t.dtype => return Ok((shard.data(t).to_vec(), "copy".into())),
        Action::Replace(_) => apply(adapter, action, Vec::new(), scale, &t.name)?,
        _ => apply(adapter, action, shard.to_f32(t)?, scale, &t.name)?,
    };
    let bytes = encode(dtype, &values).ok_or_else(|| FormatError::UnsupportedDtype {
        path: shard.path().into(),
        name: t.name.clone(),
        dtype: dtype.to_string(),
        wanted: "an output dtype (pass --dtype f32, f16 or bf16)",
    })?;
    let detail = match action {
        Action::Copy => format!("convert to {dtype}"),
        Action::Merge(m) => {
            let s = &adapter.modules[m].scale;
            let dora = if adapter.modules[m].magnitude.is_some() { ", DoRA" } else { "" };
            format!("merge LoRA (r {}, scaling {}{dora})", s.r, s.scaling * f64::from(scale))
        }
        Action::AddBias(_) => "add lora_B bias".into(),
        Action::Replace(_) => "replace (modules_to_save)".into(),
    };
    Ok((bytes, detail))
}

/// Files that are never copied: weights (rewritten or stale) and the shard index (rewritten).
fn is_weight_file(name: &str) -> bool {
    let ext = Path::new(name).extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "safetensors" | "bin" | "pt" | "pth" | "ckpt" | "gguf" | "h5" | "msgpack")
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
}

/// Copy config, tokenizer and other small files; rewrite the shard index's total size, and `torch_dtype`
/// when the dtype changes.
fn copy_side_files(base_dir: &Path, out: &AtomicDir, dtype: Option<OutDtype>, total: u64) -> Result<(), LoraError> {
    let io = |p: &Path, e| LoraError::from(FormatError::io(p, e));
    let mut entries: Vec<_> =
        std::fs::read_dir(base_dir).map_err(|e| io(base_dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for src in entries {
        let Some(name) = src.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        if !src.is_file() || is_weight_file(&name) {
            continue;
        }
        let dst = out.tmp().join(&name);
        match (name.as_str(), dtype) {
            ("config.json", Some(d)) => {
                let mut config = read_json(&src)?;
                if let Some(obj) = config.as_object_mut() {
                    for key in ["torch_dtype", "dtype"] {
                        if obj.contains_key(key) {
                            obj.insert(key.into(), Value::String(d.torch_name().into()));
                        }
                    }
                }
                write_json(&dst, &config)?;
            }
            _ => {
                std::fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
            }
        }
    }
    let index = base_dir.join("model.safetensors.index.json");
    if index.is_file() {
        let mut v = read_json(&index)?;
        if let Some(obj) = v.as_object_mut() {
            let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("total_size".into(), Value::from(total));
            }
        }
        write_json(&out.tmp().join("model.safetensors.index.json"), &v)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<(), LoraError> {
    let mut text =
        serde_json::to_string_pretty(v).map_err(|e| FormatError::Json { path: path.into(), message: e.to_string() })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| FormatError::io(path, e))?;
    Ok(())
}
