//! `convert`: a Hugging Face safetensors directory -> GGUF exactly as llama.cpp's `convert_hf_to_gguf.py`
//! writes it (metadata keys, types and order; tensor names, order and types), and GGUF -> HF ([`to_hf`]).
//!
//! [`ConvertedModel`] is the library type: the GGUF metadata, the GGUF tensor list (names, `ne`, the types
//! the converter picks for the `--outtype`) and a way to get each tensor's f32 values one at a time, from the
//! memory-mapped shards, with the Q/K permutation applied. [`ConvertedModel::write_gguf`] streams it to a
//! file; a quantizer can consume the same tensors in one pass instead (see the crate README/report).
//!
//! Type rules (`ModelBase.prepare_tensors`, `conversion/base.py` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! 1-D tensors, `*_norm.weight` and names not ending in `.weight` are F32; others get the outtype; a row
//! length that is not a multiple of the outtype's block size falls back to F16 (gguf-py's `QuantError`).

mod error;
mod rope_freqs;
pub mod to_hf;
mod write;

pub use error::ConvertError;
pub use rope_freqs::llama3_rope_factors;

use std::path::{Path, PathBuf};

use quantforge_formats::arch::{self, Architecture, HfConfig, RopeScaling};
use quantforge_formats::gguf::GgufValue;
use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::kv::KvList;
use quantforge_formats::safetensors::Dtype;
use quantforge_formats::vocab::tokenizer_metadata;
use quantforge_formats::{FormatError, GgmlType};

use crate::stream::transform::{apply_all, Transform};
use crate::stream::FloatType;

/// `--outtype` of HF -> GGUF: the three [`FloatType`]s, Q8_0, or auto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// BF16 if the first 2-D+ tensor stored as bf16 or f16 is bf16, else F16.
    Auto,
}

impl OutType {
    /// Parse a case-insensitive name.
    pub fn parse(s: &str) -> Result<OutType, ConvertError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "auto" => OutType::Auto,
            _ => return Err(ConvertError::OutType(s.into())),
        })
    }

    /// The ggml type of matrices.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 | OutType::Auto => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// `general.file_type` (`LlamaFileType`: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 | OutType::Auto => 1,
            OutType::Q8_0 => 7,
            OutType::BF16 => 32,
        }
    }
}

impl From<FloatType> for OutType {
    fn from(t: FloatType) -> OutType {
        match t {
            FloatType::F32 => OutType::F32,
            FloatType::F16 => OutType::F16,
            FloatType::BF16 => OutType::BF16,
        }
    }
}

/// Where a GGUF tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorSource {
    /// An HF tensor, rows permuted into `permute_heads` heads when set.
    Hf { hf_name: String, permute_heads: Option<u32> },
    /// Values the converter computes (e.g. `rope_freqs.weight`).
    Generated(Vec<f32>),
    /// One HF tensor per expert, stacked along a new outer dimension (expert 0 first), read one at a time.
    Experts { hf_names: Vec<String> },
}

/// One tensor of the GGUF being produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    pub name: String,
    /// Dimensions in ggml order.
    pub ne: Vec<u64>,
    /// The type llama.cpp's converter writes for the chosen outtype.
    pub ggml_type: GgmlType,
    pub source: TensorSource,
}

impl SourceTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A HF model planned for conversion: metadata and tensors, nothing read yet but headers and JSON.
pub struct ConvertedModel {
    pub arch: &'static Architecture,
    pub config: HfConfig,
    /// The outtype after resolving `auto`.
    pub outtype: OutType,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<SourceTensor>,
    model: HfModel,
    loras: Vec<AppliedLora>,
}

/// A PEFT adapter merged into the HF tensors as they are read (`--lora DIR[:SCALE]`).
struct AppliedLora {
    adapter: crate::lora::Adapter,
    actions: std::collections::BTreeMap<String, crate::lora::plan::Action>,
    scale: f32,
}

