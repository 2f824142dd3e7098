//! `merge-lora`: base HF directory + PEFT adapter -> merged HF directory, through [`crate::stream`].
//!
//! Streaming: base tensors are read from the memory-mapped shards one at a time, merged in f32 (the
//! [`Transform::Lora`] transform) and written to the output shard before the next is read; only the adapter
//! (small) and one base tensor are in memory. The output mirrors the base's shard layout (same file names,
//! tensor order and metadata) and copies its config and tokenizer files. A [`SafetensorsDirSink`] writes
//! everything into a temporary directory beside the output, renamed into place only when complete.

use std::path::Path;

use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::safetensors::{Dtype, StTensor, StTensorSpec};
use quantforge_formats::FormatError;
use serde_json::Value;

use super::adapter::LoraKind;
use super::plan::{plan, Action};
use super::{math, Adapter, LoraError};
use crate::progress::Progress;
use crate::solver::CodecSolver;
use crate::stream::sink::{SafetensorsDirSink, Shard};
use crate::stream::transform::Transform;
use crate::stream::{self, FloatType, RunOptions, Source, StreamTensor, TensorData};

/// `--dtype` of the merged tensors.
pub use crate::stream::FloatType as OutDtype;

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

/// One base tensor of the merge: where it is and what it becomes.
struct Item {
    shard: usize,
    tensor: usize,
    dtype: Dtype,
    action: Action,
}

/// The base model's tensors, merged with the adapter, as a pipeline source.
struct MergeSource<'a> {
    base: &'a HfModel,
    adapter: &'a Adapter,
    scale: f32,
    inputs: [&'a Path; 2],
    items: Vec<Item>,
    tensors: Vec<StreamTensor>,
}

impl MergeSource<'_> {
    fn base_tensor(&self, index: usize) -> (&quantforge_formats::safetensors::SafetensorsFile, &StTensor) {
        let item = &self.items[index];
        let shard = &self.base.shards()[item.shard];
        (shard, &shard.tensors()[item.tensor])
    }
}

impl Source for MergeSource<'_> {
    type Error = LoraError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.inputs.to_vec()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, LoraError> {
        let item = &self.items[index];
        let (shard, t) = self.base_tensor(index);
        let base = match item.action {
            Action::Copy if item.dtype == t.dtype => return Ok(TensorData::Bytes(shard.data(t).into())),
            Action::Replace(_) => Vec::new(),
            _ => shard.to_f32(t)?,
        };
        let lora = Transform::Lora { adapter: self.adapter, action: &item.action, scale: self.scale };
        let merged = lora.apply(base, t.shape.first().copied().unwrap_or(1) as usize, &t.name)?;
        if FloatType::from_dtype(item.dtype).is_some() {
            *values = merged;
            return Ok(TensorData::Values);
        }
        // F64 has no ggml type: encoded here; any other dtype cannot hold the values.
        match item.dtype {
            Dtype::F64 => Ok(TensorData::Bytes(merged.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect())),
            dtype => Err(FormatError::UnsupportedDtype {
                path: shard.path().into(),
                name: t.name.clone(),
                dtype: dtype.to_string(),
                wanted: "an output dtype (pass --dtype f32, f16 or bf16)",
            }
            .into()),
        }
    }

    fn release(&self, index: usize) {
        let (shard, t) = self.base_tensor(index);
        shard.release(t);
    }
}