/// Refuse pickle checkpoints (`pytorch_model*.bin`, `*.pt`, `*.pth`, `*.ckpt`) when there is no safetensors.
fn check_no_pickle(dir: &Path) -> Result<(), FormatError> {
    let has_safetensors = dir.join("model.safetensors").is_file() || dir.join("model.safetensors.index.json").is_file();
    if has_safetensors {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))?;
    let mut pickles: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| ["bin", "pt", "pth", "ckpt"].contains(&x.to_string_lossy().as_ref())))
        .collect();
    pickles.sort();
    match pickles.into_iter().next() {
        Some(path) => Err(FormatError::PickleCheckpoint { path }),
        None => Ok(()),
    }
}

/// The output type of one tensor (see the module docs). Routers (`ffn_gate_inp`, `ffn_gate_inp_shexp`)
/// stay F32 like norms (`FFN_GATE_INP`/`FFN_GATE_INP_SHEXP` in `prepare_tensors`' F32 list).
fn tensor_type(name: &str, ne: &[u64], outtype: OutType) -> GgmlType {
    if ne.len() <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") || arch::is_router(name) {
        return GgmlType::F32;
    }
    let ty = outtype.ggml_type();
    if !ne[0].is_multiple_of(ty.block_size()) {
        return GgmlType::F16;
    }
    ty
}

/// `(shared + one expert's parameters, expert count)` as gguf-py's `get_total_parameter_count` counts them:
/// a 3-D tensor named `*_exps.*` contributes its size over its experts (`ne[2]`); `None` without experts.
fn expert_params(tensors: &[SourceTensor]) -> Option<(u64, u64)> {
    let (mut shared, mut expert, mut expert_sum, mut n) = (0u64, 0u64, 0u64, 0u64);
    for t in tensors {
        match t.ne.get(2).copied().filter(|&c| c > 0 && t.name.contains("_exps.")) {
            Some(count) => {
                expert += t.n_elements() / count;
                expert_sum += count;
                n += 1;
            }
            None => shared += t.n_elements(),
        }
    }
    (n > 0).then(|| (shared + expert, expert_sum / n))
}