/// A word on what happens to a tensor, for progress.
fn detail(adapter: &Adapter, action: &Action, dtype: Dtype, base_dtype: Dtype, scale: f32) -> String {
    match action {
        Action::Copy if dtype == base_dtype => "copy".into(),
        Action::Copy => format!("convert to {dtype}"),
        Action::Merge(m) => {
            let s = &adapter.modules[m].scale;
            let dora = if adapter.modules[m].magnitude.is_some() { ", DoRA" } else { "" };
            format!("merge LoRA (r {}, scaling {}{dora})", s.r, s.scaling * f64::from(scale))
        }
        Action::AddBias(_) => "add lora_B bias".into(),
        Action::Replace(_) => "replace (modules_to_save)".into(),
    }
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
    let mut actions = plan(&base, &adapter)?;
    let out_dtype = |t: &StTensor| match opts.dtype {
        Some(d) if is_float(t.dtype) => d.dtype(),
        _ => t.dtype,
    };
    let mut summary = MergeSummary { tensors: 0, merged: 0, replaced: 0, dora: adapter.config.use_dora, bytes: 0 };
    let (mut items, mut tensors, mut shards) = (Vec::new(), Vec::new(), Vec::new());
    for (si, shard) in base.shards().iter().enumerate() {
        let file_name = shard.path().file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let mut specs = Vec::with_capacity(shard.tensors().len());
        for (ti, t) in shard.tensors().iter().enumerate() {
            let dtype = out_dtype(t);
            let action = actions.remove(&t.name).unwrap_or(Action::Copy);
            match action {
                Action::Merge(_) => summary.merged += 1,
                Action::Replace(_) => summary.replaced += 1,
                _ => {}
            }
            let mut ne: Vec<u64> = t.shape.iter().rev().copied().collect();
            if ne.is_empty() {
                ne.push(1);
            }
            tensors.push(StreamTensor {
                name: t.name.clone(),
                ne,
                ty: FloatType::from_dtype(dtype).map(FloatType::ggml_type),
                size: t.n_elements() * dtype.bitsize() as u64 / 8,
                detail: detail(&adapter, &action, dtype, t.dtype, opts.scale),
            });
            specs.push(StTensorSpec { name: t.name.clone(), dtype, shape: t.shape.clone() });
            items.push(Item { shard: si, tensor: ti, dtype, action });
        }
        shards.push(Shard { file_name, metadata: shard.metadata().to_vec(), tensors: specs });
    }
    summary.tensors = tensors.len();
    let total: u64 = tensors.iter().map(|t| t.size).sum();
    let dtype = opts.dtype;
    let side_files = Box::new(move |dir: &Path| copy_side_files(base_dir, dir, dtype, total));
    let sink = SafetensorsDirSink::new(out, shards, side_files);
    let source = MergeSource {
        base: &base,
        adapter: &adapter,
        scale: opts.scale,
        inputs: [base_dir, adapter_dir],
        items,
        tensors,
    };
    summary.bytes = stream::run(&source, &CodecSolver, sink, RunOptions::new(progress))?.bytes;
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
    // A non-finite base value would come out of the merge non-finite: blame it on the base, not the adapter.
    if matches!(action, Action::Merge(_) | Action::AddBias(_)) {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(LoraError::NonFiniteBase { tensor: tensor.to_string(), index, value: values[index] });
        }
    }
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

/// Files that are never copied: weights (rewritten or stale) and the shard index (rewritten).
fn is_weight_file(name: &str) -> bool {
    let ext = Path::new(name).extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "safetensors" | "bin" | "pt" | "pth" | "ckpt" | "gguf" | "h5" | "msgpack")
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
}

/// Copy config, tokenizer and other small files; rewrite the shard index's total size, and `torch_dtype`
/// when the dtype changes.
fn copy_side_files(base_dir: &Path, out: &Path, dtype: Option<OutDtype>, total: u64) -> Result<(), FormatError> {
    let io = |p: &Path, e| FormatError::io(p, e);
    let mut entries: Vec<_> =
        std::fs::read_dir(base_dir).map_err(|e| io(base_dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for src in entries {
        let Some(name) = src.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        if !src.is_file() || is_weight_file(&name) {
            continue;
        }
        let dst = out.join(&name);
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
        write_json(&out.join("model.safetensors.index.json"), &v)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<(), FormatError> {
    let mut text =
        serde_json::to_string_pretty(v).map_err(|e| FormatError::Json { path: path.into(), message: e.to_string() })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| FormatError::io(path, e))?;
    Ok(())
}