impl ConvertedModel {
    /// Plan the conversion of the HF directory `dir`: config, architecture, tensor mapping and shapes,
    /// tokenizer and metadata are all checked here, before any tensor data is read.
    pub fn open(dir: impl AsRef<Path>, outtype: OutType) -> Result<ConvertedModel, ConvertError> {
        let dir = dir.as_ref();
        check_no_pickle(dir)?;
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(FormatError::NotAModel { path: dir.into(), message: "no config.json".into() }.into());
        }
        let raw = read_json(&config_path)?;
        if let Some(method) = crate::checkpoint::quantization_method(&raw, dir) {
            let message = format!("a {method}-quantized checkpoint; convert and quantize need float weights");
            return Err(FormatError::NotAModel { path: dir.into(), message }.into());
        }
        let config = HfConfig::parse(&config_path, &raw)?;
        let arch = arch::lookup(&config_path, &config.architecture)?;
        let model = HfModel::open(dir)?;
        let planned = arch::plan_tensors(&model, arch, &config)?;
        let outtype = match outtype {
            OutType::Auto => model
                .tensors()
                .filter(|(_, t)| t.shape.len() >= 2)
                .find_map(|(_, t)| match t.dtype {
                    Dtype::BF16 => Some(OutType::BF16),
                    Dtype::F16 => Some(OutType::F16),
                    _ => None,
                })
                .unwrap_or(OutType::F16),
            o => o,
        };
        let mut tensors = Vec::with_capacity(planned.len() + 2);
        // Phi3MiniModel.generate_extra_tensors: the LongRoPE factors come first, and their attention factor key
        // is written before every key but general.architecture.
        let longrope = arch::longrope_factors(arch, &config)?;
        if let Some(f) = &longrope {
            for (name, values) in [("rope_factors_long.weight", &f.long), ("rope_factors_short.weight", &f.short)] {
                tensors.push(SourceTensor {
                    name: name.into(),
                    ne: vec![values.len() as u64],
                    ggml_type: GgmlType::F32,
                    source: TensorSource::Generated(values.clone()),
                });
            }
        }
        if let (true, RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context }) =
            (arch.llama3_rope_freqs, &config.rope_scaling)
        {
            let f = llama3_rope_factors(
                config.rope_theta.unwrap_or(10000.0),
                config.head_dim(),
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_context,
            );
            tensors.push(SourceTensor {
                name: "rope_freqs.weight".into(),
                ne: vec![f.len() as u64],
                ggml_type: GgmlType::F32,
                source: TensorSource::Generated(f),
            });
        }
        for p in planned {
            let ne = p.ne();
            tensors.push(SourceTensor {
                ggml_type: tensor_type(&p.gguf_name, &ne, outtype),
                ne,
                source: if p.experts.is_empty() {
                    TensorSource::Hf { permute_heads: p.permute_heads(&config), hf_name: p.hf_name }
                } else {
                    TensorSource::Experts { hf_names: p.experts }
                },
                name: p.gguf_name,
            });
        }
        let total_params: u64 = tensors.iter().map(SourceTensor::n_elements).sum();
        let mut kv = KvList::new();
        kv.string("general.architecture", arch.gguf_name);
        if let Some(f) = &longrope {
            kv.f32(arch::HparamKey::RopeScalingAttnFactor.key(arch.gguf_name), f.attn_factor);
        }
        arch::general_metadata_with_experts(&mut kv, dir, &config, total_params, expert_params(&tensors));
        arch::arch_metadata(&mut kv, arch, &config, outtype.file_type());
        kv.u32("general.quantization_version", 2);
        tokenizer_metadata(&mut kv, dir, &config, arch.vocab)?;
        Ok(ConvertedModel { arch, config, outtype, metadata: kv.into_vec(), tensors, model, loras: Vec::new() })
    }

    /// The values of tensor `index` as f32, in GGUF row order (permuted where the rules say so).
    pub fn tensor_f32(&self, index: usize) -> Result<Vec<f32>, ConvertError> {
        let t = &self.tensors[index];
        match &t.source {
            TensorSource::Generated(v) => Ok(v.clone()),
            TensorSource::Hf { hf_name, permute_heads } => self.hf_f32(hf_name, *permute_heads),
            TensorSource::Experts { hf_names } => {
                let mut out = Vec::new();
                for name in hf_names {
                    out.extend_from_slice(&self.hf_f32(name, None)?);
                }
                Ok(out)
            }
        }
    }

    /// HF tensor `hf_name` as f32 with the adapters merged and its rows permuted into `permute_heads`.
    fn hf_f32(&self, hf_name: &str, permute_heads: Option<u32>) -> Result<Vec<f32>, ConvertError> {
        let (shard, st) = self
            .model
            .tensor(hf_name)
            .ok_or_else(|| FormatError::MissingTensor { path: self.model.dir().into(), name: hf_name.into() })?;
        let values = shard.to_f32(st)?;
        shard.release(st);
        let mut transforms: Vec<Transform<'_>> = self
            .loras
            .iter()
            .filter_map(|l| {
                let action = l.actions.get(hf_name)?;
                Some(Transform::Lora { adapter: &l.adapter, action, scale: l.scale })
            })
            .collect();
        if let Some(h) = permute_heads {
            transforms.push(Transform::RopePermute { heads: h as usize });
        }
        if self.arch.rule_for(hf_name).is_some_and(|(r, _)| r.transform == arch::Transform::NormShift) {
            // `modify_tensors` adds 1 after F64/BF16 became F32; an F16 tensor stays F16 for the sum.
            transforms.push(Transform::Offset { delta: 1.0, round_f16: st.dtype == Dtype::F16 });
        }
        let n_rows = st.shape.first().copied().unwrap_or(1) as usize;
        apply_all(values, n_rows, hf_name, &transforms).map_err(|e| ConvertError::Lora(Box::new(e)))
    }

    /// Merge PEFT adapters into the tensors as they are read, in order, each at its user scale (1.0 = the
    /// adapter's own alpha/r). Checked against the base now, before anything is written.
    pub fn with_loras(mut self, adapters: &[(std::path::PathBuf, f32)]) -> Result<ConvertedModel, ConvertError> {
        for (dir, scale) in adapters {
            let lora = |e| ConvertError::Lora(Box::new(e));
            let adapter = crate::lora::Adapter::open(dir).map_err(lora)?;
            let actions = crate::lora::plan::plan(&self.model, &adapter).map_err(lora)?;
            self.loras.push(AppliedLora { adapter, actions, scale: *scale });
        }
        Ok(self)
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        self.model.dir()
    }
}
